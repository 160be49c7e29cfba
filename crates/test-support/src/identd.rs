//! [`Identd`]: a real RFC 1413 ident server answering from a table.
//!
//! proxylistener authenticates clients by asking the identd on the client's
//! host who owns the connection. Tests need an identd they control: one that
//! answers honestly, lies, says `ERROR : NO-USER`, or stays silent. This one is
//! a real TCP server on a free loopback port; point the daemon's ident port at
//! [`Identd::port`].
//!
//! Each query `<port-on-this-host> , <port-on-querier>` is looked up by the
//! first port (the client's port of the connection being asked about); when
//! the table has no entry the default answer is used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Result, TestSupportError};

/// What the identd answers to a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentAnswer {
    /// `<ports> : USERID : UNIX : <user>` — an honest answer.
    User(String),
    /// `<ports> : ERROR : <error>` (e.g. `NO-USER`, `HIDDEN-USER`).
    Error(String),
    /// A `USERID` reply for `<user>` naming a different port pair than the
    /// one asked about (a lying or confused identd).
    WrongPorts(String),
    /// This exact line (a `\r\n` is appended).
    Raw(String),
    /// Read the query and never answer (the connection stays open).
    Silent,
    /// Read the query and close the connection without a word.
    Close,
}

#[derive(Debug)]
struct Table {
    default: IdentAnswer,
    by_port: HashMap<u16, IdentAnswer>,
    queries: Vec<(u16, u16)>,
}

/// A running test identd; stops when dropped.
#[derive(Debug)]
pub struct Identd {
    port: u16,
    table: Arc<Mutex<Table>>,
    task: tokio::task::JoinHandle<()>,
}

impl Identd {
    /// Starts an identd on a free loopback port answering `default` to every
    /// query without a table entry, with an accept queue of 1024.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(default: IdentAnswer) -> Result<Self> {
        Self::start_with_backlog(default, 1024).await
    }

    /// Like [`Identd::start`], with an accept queue (`listen(2)` backlog) of
    /// `backlog` connections: under load, a full queue drops connections'
    /// SYNs and the querier's connect waits a second for the resend.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start_with_backlog(default: IdentAnswer, backlog: u32) -> Result<Self> {
        let bind = || -> std::io::Result<TcpListener> {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
            socket.listen(backlog)
        };
        let listener = bind().map_err(|source| TestSupportError::Io {
            context: "binding the test identd".into(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| TestSupportError::Io {
                context: "reading the test identd's address".into(),
                source,
            })?
            .port();
        let table = Arc::new(Mutex::new(Table {
            default,
            by_port: HashMap::new(),
            queries: Vec::new(),
        }));
        let t = Arc::clone(&table);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, Arc::clone(&t)));
            }
        });
        Ok(Identd { port, table, task })
    }

    /// The loopback port the identd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes the answer for queries without a table entry.
    pub fn set_default(&self, answer: IdentAnswer) {
        if let Ok(mut t) = self.table.lock() {
            t.default = answer;
        }
    }

    /// Sets the answer for queries about connections from `client_port`.
    pub fn answer_for(&self, client_port: u16, answer: IdentAnswer) {
        if let Ok(mut t) = self.table.lock() {
            t.by_port.insert(client_port, answer);
        }
    }

    /// The port pairs asked about so far, in order.
    pub fn queries(&self) -> Vec<(u16, u16)> {
        self.table
            .lock()
            .map(|t| t.queries.clone())
            .unwrap_or_default()
    }
}

impl Drop for Identd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(stream: TcpStream, table: Arc<Mutex<Table>>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let query = line.trim();
    let ports = query
        .split_once(',')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
    let Some((theirs, ours)) = ports else {
        let _ = write
            .write_all(format!("{query} : ERROR : INVALID-PORT\r\n").as_bytes())
            .await;
        return;
    };
    let chosen = match table.lock() {
        Ok(mut t) => {
            t.queries.push((theirs, ours));
            t.by_port
                .get(&theirs)
                .cloned()
                .unwrap_or_else(|| t.default.clone())
        }
        Err(_) => return,
    };
    let reply = match chosen {
        IdentAnswer::User(u) => format!("{theirs} , {ours} : USERID : UNIX : {u}\r\n"),
        IdentAnswer::Error(e) => format!("{theirs} , {ours} : ERROR : {e}\r\n"),
        IdentAnswer::WrongPorts(u) => format!(
            "{} , {ours} : USERID : UNIX : {u}\r\n",
            theirs.wrapping_add(1)
        ),
        IdentAnswer::Raw(l) => format!("{l}\r\n"),
        IdentAnswer::Silent => {
            // Hold the connection open until the querier gives up.
            let mut rest = String::new();
            let _ = reader.read_line(&mut rest).await;
            return;
        }
        IdentAnswer::Close => return,
    };
    let _ = write.write_all(reply.as_bytes()).await;
    let _ = write.shutdown().await;
}

/// A real `oidentd` (Debian's `oidentd`) on a free loopback port: it answers
/// from the kernel's socket table, so the user it names is whoever really
/// owns the socket. Tests use it to check who serves a backend port. Its
/// configuration forbids every user-controlled answer (spoofing, hiding,
/// random names). Stopped when dropped.
#[derive(Debug)]
pub struct Oidentd {
    port: u16,
    _child: crate::process::ChildGuard,
    _dir: tempfile::TempDir,
}

/// oidentd's configuration: no user may change what it answers.
const OIDENTD_CONF: &str = "default {\n\tdefault {\n\t\tdeny spoof\n\t\tdeny spoof_all\n\t\tdeny spoof_privport\n\t\tdeny random\n\t\tdeny random_numeric\n\t\tdeny numeric\n\t\tdeny hide\n\t\tdeny forward\n\t}\n}\n";

impl Oidentd {
    /// Starts `oidentd` in the foreground on a free loopback port.
    ///
    /// # Errors
    ///
    /// When `oidentd` is not installed, or does not answer within 20 s.
    pub async fn start() -> Result<Self> {
        let binary = crate::process::find_binary("oidentd", "oidentd")?;
        let dir = crate::process::scratch_dir("oidentd")?;
        let conf = dir.path().join("oidentd.conf");
        std::fs::write(&conf, OIDENTD_CONF)
            .map_err(|e| TestSupportError::io("writing oidentd.conf", e))?;
        let port = crate::ports::free_port();
        let mut command = std::process::Command::new(binary);
        command
            .args(["-i", "-S", "-a", "127.0.0.1", "-t", "10"])
            .arg("-p")
            .arg(port.to_string())
            .arg("-C")
            .arg(&conf)
            .args(["-u", "nobody", "-g", "nogroup"]);
        let mut child =
            crate::process::ChildGuard::spawn("oidentd", command, &dir.path().join("log"))?;
        let addr = crate::ports::loopback(port);
        child
            .wait_ready(addr, std::time::Duration::from_secs(20), || async move {
                TcpStream::connect(addr).await.is_ok()
            })
            .await?;
        Ok(Oidentd {
            port,
            _child: child,
            _dir: dir,
        })
    }

    /// The loopback port it answers on.
    pub fn port(&self) -> u16 {
        self.port
    }
}
