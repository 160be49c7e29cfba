//! SQL databases for tests: SQLite files and MariaDB databases.
//!
//! The identity app stores signups and sessions in MariaDB in production and may use SQLite in
//! development, so its tests run against both.
//!
//! * [`SqliteDb`] is a database file in a temporary directory, removed on drop.
//! * [`MariaDb`] is a freshly created, uniquely named database, dropped on drop. Where it lives:
//!   1. if `FORGE_TEST_MYSQL_URL` is set (e.g. `mysql://root:pw@127.0.0.1:3306`), on that
//!      server — an explicit choice wins;
//!   2. else, if `mariadbd` is installed, on a **server shared by the whole test process**:
//!      started on first use by `mariadb-install-db` + `mariadbd` in a temporary directory
//!      (about a second), on a free loopback port, and killed when the test process exits
//!      (through its parent-death signal — a `static` is never dropped). Its directory stays
//!      behind and is removed by the next test process (see [`crate::process::scratch_dir`]). Sharing keeps each further [`MariaDb::start`] to a
//!      `CREATE DATABASE`; isolation comes from the database per test;
//!   3. else on `mysql://root@127.0.0.1:3306`, the system server.
//! * [`MariaDbServer`] is a dedicated `mariadbd` owned by one test, for tests that stop,
//!   freeze or restart the database server itself.
//!
//! The server runs with `--no-defaults` (nothing from `/etc/mysql` leaks in), utf8mb4, small
//! InnoDB buffers, no durability on commit (`innodb_flush_log_at_trx_commit=0`: tests don't
//! survive power cuts), and real grants: `root` has an empty password from 127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::mysql::MySqlConnection;
use tempfile::TempDir;

use crate::error::{Result, TestSupportError};
use crate::ports::{free_port, loopback};
use crate::process::{ChildGuard, find_binary, run_command, scratch_dir};

/// The Debian package that provides `mariadbd` and `mariadb-install-db`.
const APT_PACKAGE: &str = "mariadb-server";
/// The environment variable naming an external server to create test databases on.
pub const MYSQL_URL_ENV: &str = "FORGE_TEST_MYSQL_URL";
/// The server used when `mariadbd` is not installed and [`MYSQL_URL_ENV`] is not set.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306";
/// How long mariadbd gets to accept a login after being started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long mariadbd gets to shut down cleanly.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How many ports a start tries before giving up.
const START_ATTEMPTS: usize = 3;

/// A SQLite database file in a temporary directory, deleted on drop.
#[derive(Debug)]
pub struct SqliteDb {
    /// The directory holding the database (and its `-wal`/`-shm` files).
    dir: TempDir,
    /// The database file.
    path: PathBuf,
}

impl SqliteDb {
    /// Chooses a fresh database file (created by the first connection with `mode=rwc`).
    ///
    /// # Errors
    ///
    /// [`TestSupportError::Io`] when the temporary directory cannot be created.
    pub fn new() -> Result<Self> {
        let dir = scratch_dir("sqlite")?;
        let path = dir.path().join("test.db");
        Ok(Self { dir, path })
    }

    /// `sqlite://<path>?mode=rwc`.
    pub fn url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.path.display())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding the database file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A uniquely named database for `name`-safe use in SQL: `forge_test_<pid>_<n>_<random>`.
fn unique_database_name() -> String {
    use std::hash::{BuildHasher, Hasher};

    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        & 0xffff;
    format!("forge_test_{}_{n}_{random:04x}", std::process::id())
}

/// The server part of a MySQL URL: scheme, credentials, host and port, without a database.
fn server_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split('/').next().unwrap_or(rest);
            format!("{scheme}://{authority}")
        }
        None => url.trim_end_matches('/').to_owned(),
    }
}

/// A database of its own for one test, on the server chosen as the module docs describe;
/// dropped (`DROP DATABASE`) when this is dropped.
#[derive(Debug)]
pub struct MariaDb {
    /// The server, as `mysql://user[:password]@host:port`.
    server_url: String,
    /// The database's name.
    database: String,
}

impl MariaDb {
    /// Creates a fresh database (utf8mb4) on the test server.
    ///
    /// # Errors
    ///
    /// Start-up errors of the shared server, or [`TestSupportError::Sql`] when the database
    /// cannot be created.
    pub async fn start() -> Result<Self> {
        if let Ok(url) = std::env::var(MYSQL_URL_ENV) {
            return Self::create_on(&server_url(&url)).await;
        }
        if find_binary("mariadbd", APT_PACKAGE).is_err() {
            return Self::create_on(DEFAULT_MYSQL_URL)
                .await
                .map_err(|error| match error {
                    TestSupportError::Sql(source) => TestSupportError::NoMysqlServer {
                        url: DEFAULT_MYSQL_URL.to_owned(),
                        source,
                    },
                    other => other,
                });
        }
        static SHARED: tokio::sync::OnceCell<MariaDbServer> = tokio::sync::OnceCell::const_new();
        let server = SHARED
            .get_or_try_init(|| async {
                MariaDbServer::start_in(scratch_dir("mariadb-shared")?).await
            })
            .await?;
        server.create_database().await
    }

    /// Creates a fresh database on the server at `server_url`.
    async fn create_on(server_url: &str) -> Result<Self> {
        let database = unique_database_name();
        let mut conn = MySqlConnection::connect(server_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        )))
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        Ok(Self {
            server_url: server_url.to_owned(),
            database,
        })
    }

    /// `mysql://root@127.0.0.1:PORT/forge_test_…`: the test's database.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server_url, self.database)
    }

    /// The database's name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The server without a database, for administrative connections.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // Drop may run inside a tokio runtime, which must not be blocked on; a short-lived
        // thread with a runtime of its own does the work. Failure (server gone) is fine.
        let (server_url, database) = (self.server_url.clone(), self.database.clone());
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut conn = MySqlConnection::connect(&server_url).await?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS `{database}`"
                    )))
                    .execute(&mut conn)
                    .await?;
                    conn.close().await
                })
                .await;
            });
        });
        let _ = dropper.join();
    }
}

/// A `mariadbd` owned by one test (or shared by a test process, see the module docs); killed
/// when dropped.
#[derive(Debug)]
pub struct MariaDbServer {
    /// The running process, while running (declared first: fields drop in order, so it
    /// dies before its directory is removed).
    child: Option<ChildGuard>,
    /// Path of `mariadbd`, for restarts.
    binary: PathBuf,
    /// The server's directory: `data/`, the socket, `mariadbd.log`.
    dir: TempDir,
    /// The loopback port it listens on.
    port: u16,
}

impl MariaDbServer {
    /// Initialises a data directory and starts a dedicated server; returns once `root` can
    /// log in.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::MissingBinary`] without MariaDB; a failed `mariadb-install-db` or
    /// start-up errors quoting the server's log otherwise.
    pub async fn start() -> Result<Self> {
        Self::start_in(scratch_dir("mariadb")?).await
    }

    /// Initialises `dir/data` and starts a server on it.
    async fn start_in(dir: TempDir) -> Result<Self> {
        let binary = find_binary("mariadbd", APT_PACKAGE)?;
        let install_db = find_binary("mariadb-install-db", APT_PACKAGE)?;
        let mut install = Command::new(install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .args(SERVER_TUNING)
            .current_dir(dir.path());
        if nix::unistd::geteuid().is_root() {
            install.arg("--user=root");
        }
        run_command(&mut install, None)?;

        let mut server = Self {
            binary,
            dir,
            port: 0,
            child: None,
        };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(e @ TestSupportError::ExitedEarly { .. }) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(TestSupportError::NotRunning { server: "mariadbd" }))
    }

    /// Starts mariadbd on `self.port` and waits until root can log in.
    async fn launch(&mut self) -> Result<()> {
        let dir = self.dir.path();
        let mut command = Command::new(&self.binary);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg("--skip-name-resolve")
            .arg("--character-set-server=utf8mb4")
            .arg("--collation-server=utf8mb4_unicode_ci")
            .arg("--max-connections=1000")
            .arg("--innodb-flush-log-at-trx-commit=0")
            .arg("--performance-schema=OFF")
            .args(SERVER_TUNING)
            .current_dir(dir);
        if nix::unistd::geteuid().is_root() {
            command.arg("--user=root");
        }
        let url = self.admin_url();
        let child = self.child.insert(ChildGuard::spawn(
            "mariadbd",
            command,
            &dir.join("mariadbd.log"),
        )?);
        child
            .wait_ready(loopback(self.port), STARTUP_TIMEOUT, || {
                let url = url.clone();
                async move {
                    match MySqlConnection::connect(&url).await {
                        Ok(conn) => conn.close().await.is_ok(),
                        Err(_) => false,
                    }
                }
            })
            .await
    }

    /// `mysql://root@127.0.0.1:PORT`: the server, as root, without a database.
    pub fn admin_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's output (its error log).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mariadbd.log")
    }

    /// Creates a fresh, uniquely named database on this server, dropped when the returned
    /// handle is dropped.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::Sql`] when the database cannot be created.
    pub async fn create_database(&self) -> Result<MariaDb> {
        MariaDb::create_on(&self.admin_url()).await
    }

    /// The guard of the running process.
    fn running(&self) -> Result<&ChildGuard> {
        self.child
            .as_ref()
            .ok_or(TestSupportError::NotRunning { server: "mariadbd" })
    }

    /// Freezes the server (SIGSTOP).
    ///
    /// # Errors
    ///
    /// When the server is not running.
    pub fn pause(&self) -> Result<()> {
        self.running()?.pause()
    }

    /// Resumes a paused server (SIGCONT).
    ///
    /// # Errors
    ///
    /// When the server is not running.
    pub fn resume(&self) -> Result<()> {
        self.running()?.resume()
    }

    /// Crashes the server (SIGKILL); InnoDB recovers committed data on restart (all but the
    /// last second's, given `innodb_flush_log_at_trx_commit=0`).
    ///
    /// # Errors
    ///
    /// When reaping the process fails.
    pub fn kill(&mut self) -> Result<()> {
        match self.child.take() {
            Some(mut child) => child.kill(),
            None => Ok(()),
        }
    }

    /// Shuts the server down cleanly (SIGTERM).
    ///
    /// # Errors
    ///
    /// When reaping the process fails.
    pub fn stop(&mut self) -> Result<()> {
        match self.child.take() {
            Some(mut child) => child.terminate(STOP_GRACE),
            None => Ok(()),
        }
    }

    /// Starts the server again on the same port and data, stopping it first if running.
    ///
    /// # Errors
    ///
    /// Start-up errors quoting the server's log.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch().await
    }
}

/// Options shared by `mariadb-install-db` and `mariadbd`: small InnoDB files, for a data
/// directory of ~25 MB instead of ~115 MB and a quick start.
const SERVER_TUNING: &[&str] = &["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_strips_database_and_options() {
        assert_eq!(
            server_url("mysql://root:pw@db:3306/forge?ssl-mode=disabled"),
            "mysql://root:pw@db:3306"
        );
        assert_eq!(
            server_url("mysql://root@127.0.0.1:3306"),
            "mysql://root@127.0.0.1:3306"
        );
        assert_eq!(
            server_url("mysql://root@127.0.0.1:3306/"),
            "mysql://root@127.0.0.1:3306"
        );
    }

    #[test]
    fn database_names_are_unique_and_plain() {
        let a = unique_database_name();
        let b = unique_database_name();
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
