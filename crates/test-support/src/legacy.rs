//! Stand-ins for today's registration daemon and clients, for cut-over tests.
//!
//! During a migration the old and the new pieces meet: our `webservice-runner`
//! and `portreleaser` talk to today's `proxylistener.py`, and today's
//! `toolsws.proxy` client and `portreleaser.py` talk to our proxylistener.
//! These stand-ins are written by us from the upstream sources and behave
//! byte for byte as those do on the wire (the upstream code itself is not part
//! of this project):
//!
//! * [`LegacyProxyListener`] — `modules/profile/files/toolforge/proxylistener.py`
//!   of wikimedia/operations-puppet at commit
//!   `655a40cf41adeed2d65a982992badde29b5ad8ef`: on each connection it asks
//!   the client's identd first (one `recv(256)`, `USERID` among the
//!   `:`-separated parts, the user is the last part), then reads the command
//!   and route lines (and the URL line for `register`/`registerCanonical`),
//!   writes Redis, and answers with separate `send`s and no line end:
//!   `ok` **twice** for `register` and for `registerCanonical` (the second
//!   `send('ok')` is outside the `if registerCanonical`), `ok` for
//!   `unregister` (which `HDEL`s `prefix:` and `redirect:` whatever they
//!   point at), `fail` for an unknown command, `Identd authentication failed.
//!   Please contact an administrator` and `This service available only to
//!   tool accounts` for the two refusals; then it closes. It never waits for
//!   the client's half-close.
//! * [`legacy_register_2020`] — `toolsws/proxy.py` `register(port, canonical)`
//!   of wikimedia/operations-software-tools-webservice at commit
//!   `62f9105763e80aca0c1ef65ccee1a4f262b11196` (June 2020): sends
//!   `register` or `registerCanonical`, `\n.*\n`, `http://<ip>:<port>\n` with
//!   one `sendall`, no half-close, one `recv(1024)`, success only if the bytes
//!   are exactly `ok`.
//! * [`legacy_register_last`] — the same file at commit
//!   `06e418c6952fcee64d2e63e6d70bdf0dd0c2cad5` (the last before the move to
//!   GitLab): always `registerCanonical`, otherwise the same exchange.
//! * [`legacy_unregister`] — `unregister()` of both client versions and of
//!   `portgrabber.py` (which `portreleaser.py` calls; operations-puppet
//!   `modules/profile/files/toolforge/portgrabber.py` at commit
//!   `1802181e3dc436f2a579858e5821fcbd803df158`): `unregister\n.*\n`, one
//!   `recv(1024)`, exactly `ok`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Result, TestSupportError};

/// How long a stand-in waits for any one read before giving up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What a [`LegacyProxyListener`] does besides today's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LegacyQuirk {
    /// Exactly today's behaviour.
    #[default]
    None,
    /// Writes the route, then never answers (a daemon whose reply is lost):
    /// for testing what a client does when it gives up after sending.
    SilentAfterWrite,
}

/// A running stand-in of today's `proxylistener.py`; stops when dropped.
#[derive(Debug)]
pub struct LegacyProxyListener {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone)]
struct ListenerSettings {
    redis: SocketAddr,
    ident_port: u16,
    project_prefix: String,
    quirk: LegacyQuirk,
}

impl LegacyProxyListener {
    /// Starts it on a free loopback port, writing to the Redis at `redis`
    /// and asking the identd on loopback port `ident_port` (today: port 113
    /// of the client's host). Tool accounts are `<project>.<tool>`.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(
        redis: SocketAddr,
        ident_port: u16,
        project: &str,
        quirk: LegacyQuirk,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| TestSupportError::io("binding the legacy proxylistener", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TestSupportError::io("reading the legacy proxylistener's address", e))?;
        let settings = ListenerSettings {
            redis,
            ident_port,
            project_prefix: format!("{project}."),
            quirk,
        };
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let s = settings.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        STEP_TIMEOUT * 4,
                        handle(stream, peer, addr.port(), s),
                    )
                    .await;
                });
            }
        });
        Ok(LegacyProxyListener { addr, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LegacyProxyListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `get_remote_user`: one query, one `recv(256)`; `None` unless `USERID`.
async fn remote_user(ident_port: u16, client_port: u16, local_port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", ident_port)).await.ok()?;
    s.write_all(format!("{client_port},{local_port}\n").as_bytes())
        .await
        .ok()?;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(STEP_TIMEOUT, s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let resp = String::from_utf8_lossy(&buf[..n]).into_owned();
    let parts: Vec<&str> = resp.split(':').map(str::trim).collect();
    if !parts.contains(&"USERID") {
        return None;
    }
    parts.last().map(|s| (*s).to_owned())
}

/// Python's `rfile.readline().strip()`: `""` at EOF.
async fn readline<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
    let mut line = String::new();
    let _ = tokio::time::timeout(STEP_TIMEOUT, r.read_line(&mut line)).await;
    line.trim().to_owned()
}

async fn handle(stream: TcpStream, peer: SocketAddr, local_port: u16, s: ListenerSettings) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let Some(user) = remote_user(s.ident_port, peer.port(), local_port).await else {
        let _ = write
            .write_all(b"Identd authentication failed. Please contact an administrator")
            .await;
        return;
    };
    let Some(tool) = user.strip_prefix(&s.project_prefix) else {
        let _ = write
            .write_all(b"This service available only to tool accounts")
            .await;
        return;
    };
    let prefix_key = format!("prefix:{tool}");
    let redirect_key = format!("redirect:{tool}");
    let command = readline(&mut reader).await;
    let route = readline(&mut reader).await;
    match command.as_str() {
        "register" | "registerCanonical" => {
            let destination = readline(&mut reader).await;
            let _ = redis(s.redis, &["HSET", &prefix_key, &route, &destination]).await;
            if s.quirk == LegacyQuirk::SilentAfterWrite {
                let _ = readline(&mut reader).await;
                tokio::time::sleep(STEP_TIMEOUT).await;
                return;
            }
            let _ = write.write_all(b"ok").await;
            let _ = write.flush().await;
            if command == "registerCanonical" {
                let canonical = format!("{tool}.toolforge.org");
                let _ = redis(s.redis, &["HSET", &redirect_key, &route, &canonical]).await;
            }
            let _ = write.write_all(b"ok").await;
        }
        "unregister" => {
            let _ = redis(s.redis, &["HDEL", &prefix_key, &route]).await;
            let _ = redis(s.redis, &["HDEL", &redirect_key, &route]).await;
            let _ = write.write_all(b"ok").await;
        }
        _ => {
            let _ = write.write_all(b"fail").await;
        }
    }
}

/// One Redis command over a fresh connection (RESP written by hand: this
/// crate has no Redis client); the reply's first line.
async fn redis(addr: SocketAddr, args: &[&str]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).await?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    tokio::time::timeout(STEP_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("Redis did not answer"))??;
    Ok(line.trim_end().to_owned())
}

/// Which `register` a 2020 client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyRegister {
    /// `register`.
    Plain,
    /// `registerCanonical`.
    Canonical,
}

/// What a legacy client saw: the bytes of its one `recv(1024)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyReply(pub Vec<u8>);

impl LegacyReply {
    /// Whether today's client calls it success (`res != "ok"` raises).
    pub fn is_success(&self) -> bool {
        self.0 == b"ok"
    }
}

/// The exchange of today's clients: connect, one `sendall`, one
/// `recv(1024)`, close (no half-close).
async fn exchange(addr: SocketAddr, request: &str) -> Result<LegacyReply> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| TestSupportError::io(format!("connecting to {addr}"), e))?;
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| TestSupportError::io("sending the request", e))?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(STEP_TIMEOUT, s.read(&mut buf))
        .await
        .map_err(|_| TestSupportError::Timeout {
            what: format!("the reply of {addr}"),
            timeout: STEP_TIMEOUT,
        })?
        .map_err(|e| TestSupportError::io("reading the reply", e))?;
    Ok(LegacyReply(buf[..n].to_vec()))
}

/// The June 2020 `toolsws.proxy.register(port, canonical)`: registers
/// `http://<ip>:<port>` for `.*`.
///
/// # Errors
///
/// When the daemon cannot be reached or does not answer.
pub async fn legacy_register_2020(
    addr: SocketAddr,
    kind: LegacyRegister,
    ip: &str,
    port: u16,
) -> Result<LegacyReply> {
    let cmd = match kind {
        LegacyRegister::Plain => "register",
        LegacyRegister::Canonical => "registerCanonical",
    };
    exchange(addr, &format!("{cmd}\n.*\nhttp://{ip}:{port}\n")).await
}

/// The last `toolsws.proxy.register_dynamicproxy(port)`: always
/// `registerCanonical`.
///
/// # Errors
///
/// When the daemon cannot be reached or does not answer.
pub async fn legacy_register_last(addr: SocketAddr, ip: &str, port: u16) -> Result<LegacyReply> {
    exchange(
        addr,
        &format!("registerCanonical\n.*\nhttp://{ip}:{port}\n"),
    )
    .await
}

/// `unregister()` of both client versions and of `portreleaser.py`.
///
/// # Errors
///
/// When the daemon cannot be reached or does not answer.
pub async fn legacy_unregister(addr: SocketAddr) -> Result<LegacyReply> {
    exchange(addr, "unregister\n.*\n").await
}
