//! The registration wire protocol: reading one request, writing one reply.
//!
//! Byte-compatible with today's daemon (see `docs/proxylistener.md`):
//!
//! ```text
//! register\n<route>\n<url>\n            → ok
//! registerCanonical\n<route>\n<url>\n   → ok
//! unregister\n<route>\n                 → ok
//! ```
//!
//! Lines end in `\n` or `\r\n` (or at the client's half-close); the reply is
//! exactly one line, `ok` or `fail: <reason>`, with no line end, after which
//! the server closes the connection (so `recv() == "ok"` clients keep
//! working). Lines are bounded by `limits.max_line_bytes` and the whole
//! request by `limits.request_timeout_ms`.

use std::fmt;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// A request's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `register`: `HSET prefix:<tool> <route> <url>`.
    Register,
    /// `registerCanonical`: `register` plus `HSET redirect:<tool> <route> <tool>.<domain>`.
    RegisterCanonical,
    /// `unregister`: remove the route if it still points at the client.
    Unregister,
}

impl Command {
    /// The command as spelled on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Register => "register",
            Command::RegisterCanonical => "registerCanonical",
            Command::Unregister => "unregister",
        }
    }

    fn parse(line: &str) -> Option<Self> {
        match line {
            "register" => Some(Command::Register),
            "registerCanonical" => Some(Command::RegisterCanonical),
            "unregister" => Some(Command::Unregister),
            _ => None,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request as read off the wire (not yet validated beyond its shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    /// The command.
    pub command: Command,
    /// The route pattern line.
    pub route: String,
    /// The backend URL line (`register*` only).
    pub url: Option<String>,
}

/// Why a request could not be read. Each becomes one `fail: <reason>` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The client closed (or half-closed) before sending anything.
    #[error("empty request")]
    Empty,
    /// The first line is no command we know.
    #[error("unknown command {0:?}; expected register, registerCanonical or unregister")]
    UnknownCommand(String),
    /// A line is longer than the limit.
    #[error("the {what} line is longer than {limit} bytes")]
    LineTooLong {
        /// Which line.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The client closed before sending a line the command needs.
    #[error("missing {what} line: the connection was closed before it")]
    MissingLine {
        /// Which line.
        what: &'static str,
    },
    /// The client was too slow.
    #[error("timed out waiting for the {what} line")]
    Timeout {
        /// Which line.
        what: &'static str,
    },
    /// A line is not UTF-8 text.
    #[error("the {what} line is not UTF-8 text")]
    NotUtf8 {
        /// Which line.
        what: &'static str,
    },
    /// A line contains a control character (CR inside the line, ESC, …):
    /// such text would forge log lines or terminal output wherever it is
    /// shown.
    #[error("the {what} line contains the control character U+{code:04X}")]
    ControlChar {
        /// Which line.
        what: &'static str,
        /// The character's code point.
        code: u32,
    },
    /// Reading failed (connection reset…).
    #[error("connection error while reading the {what} line: {reason}")]
    Io {
        /// Which line.
        what: &'static str,
        /// The I/O error.
        reason: String,
    },
}

impl ReadError {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            ReadError::Empty => "empty",
            ReadError::UnknownCommand(_) => "unknown_command",
            ReadError::LineTooLong { .. } => "line_too_long",
            ReadError::MissingLine { .. } => "missing_line",
            ReadError::Timeout { .. } => "timeout",
            ReadError::NotUtf8 { .. } => "not_utf8",
            ReadError::ControlChar { .. } => "control_char",
            ReadError::Io { .. } => "io",
        }
    }
}

enum Line {
    Text(String),
    Eof,
}

/// Reads one line ending in `\n`, `\r\n` or EOF (a partial last line counts),
/// refusing lines over `limit` bytes without buffering them.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: usize,
    what: &'static str,
) -> Result<Line, ReadError> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let available = reader.fill_buf().await.map_err(|e| ReadError::Io {
            what,
            reason: e.to_string(),
        })?;
        if available.is_empty() {
            if buf.is_empty() {
                return Ok(Line::Eof);
            }
            break;
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if buf.len() + i > limit + 1 {
                    return Err(ReadError::LineTooLong { what, limit });
                }
                buf.extend_from_slice(&available[..i]);
                reader.consume(i + 1);
                break;
            }
            None => {
                let n = available.len();
                buf.extend_from_slice(available);
                reader.consume(n);
                // +1: a '\r' may still be followed by its '\n'.
                if buf.len() > limit + 1 {
                    return Err(ReadError::LineTooLong { what, limit });
                }
            }
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if buf.len() > limit {
        return Err(ReadError::LineTooLong { what, limit });
    }
    let text = String::from_utf8(buf).map_err(|_| ReadError::NotUtf8 { what })?;
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(ReadError::ControlChar {
            what,
            code: u32::from(c),
        });
    }
    Ok(Line::Text(text))
}

/// Reads one request. The caller bounds the whole call with its timeout;
/// `on_timeout` names the line being waited for then (see [`RequestReader`]).
#[derive(Debug, Default)]
pub struct RequestReader {
    /// The line currently awaited, for timeout messages.
    pub waiting_for: &'static str,
}

impl RequestReader {
    /// Reads `command`, `route` and (for registrations) `url` lines.
    pub async fn read<R: AsyncBufRead + Unpin>(
        &mut self,
        reader: &mut R,
        limit: usize,
    ) -> Result<RawRequest, ReadError> {
        self.waiting_for = "command";
        let command = match read_line(reader, limit, "command").await? {
            Line::Eof => return Err(ReadError::Empty),
            Line::Text(t) => match Command::parse(&t) {
                Some(c) => c,
                None => return Err(ReadError::UnknownCommand(t.chars().take(40).collect())),
            },
        };
        self.waiting_for = "route";
        let route = match read_line(reader, limit, "route").await? {
            Line::Eof => return Err(ReadError::MissingLine { what: "route" }),
            Line::Text(t) => t,
        };
        let url = if command == Command::Unregister {
            None
        } else {
            self.waiting_for = "url";
            match read_line(reader, limit, "url").await? {
                Line::Eof => return Err(ReadError::MissingLine { what: "url" }),
                Line::Text(t) => Some(t),
            }
        };
        Ok(RawRequest {
            command,
            route,
            url,
        })
    }
}

/// The one reply line of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The request was carried out (and confirmed by Redis).
    Ok,
    /// The request was refused or failed; nothing was written.
    Fail(String),
}

impl Reply {
    /// The bytes sent: `ok` or `fail: <reason>`, one line without line end;
    /// line breaks in a reason are flattened.
    pub fn to_wire(&self) -> Vec<u8> {
        match self {
            Reply::Ok => b"ok".to_vec(),
            Reply::Fail(reason) => {
                let flat: String = reason
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                format!("fail: {flat}").into_bytes()
            }
        }
    }

    /// Parses a reply as a client reads it (trailing whitespace ignored).
    pub fn parse(raw: &[u8]) -> Option<Reply> {
        let text = std::str::from_utf8(raw).ok()?.trim_end();
        if text == "ok" {
            Some(Reply::Ok)
        } else {
            text.strip_prefix("fail")
                .map(|r| Reply::Fail(r.trim_start_matches(':').trim().to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(input: &[u8], limit: usize) -> Result<RawRequest, ReadError> {
        let mut r = tokio::io::BufReader::with_capacity(16, input);
        RequestReader::default().read(&mut r, limit).await
    }

    #[tokio::test]
    async fn reads_requests_with_either_line_end() {
        let r = read(b"register\n.*\nhttp://127.0.0.1:5000\n", 100)
            .await
            .unwrap();
        assert_eq!(r.command, Command::Register);
        assert_eq!(r.route, ".*");
        assert_eq!(r.url.as_deref(), Some("http://127.0.0.1:5000"));
        let r = read(b"registerCanonical\r\n.*\r\nhttp://h:1\r\n", 100)
            .await
            .unwrap();
        assert_eq!(r.command, Command::RegisterCanonical);
        assert_eq!(r.url.as_deref(), Some("http://h:1"));
        let r = read(b"unregister\n.*", 100).await.unwrap();
        assert_eq!(r.command, Command::Unregister);
        assert_eq!(r.route, ".*");
    }

    #[tokio::test]
    async fn bad_shapes_are_named() {
        assert_eq!(read(b"", 100).await, Err(ReadError::Empty));
        assert!(matches!(
            read(b"hello\n", 100).await,
            Err(ReadError::UnknownCommand(c)) if c == "hello"
        ));
        assert_eq!(
            read(b"register\n.*\n", 100).await,
            Err(ReadError::MissingLine { what: "url" })
        );
        assert_eq!(
            read(b"unregister\n", 100).await,
            Err(ReadError::MissingLine { what: "route" })
        );
        let long = format!("register\n{}\nhttp://h:1\n", "a".repeat(200));
        assert_eq!(
            read(long.as_bytes(), 100).await,
            Err(ReadError::LineTooLong {
                what: "route",
                limit: 100
            })
        );
        let exact = format!("register\n{}\r\nhttp://h:1\n", "a".repeat(100));
        assert!(read(exact.as_bytes(), 100).await.is_ok());
        assert_eq!(
            read(b"register\n\xff\xfe\n", 100).await,
            Err(ReadError::NotUtf8 { what: "route" })
        );
        assert_eq!(
            read(b"register\n.*\x1b[2J\nhttp://h:1\n", 100).await,
            Err(ReadError::ControlChar {
                what: "route",
                code: 0x1b
            })
        );
        assert_eq!(
            read(b"register\n.*\nhttp://h:1\rFAKE\n", 100).await,
            Err(ReadError::ControlChar {
                what: "url",
                code: 0x0d
            })
        );
    }

    #[test]
    fn replies_are_one_line() {
        assert_eq!(Reply::Ok.to_wire(), b"ok");
        assert_eq!(Reply::Fail("a\nb".into()).to_wire(), b"fail: a b".to_vec());
        assert_eq!(Reply::parse(b"ok\n"), Some(Reply::Ok));
        assert_eq!(Reply::parse(b"fail: x"), Some(Reply::Fail("x".into())));
        assert_eq!(Reply::parse(b"fail"), Some(Reply::Fail(String::new())));
        assert_eq!(Reply::parse(b""), None);
        assert_eq!(Reply::parse(b"okok"), None);
    }
}
