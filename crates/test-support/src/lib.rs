//! Real servers for forge's tests.
//!
//! forge's daemons talk to Redis (and Sentinel), an LDAP directory, MariaDB or SQLite, an SMTP
//! relay and — for the identity app's pages — a browser. Mocks of those would test our
//! assumptions about them rather than the servers themselves, so the tests start the real
//! thing: each server is a fresh process on a free loopback port, living in its own temporary
//! directory, and is killed when its handle is dropped (also when a test panics, and — through
//! `PR_SET_PDEATHSIG` — when the test process itself dies).
//!
//! | module      | what it starts                                                        |
//! |-------------|-----------------------------------------------------------------------|
//! | [`ports`]   | free loopback ports, waiting for a port to accept connections         |
//! | [`process`] | [`ChildGuard`]: a child process killed on drop, SIGSTOP/SIGCONT/SIGKILL |
//! | [`redis`]   | [`RedisServer`] (master or replica) and [`SentinelServer`]            |
//! | [`relay`]   | [`RedisRelay`]: a relay that cuts a master off from its replicas and Sentinels |
//! | [`identd`]  | [`Identd`]: an RFC 1413 ident server answering from a table; [`Oidentd`]: Debian's oidentd, answering from the kernel's socket table |
//! | [`users`]   | system users for tests ([`ensure_user`]) and [`ListenerAs`]: a TCP server run as one of them |
//! | [`ldap`]    | [`Slapd`]: OpenLDAP with mdb, ppolicy, argon2 and the openssh-lpk schema |
//! | [`sql`]     | [`SqliteDb`] and [`MariaDb`] (a fresh database on a test-owned mariadbd) |
//! | [`smtp`]    | [`SmtpSink`]: an SMTP server capturing every message it is sent        |
//! | [`browser`] | [`Chromedriver`] and headless Chromium sessions through fantoccini    |
//! | [`grid`]    | [`GridCell`]: a private single-host Son of Grid Engine cell with web queues (root only) |
//! | [`tools`]   | [`ToolAccount`]: a real `tools.<name>` Unix account with a home (root only) |
//! | [`legacy`]  | stand-ins of today's `proxylistener.py` and registration clients, byte for byte |
//!
//! A missing server binary is reported as [`TestSupportError::MissingBinary`], whose message
//! names the Debian package to install. Everything that waits is `async` and expects a tokio
//! runtime (`#[tokio::test]`); dropping a handle is synchronous and never needs one.
//!
//! ```no_run
//! # async fn demo() -> Result<(), forge_test_support::TestSupportError> {
//! let redis = forge_test_support::RedisServer::start().await?;
//! println!("connect to {}", redis.url());
//! # Ok(()) }
//! ```

pub mod browser;
pub mod error;
pub mod grid;
pub mod identd;
pub mod ldap;
pub mod legacy;
pub mod monitoring;
pub mod ports;
pub mod process;
pub mod redis;
pub mod relay;
pub mod smtp;
pub mod sql;
pub mod tools;
pub mod users;

pub use browser::Chromedriver;
pub use error::{Result, TestSupportError};
pub use grid::{GridCell, GridCellOptions};
pub use identd::{IdentAnswer, Identd, Oidentd};
pub use ldap::{Slapd, SlapdBuilder};
pub use legacy::{LegacyProxyListener, LegacyQuirk, LegacyRegister, LegacyReply};
pub use ports::{free_port, wait_for_port};
pub use process::ChildGuard;
pub use redis::{RedisServer, RedisServerBuilder, SentinelServer, SentinelServerBuilder};
pub use relay::RedisRelay;
pub use smtp::{CapturedMail, SmtpSink};
pub use sql::{MariaDb, MariaDbServer, SqliteDb};
pub use tools::ToolAccount;
pub use users::{ListenerAs, UserIds, ensure_user};
