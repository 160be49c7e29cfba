//! Talking HTTP: the active proxy's `/list`, and health probes of backends.
//!
//! `/list` is a JSON object whose keys are the tools with a registration
//! (`{"<tool>": {"status": "active"}, …}`); the monitor only needs the keys.
//! The whole request runs under one timeout and the body under a size limit,
//! so a proxy that hangs can't stall a pass — today's monitor had neither.
//!
//! A probe asks whether a registered backend answers at all: a TCP connect,
//! or an HTTP GET where any HTTP response counts (a 500 is still a server).

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use forge_core::BackendUrl;

use crate::config::{HealthConfig, ProbeKind};

/// Why `/list` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// No complete answer within the timeout.
    #[error("GET {url} timed out after {ms} ms")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        ms: u64,
    },
    /// Connection or protocol failure.
    #[error("GET {url} failed: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A status other than 200.
    #[error("GET {url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// Not a JSON object.
    #[error("GET {url}: body is not a JSON object: {reason}")]
    Body {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// An HTTP client for `/list` and probes (one connection pool).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client with a pool timer (so idle connections are reaped).
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(connector);
        HttpClient { client }
    }

    async fn get(&self, url: &str, limit: usize) -> Result<(u16, Bytes), String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
        let req = http::Request::get(uri)
            .header(
                http::header::USER_AGENT,
                concat!("webservicemonitor/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| error_chain(&e))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    /// The tools listed by the proxy's `/list`.
    pub async fn list(
        &self,
        url: &str,
        timeout: Duration,
        limit: usize,
    ) -> Result<HashSet<String>, ListError> {
        let (status, body) = match tokio::time::timeout(timeout, self.get(url, limit)).await {
            Err(_) => {
                return Err(ListError::Timeout {
                    url: url.to_owned(),
                    ms: timeout.as_millis() as u64,
                });
            }
            Ok(Err(reason)) => {
                return Err(ListError::Http {
                    url: url.to_owned(),
                    reason,
                });
            }
            Ok(Ok(r)) => r,
        };
        if status != 200 {
            return Err(ListError::Status {
                url: url.to_owned(),
                status,
            });
        }
        let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| ListError::Body {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(doc
            .into_iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect())
    }

    /// Whether `backend` answers, by the configured probe. `Ok(())` when
    /// alive, otherwise why not.
    pub async fn probe(&self, backend: &BackendUrl, health: &HealthConfig) -> Result<(), String> {
        let timeout = Duration::from_millis(health.timeout_ms.max(1));
        match health.probe {
            ProbeKind::Off => Ok(()),
            ProbeKind::Tcp => {
                let addr = backend.authority();
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("TCP connect to {addr}: {e}")),
                    Err(_) => Err(format!(
                        "TCP connect to {addr}: no answer within {timeout:?}"
                    )),
                }
            }
            ProbeKind::Http => {
                if backend.scheme() != "http" {
                    // TLS backends are probed by TCP; the proxy speaks TLS to them.
                    let tcp = HealthConfig {
                        probe: ProbeKind::Tcp,
                        ..health.clone()
                    };
                    return Box::pin(self.probe(backend, &tcp)).await;
                }
                let url = format!(
                    "{}{}",
                    backend.as_str().trim_end_matches('/'),
                    health.http_path
                );
                match tokio::time::timeout(timeout, self.get(&url, 64 * 1024)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("GET {url}: {e}")),
                    Err(_) => Err(format!("GET {url}: no answer within {timeout:?}")),
                }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
