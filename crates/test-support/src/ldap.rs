//! An OpenLDAP directory (`slapd`) of the tests' own.
//!
//! forge's identity app keeps its accounts in LDAP: `inetOrgPerson` + `posixAccount` +
//! `ldapPublicKey` entries under `ou=people`, locked through the password-policy overlay, with
//! passwords hashed by the argon2 module. [`Slapd`] starts a fresh `slapd` set up like that:
//!
//! * configured from a generated `slapd.conf` (`-f`, not `cn=config`: one readable file),
//!   listening only on `ldap://127.0.0.1:PORT/`, kept in the foreground by `-d 0`;
//! * one `mdb` database for the base DN in the temporary directory, administered by
//!   `cn=admin,<base>` (the rootdn, whose password is in the configuration);
//! * schemas `core`, `cosine`, `inetorgperson`, `nis` from the system, and our own
//!   `openssh-lpk` schema (shipped in this crate: Debian doesn't ship one);
//! * modules `ppolicy` and `argon2` (OpenLDAP 2.5's name for the former contrib `pw-argon2`)
//!   when installed; the `ppolicy` overlay — whose schema is built into the module in 2.5 —
//!   with the default policy `cn=default,ou=policies,<base>` (`pwdLockout: TRUE`, no automatic
//!   lockout after failures: accounts are locked by setting `pwdAccountLockedTime`);
//! * the entries `<base>`, `ou=people`, `ou=groups`, `ou=policies` and the policy, loaded with
//!   `slapadd` before the server starts.
//!
//! [`Slapd::stop`] and [`Slapd::restart`] keep the data, for "the directory is down" tests.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use tempfile::TempDir;

use crate::error::{Result, TestSupportError};
use crate::ports::{free_port, loopback};
use crate::process::{ChildGuard, find_binary, run_command, scratch_dir};

/// The Debian packages that provide `slapd`, `slapadd` and `ldapadd`.
const APT_PACKAGES: &str = "slapd ldap-utils";
/// Our openssh-lpk schema (objectclass `ldapPublicKey`, attribute `sshPublicKey`).
pub const OPENSSH_LPK_SCHEMA: &str = include_str!("../ldap/openssh-lpk.schema");
/// Where distributions keep slapd's schema files.
const SCHEMA_DIRS: &[&str] = &[
    "/etc/ldap/schema",
    "/etc/openldap/schema",
    "/usr/local/etc/openldap/schema",
];
/// Where distributions keep slapd's loadable modules.
const MODULE_DIRS: &[&str] = &[
    "/usr/lib/ldap",
    "/usr/lib/openldap",
    "/usr/lib64/openldap",
    "/usr/libexec/openldap",
    "/usr/local/libexec/openldap",
];
/// The system schemas every test directory loads, in dependency order.
const SYSTEM_SCHEMAS: &[&str] = &["core", "cosine", "inetorgperson", "nis"];
/// How long slapd gets to accept an admin bind after being started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long slapd gets to shut down cleanly.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How many ports a start tries before giving up.
const START_ATTEMPTS: usize = 3;

/// The first directory in `dirs` that holds `file`.
fn find_dir(dirs: &[&str], file: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(PathBuf::from)
        .find(|dir| dir.join(file).is_file())
}

/// Options for a [`Slapd`]; start with [`Slapd::builder`].
#[derive(Debug, Clone)]
pub struct SlapdBuilder {
    /// The suffix of the database, e.g. `dc=example,dc=org`.
    base_dn: String,
    /// The rootdn's password.
    admin_password: String,
    /// slapd's `-d` debug level (`0`: foreground, quiet; `stats` logs every operation).
    debug_level: String,
}

impl Default for SlapdBuilder {
    fn default() -> Self {
        Self {
            base_dn: "dc=example,dc=org".to_owned(),
            admin_password: "admin-secret".to_owned(),
            debug_level: "0".to_owned(),
        }
    }
}

impl SlapdBuilder {
    /// Sets the base DN (default `dc=example,dc=org`). Its first RDN must be `dc=`, `o=` or
    /// `ou=`, so that the base entry can be created.
    #[must_use]
    pub fn base_dn(mut self, base_dn: impl Into<String>) -> Self {
        self.base_dn = base_dn.into();
        self
    }

    /// Sets the admin's password (default `admin-secret`).
    #[must_use]
    pub fn admin_password(mut self, password: impl Into<String>) -> Self {
        self.admin_password = password.into();
        self
    }

    /// Sets slapd's debug level (default `0`); `stats` logs every operation to
    /// [`Slapd::log_path`].
    #[must_use]
    pub fn debug_level(mut self, level: impl Into<String>) -> Self {
        self.debug_level = level.into();
        self
    }

    /// Writes the configuration, loads the base entries and starts slapd; returns once the
    /// admin can bind.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::MissingBinary`] without slapd or the LDAP tools; a failed
    /// `slapadd` or start-up errors quoting slapd's output otherwise.
    pub async fn start(self) -> Result<Slapd> {
        let binary = find_binary("slapd", APT_PACKAGES)?;
        let slapadd = find_binary("slapadd", APT_PACKAGES)?;
        find_binary("ldapadd", APT_PACKAGES)?;
        let schema_dir =
            find_dir(SCHEMA_DIRS, "core.schema").ok_or(TestSupportError::MissingBinary {
                binary: "core.schema",
                apt_package: APT_PACKAGES,
            })?;
        let module_dir = find_dir(MODULE_DIRS, "back_mdb.la")
            .or_else(|| find_dir(MODULE_DIRS, "back_mdb.so"))
            .or_else(|| find_dir(MODULE_DIRS, "ppolicy.so"));
        let module = |names: &[&str]| {
            module_dir.as_ref().and_then(|dir| {
                names
                    .iter()
                    .find(|name| dir.join(format!("{name}.so")).is_file())
                    .map(|name| (*name).to_owned())
            })
        };
        let modules = Modules {
            dir: module_dir.clone(),
            back_mdb: module(&["back_mdb"]),
            ppolicy: module(&["ppolicy"]),
            argon2: module(&["argon2", "pw-argon2"]),
        };
        let base_entry = base_entry(&self.base_dn)?;

        let dir = scratch_dir("slapd")?;
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text)
                .map_err(|e| TestSupportError::io(format!("writing {}", path.display()), e))
                .map(|()| path)
        };
        std::fs::create_dir(dir.path().join("db"))
            .map_err(|e| TestSupportError::io("creating the database directory", e))?;
        write("openssh-lpk.schema", OPENSSH_LPK_SCHEMA)?;
        let conf = write(
            "slapd.conf",
            &self.slapd_conf(dir.path(), &schema_dir, &modules),
        )?;
        let ldif = write(
            "base.ldif",
            &self.base_ldif(&base_entry, modules.ppolicy.is_some()),
        )?;
        run_command(
            Command::new(&slapadd)
                .arg("-q")
                .arg("-f")
                .arg(&conf)
                .arg("-l")
                .arg(&ldif),
            None,
        )?;

        let mut slapd = Slapd {
            binary,
            dir,
            port: 0,
            base_dn: self.base_dn,
            admin_password: self.admin_password,
            debug_level: self.debug_level,
            has_argon2: modules.argon2.is_some(),
            has_ppolicy: modules.ppolicy.is_some(),
            child: None,
        };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            slapd.port = free_port();
            match slapd.launch().await {
                Ok(()) => return Ok(slapd),
                Err(e @ TestSupportError::ExitedEarly { .. }) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(TestSupportError::NotRunning { server: "slapd" }))
    }

    /// The generated `slapd.conf`.
    fn slapd_conf(&self, dir: &Path, schema_dir: &Path, modules: &Modules) -> String {
        let base = &self.base_dn;
        let mut conf = String::from("# Generated by forge-test-support for one test.\n");
        for schema in SYSTEM_SCHEMAS {
            let _ = writeln!(
                conf,
                "include {}",
                schema_dir.join(format!("{schema}.schema")).display()
            );
        }
        let _ = writeln!(conf, "include {}", dir.join("openssh-lpk.schema").display());
        let _ = writeln!(conf, "pidfile {}", dir.join("slapd.pid").display());
        let _ = writeln!(conf, "argsfile {}", dir.join("slapd.args").display());
        if let Some(module_dir) = &modules.dir {
            let _ = writeln!(conf, "modulepath {}", module_dir.display());
        }
        for module in [&modules.back_mdb, &modules.ppolicy, &modules.argon2]
            .into_iter()
            .flatten()
        {
            let _ = writeln!(conf, "moduleload {module}");
        }
        let _ = write!(
            conf,
            "\n\
             database mdb\n\
             maxsize 268435456\n\
             suffix \"{base}\"\n\
             rootdn \"cn=admin,{base}\"\n\
             rootpw \"{password}\"\n\
             directory {db}\n\
             index objectClass eq\n\
             index uid,cn,mail eq\n\
             index uidNumber eq\n\
             access to attrs=userPassword\n\
             \tby self write\n\
             \tby anonymous auth\n\
             \tby * none\n\
             access to *\n\
             \tby * read\n",
            password = self
                .admin_password
                .replace('\\', "\\\\")
                .replace('"', "\\\""),
            db = dir.join("db").display(),
        );
        if modules.ppolicy.is_some() {
            let _ = write!(
                conf,
                "overlay ppolicy\n\
                 ppolicy_default \"cn=default,ou=policies,{base}\"\n\
                 ppolicy_use_lockout\n"
            );
        }
        conf
    }

    /// The entries loaded before the first start.
    fn base_ldif(&self, base_entry: &str, ppolicy: bool) -> String {
        let base = &self.base_dn;
        let mut ldif = format!("dn: {base}\n{base_entry}\n");
        for ou in ["people", "groups", "policies"] {
            let _ = write!(
                ldif,
                "dn: ou={ou},{base}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
            );
        }
        if ppolicy {
            let _ = write!(
                ldif,
                "dn: cn=default,ou=policies,{base}\n\
                 objectClass: device\n\
                 objectClass: pwdPolicy\n\
                 cn: default\n\
                 pwdAttribute: userPassword\n\
                 pwdLockout: TRUE\n\
                 pwdMaxFailure: 0\n\
                 pwdAllowUserChange: TRUE\n\n"
            );
        }
        ldif
    }
}

/// Which loadable modules this machine's slapd has (file stems in `dir`).
#[derive(Debug)]
struct Modules {
    /// The module directory, if modules are installed at all.
    dir: Option<PathBuf>,
    /// `back_mdb`, unless built into slapd.
    back_mdb: Option<String>,
    /// The password-policy overlay.
    ppolicy: Option<String>,
    /// The argon2 password hash.
    argon2: Option<String>,
}

/// The object classes and naming attribute of the base entry, from the first RDN of `base_dn`.
fn base_entry(base_dn: &str) -> Result<String> {
    let first = base_dn.split(',').next().unwrap_or_default();
    let (attr, value) = first
        .split_once('=')
        .map(|(a, v)| (a.trim().to_ascii_lowercase(), v.trim()))
        .ok_or_else(|| TestSupportError::InvalidArgument(format!("base DN {base_dn:?}")))?;
    match attr.as_str() {
        "dc" => Ok(format!(
            "objectClass: dcObject\nobjectClass: organization\ndc: {value}\no: {value}\n"
        )),
        "o" => Ok(format!("objectClass: organization\no: {value}\n")),
        "ou" => Ok(format!("objectClass: organizationalUnit\nou: {value}\n")),
        _ => Err(TestSupportError::InvalidArgument(format!(
            "base DN {base_dn:?}: the first RDN must be dc=, o= or ou="
        ))),
    }
}

/// Whether `dn` can bind with `password` at `url`.
async fn can_bind(url: String, dn: String, password: String) -> bool {
    match connect(&url).await {
        Ok(mut ldap) => {
            let ok = matches!(
                ldap.simple_bind(&dn, &password).await.map(|r| r.success()),
                Ok(Ok(_))
            );
            let _ = ldap.unbind().await;
            ok
        }
        Err(_) => false,
    }
}

/// Opens an (unbound) connection to `url` with a short connect timeout.
async fn connect(url: &str) -> Result<Ldap> {
    let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(2));
    let (conn, ldap) = LdapConnAsync::with_settings(settings, url).await?;
    tokio::spawn(async move {
        // Ends when the connection is closed; errors then are of no interest.
        let _ = conn.drive().await;
    });
    Ok(ldap)
}

/// A `slapd` of the test's own, killed when dropped.
#[derive(Debug)]
pub struct Slapd {
    /// The running process, once started (declared first: fields drop in order, so it
    /// dies before its directory is removed).
    child: Option<ChildGuard>,
    /// Path of `slapd`, for restarts.
    binary: PathBuf,
    /// The server's directory: `slapd.conf`, schemas, `db/`, `slapd.log`.
    dir: TempDir,
    /// The loopback port it listens on.
    port: u16,
    /// The database suffix.
    base_dn: String,
    /// The rootdn's password.
    admin_password: String,
    /// slapd's `-d` level.
    debug_level: String,
    /// Whether the argon2 password module is loaded.
    has_argon2: bool,
    /// Whether the password-policy overlay is active.
    has_ppolicy: bool,
}

impl Slapd {
    /// Starts a directory for `dc=example,dc=org` with the default options.
    ///
    /// # Errors
    ///
    /// See [`SlapdBuilder::start`].
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// Options: base DN, admin password, debug level.
    pub fn builder() -> SlapdBuilder {
        SlapdBuilder::default()
    }

    /// Starts slapd on `self.port` and waits until the admin can bind.
    async fn launch(&mut self) -> Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{}/", self.port))
            .arg("-d")
            .arg(&self.debug_level)
            .current_dir(self.dir.path());
        let (url, dn, password) = (self.url(), self.admin_dn(), self.admin_password.clone());
        let child = self.child.insert(ChildGuard::spawn(
            "slapd",
            command,
            &self.dir.path().join("slapd.log"),
        )?);
        child
            .wait_ready(loopback(self.port), STARTUP_TIMEOUT, || {
                can_bind(url.clone(), dn.clone(), password.clone())
            })
            .await
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The loopback port slapd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// The database suffix, e.g. `dc=example,dc=org`.
    pub fn base_dn(&self) -> &str {
        &self.base_dn
    }

    /// `cn=admin,<base>`: the rootdn, allowed everything.
    pub fn admin_dn(&self) -> String {
        format!("cn=admin,{}", self.base_dn)
    }

    /// The admin's password.
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// `ou=people,<base>`.
    pub fn people_dn(&self) -> String {
        format!("ou=people,{}", self.base_dn)
    }

    /// `ou=groups,<base>`.
    pub fn groups_dn(&self) -> String {
        format!("ou=groups,{}", self.base_dn)
    }

    /// `cn=default,ou=policies,<base>`: the default password policy.
    pub fn default_policy_dn(&self) -> String {
        format!("cn=default,ou=policies,{}", self.base_dn)
    }

    /// Whether `{ARGON2}` password hashes are understood (the argon2 module is installed).
    pub fn has_argon2(&self) -> bool {
        self.has_argon2
    }

    /// Whether the password-policy overlay is active (the ppolicy module is installed).
    pub fn has_ppolicy(&self) -> bool {
        self.has_ppolicy
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// slapd's output.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    /// A connection bound as the admin. Its driver runs on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::Ldap`] when connecting or binding fails.
    pub async fn admin_conn(&self) -> Result<Ldap> {
        let mut ldap = connect(&self.url()).await?;
        ldap.simple_bind(&self.admin_dn(), &self.admin_password)
            .await?
            .success()?;
        Ok(ldap)
    }

    /// Adds the entries of `ldif` as the admin, with the `ldapadd` tool.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::CommandFailed`] with ldapadd's output when an entry is refused.
    pub fn ldapadd(&self, ldif: &str) -> Result<()> {
        self.ldap_tool("ldapadd", ldif)
    }

    /// Applies the change records of `ldif` (`changetype: modify` …) as the admin, with the
    /// `ldapmodify` tool.
    ///
    /// # Errors
    ///
    /// [`TestSupportError::CommandFailed`] with ldapmodify's output when a change is refused.
    pub fn ldapmodify(&self, ldif: &str) -> Result<()> {
        self.ldap_tool("ldapmodify", ldif)
    }

    /// Runs `tool` (ldapadd, ldapmodify) as the admin with `ldif` on its stdin.
    fn ldap_tool(&self, tool: &'static str, ldif: &str) -> Result<()> {
        let binary = find_binary(tool, APT_PACKAGES)?;
        run_command(
            Command::new(binary)
                .args(["-x", "-H"])
                .arg(self.url())
                .arg("-D")
                .arg(self.admin_dn())
                .arg("-w")
                .arg(&self.admin_password),
            Some(ldif.as_bytes()),
        )
        .map(drop)
    }

    /// Whether slapd is running (a paused one is).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// Freezes slapd (SIGSTOP): connections are accepted by the kernel but never answered.
    ///
    /// # Errors
    ///
    /// When slapd is not running.
    pub fn pause(&self) -> Result<()> {
        self.running()?.pause()
    }

    /// Resumes a paused slapd (SIGCONT).
    ///
    /// # Errors
    ///
    /// When slapd is not running.
    pub fn resume(&self) -> Result<()> {
        self.running()?.resume()
    }

    /// The guard of the running process.
    fn running(&self) -> Result<&ChildGuard> {
        self.child
            .as_ref()
            .ok_or(TestSupportError::NotRunning { server: "slapd" })
    }

    /// Shuts slapd down cleanly (SIGTERM). The data stays for [`Slapd::restart`].
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

    /// Crashes slapd (SIGKILL). mdb is crash-safe: a restart finds all committed data.
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

    /// Starts slapd again on the same port with the same data, stopping it first if it is
    /// running; returns once the admin can bind.
    ///
    /// # Errors
    ///
    /// Start-up errors quoting slapd's output.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch().await
    }
}
