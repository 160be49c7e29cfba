//! RFC 1413 ident look-ups: who owns the client's end of a connection.
//!
//! proxylistener connects back to the client's host (its identd port), sends
//! `<client-port> , <our-port>\r\n` and expects
//! `<client-port> , <our-port> : USERID : <opsys> : <user>\r\n`. Both the
//! connect and the answer are bounded by timeouts, the reply is bounded in
//! length and parsed strictly — the port pair must be the one asked about —
//! and the user must be a tool account `<project>.<tool>`.

use std::net::SocketAddr;
use std::time::Duration;

use forge_core::ToolName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest ident reply accepted (RFC 1413 bounds replies at 1000 characters).
pub const MAX_REPLY_BYTES: usize = 1000;

/// Why ident authentication failed. Each is a refusal reason sent to the
/// client and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    /// Nothing accepted the connection.
    #[error("no identd answered on {addr}: {reason}")]
    Connect {
        /// Where we connected.
        addr: SocketAddr,
        /// The I/O error.
        reason: String,
    },
    /// Connecting took too long.
    #[error("connecting to the identd on {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// Where we connected.
        addr: SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// The identd did not answer in time.
    #[error("the identd on {addr} did not answer within {after:?}")]
    ReadTimeout {
        /// Where we connected.
        addr: SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// The identd closed without a full reply, or sending/reading failed.
    #[error("the identd on {addr} closed the connection without a reply")]
    NoReply {
        /// Where we connected.
        addr: SocketAddr,
    },
    /// The reply is longer than [`MAX_REPLY_BYTES`].
    #[error("the identd's reply is longer than {MAX_REPLY_BYTES} bytes")]
    TooLong,
    /// The reply does not follow RFC 1413.
    #[error("malformed ident reply: {0}")]
    Malformed(String),
    /// The reply is about another connection.
    #[error("the identd answered for ports {got} instead of {asked}")]
    PortMismatch {
        /// The pair we asked about.
        asked: String,
        /// The pair it answered for.
        got: String,
    },
    /// The identd said `ERROR : <what>`.
    #[error("the identd answered ERROR: {0}")]
    Refused(String),
    /// The user is not `<project>.<tool>`.
    #[error("ident user {user:?} is not a tool account ({project}.<tool>)")]
    NotATool {
        /// The user named.
        user: String,
        /// The project expected.
        project: String,
    },
}

impl IdentError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            IdentError::Connect { .. } => "ident_unreachable",
            IdentError::ConnectTimeout { .. } | IdentError::ReadTimeout { .. } => "ident_timeout",
            IdentError::NoReply { .. } => "ident_no_reply",
            IdentError::TooLong | IdentError::Malformed(_) => "ident_malformed",
            IdentError::PortMismatch { .. } => "ident_port_mismatch",
            IdentError::Refused(_) => "ident_error_reply",
            IdentError::NotATool { .. } => "not_a_tool",
        }
    }
}

/// One look-up: whom to ask, about which connection, with which bounds.
#[derive(Debug, Clone)]
pub struct IdentQuery {
    /// The client's address (we ask its host).
    pub peer: SocketAddr,
    /// Our port of the connection (the second number of the pair).
    pub local_port: u16,
    /// The identd port on the client's host.
    pub ident_port: u16,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Answer timeout.
    pub read_timeout: Duration,
}

impl IdentQuery {
    /// Asks the client's identd who owns the connection; returns the user.
    pub async fn lookup(&self) -> Result<String, IdentError> {
        let addr = SocketAddr::new(self.peer.ip(), self.ident_port);
        let mut stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Err(_) => {
                    return Err(IdentError::ConnectTimeout {
                        addr,
                        after: self.connect_timeout,
                    });
                }
                Ok(Err(e)) => {
                    return Err(IdentError::Connect {
                        addr,
                        reason: e.to_string(),
                    });
                }
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        let query = format!("{},{}\r\n", self.peer.port(), self.local_port);
        let exchange = async {
            stream
                .write_all(query.as_bytes())
                .await
                .map_err(|_| IdentError::NoReply { addr })?;
            read_reply(&mut stream, addr).await
        };
        let line = match tokio::time::timeout(self.read_timeout, exchange).await {
            Err(_) => {
                return Err(IdentError::ReadTimeout {
                    addr,
                    after: self.read_timeout,
                });
            }
            Ok(r) => r?,
        };
        parse_reply(&line, self.peer.port(), self.local_port)
    }
}

async fn read_reply(stream: &mut TcpStream, addr: SocketAddr) -> Result<String, IdentError> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| IdentError::NoReply { addr })?;
        if n == 0 {
            if buf.is_empty() {
                return Err(IdentError::NoReply { addr });
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(i);
            break;
        }
        if buf.len() > MAX_REPLY_BYTES {
            return Err(IdentError::TooLong);
        }
    }
    if buf.len() > MAX_REPLY_BYTES {
        return Err(IdentError::TooLong);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    let line =
        String::from_utf8(buf).map_err(|_| IdentError::Malformed("not UTF-8 text".into()))?;
    if let Some(c) = line.chars().find(|c| c.is_control()) {
        return Err(IdentError::Malformed(format!(
            "the reply contains the control character U+{:04X}",
            u32::from(c)
        )));
    }
    Ok(line)
}

/// Parses an ident reply line (without line end) about the connection
/// `peer_port , local_port`; returns the user of a `USERID` reply.
pub fn parse_reply(line: &str, peer_port: u16, local_port: u16) -> Result<String, IdentError> {
    let shorten = |s: &str| s.chars().take(80).collect::<String>();
    let mut fields = line.splitn(4, ':');
    let ports = fields.next().unwrap_or("");
    let kind = fields
        .next()
        .ok_or_else(|| IdentError::Malformed(format!("no reply type in {:?}", shorten(line))))?
        .trim();
    let (a, b) = ports
        .split_once(',')
        .ok_or_else(|| IdentError::Malformed(format!("no port pair in {:?}", shorten(line))))?;
    let parse_port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|_| IdentError::Malformed(format!("bad port {:?}", shorten(s.trim()))))
    };
    let (a, b) = (parse_port(a)?, parse_port(b)?);
    if (a, b) != (peer_port, local_port) {
        return Err(IdentError::PortMismatch {
            asked: format!("{peer_port},{local_port}"),
            got: format!("{a},{b}"),
        });
    }
    match kind {
        "USERID" => {
            let _opsys = fields
                .next()
                .ok_or_else(|| IdentError::Malformed("USERID reply without opsys field".into()))?;
            let user = fields
                .next()
                .ok_or_else(|| IdentError::Malformed("USERID reply without user".into()))?
                .trim();
            if user.is_empty() {
                return Err(IdentError::Malformed("empty user".into()));
            }
            Ok(user.to_owned())
        }
        "ERROR" => Err(IdentError::Refused(shorten(
            fields.next().unwrap_or("").trim(),
        ))),
        other => Err(IdentError::Malformed(format!(
            "unknown reply type {:?}",
            shorten(other)
        ))),
    }
}

/// The tool of a tool account `<project>.<tool>`; refuses every other user
/// (including upper-case spellings: Unix user names are exact).
pub fn tool_of_user(user: &str, project: &str) -> Result<ToolName, IdentError> {
    let not_a_tool = || IdentError::NotATool {
        user: user.chars().take(80).collect(),
        project: project.to_owned(),
    };
    let name = user
        .strip_prefix(project)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(not_a_tool)?;
    match ToolName::parse(name) {
        Ok(t) if t.as_str() == name => Ok(t),
        _ => Err(not_a_tool()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_reply_parsing() {
        assert_eq!(
            parse_reply("4000 , 8282 : USERID : UNIX : tools.foo", 4000, 8282).unwrap(),
            "tools.foo"
        );
        assert_eq!(
            parse_reply("4000,8282:USERID:UNIX,UTF-8:tools.foo", 4000, 8282).unwrap(),
            "tools.foo"
        );
        assert!(matches!(
            parse_reply("4001 , 8282 : USERID : UNIX : tools.foo", 4000, 8282),
            Err(IdentError::PortMismatch { .. })
        ));
        assert_eq!(
            parse_reply("4000 , 8282 : ERROR : NO-USER", 4000, 8282),
            Err(IdentError::Refused("NO-USER".into()))
        );
        for bad in [
            "",
            "garbage",
            "4000 8282 : USERID : UNIX : x",
            "4000 , 8282 : USERID : UNIX",
            "4000 , 8282 : USERID : UNIX :   ",
            "4000 , 8282 : WHAT : UNIX : x",
            "x , 8282 : USERID : UNIX : x",
        ] {
            assert!(
                matches!(parse_reply(bad, 4000, 8282), Err(IdentError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_tool_accounts() {
        assert_eq!(tool_of_user("tools.foo", "tools").unwrap().as_str(), "foo");
        for bad in [
            "root",
            "tools.",
            "tools",
            "tools.Foo",
            "toolsfoo",
            "other.foo",
            "tools.foo bar",
        ] {
            assert!(tool_of_user(bad, "tools").is_err(), "{bad}");
        }
    }
}
