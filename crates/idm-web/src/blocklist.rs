//! The username blocklist: MediaWiki's `Titleblacklist` format, its sync, and
//! matching as MediaWiki does it.
//!
//! * [`parse_api_response`] takes the JSON of `action=parse&prop=text&
//!   format=json&formatversion=2`, finds the `<pre>` blocks of the rendered
//!   page, un-escapes their HTML, and keeps each line's regex and options:
//!   `#` starts a comment, the options are the trailing `<a|b|c>` part.
//! * [`Blocklist`] is the compiled matcher: `^(?:re)$`, case-insensitive
//!   unless the entry says `casesensitive`, `.` matching newlines (MediaWiki's
//!   `/us`). Entries meant only for page moves (`moveonly`) or uploads
//!   (`reupload`) never block usernames. Entries whose regex our (linear-time)
//!   engine does not support are skipped and counted.
//! * [`sync`] fetches every configured wiki with a timeout and a User-Agent,
//!   stores what it found with origin and last-seen, and drops entries unseen
//!   for `stale_days`. A failed fetch changes nothing for that wiki (not
//!   even the dropping of its stale entries).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use regex::{Regex, RegexBuilder};

use crate::config::BlocklistSettings;
use crate::db::now;
use crate::store::BlocklistStore;
use crate::store::blocklist::StoredEntry;

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

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BlocklistError {
    /// The HTTP fetch failed.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The response is not a parse result.
    #[error("unexpected API response: {0}")]
    Format(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';').filter(|e| *e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let ent = &rest[1..end];
        let decoded = match ent {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ if ent.starts_with("#x") || ent.starts_with("#X") => {
                u32::from_str_radix(&ent[2..], 16)
                    .ok()
                    .and_then(char::from_u32)
            }
            _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
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

/// The entries of a MediaWiki API parse response (formatversion 2).
pub fn parse_api_response(json: &[u8]) -> Result<Vec<Entry>, BlocklistError> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| BlocklistError::Format(e.to_string()))?;
    if let Some(err) = v.get("error") {
        return Err(BlocklistError::Format(format!("API error: {err}")));
    }
    let html = v
        .pointer("/parse/text")
        .and_then(|t| t.as_str().or_else(|| t.get("*").and_then(|s| s.as_str())))
        .ok_or_else(|| BlocklistError::Format("no parse.text in response".into()))?;
    let mut entries = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<pre") {
        let after = &rest[start..];
        let Some(open_end) = after.find('>') else {
            break;
        };
        let body = &after[open_end + 1..];
        let Some(close) = body.find("</pre>") else {
            break;
        };
        for line in html_unescape(&body[..close]).lines() {
            if let Some(e) = parse_line(line) {
                entries.push(e);
            }
        }
        rest = &body[close + 6..];
    }
    Ok(entries)
}

/// The compiled matcher.
#[derive(Debug, Default)]
pub struct Blocklist {
    regexes: Vec<(Regex, String)>,
    /// Entries skipped because their regex is unsupported.
    pub skipped: usize,
}

impl Blocklist {
    /// Compiles stored entries.
    pub fn compile(entries: &[StoredEntry]) -> Self {
        let mut b = Blocklist::default();
        for e in entries {
            let opts: Vec<&str> = e.options.split('|').collect();
            if opts.iter().any(|o| *o == "moveonly" || *o == "reupload") {
                continue;
            }
            match RegexBuilder::new(&format!("^(?:{})$", e.pattern))
                .case_insensitive(e.case_sensitive == 0)
                .dot_matches_new_line(true)
                .size_limit(1 << 20)
                .build()
            {
                Ok(r) => b.regexes.push((r, e.pattern.clone())),
                Err(_) => b.skipped += 1,
            }
        }
        b
    }

    /// The first entry matching `name`, if any.
    pub fn matching(&self, name: &str) -> Option<&str> {
        self.regexes
            .iter()
            .find(|(r, _)| r.is_match(name))
            .map(|(_, p)| p.as_str())
    }

    /// How many entries are in force.
    pub fn len(&self) -> usize {
        self.regexes.len()
    }

    /// Whether no entry is in force.
    pub fn is_empty(&self) -> bool {
        self.regexes.is_empty()
    }
}

/// Fetches the page from one wiki's API.
pub async fn fetch(
    api_url: &str,
    settings: &BlocklistSettings,
) -> Result<Vec<Entry>, BlocklistError> {
    let mut url = url::Url::parse(api_url).map_err(|e| BlocklistError::Fetch {
        url: api_url.into(),
        reason: e.to_string(),
    })?;
    url.query_pairs_mut()
        .append_pair("action", "parse")
        .append_pair("page", &settings.page)
        .append_pair("prop", "text")
        .append_pair("format", "json")
        .append_pair("formatversion", "2");
    let fail = |reason: String| BlocklistError::Fetch {
        url: url.to_string(),
        reason,
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = http::Request::get(url.as_str())
        .header(http::header::USER_AGENT, &settings.user_agent)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| fail(e.to_string()))?;
    let timeout = Duration::from_secs(settings.timeout_seconds.max(1));
    let body = tokio::time::timeout(timeout, async {
        let resp = client.request(req).await.map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(body.to_bytes())
    })
    .await
    .map_err(|_| fail(format!("timed out after {timeout:?}")))??;
    parse_api_response(&body)
}

/// What a sync did (or would do, with `check`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Per source: (name, entries found) or the error.
    pub sources: Vec<(String, Result<usize, String>)>,
    /// Entries dropped (or to drop) as stale.
    pub dropped: Vec<(String, String)>,
}

/// Syncs every source; with `check`, changes nothing and reports.
pub async fn sync(
    settings: &BlocklistSettings,
    store: &BlocklistStore,
    check: bool,
) -> Result<SyncReport, BlocklistError> {
    let mut report = SyncReport::default();
    let seen = now();
    for source in &settings.sources {
        match fetch(&source.api_url, settings).await {
            Ok(entries) => {
                let rows: Vec<(String, String, bool)> = entries
                    .iter()
                    .map(|e| (e.pattern.clone(), e.options.join("|"), e.case_sensitive()))
                    .collect();
                if !check {
                    store.upsert(&source.name, &rows, seen).await?;
                }
                tracing::info!(source = %source.name, entries = rows.len(), "blocklist fetched");
                report.sources.push((source.name.clone(), Ok(rows.len())));
            }
            Err(e) => {
                tracing::warn!(source = %source.name, error = %e, "blocklist fetch failed; keeping its entries");
                report
                    .sources
                    .push((source.name.clone(), Err(e.to_string())));
            }
        }
    }
    // Stale entries are dropped only for wikis fetched now (a failed fetch
    // changes nothing) and for wikis no longer configured.
    let cutoff = seen - settings.stale_days * 86_400;
    let failed: Vec<&str> = report
        .sources
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| n.as_str())
        .collect();
    let stale: Vec<StoredEntry> = store
        .stale(cutoff)
        .await?
        .into_iter()
        .filter(|e| !failed.contains(&e.origin.as_str()))
        .collect();
    if !check {
        let mut origins: Vec<&str> = stale.iter().map(|e| e.origin.as_str()).collect();
        origins.dedup();
        for origin in origins {
            store.delete_stale(origin, cutoff).await?;
        }
    }
    report.dropped = stale.into_iter().map(|e| (e.origin, e.pattern)).collect();
    Ok(report)
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
    }

    #[test]
    fn matching_is_anchored_and_case_insensitive_by_default() {
        let stored = |p: &str, o: &str| StoredEntry {
            origin: "t".into(),
            pattern: p.into(),
            options: o.into(),
            case_sensitive: i64::from(o.contains("casesensitive")),
            last_seen: 0,
        };
        let b = Blocklist::compile(&[
            stored("admin", ""),
            stored("Root.*", "casesensitive"),
            stored("(?<=x)y", ""),
            stored("move", "moveonly"),
        ]);
        assert_eq!(b.skipped, 1);
        assert!(b.matching("ADMIN").is_some());
        assert!(b.matching("sysadmin").is_none());
        assert!(b.matching("Rootbeer").is_some());
        assert!(b.matching("rootbeer").is_none());
        assert!(b.matching("move").is_none());
    }

    #[test]
    fn api_response() {
        let json = serde_json::json!({"parse": {"title": "MediaWiki:Titleblacklist", "pageid": 1,
            "text": "<div class=\"mw-parser-output\"><p>intro</p><pre># c\n.*f&amp;o.* &lt;casesensitive&gt;\n\nbar\n</pre></div>"}});
        let e = parse_api_response(json.to_string().as_bytes()).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].pattern, ".*f&o.*");
        assert!(e[0].case_sensitive());
    }
}
