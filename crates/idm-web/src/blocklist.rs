//! The username blocklist: MediaWiki's title blacklist and whitelist pages,
//! their sync, and matching as the TitleBlacklist extension does it.
//!
//! * [`fetch_source`] reads each configured page of one wiki as raw
//!   wikitext (`action=query&prop=revisions&rvprop=content`), as MediaWiki
//!   reads the whole text of its sources, and [`parse_list_text`] keeps each
//!   line's regex and options: `#` starts a comment, the options are the
//!   trailing `<a|b|c>` part.
//! * [`Blocklist`] is the compiled matcher, following the TitleBlacklist
//!   extension: each name is tested as its user page title `User:<Name>`;
//!   entries are PCRE `/^(?:re)$/us` (`i` unless `casesensitive`), with `_`
//!   read as a space and `{{ns:…}}` expanded; `antispoof` entries are
//!   matched against the title's look-alike-folded form
//!   ([`antispoof_form`]). Only `moveonly` entries never block accounts. A
//!   name a whitelist entry matches is let through. The engine is
//!   fancy-regex (back-references, look-arounds) with a backtracking budget
//!   per match; an entry that runs out is reported ([`Verdict::gave_up`]).
//! * [`sync`] fetches every configured wiki with a timeout and a User-Agent
//!   naming a contact, works out a [`SyncPlan`] (what to add, refresh, keep
//!   and drop) and, unless checking, applies exactly that plan in one
//!   transaction. A failed fetch changes nothing for that wiki (not even the
//!   dropping of its stale entries). Connection failures say what failed
//!   ([`FetchFailure`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use unicode_normalization::UnicodeNormalization;

use crate::config::{BlocklistSettings, BlocklistSource};
use crate::db::now;
use crate::store::BlocklistStore;
use crate::store::blocklist::{KIND_ALLOW, KIND_BLOCK, NewEntry, StoredEntry};

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The regex.
    pub pattern: String,
    /// Lower-cased options, in order.
    pub options: Vec<String>,
}

impl Entry {
    /// Whether matching is case-sensitive.
    pub fn case_sensitive(&self) -> bool {
        self.options.iter().any(|o| o == "casesensitive")
    }
}

/// What went wrong talking to a wiki.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    /// Nothing accepts connections at the address (connection refused).
    Refused,
    /// The host name does not resolve (DNS).
    Dns(String),
    /// The TLS handshake failed (e.g. a certificate no trusted authority
    /// signed, or one for another name).
    Tls(String),
    /// No complete answer within the timeout.
    Timeout(Duration),
    /// The wiki answered with an HTTP error status.
    Status(u16),
    /// The answer was larger than [`MAX_RESPONSE_BYTES`].
    TooLarge,
    /// Any other connection failure (reset, unreachable network, …).
    Connection(String),
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchFailure::Refused => f.write_str("connection refused (nothing listens there)"),
            FetchFailure::Dns(e) => write!(f, "DNS: the host name does not resolve ({e})"),
            FetchFailure::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            FetchFailure::Timeout(t) => {
                write!(f, "timed out: no complete answer within {}s", t.as_secs())
            }
            FetchFailure::Status(s) => write!(f, "HTTP status {s}"),
            FetchFailure::TooLarge => {
                write!(f, "answer larger than {MAX_RESPONSE_BYTES} bytes")
            }
            FetchFailure::Connection(e) => write!(f, "connection failed: {e}"),
        }
    }
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BlocklistError {
    /// The HTTP fetch failed.
    #[error("fetching {url}: {failure}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        failure: FetchFailure,
    },
    /// The answer is not what the wiki API gives.
    #[error("unexpected API response from {url}: {reason}")]
    Format {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configured page does not exist on the wiki.
    #[error("{wiki}: the page {page:?} does not exist (check blocklist.sources)")]
    MissingPage {
        /// The source's name.
        wiki: String,
        /// The page title.
        page: String,
    },
    /// No contact is configured (Wikimedia's User-Agent policy asks for one).
    #[error(
        "blocklist.contact is not set: the wikis ask every client to name a contact in its \
         User-Agent; add contact = \"https://…\" or contact = \"ops@example.org\" under [blocklist]"
    )]
    NoContact,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

/// Parses one blacklist line as MediaWiki's `TitleBlacklistEntry::newFromString`.
pub fn parse_line(line: &str) -> Option<Entry> {
    let line = line.split('#').next().unwrap_or("").trim();
    if line.is_empty() {
        return None;
    }
    let (pattern, options) = match line
        .strip_suffix('>')
        .and_then(|l| l.rfind('<').map(|i| (l, i)))
    {
        Some((l, i)) if !l[i + 1..].contains(['<', '>']) => (l[..i].trim(), l[i + 1..].to_owned()),
        _ => (line, String::new()),
    };
    if pattern.is_empty() {
        return None;
    }
    let options = options
        .split('|')
        .map(|o| o.trim().to_lowercase())
        .filter(|o| !o.is_empty())
        .collect();
    Some(Entry {
        pattern: pattern.to_owned(),
        options,
    })
}

/// The entries of a page's whole text, line by line
/// (`TitleBlacklist::parseBlacklist`: lines split at `\r?\n`).
pub fn parse_list_text(text: &str) -> Vec<Entry> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter_map(parse_line)
        .collect()
}

/// The most a wiki's answer may hold (meta's global list is about 100 KB).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// The MediaWiki namespace: a missing page there is the built-in default
/// message, which holds only comments (MediaWiki reads it as an empty list).
const NS_MEDIAWIKI: i64 = 8;

/// The raw text of each requested page from an `action=query&prop=revisions`
/// answer (formatversion 2, with or without `rvslots`): `Some(text)`, or
/// `None` for a missing page of the MediaWiki namespace (an empty list, as
/// MediaWiki reads it). A missing page elsewhere, an invalid title or an API
/// error is an error.
pub fn parse_revisions_response(
    json: &[u8],
    wiki: &str,
    url: &str,
    pages: &[String],
) -> Result<HashMap<String, Option<String>>, BlocklistError> {
    let format = |reason: String| BlocklistError::Format {
        url: url.to_owned(),
        reason,
    };
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| format(e.to_string()))?;
    if let Some(err) = v.get("error") {
        return Err(format(format!("API error: {err}")));
    }
    let query = v
        .get("query")
        .ok_or_else(|| format("no query in the answer".into()))?;
    let mut normalized: HashMap<&str, &str> = HashMap::new();
    for n in query
        .get("normalized")
        .and_then(|n| n.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(from), Some(to)) = (
            n.get("from").and_then(|s| s.as_str()),
            n.get("to").and_then(|s| s.as_str()),
        ) {
            normalized.insert(from, to);
        }
    }
    let returned = query
        .get("pages")
        .and_then(|p| p.as_array())
        .ok_or_else(|| format("no query.pages array (formatversion=2) in the answer".into()))?;
    let mut out = HashMap::new();
    for page in pages {
        let title = normalized
            .get(page.as_str())
            .copied()
            .unwrap_or(page.as_str());
        let found = returned
            .iter()
            .find(|p| p.get("title").and_then(|t| t.as_str()) == Some(title))
            .ok_or_else(|| format(format!("page {page:?} is not in the answer")))?;
        if found.get("invalid").is_some() {
            return Err(format(format!("{page:?} is not a valid title on {wiki}")));
        }
        if found.get("missing").is_some() {
            if found.get("ns").and_then(|n| n.as_i64()) == Some(NS_MEDIAWIKI) {
                out.insert(page.clone(), None);
                continue;
            }
            return Err(BlocklistError::MissingPage {
                wiki: wiki.to_owned(),
                page: page.clone(),
            });
        }
        let rev = found
            .pointer("/revisions/0")
            .ok_or_else(|| format(format!("page {page:?} has no revision in the answer")))?;
        let text = rev
            .pointer("/slots/main/content")
            .or_else(|| rev.get("content"))
            .and_then(|c| c.as_str())
            .ok_or_else(|| format(format!("page {page:?}: no content in the answer")))?;
        out.insert(page.clone(), Some(text.to_owned()));
    }
    Ok(out)
}

/// Says what failed on the way to a wiki, from an error and its causes.
fn classify(err: &(dyn std::error::Error + 'static)) -> FetchFailure {
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        chain.push(e);
        // An io::Error's source() skips the error it wraps; look inside.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
        if chain.len() > 16 {
            break;
        }
    }
    if let Some(tls) = chain.iter().find_map(|e| e.downcast_ref::<rustls::Error>()) {
        return FetchFailure::Tls(tls.to_string());
    }
    // hyper-util's connector names its resolver failures "dns error".
    if chain.iter().any(|e| e.to_string() == "dns error") {
        let detail = chain.last().map(|e| e.to_string()).unwrap_or_default();
        return FetchFailure::Dns(detail);
    }
    for e in &chain {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return FetchFailure::Refused,
                std::io::ErrorKind::TimedOut => {
                    return FetchFailure::Connection(format!("the connection timed out ({io})"));
                }
                _ => {}
            }
        }
    }
    FetchFailure::Connection(
        chain
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(": "),
    )
}

/// Fetches the raw text of `pages` from the wiki whose `api.php` is
/// `api_url`, in one request.
pub async fn fetch_pages(
    wiki: &str,
    api_url: &str,
    pages: &[String],
    settings: &BlocklistSettings,
) -> Result<HashMap<String, Option<String>>, BlocklistError> {
    let user_agent = settings
        .full_user_agent()
        .ok_or(BlocklistError::NoContact)?;
    let mut url = url::Url::parse(api_url).map_err(|e| BlocklistError::Format {
        url: api_url.into(),
        reason: format!("not a URL: {e}"),
    })?;
    url.query_pairs_mut()
        .append_pair("action", "query")
        .append_pair("prop", "revisions")
        .append_pair("rvprop", "content")
        .append_pair("rvslots", "main")
        .append_pair("titles", &pages.join("|"))
        .append_pair("format", "json")
        .append_pair("formatversion", "2");
    let fail = |failure: FetchFailure| BlocklistError::Fetch {
        url: url.to_string(),
        failure,
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = http::Request::get(url.as_str())
        .header(http::header::USER_AGENT, user_agent)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| fail(FetchFailure::Connection(e.to_string())))?;
    let timeout = Duration::from_secs(settings.timeout_seconds.max(1));
    let body = tokio::time::timeout(timeout, async {
        let resp = client.request(req).await.map_err(|e| fail(classify(&e)))?;
        if !resp.status().is_success() {
            return Err(fail(FetchFailure::Status(resp.status().as_u16())));
        }
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    fail(FetchFailure::TooLarge)
                } else {
                    fail(classify(e.as_ref()))
                }
            })?;
        Ok(body.to_bytes())
    })
    .await
    .map_err(|_| fail(FetchFailure::Timeout(timeout)))??;
    parse_revisions_response(&body, wiki, url.as_str(), pages)
}

/// What one wiki lists now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceLists {
    /// The lines of its blacklist pages.
    pub block: Vec<Entry>,
    /// The lines of its whitelist pages.
    pub allow: Vec<Entry>,
}

/// Fetches every page of one source: all of them, or an error (a source is
/// stored whole or not at all).
pub async fn fetch_source(
    source: &BlocklistSource,
    settings: &BlocklistSettings,
) -> Result<SourceLists, BlocklistError> {
    let mut wanted: Vec<String> = source.pages.clone();
    for p in &source.whitelist_pages {
        if !wanted.contains(p) {
            wanted.push(p.clone());
        }
    }
    let texts = fetch_pages(&source.name, &source.api_url, &wanted, settings).await?;
    let lines = |pages: &[String]| -> Vec<Entry> {
        pages
            .iter()
            .filter_map(|p| texts.get(p).and_then(|t| t.as_deref()))
            .flat_map(parse_list_text)
            .collect()
    };
    Ok(SourceLists {
        block: lines(&source.pages),
        allow: lines(&source.whitelist_pages),
    })
}

/// The backtracking budget of one match of one entry (fancy-regex's
/// `backtrack_limit`). A match that runs out counts as no match, as a PCRE
/// `preg_match` that hits `pcre.backtrack_limit` does, and is reported
/// ([`Verdict::gave_up`], a warning, `forge_idm_blocklist_gave_up_total`).
pub const BACKTRACK_LIMIT: usize = 100_000;

/// Expands the magic words MediaWiki expands in an entry
/// (`TitleBlacklistEntry::newFromString`): `{{ns:…}}` becomes the canonical
/// namespace name, `{{int:…}}` the message text. We hold no wiki messages, so
/// `{{int:name}}` becomes `⧼name⧽`, which is what MediaWiki renders for a
/// message it does not have; an unknown namespace is left as written.
pub fn expand_magic_words(regex: &str) -> String {
    let mut out = String::with_capacity(regex.len());
    let mut rest = regex;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let inner = &after[..end];
        let expanded = inner.split_once(':').and_then(|(word, arg)| {
            let arg = arg.trim();
            match word.trim().to_ascii_lowercase().as_str() {
                "ns" => namespace_name(arg).map(str::to_owned),
                "int" => Some(format!("\u{29fc}{arg}\u{29fd}")),
                _ => None,
            }
        });
        match expanded {
            Some(text) => out.push_str(&text),
            None => out.push_str(&rest[i..i + 4 + end]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// MediaWiki's canonical namespace names, by number or (any-case, `_` or
/// space) name.
fn namespace_name(arg: &str) -> Option<&'static str> {
    const NAMES: [(i32, &str); 16] = [
        (0, ""),
        (1, "Talk"),
        (2, "User"),
        (3, "User talk"),
        (4, "Project"),
        (5, "Project talk"),
        (6, "File"),
        (7, "File talk"),
        (8, "MediaWiki"),
        (9, "MediaWiki talk"),
        (10, "Template"),
        (11, "Template talk"),
        (12, "Help"),
        (13, "Help talk"),
        (14, "Category"),
        (15, "Category talk"),
    ];
    let wanted = arg.replace('_', " ").to_lowercase();
    NAMES
        .iter()
        .find(|(n, name)| wanted == n.to_string() || wanted == name.to_lowercase())
        .map(|(_, name)| *name)
}

/// An entry's regex as MediaWiki matches it: underscores are spaces (it
/// matches the text form of titles) and magic words are expanded
/// (`TitleBlacklistEntry::newFromString`).
pub fn normalise_pattern(pattern: &str) -> String {
    expand_magic_words(&pattern.replace('_', " "))
}

/// The title MediaWiki tests for a new account: the user page,
/// `User:<Name>`, with the first letter upper-cased and underscores as
/// spaces (`Hooks::testUserName` builds an `NS_USER` title).
pub fn user_page_title(name: &str) -> String {
    let name = name.replace('_', " ");
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => format!("User:{}{}", first.to_uppercase(), chars.as_str()),
        None => "User:".to_owned(),
    }
}

/// The form an `antispoof` entry is matched against: the title with
/// look-alike characters folded, following the steps of AntiSpoof's
/// `checkUnicodeStringStatus` (wikimedia/mediawiki-extensions-AntiSpoof,
/// `includes/AntiSpoof.php` at 197ba1cd3c993ce0d59485165674da78e155ee2c),
/// which `TitleBlacklistEntry::matches` applies to the whole title:
///
/// 1. compatibility decomposition (NFKD) and the combining diacritical marks
///    (U+0300–U+036F) dropped, so accents go;
/// 2. ASCII punctuation and spaces squeezed out (`User:Foo Bar` →
///    `UserFooBar`);
/// 3. each character replaced by its look-alike class — AntiSpoof uses its
///    own equivalence table (equivset), we use the Unicode TS #39 confusable
///    skeleton that account names already use ([`crate::names::skeleton`]);
/// 4. `vv` → `w` and `rn` → `m`, after the mapping, as AntiSpoof does;
/// 5. upper case, the case AntiSpoof's canonical letters are in (so
///    `casesensitive|antispoof` entries written for MediaWiki, in capitals,
///    match here too).
///
/// `Wіkipеdia` (Cyrillic `і`, `е`), `W1kipedia` and `Wikipedia` all fold to
/// one form.
pub fn antispoof_form(title: &str) -> String {
    let stripped: String = title
        .nfkd()
        .filter(|c| !('\u{300}'..='\u{36f}').contains(c))
        .filter(|c| !(c.is_ascii_punctuation() || *c == ' '))
        .collect();
    crate::names::skeleton(&stripped)
        .replace("vv", "w")
        .replace("rn", "m")
        .to_uppercase()
}

/// Whether an entry with these options applies to new accounts: only
/// `moveonly` keeps it out (`TitleBlacklistEntry::matches` for the action
/// `new-account`: `newaccountonly`, `noedit`, `reupload`, `autoconfirmed` all
/// still block account creation).
pub fn applies_to_new_accounts(options: &[&str]) -> bool {
    !options.contains(&"moveonly")
}

/// One compiled entry.
#[derive(Debug)]
struct CompiledEntry {
    /// The anchored, flagged regex.
    regex: fancy_regex::Regex,
    /// The entry as stored (for messages).
    pattern: String,
    /// Matched against [`antispoof_form`] of the title.
    antispoof: bool,
}

/// What the list says of one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// The blacklist entry that blocks the name (none when no entry matches
    /// or a whitelist entry lets it through).
    pub blocked_by: Option<&'a str>,
    /// The whitelist entry that let a blacklisted name through.
    pub allowed_by: Option<&'a str>,
    /// Entries that ran out of their backtracking budget on this name
    /// (counted as no match, as PCRE does).
    pub gave_up: Vec<&'a str>,
}

/// Whether `e` matches the title (or its folded form, computed once into
/// `folded`); an entry that runs out of budget is logged, counted and pushed
/// to `gave_up`.
fn entry_matches<'a>(
    e: &'a CompiledEntry,
    name: &str,
    title: &str,
    folded: &mut Option<String>,
    gave_up: &mut Vec<&'a str>,
) -> bool {
    let subject = if e.antispoof {
        folded.get_or_insert_with(|| antispoof_form(title)).as_str()
    } else {
        title
    };
    match e.regex.is_match(subject) {
        Ok(m) => m,
        Err(err) => {
            tracing::warn!(pattern = %e.pattern, name, error = %err,
                "blocklist entry gave up matching (backtracking budget); counted as no match, as PCRE does");
            metrics::counter!("forge_idm_blocklist_gave_up_total").increment(1);
            gave_up.push(e.pattern.as_str());
            false
        }
    }
}

/// The compiled matcher.
///
/// Follows `TitleBlacklist::isBlacklisted` / `isWhitelisted` and
/// `TitleBlacklistEntry::matches` of
/// wikimedia/mediawiki-extensions-TitleBlacklist
/// (`includes/TitleBlacklist.php` at 7c75a58d9bd8ee00a766ded51d0fc9a0715a824c,
/// `includes/TitleBlacklistEntry.php` at
/// efca55077cf2b2657a622885f88d5b50f913a251): each entry is the PCRE
/// `/^(?:regex)$/us`, plus `i` unless `casesensitive`, tested against the
/// user page title (or, with `antispoof`, its folded form); a title some
/// blacklist entry matches is blocked unless a whitelist entry matches it.
/// The dialect is PCRE's, so back-references and look-arounds work
/// (fancy-regex, with a backtracking budget per match).
#[derive(Debug, Default)]
pub struct Blocklist {
    /// Blacklist entries that apply to new accounts.
    block: Vec<CompiledEntry>,
    /// Whitelist entries that apply to new accounts.
    allow: Vec<CompiledEntry>,
    /// Entries skipped because their regex does not compile.
    pub skipped: usize,
}

impl Blocklist {
    /// Compiles stored entries.
    pub fn compile(entries: &[StoredEntry]) -> Self {
        let mut b = Blocklist::default();
        for e in entries {
            let opts: Vec<&str> = e.options.split('|').collect();
            if !applies_to_new_accounts(&opts) {
                continue;
            }
            let flags = if e.case_sensitive == 0 {
                "(?is)"
            } else {
                "(?s)"
            };
            let source = format!("{flags}^(?:{})$", normalise_pattern(&e.pattern));
            match fancy_regex::RegexBuilder::new(&source)
                .backtrack_limit(BACKTRACK_LIMIT)
                .delegate_size_limit(1 << 20)
                .build()
            {
                Ok(regex) => {
                    let compiled = CompiledEntry {
                        regex,
                        pattern: e.pattern.clone(),
                        antispoof: opts.contains(&"antispoof"),
                    };
                    if e.kind == KIND_ALLOW {
                        b.allow.push(compiled);
                    } else {
                        b.block.push(compiled);
                    }
                }
                Err(_) => b.skipped += 1,
            }
        }
        b
    }

    /// What the list says of the account name `name`, matched as its user
    /// page title `User:<Name>`.
    pub fn check(&self, name: &str) -> Verdict<'_> {
        let title = user_page_title(name);
        let mut folded: Option<String> = None;
        let mut verdict = Verdict::default();
        let blocked = self
            .block
            .iter()
            .find(|e| entry_matches(e, name, &title, &mut folded, &mut verdict.gave_up));
        if let Some(entry) = blocked {
            match self
                .allow
                .iter()
                .find(|e| entry_matches(e, name, &title, &mut folded, &mut verdict.gave_up))
            {
                Some(allowed) => verdict.allowed_by = Some(allowed.pattern.as_str()),
                None => verdict.blocked_by = Some(entry.pattern.as_str()),
            }
        }
        verdict
    }

    /// The blacklist entry blocking the account name `name` (matched as its
    /// user page title, `User:<Name>`), if any and not whitelisted.
    pub fn matching(&self, name: &str) -> Option<&str> {
        self.check(name).blocked_by
    }

    /// How many blacklist entries are in force.
    pub fn len(&self) -> usize {
        self.block.len()
    }

    /// Whether no blacklist entry is in force.
    pub fn is_empty(&self) -> bool {
        self.block.is_empty()
    }

    /// How many whitelist entries are in force.
    pub fn allow_len(&self) -> usize {
        self.allow.len()
    }
}

/// How one source's fetch went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceOutcome {
    /// Every page was read: how many blacklist and whitelist lines they hold.
    Fetched {
        /// Lines of the blacklist pages.
        block: usize,
        /// Lines of the whitelist pages.
        allow: usize,
    },
    /// The fetch failed (the reason): nothing of this source changes.
    Failed(String),
}

/// One stored (or to-be-stored) line, as a sync names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlanLine {
    /// The source's name.
    pub origin: String,
    /// [`KIND_BLOCK`] or [`KIND_ALLOW`].
    pub kind: String,
    /// The regex.
    pub pattern: String,
    /// The options, `|`-separated.
    pub options: String,
}

impl PlanLine {
    fn of_stored(e: &StoredEntry) -> Self {
        PlanLine {
            origin: e.origin.clone(),
            kind: e.kind.clone(),
            pattern: e.pattern.clone(),
            options: e.options.clone(),
        }
    }

    fn of_new(e: &NewEntry) -> Self {
        PlanLine {
            origin: e.origin.clone(),
            kind: e.kind.clone(),
            pattern: e.pattern.clone(),
            options: e.options.clone(),
        }
    }
}

/// Control characters escaped, so a hostile page cannot drive the
/// operator's terminal.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

impl std::fmt::Display for PlanLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = if self.kind == KIND_ALLOW {
            "whitelist"
        } else {
            "blacklist"
        };
        write!(
            f,
            "{} {list}: {}",
            printable(&self.origin),
            printable(&self.pattern)
        )?;
        if !self.options.is_empty() {
            write!(f, " <{}>", printable(&self.options))?;
        }
        Ok(())
    }
}

/// Why a stored line stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeepReason {
    /// Its page lists it now: kept, its last-seen time refreshed.
    Listed,
    /// Its page no longer lists it, but it was seen within `stale_days`.
    NotYetStale,
    /// Its source is no longer configured, and it was seen within
    /// `stale_days`.
    Unconfigured,
    /// Its source's fetch failed: nothing of that source changes.
    FetchFailed,
}

impl KeepReason {
    fn describe(self) -> &'static str {
        match self {
            KeepReason::Listed => "listed",
            KeepReason::NotYetStale => "not listed any more; dropped once unseen for stale_days",
            KeepReason::Unconfigured => {
                "source no longer configured; dropped once unseen for stale_days"
            }
            KeepReason::FetchFailed => "its wiki could not be read",
        }
    }
}

/// What a sync does (or, with `check`, would do): exactly these rows are
/// added, refreshed, kept and dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Per configured source, in order: its outcome.
    pub sources: Vec<(String, SourceOutcome)>,
    /// Lines listed now and not stored: inserted.
    pub add: Vec<NewEntry>,
    /// Stored lines that stay, and why ([`KeepReason::Listed`] ones get
    /// their last-seen time refreshed).
    pub keep: Vec<(PlanLine, KeepReason)>,
    /// Stored lines deleted: unseen for `stale_days` on a wiki read now, or
    /// of a source no longer configured.
    pub drop: Vec<PlanLine>,
    /// Whether this was a check (nothing changed).
    pub checked: bool,
}

impl SyncReport {
    /// Whether some source failed.
    pub fn any_failed(&self) -> bool {
        self.sources
            .iter()
            .any(|(_, o)| matches!(o, SourceOutcome::Failed(_)))
    }

    /// The report as printed by `sync-username-block`: one line per source,
    /// then `add …`, `drop …`, `keep … (why)` per line, then the counts. A
    /// check prints the same lines as the run it stands for.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.checked {
            out.push_str("check: what a sync would do now; nothing is changed\n");
        }
        for (name, outcome) in &self.sources {
            match outcome {
                SourceOutcome::Fetched { block, allow } => out.push_str(&format!(
                    "{}: read, {block} blacklist and {allow} whitelist lines\n",
                    printable(name)
                )),
                SourceOutcome::Failed(e) => out.push_str(&format!(
                    "{}: FAILED, its entries kept: {}\n",
                    printable(name),
                    printable(e)
                )),
            }
        }
        for e in &self.add {
            out.push_str(&format!("add {}\n", PlanLine::of_new(e)));
        }
        for l in &self.drop {
            out.push_str(&format!("drop {l}\n"));
        }
        for (l, why) in &self.keep {
            out.push_str(&format!("keep {l} ({})\n", why.describe()));
        }
        out.push_str(&format!(
            "{} to add, {} to drop, {} kept{}\n",
            self.add.len(),
            self.drop.len(),
            self.keep.len(),
            if self.checked {
                " (check: nothing changed)"
            } else {
                ""
            }
        ));
        out
    }
}

/// Works out what a sync does, from what each source gave and what is
/// stored: lines listed and not stored are added; stored lines listed are
/// kept (refreshed); stored lines of a source read now but no longer listed,
/// and lines of sources no longer configured, are dropped once unseen for
/// `stale_days` and kept until then; a failed source's lines are all kept.
pub fn plan(
    settings: &BlocklistSettings,
    fetched: &[(String, Result<SourceLists, String>)],
    stored: &[StoredEntry],
    now: i64,
    check: bool,
) -> SyncReport {
    let cutoff = now - settings.stale_days * 86_400;
    let mut listed: BTreeMap<String, NewEntry> = BTreeMap::new();
    let mut report = SyncReport {
        checked: check,
        ..Default::default()
    };
    for (name, result) in fetched {
        match result {
            Ok(lists) => {
                for (kind, entries) in [(KIND_BLOCK, &lists.block), (KIND_ALLOW, &lists.allow)] {
                    for e in entries {
                        let row = NewEntry {
                            origin: name.clone(),
                            kind: kind.to_owned(),
                            pattern: e.pattern.clone(),
                            options: e.options.join("|"),
                            case_sensitive: e.case_sensitive(),
                        };
                        listed.insert(row.id(), row);
                    }
                }
                report.sources.push((
                    name.clone(),
                    SourceOutcome::Fetched {
                        block: lists.block.len(),
                        allow: lists.allow.len(),
                    },
                ));
            }
            Err(e) => report
                .sources
                .push((name.clone(), SourceOutcome::Failed(e.clone()))),
        }
    }
    let read_now: BTreeSet<&str> = fetched
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| n.as_str())
        .collect();
    let configured: BTreeSet<&str> = settings.sources.iter().map(|s| s.name.as_str()).collect();
    let mut stored_ids = BTreeSet::new();
    for e in stored {
        let id = e.id();
        let line = PlanLine::of_stored(e);
        let stale = e.last_seen < cutoff;
        if listed.contains_key(&id) {
            report.keep.push((line, KeepReason::Listed));
        } else if read_now.contains(e.origin.as_str()) {
            if stale {
                report.drop.push(line);
            } else {
                report.keep.push((line, KeepReason::NotYetStale));
            }
        } else if !configured.contains(e.origin.as_str()) {
            if stale {
                report.drop.push(line);
            } else {
                report.keep.push((line, KeepReason::Unconfigured));
            }
        } else {
            report.keep.push((line, KeepReason::FetchFailed));
        }
        stored_ids.insert(id);
    }
    report.add = listed
        .into_iter()
        .filter(|(id, _)| !stored_ids.contains(id))
        .map(|(_, e)| e)
        .collect();
    report.add.sort();
    report.drop.sort();
    report.keep.sort();
    report
}

/// Syncs every source; with `check`, changes nothing. Either way the report
/// is the plan (see [`plan`]), and a real run applies exactly it, in one
/// transaction. Refuses to run without `blocklist.contact`.
pub async fn sync(
    settings: &BlocklistSettings,
    store: &BlocklistStore,
    check: bool,
) -> Result<SyncReport, BlocklistError> {
    if !settings.sources.is_empty() && settings.full_user_agent().is_none() {
        return Err(BlocklistError::NoContact);
    }
    let seen = now();
    let mut fetched = Vec::new();
    for source in &settings.sources {
        match fetch_source(source, settings).await {
            Ok(lists) => {
                tracing::info!(source = %source.name, block = lists.block.len(),
                    allow = lists.allow.len(), "blocklist fetched");
                fetched.push((source.name.clone(), Ok(lists)));
            }
            Err(e) => {
                tracing::warn!(source = %source.name, error = %e, "blocklist fetch failed; keeping its entries");
                fetched.push((source.name.clone(), Err(e.to_string())));
            }
        }
    }
    let stored = store.all().await?;
    let report = plan(settings, &fetched, &stored, seen, check);
    if !check {
        let refresh: Vec<String> = report
            .keep
            .iter()
            .filter(|(_, why)| *why == KeepReason::Listed)
            .map(|(l, _)| plan_line_id(l))
            .collect();
        let drop: Vec<String> = report.drop.iter().map(plan_line_id).collect();
        store.apply(&report.add, &refresh, &drop, seen).await?;
    }
    Ok(report)
}

/// The row key of a planned line.
fn plan_line_id(l: &PlanLine) -> String {
    StoredEntry {
        origin: l.origin.clone(),
        kind: l.kind.clone(),
        pattern: l.pattern.clone(),
        options: l.options.clone(),
        case_sensitive: 0,
        last_seen: 0,
    }
    .id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(parse_line("  # comment"), None);
        assert_eq!(parse_line(""), None);
        let e = parse_line(".*badword.* <casesensitive | newaccountonly> # why").unwrap();
        assert_eq!(e.pattern, ".*badword.*");
        assert_eq!(e.options, vec!["casesensitive", "newaccountonly"]);
        assert!(e.case_sensitive());
        let e = parse_line("Foo[0-9]+").unwrap();
        assert!(e.options.is_empty());
        let all = parse_list_text(
            " #<!-- leave this line exactly as it is --> <pre>\r\nA.*\r\n\nB <moveonly>\n #</pre>",
        );
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].pattern, "A.*");
    }

    fn stored(p: &str, o: &str) -> StoredEntry {
        StoredEntry {
            origin: "t".into(),
            kind: KIND_BLOCK.into(),
            pattern: p.into(),
            options: o.into(),
            case_sensitive: i64::from(o.contains("casesensitive")),
            last_seen: 0,
        }
    }

    fn allowed(p: &str, o: &str) -> StoredEntry {
        StoredEntry {
            kind: KIND_ALLOW.into(),
            ..stored(p, o)
        }
    }

    #[test]
    fn matching_is_anchored_and_case_insensitive_by_default() {
        let b = Blocklist::compile(&[
            stored("User:admin", ""),
            stored("User:Root.*", "casesensitive"),
            stored("User:(", ""),
            stored("User:move", "moveonly"),
        ]);
        assert_eq!(b.skipped, 1);
        assert!(b.matching("ADMIN").is_some());
        assert!(b.matching("sysadmin").is_none());
        assert!(b.matching("Rootbeer").is_some());
        assert!(
            b.matching("rootbeer").is_some(),
            "User:Rootbeer, first letter upper"
        );
        assert!(b.matching("xRootbeer").is_none());
        assert!(b.matching("move").is_none());
    }

    #[test]
    fn the_title_is_the_user_page() {
        let b = Blocklist::compile(&[stored("User:Foo.*", ""), stored("Bar", "")]);
        assert_eq!(b.matching("Foo Bar"), Some("User:Foo.*"));
        assert!(
            b.matching("Bar").is_none(),
            "a page-title line never blocks accounts"
        );
        assert_eq!(user_page_title("foo_bar"), "User:Foo bar");
    }

    #[test]
    fn underscores_and_magic_words() {
        let b = Blocklist::compile(&[
            stored(".*Under_score.*", ""),
            stored("{{ns:user}}:Nsword.*", ""),
            stored("{{ns:2}}:Numbered", ""),
            stored("{{int:blocked-name}}", ""),
        ]);
        assert_eq!(b.skipped, 0);
        assert!(b.matching("Under score name").is_some());
        assert!(b.matching("Nswordfish").is_some());
        assert!(b.matching("Numbered").is_some());
        assert_eq!(expand_magic_words("{{ns:User_talk}}:x"), "User talk:x");
        assert_eq!(expand_magic_words("{{ns:nosuch}}"), "{{ns:nosuch}}");
    }

    #[test]
    fn pcre_dialect() {
        let b = Blocklist::compile(&[
            stored("User:X(.)\\1.*", "casesensitive"),
            stored("(?!User:Good).*bot", ""),
        ]);
        assert_eq!(b.skipped, 0);
        assert!(b.matching("Xbbc").is_some(), "back-reference");
        assert!(b.matching("Xbcd").is_none());
        assert!(b.matching("Spambot").is_some(), "look-ahead");
        assert!(b.matching("Goodbot").is_none());
        // In a case-insensitive entry a back-reference compares
        // case-insensitively, as PCRE's /i does: `A` then `aa` is a run of three.
        let b = Blocklist::compile(&[stored(r"User:(.)\1\1.*", "")]);
        assert!(b.matching("Aaabbot").is_some());
        assert!(b.matching("Abbot").is_none());
        assert!(b.matching("Aab").is_none());
    }

    #[test]
    fn a_runaway_entry_gives_up_and_is_reported() {
        // The back-reference puts the entry on fancy-regex's backtracking
        // engine; 41 `a`s split into runs of one or two is ~10^8 paths.
        let runaway = r"User:(?:(a)\1?)+b";
        let b = Blocklist::compile(&[stored(runaway, ""), stored("User:A.*x", "")]);
        let name = format!("{}x", "a".repeat(40));
        let v = b.check(&name);
        assert_eq!(v.gave_up, vec![runaway]);
        assert_eq!(v.blocked_by, Some("User:A.*x"), "later entries still judge");
        // A plain regex never gives up: the linear engine runs it.
        let plain = Blocklist::compile(&[stored("User:(a+)+b", "")]);
        assert!(plain.check(&name).gave_up.is_empty());
    }

    #[test]
    fn options_for_new_accounts() {
        let b = Blocklist::compile(&[
            stored("User:Moved", "moveonly"),
            stored("User:Noedit", "noedit"),
            stored("User:Reup", "reupload"),
            stored("User:Auto", "autoconfirmed"),
            stored("User:New", "newaccountonly"),
        ]);
        assert!(b.matching("Moved").is_none());
        for n in ["Noedit", "Reup", "Auto", "New"] {
            assert!(b.matching(n).is_some(), "{n}");
        }
    }

    #[test]
    fn antispoof_folds_look_alikes_of_the_whole_title() {
        assert_eq!(
            antispoof_form("User:Foo Bar"),
            antispoof_form("User:FOOBAR")
        );
        assert_eq!(
            antispoof_form("User:Wikipedia"),
            antispoof_form("User:W\u{456}k\u{456}p\u{435}dia"),
            "Cyrillic і and е"
        );
        assert_eq!(
            antispoof_form("User:Wikipedia"),
            antispoof_form("User:Wíkipédia")
        );
        assert_eq!(
            antispoof_form("User:Wikimedia"),
            antispoof_form("User:Wikirnedia")
        );
        assert_eq!(antispoof_form("User:Wiki"), antispoof_form("User:Ｗｉｋｉ"));
        let b = Blocklist::compile(&[
            stored(".*WIKIMEDIA.*", "newaccountonly|antispoof"),
            stored(".*Wikipedia.*", "newaccountonly"),
        ]);
        // Without antispoof only the letters as written match.
        assert!(b.matching("Wikipedia fan").is_some());
        assert!(b.matching("W\u{456}kipedia fan").is_none());
        // With antispoof, look-alikes, accents, spacing and punctuation fold.
        for n in [
            "Wikimedia",
            "Wiki media",
            "Wiki-media",
            "W\u{456}kimedia",
            "Wikirnedia",
            "Wíkimédia",
            "Ｗikimedia",
        ] {
            assert_eq!(b.matching(n), Some(".*WIKIMEDIA.*"), "{n}");
        }
        assert!(b.matching("Wikimania").is_none());
    }

    #[test]
    fn whitelist_lets_blacklisted_names_through() {
        let b = Blocklist::compile(&[
            stored("User:.*bot", ""),
            allowed("User:Goodbot", ""),
            allowed("User:Movebot", "moveonly"),
            allowed("USERGOODSPOOFBOT", "antispoof|casesensitive"),
        ]);
        assert_eq!(
            b.allow_len(),
            2,
            "moveonly whitelist lines never apply to accounts"
        );
        let v = b.check("Goodbot");
        assert_eq!(v.blocked_by, None);
        assert_eq!(v.allowed_by, Some("User:Goodbot"));
        assert_eq!(b.matching("Spambot"), Some("User:.*bot"));
        assert_eq!(b.matching("Movebot"), Some("User:.*bot"));
        // The folded title has no colon: `User:Good spoof bot` is `USERGOODSPOOFBOT`.
        assert_eq!(
            b.check("Good spoof bot").allowed_by,
            Some("USERGOODSPOOFBOT")
        );
        // Whitelist entries alone block nothing.
        let only = Blocklist::compile(&[allowed("User:.*", "")]);
        assert_eq!(only.matching("Anyone"), None);
        assert_eq!(only.check("Anyone").allowed_by, None);
    }

    #[test]
    fn revisions_response() {
        let json = serde_json::json!({"batchcomplete": true, "query": {
        "normalized": [{"fromencoded": false, "from": "Title_blacklist", "to": "Title blacklist"}],
        "pages": [
            {"pageid": 1, "ns": 0, "title": "Title blacklist", "revisions": [{"slots": {"main": {
                "contentmodel": "wikitext", "contentformat": "text/x-wiki",
                "content": "# c\n.*f&amp;o.* <casesensitive>\n<pre>x</pre>\n"}}}]},
            {"ns": 8, "title": "MediaWiki:Titlewhitelist", "missing": true},
            {"ns": 0, "title": "Gone", "missing": true}
        ]}});
        let body = json.to_string();
        let pages = vec![
            "Title_blacklist".to_owned(),
            "MediaWiki:Titlewhitelist".to_owned(),
        ];
        let got = parse_revisions_response(body.as_bytes(), "meta", "u", &pages).unwrap();
        let text = got["Title_blacklist"].as_deref().unwrap();
        let e = parse_list_text(text);
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].pattern, ".*f&amp;o.*",
            "raw wikitext: no HTML decoding"
        );
        assert!(e[0].case_sensitive());
        // As MediaWiki parses it: the trailing `</pre>` is read as options.
        assert_eq!(e[1].pattern, "<pre>x");
        assert_eq!(e[1].options, vec!["/pre"]);
        assert_eq!(got["MediaWiki:Titlewhitelist"], None);
        let err = parse_revisions_response(body.as_bytes(), "meta", "u", &["Gone".to_owned()])
            .unwrap_err();
        assert!(matches!(err, BlocklistError::MissingPage { .. }), "{err}");
        let err = parse_revisions_response(
            br#"{"error":{"code":"badvalue","info":"no"}}"#,
            "meta",
            "u",
            &pages,
        )
        .unwrap_err();
        assert!(err.to_string().contains("badvalue"), "{err}");
    }

    #[test]
    fn plan_names_what_changes() {
        let settings = BlocklistSettings {
            sources: vec![
                BlocklistSource {
                    name: "a".into(),
                    api_url: "http://x/api.php".into(),
                    pages: vec!["P".into()],
                    whitelist_pages: vec![],
                },
                BlocklistSource {
                    name: "b".into(),
                    api_url: "http://y/api.php".into(),
                    pages: vec!["P".into()],
                    whitelist_pages: vec![],
                },
            ],
            stale_days: 7,
            ..Default::default()
        };
        let now = 100 * 86_400;
        let old = now - 8 * 86_400;
        let row = |origin: &str, p: &str, seen: i64| StoredEntry {
            origin: origin.into(),
            last_seen: seen,
            ..stored(p, "")
        };
        let stored_rows = vec![
            row("a", "Listed.*", old),
            row("a", "Gone.*", old),
            row("a", "Recent.*", now - 86_400),
            row("b", "Failed.*", old),
            row("c", "Unconfigured.*", old),
        ];
        let fetched = vec![
            (
                "a".to_owned(),
                Ok(SourceLists {
                    block: parse_list_text("Listed.*\nNew.*\nNew.*"),
                    allow: parse_list_text("Fine"),
                }),
            ),
            ("b".to_owned(), Err("refused".to_owned())),
        ];
        let r = plan(&settings, &fetched, &stored_rows, now, true);
        let added: Vec<(&str, &str)> = r
            .add
            .iter()
            .map(|e| (e.kind.as_str(), e.pattern.as_str()))
            .collect();
        assert_eq!(added, vec![("allow", "Fine"), ("block", "New.*")]);
        let dropped: Vec<&str> = r.drop.iter().map(|l| l.pattern.as_str()).collect();
        assert_eq!(dropped, vec!["Gone.*", "Unconfigured.*"]);
        let kept: Vec<(&str, KeepReason)> = r
            .keep
            .iter()
            .map(|(l, why)| (l.pattern.as_str(), *why))
            .collect();
        assert_eq!(
            kept,
            vec![
                ("Listed.*", KeepReason::Listed),
                ("Recent.*", KeepReason::NotYetStale),
                ("Failed.*", KeepReason::FetchFailed),
            ]
        );
        let text = r.render();
        assert!(text.contains("add a blacklist: New.*\n"), "{text}");
        assert!(text.contains("add a whitelist: Fine\n"), "{text}");
        assert!(
            text.contains("drop c blacklist: Unconfigured.*\n"),
            "{text}"
        );
        assert!(
            text.contains("keep a blacklist: Listed.* (listed)\n"),
            "{text}"
        );
        assert!(
            text.contains("2 to add, 2 to drop, 3 kept (check: nothing changed)"),
            "{text}"
        );
        // A hostile line cannot drive the terminal.
        let evil = plan(
            &settings,
            &[(
                "a".to_owned(),
                Ok(SourceLists {
                    block: vec![Entry {
                        pattern: "x\u{1b}[2J".into(),
                        options: vec![],
                    }],
                    allow: vec![],
                }),
            )],
            &[],
            now,
            false,
        );
        assert!(!evil.render().contains('\u{1b}'));
    }
}
