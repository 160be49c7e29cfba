//! The registration client: talks proxylistener's line protocol.
//!
//! A [`RegistrationClient`] knows the registration endpoints (from
//! `/etc/active-proxy` or the richer `live.toml`, see
//! [`forge_core::live::LiveState`]) and tries them in order until one says
//! `ok`. Each request is one connection: the request lines, a half-close, and
//! one reply line read to the end of the connection. The reply is `ok` or
//! `fail: <reason>`; today's daemon's free-text errors, and its `okok` (it
//! sends `ok` twice for every registration), are understood too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), webservice_runner::client::ClientError> {
//! use webservice_runner::client::RegistrationClient;
//! let client = RegistrationClient::new(vec!["proxy-01.example.org:8282".into()]);
//! let done = client.register_self(".*", "http", 34567, false).await?;
//! println!("registered {} with {}", done.url, done.endpoint);
//! client.unregister(".*").await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use forge_core::live::LiveState;

use crate::human_duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest reply read.
const MAX_REPLY_BYTES: u64 = 4096;

/// One failed attempt at one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The endpoint (`host:port`).
    pub endpoint: String,
    /// What happened.
    pub outcome: AttemptError,
}

/// What went wrong at one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// The endpoint answered `fail: <reason>` (or a legacy error text).
    #[error("refused: {0}")]
    Refused(String),
    /// Could not connect (or resolve) within the timeout.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Connected, but the exchange broke or timed out.
    #[error("no reply: {0}")]
    NoReply(String),
    /// A reply that is neither `ok` nor an error text (e.g. empty).
    #[error("unexpected reply {0:?}")]
    Protocol(String),
}

/// Why a request failed at every endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No endpoint is configured: registration is disabled.
    #[error("registration is disabled (no registration endpoint configured)")]
    Disabled,
    /// At least one endpoint answered, and none said `ok`.
    #[error("registration refused: {}", Attempts(.0))]
    Refused(Vec<Attempt>),
    /// No endpoint answered at all.
    #[error("no registration endpoint answered: {}", Attempts(.0))]
    Unavailable(Vec<Attempt>),
}

impl ClientError {
    /// Whether a request may have reached a daemon that acted on it: every
    /// attempt but those that never connected. A registration that "failed"
    /// so may still have written the route.
    pub fn may_have_registered(&self) -> bool {
        match self {
            ClientError::Disabled => false,
            ClientError::Refused(a) | ClientError::Unavailable(a) => a
                .iter()
                .any(|a| !matches!(a.outcome, AttemptError::Connect(_))),
        }
    }

    /// The first refusal reason, if an endpoint answered.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Refused(a) => a.iter().find_map(|a| match &a.outcome {
                AttemptError::Refused(r) => Some(r.as_str()),
                _ => None,
            }),
            _ => None,
        }
    }
}

struct Attempts<'a>(&'a [Attempt]);

impl fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", a.endpoint, a.outcome)?;
        }
        Ok(())
    }
}

/// A successful self-registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The endpoint that said `ok`.
    pub endpoint: String,
    /// The backend URL registered.
    pub url: String,
}

/// Talks to the registration endpoints.
#[derive(Debug, Clone)]
pub struct RegistrationClient {
    /// Endpoints (`host:port`) in the order they are tried.
    pub endpoints: Vec<String>,
    /// Per-endpoint connect timeout.
    pub connect_timeout: Duration,
    /// How long an endpoint may take to reply once connected.
    pub reply_timeout: Duration,
}

impl RegistrationClient {
    /// A client for `endpoints` with default timeouts (3 s connect, 15 s reply).
    pub fn new(endpoints: Vec<String>) -> Self {
        RegistrationClient {
            endpoints,
            connect_timeout: Duration::from_secs(3),
            reply_timeout: Duration::from_secs(15),
        }
    }

    /// A client for the endpoints of a live state (empty = disabled).
    pub fn from_live_state(state: &LiveState) -> Self {
        Self::new(state.registration_endpoints())
    }

    /// Whether no endpoint is configured.
    pub fn is_disabled(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// `register`s `route` → `url`.
    pub async fn register(&self, route: &str, url: &str) -> Result<String, ClientError> {
        self.send(|_| vec!["register".into(), route.into(), url.into()])
            .await
            .map(|(e, _)| e)
    }

    /// `registerCanonical`s `route` → `url`.
    pub async fn register_canonical(&self, route: &str, url: &str) -> Result<String, ClientError> {
        self.send(|_| vec!["registerCanonical".into(), route.into(), url.into()])
            .await
            .map(|(e, _)| e)
    }

    /// Registers `<scheme>://<this host's address>:<port>`, the address being
    /// the one this host uses to reach the endpoint (the one the server sees).
    pub async fn register_self(
        &self,
        route: &str,
        scheme: &str,
        port: u16,
        canonical: bool,
    ) -> Result<Registered, ClientError> {
        let command = if canonical {
            "registerCanonical"
        } else {
            "register"
        };
        let (endpoint, lines) = self
            .send(|local| {
                vec![
                    command.into(),
                    route.into(),
                    backend_url(scheme, local, port),
                ]
            })
            .await?;
        Ok(Registered {
            endpoint,
            url: lines.get(2).cloned().unwrap_or_default(),
        })
    }

    /// `unregister`s `route` (of this host; the server leaves a route that
    /// meanwhile points elsewhere alone). Running it twice is harmless.
    pub async fn unregister(&self, route: &str) -> Result<String, ClientError> {
        self.send(|_| vec!["unregister".into(), route.into()])
            .await
            .map(|(e, _)| e)
    }

    /// Sends the request built by `lines` (given our local address) to each
    /// endpoint in turn until one says `ok`.
    async fn send<F>(&self, lines: F) -> Result<(String, Vec<String>), ClientError>
    where
        F: Fn(IpAddr) -> Vec<String>,
    {
        if self.endpoints.is_empty() {
            return Err(ClientError::Disabled);
        }
        let mut attempts = Vec::new();
        for endpoint in &self.endpoints {
            match self.exchange(endpoint, &lines).await {
                Ok(sent) => return Ok((endpoint.clone(), sent)),
                Err(outcome) => {
                    tracing::debug!(%endpoint, error = %outcome, "registration attempt failed");
                    attempts.push(Attempt {
                        endpoint: endpoint.clone(),
                        outcome,
                    });
                }
            }
        }
        if attempts
            .iter()
            .any(|a| matches!(a.outcome, AttemptError::Refused(_)))
        {
            Err(ClientError::Refused(attempts))
        } else {
            Err(ClientError::Unavailable(attempts))
        }
    }

    async fn exchange<F>(&self, endpoint: &str, lines: &F) -> Result<Vec<String>, AttemptError>
    where
        F: Fn(IpAddr) -> Vec<String>,
    {
        let mut stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(endpoint))
            .await
            .map_err(|_| {
                AttemptError::Connect(format!(
                    "timed out after {}",
                    human_duration(self.connect_timeout)
                ))
            })?
            .map_err(|e| AttemptError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .map_err(|e| AttemptError::Connect(e.to_string()))?;
        let lines = lines(local.ip().to_canonical());
        let mut request = lines.join("\n");
        request.push('\n');
        let exchange = async {
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| AttemptError::NoReply(e.to_string()))?;
            // Half-close: the request is complete.
            let _ = stream.shutdown().await;
            let mut reply = Vec::new();
            (&mut stream)
                .take(MAX_REPLY_BYTES)
                .read_to_end(&mut reply)
                .await
                .map_err(|e| AttemptError::NoReply(e.to_string()))?;
            Ok::<_, AttemptError>(reply)
        };
        let reply = tokio::time::timeout(self.reply_timeout, exchange)
            .await
            .map_err(|_| {
                AttemptError::NoReply(format!(
                    "timed out after {}",
                    human_duration(self.reply_timeout)
                ))
            })??;
        match parse_reply(&reply) {
            Ok(()) => Ok(lines),
            Err(e) => Err(e),
        }
    }
}

/// Anything starting with `ok` → `Ok`; `fail: <reason>` or any other text →
/// `Refused`; nothing → `Protocol`.
///
/// Today's daemon answers `register` and `registerCanonical` with `ok` twice
/// (two `send('ok')` calls, read here as `okok`), after the route was
/// written: that is success.
pub fn parse_reply(reply: &[u8]) -> Result<(), AttemptError> {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim();
    if text.starts_with("ok") {
        return Ok(());
    }
    if text.is_empty() {
        return Err(AttemptError::Protocol(String::new()));
    }
    if let Some(reason) = text.strip_prefix("fail") {
        let reason = reason.trim_start_matches(':').trim();
        return Err(AttemptError::Refused(if reason.is_empty() {
            "fail (no reason given)".into()
        } else {
            reason.to_owned()
        }));
    }
    Err(AttemptError::Refused(text.chars().take(300).collect()))
}

/// `<scheme>://<ip>:<port>`, IPv6 in brackets.
pub fn backend_url(scheme: &str, ip: IpAddr, port: u16) -> String {
    format!("{scheme}://{}", SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_reply(b"ok"), Ok(()));
        assert_eq!(parse_reply(b"ok\r\n"), Ok(()));
        assert_eq!(
            parse_reply(b"fail: bad route"),
            Err(AttemptError::Refused("bad route".into()))
        );
        assert_eq!(
            parse_reply(b"This service available only to tool accounts"),
            Err(AttemptError::Refused(
                "This service available only to tool accounts".into()
            ))
        );
        assert_eq!(parse_reply(b""), Err(AttemptError::Protocol(String::new())));
        assert_eq!(parse_reply(b"okok"), Ok(()), "today's daemon's double ok");
    }

    #[test]
    fn urls() {
        assert_eq!(
            backend_url("http", "10.0.0.5".parse().unwrap(), 80),
            "http://10.0.0.5:80"
        );
        assert_eq!(
            backend_url("https", "::1".parse().unwrap(), 8443),
            "https://[::1]:8443"
        );
    }
}
