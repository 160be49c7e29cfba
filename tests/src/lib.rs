//! Shared helpers of forge's deployment checks.
//!
//! The tests in `tests/tests/` check what an operator installs rather than
//! what a daemon does: the systemd units in `systemd/` (`systemd-analyze
//! verify`, `systemd-analyze security --offline=true`), the Puppet module in
//! `puppet/forge` (parser, lint, catalogs of every role with the sample hiera
//! data in `tests/fixtures`, and the rendered configuration files checked by
//! each daemon's own `--check-config`), and the Debian package built by
//! `scripts/build-deb` (contents, install into and removal from a scratch
//! root). They need the system tools named in [`require_tool`] and no
//! network.
//!
//! Daemon binaries are taken from the directory the test executable was built
//! for (`target/<profile>/`). `cargo test --workspace` builds them; when one
//! is missing the test fails and says how to build it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The daemons with a unit, config file and `--check-config`, by binary name.
pub const DAEMONS: &[&str] = &[
    "dynamicproxy",
    "proxylistener",
    "webservicemonitor",
    "idm-web",
    "rq-worker",
];

/// Every binary the package installs.
pub const BINARIES: &[&str] = &[
    "dynamicproxy",
    "proxylistener",
    "webservice-runner",
    "portreleaser",
    "webservicemonitor",
    "webservice",
    "rq-worker",
    "idm-web",
    "forgectl",
];

/// The timer jobs (unit name without suffix).
pub const TIMER_JOBS: &[&str] = &["idm-web-sync-username-block", "idm-web-expire-signups"];

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test package lives one level below the repository root")
        .to_path_buf()
}

/// `target/<profile>/`: where cargo put this test's binaries and the
/// workspace's daemons.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test>-<hash>
    let deps = exe.parent().expect("test executable directory");
    deps.parent().expect("target/<profile>").to_path_buf()
}

/// The path of a built workspace binary; panics with how to build it when
/// missing.
pub fn binary(name: &str) -> PathBuf {
    let dir = profile_dir();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "binary `{name}` not found in {}: build the workspace's binaries first \
         (`cargo build --bins{}` or `cargo test --workspace`)",
        dir.display(),
        if dir.ends_with("release") {
            " --release"
        } else {
            ""
        },
    );
    path
}

/// Panics with an installation hint unless `tool` is on `PATH`.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false);
    let package = match tool {
        "systemd-analyze" => "systemd",
        "puppet" => "puppet",
        "puppet-lint" => "puppet-lint",
        "dpkg-deb" | "dpkg" => "dpkg",
        other => other,
    };
    assert!(
        found,
        "`{tool}` is needed by this test: apt-get install -y {package}"
    );
}

/// Runs a command, returning its output (never panics on a non-zero exit).
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics, showing its output, unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Files in `dir` whose names end with one of `suffixes`, sorted.
pub fn files_with_suffix(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            suffixes.iter().any(|s| name.ends_with(s))
        })
        .collect();
    out.sort();
    out
}

/// Every unit file (`.service`, `.timer`, `.socket`) in `systemd/`.
pub fn unit_files() -> Vec<PathBuf> {
    files_with_suffix(
        &repo_root().join("systemd"),
        &[".service", ".timer", ".socket"],
    )
}

/// The values of `key=` lines in a unit's text (all sections), in order.
pub fn unit_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then_some(v.trim())
        })
        .collect()
}

/// Result of `systemd-analyze verify` over unit files.
#[derive(Debug)]
pub struct Verify {
    /// Whether it exited 0.
    pub success: bool,
    /// Everything it printed; any line is a problem (unknown keys and
    /// unparsable values are only warnings with exit status 0).
    pub messages: String,
}

impl Verify {
    /// True when it exited 0 and said nothing.
    pub fn clean(&self) -> bool {
        self.success && self.messages.trim().is_empty()
    }
}

/// Runs `systemd-analyze verify` on copies of `units` in a scratch
/// directory, where `/usr/bin/<x>` and `/usr/lib/forge/<x>` in the units
/// point at stand-in executables (verify checks that every command exists;
/// the package installs the real ones).
pub fn verify_units(units: &[PathBuf]) -> Verify {
    require_tool("systemd-analyze");
    let dir = tempfile::tempdir().expect("scratch directory");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("stand-in bin directory");
    let mut copies = Vec::new();
    for unit in units {
        let text = std::fs::read_to_string(unit)
            .unwrap_or_else(|e| panic!("reading {}: {e}", unit.display()));
        for word in text.split(|c: char| c.is_whitespace() || c == '=') {
            let word = word.trim_start_matches(['+', '-', '!', '@', ':']);
            for prefix in ["/usr/bin/", "/usr/lib/forge/"] {
                if let Some(name) = word.strip_prefix(prefix) {
                    let stand_in = bin.join(name);
                    if !stand_in.exists() {
                        std::os::unix::fs::symlink("/bin/true", &stand_in)
                            .expect("stand-in executable");
                    }
                }
            }
        }
        let bin_str = format!("{}/", bin.display());
        let text = text
            .replace("/usr/bin/", &bin_str)
            .replace("/usr/lib/forge/", &bin_str);
        let copy = dir.path().join(unit.file_name().expect("unit file name"));
        std::fs::write(&copy, text).expect("writing unit copy");
        copies.push(copy);
    }
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(&copies)
        .current_dir(dir.path())
        .env("SYSTEMD_LOG_COLOR", "0"));
    let mut messages = String::from_utf8_lossy(&out.stdout).into_owned();
    messages.push_str(&String::from_utf8_lossy(&out.stderr));
    Verify {
        success: out.status.success(),
        messages,
    }
}

/// `systemd-analyze security --offline=true` of one unit file: its overall
/// exposure (0.0 best … 10.0 worst).
pub fn exposure(unit: &Path) -> f64 {
    require_tool("systemd-analyze");
    let out = run_ok(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit)
            .env("SYSTEMD_COLORS", "0"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    // "→ Overall exposure level for x.service: 1.6 OK 🙂"
    let after = line
        .rsplit_once(": ")
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("unexpected exposure line {line:?}"));
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected exposure line {line:?}"))
}

/// A scratch environment for `puppet` (its own confdir, vardir, …) using
/// the module in `puppet/` and the sample hiera data in `tests/fixtures`.
#[derive(Debug)]
pub struct Puppet {
    dir: tempfile::TempDir,
}

impl Default for Puppet {
    fn default() -> Self {
        Self::new()
    }
}

impl Puppet {
    /// A fresh scratch environment.
    pub fn new() -> Self {
        require_tool("puppet");
        Puppet {
            dir: tempfile::tempdir().expect("scratch directory"),
        }
    }

    /// The scratch directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `puppet <subcommand>` with every path in the scratch directory,
    /// the module path and the sample hiera data; `mode` selects the hiera
    /// layer (`production` or `staging`).
    pub fn command(&self, subcommand: &str, mode: &str) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("puppet");
        cmd.arg(subcommand)
            .arg("--color=false")
            .arg(format!("--confdir={}", d.join("conf").display()))
            .arg(format!("--vardir={}", d.join("var").display()))
            .arg(format!("--codedir={}", d.join("code").display()))
            .arg(format!("--logdir={}", d.join("log").display()))
            .arg(format!("--rundir={}", d.join("run").display()))
            .arg(format!(
                "--modulepath={}",
                repo_root().join("puppet").display()
            ))
            .arg(format!(
                "--hiera_config={}",
                repo_root().join("tests/fixtures/hiera.yaml").display()
            ))
            .env("FACTER_forge_test_mode", mode)
            .env("FACTER_forge_test_root", d.join("root"))
            .env("LANG", "C.UTF-8");
        cmd
    }

    /// The staging root (`forge::root_dir` in staging mode).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}
