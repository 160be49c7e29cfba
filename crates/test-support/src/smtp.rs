//! An SMTP server that keeps every message it is sent.
//!
//! The identity app sends activation and password-reset mail through an SMTP relay; its tests
//! need to read those messages (the link in the body, the subject, the recipient), and the
//! local demo needs somewhere harmless for them to go. This module is a small but real SMTP
//! server — the RFC 5321 subset a submission client uses: `EHLO`/`HELO`, `MAIL FROM`,
//! `RCPT TO`, `DATA` (with dot-unstuffing), `RSET`, `NOOP`, `VRFY`, `HELP`, `QUIT`; no
//! authentication, no TLS — that delivers each message to a callback:
//!
//! * [`SmtpSink`] collects [`CapturedMail`]s in memory for a test, which reads them with
//!   [`SmtpSink::messages`] or [`SmtpSink::wait_for`];
//! * [`serve`] is the server loop itself, which the `forge-smtp-sink` binary uses to write each
//!   message to a file.
//!
//! [`CapturedMail`] parses the message with `mail-parser` (MIME, quoted-printable, base64,
//! RFC 2047 encoded words), so tests compare decoded text.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::{Result, TestSupportError};

/// The largest message accepted, advertised with `SIZE`.
pub const MAX_MESSAGE_BYTES: usize = 50 * 1024 * 1024;
/// The longest command line accepted (RFC 5321 allows 512 octets, plus extensions).
const MAX_COMMAND_BYTES: u64 = 4096;
/// How long a client may stay silent before the session is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// One message as it was received: the envelope and the raw content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedMail {
    /// The envelope sender (`MAIL FROM`), without angle brackets; empty for the null sender.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in order, without angle brackets.
    pub recipients: Vec<String>,
    /// The message (headers and body) after dot-unstuffing, line endings as sent.
    pub data: Vec<u8>,
}

impl CapturedMail {
    /// Parses the message; `None` only if it has no headers at all.
    fn parsed(&self) -> Option<mail_parser::Message<'_>> {
        mail_parser::MessageParser::default().parse(&self.data)
    }

    /// The decoded `Subject`.
    pub fn subject(&self) -> Option<String> {
        self.parsed()?.subject().map(str::to_owned)
    }

    /// The decoded value of the first header called `name` (case-insensitive). Address
    /// headers come back as `Name <address>, …`; other structured headers as sent.
    pub fn header(&self, name: &str) -> Option<String> {
        use mail_parser::HeaderValue;

        let message = self.parsed()?;
        let value = message.header(name)?;
        Some(match value {
            HeaderValue::Text(text) => text.to_string(),
            HeaderValue::TextList(list) => list.join(", "),
            HeaderValue::Address(address) => address
                .iter()
                .map(|addr| match (addr.name(), addr.address()) {
                    (Some(name), Some(address)) => format!("{name} <{address}>"),
                    (None, Some(address)) => address.to_owned(),
                    (Some(name), None) => name.to_owned(),
                    (None, None) => String::new(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            _ => unfold(message.header_raw(name)?),
        })
    }

    /// The first text part, decoded (quoted-printable, base64, charset); for an HTML-only
    /// message, its text.
    pub fn text_body(&self) -> Option<String> {
        self.parsed()?.body_text(0).map(|body| body.into_owned())
    }

    /// The first HTML part, decoded; for a text-only message, the text as HTML.
    pub fn html_body(&self) -> Option<String> {
        self.parsed()?.body_html(0).map(|body| body.into_owned())
    }

    /// The raw message as text (lossy for non-UTF-8 bytes).
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// A raw header value without its folding and surrounding blanks.
fn unfold(raw: &str) -> String {
    raw.split(['\r', '\n'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What [`serve`] does with each received message: keep it somewhere and return a queue id
/// for the `250` reply, or fail (the client then gets a `451`, a temporary failure).
pub type Deliver = Arc<dyn Fn(CapturedMail) -> io::Result<String> + Send + Sync>;

/// Accepts SMTP sessions on `listener` forever, each on a task of its own, announcing itself
/// as `hostname` and handing every message to `deliver`. Dropping (aborting) the returned
/// future ends all sessions.
pub async fn serve(listener: TcpListener, hostname: String, deliver: Deliver) {
    let hostname: Arc<str> = hostname.into();
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, peer)) = accepted {
                    let (hostname, deliver) = (Arc::clone(&hostname), Arc::clone(&deliver));
                    sessions.spawn(async move {
                        if let Err(error) = session(stream, &hostname, &deliver).await {
                            tracing::debug!(%peer, %error, "SMTP session ended with an error");
                        }
                    });
                }
            }
            // Reap finished sessions so the set does not grow without bound.
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// Extracts the address from `FROM:<a@b> PARAMS` / `TO:<a@b>` after the given keyword.
fn parse_path(argument: &str, keyword: &str) -> Option<String> {
    let head = argument.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = argument[keyword.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        Some(inner[..end].to_owned())
    } else {
        rest.split_whitespace().next().map(str::to_owned)
    }
}

/// Reads one line (up to and including `\n`), at most `limit` bytes; `Ok(0)` at EOF.
async fn read_line<R>(reader: &mut R, buf: &mut Vec<u8>, limit: u64) -> io::Result<usize>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    buf.clear();
    match tokio::time::timeout(IDLE_TIMEOUT, reader.take(limit).read_until(b'\n', buf)).await {
        Ok(read) => read,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "client idle")),
    }
}

/// One SMTP session.
async fn session(stream: TcpStream, hostname: &str, deliver: &Deliver) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    let mut from: Option<String> = None;
    let mut recipients: Vec<String> = Vec::new();

    write
        .write_all(format!("220 {hostname} ESMTP forge-smtp-sink\r\n").as_bytes())
        .await?;
    loop {
        if read_line(&mut reader, &mut line, MAX_COMMAND_BYTES).await? == 0 {
            return Ok(());
        }
        if !line.ends_with(b"\n") {
            write.write_all(b"500 5.5.2 Line too long\r\n").await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, argument) = text.split_once(' ').unwrap_or((text, ""));
        let reply: String = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                from = None;
                recipients.clear();
                format!(
                    "250-{hostname} greets {argument}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
                     250-SIZE {MAX_MESSAGE_BYTES}\r\n250 HELP\r\n"
                )
            }
            "HELO" => {
                from = None;
                recipients.clear();
                format!("250 {hostname}\r\n")
            }
            "MAIL" => match parse_path(argument, "FROM:") {
                Some(sender) => {
                    from = Some(sender);
                    recipients.clear();
                    "250 2.1.0 OK\r\n".to_owned()
                }
                None => "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".to_owned(),
            },
            "RCPT" => match (&from, parse_path(argument, "TO:")) {
                (None, _) => "503 5.5.1 MAIL first\r\n".to_owned(),
                (Some(_), Some(recipient)) if !recipient.is_empty() => {
                    recipients.push(recipient);
                    "250 2.1.5 OK\r\n".to_owned()
                }
                (Some(_), _) => "501 5.5.4 Syntax: RCPT TO:<address>\r\n".to_owned(),
            },
            "DATA" => {
                if from.is_none() || recipients.is_empty() {
                    "503 5.5.1 RCPT first\r\n".to_owned()
                } else {
                    write
                        .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let data = read_data(&mut reader).await?;
                    let mail = CapturedMail {
                        from: from.take().unwrap_or_default(),
                        recipients: std::mem::take(&mut recipients),
                        data: data.unwrap_or_default(),
                    };
                    match data_outcome(mail, deliver) {
                        Ok(id) => format!("250 2.0.0 OK: queued as {id}\r\n"),
                        Err(reply) => reply,
                    }
                }
            }
            "RSET" => {
                from = None;
                recipients.clear();
                "250 2.0.0 OK\r\n".to_owned()
            }
            "NOOP" => "250 2.0.0 OK\r\n".to_owned(),
            "VRFY" => "252 2.1.5 Cannot VRFY user, but will accept message\r\n".to_owned(),
            "HELP" => "214 2.0.0 EHLO HELO MAIL RCPT DATA RSET NOOP VRFY QUIT\r\n".to_owned(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            "STARTTLS" | "AUTH" | "BDAT" | "ETRN" | "EXPN" | "TURN" => {
                "502 5.5.1 Command not implemented\r\n".to_owned()
            }
            _ => "500 5.5.2 Command unrecognized\r\n".to_owned(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// Delivers a complete message; an empty `data` means it was too large.
fn data_outcome(mail: CapturedMail, deliver: &Deliver) -> std::result::Result<String, String> {
    if mail.data.is_empty() {
        return Err("552 5.3.4 Message too big or empty\r\n".to_owned());
    }
    deliver(mail).map_err(|error| format!("451 4.3.0 Cannot store message: {error}\r\n"))
}

/// Reads the message after `DATA` up to the lone `.` line, undoing dot-stuffing. Returns
/// `None` when it exceeded [`MAX_MESSAGE_BYTES`] (the rest is read and discarded).
async fn read_data<R>(reader: &mut R) -> io::Result<Option<Vec<u8>>>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut data = Vec::new();
    let mut line = Vec::new();
    let mut too_big = false;
    loop {
        if read_line(reader, &mut line, u64::MAX).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during DATA",
            ));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(if too_big { None } else { Some(data) });
        }
        let content = line.strip_prefix(b".").unwrap_or(&line);
        if data.len() + content.len() > MAX_MESSAGE_BYTES {
            too_big = true;
            data.clear();
        }
        if !too_big {
            data.extend_from_slice(content);
        }
    }
}

/// The messages a [`SmtpSink`] received, and a count to wait on.
#[derive(Debug)]
struct Mailbox {
    /// Received messages, in order.
    messages: Mutex<Vec<CapturedMail>>,
    /// The number of messages received.
    count: watch::Sender<usize>,
}

/// An SMTP server on a free loopback port that keeps every message in memory; stops when
/// dropped. Needs a tokio runtime.
#[derive(Debug)]
pub struct SmtpSink {
    /// Where it listens.
    addr: SocketAddr,
    /// What it received.
    mailbox: Arc<Mailbox>,
    /// The server task, aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    /// Starts the server on 127.0.0.1 and an unused port.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::Io`] when no port can be bound.
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| TestSupportError::io("binding the SMTP sink", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TestSupportError::io("reading the SMTP sink's address", e))?;
        let mailbox = Arc::new(Mailbox {
            messages: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
        });
        let sink = Arc::clone(&mailbox);
        let deliver: Deliver = Arc::new(move |mail| {
            let mut messages = sink
                .messages
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            messages.push(mail);
            let count = messages.len();
            sink.count.send_replace(count);
            Ok(count.to_string())
        });
        let task = tokio::spawn(serve(listener, "forge-smtp-sink.test".to_owned(), deliver));
        Ok(Self {
            addr,
            mailbox,
            task,
        })
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// All messages received so far, oldest first.
    pub fn messages(&self) -> Vec<CapturedMail> {
        self.mailbox
            .messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `n` messages have been received and returns all of them.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::Timeout`] when fewer than `n` arrived within `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<CapturedMail>> {
        let mut count = self.mailbox.count.subscribe();
        match tokio::time::timeout(timeout, count.wait_for(|count| *count >= n)).await {
            Ok(Ok(_)) => Ok(self.messages()),
            _ => Err(TestSupportError::Timeout {
                what: format!("{n} messages (got {})", self.messages().len()),
                timeout,
            }),
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_parsed() {
        assert_eq!(
            parse_path("FROM:<a@example.org> BODY=8BITMIME", "FROM:").as_deref(),
            Some("a@example.org")
        );
        assert_eq!(parse_path("from: <>", "FROM:").as_deref(), Some(""));
        assert_eq!(
            parse_path("TO:b@example.org", "TO:").as_deref(),
            Some("b@example.org")
        );
        assert_eq!(parse_path("<b@example.org>", "TO:"), None);
    }

    #[tokio::test]
    async fn dot_unstuffing_and_end_of_data() {
        let input: &[u8] = b"Subject: x\r\n\r\n..leading dot\r\nplain\r\n.\r\nNOOP\r\n";
        let mut reader = BufReader::new(input);
        let data = read_data(&mut reader).await.unwrap().unwrap();
        assert_eq!(data, b"Subject: x\r\n\r\n.leading dot\r\nplain\r\n");
    }

    #[test]
    fn decodes_multipart_quoted_printable_and_base64() {
        let data = b"From: Forge <noreply@example.org>\r\n\
            To: a@example.org, \"B\" <b@example.org>\r\n\
            Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\
            MIME-Version: 1.0\r\n\
            Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
            \r\n\
            --b1\r\n\
            Content-Type: text/plain; charset=utf-8\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\
            \r\n\
            Hall=C3=B6 =\r\n\
            Welt\r\n\
            --b1\r\n\
            Content-Type: text/html; charset=utf-8\r\n\
            Content-Transfer-Encoding: base64\r\n\
            \r\n\
            PHA+SGFsbMO2PC9wPg==\r\n\
            --b1--\r\n";
        let mail = CapturedMail {
            from: "noreply@example.org".to_owned(),
            recipients: vec!["a@example.org".to_owned()],
            data: data.to_vec(),
        };
        assert_eq!(mail.subject().as_deref(), Some("Grüße"));
        assert_eq!(
            mail.header("to").as_deref(),
            Some("a@example.org, B <b@example.org>")
        );
        assert_eq!(mail.header("MIME-Version").as_deref(), Some("1.0"));
        assert_eq!(mail.text_body().as_deref(), Some("Hallö Welt"));
        assert_eq!(mail.html_body().as_deref(), Some("<p>Hallö</p>"));
        assert_eq!(mail.header("X-Missing"), None);
    }
}
