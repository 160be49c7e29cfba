//! Web services on a real Son of Grid Engine cell, end to end.
//!
//! Everything is the real thing: a private single-host cell
//! ([`GridCell`]: qmaster, execd, the `webgrid-lighttpd` and
//! `webgrid-generic` queues with `terminate_method SIGTERM` and a
//! `portreleaser` epilog, as today's web queues), real tool accounts
//! (`useradd`, homes with `public_html/index.php`, a WSGI app, …), a real
//! redis-server, proxylistener authenticating clients through Debian's
//! `oidentd`, dynamicproxy serving the routes, and the `webservice`,
//! `webservice-runner` and `portreleaser` binaries run as the tool users —
//! `webservice <type> start` submits with `qsub`, the job runs
//! `webservice-runner` on the exec host, the server registers itself and its
//! page comes back through the proxy. The monitor reads the cell's real
//! `qstat -xml` and restarts through `sudo -i -u <tool> webservice … restart`.
//! The Puppet define `forge::gridqueue` is applied to a real queue.
//!
//! Grid Engine jobs run as the tool users, so the binaries they run must be
//! theirs to execute: `target/` under root's home is not, so the binaries are
//! copied to a world-readable directory and the submit template names that
//! copy (in production it names `/usr/bin/webservice-runner`).
//!
//! If the cell cannot come up (no Grid Engine, not root), the tests fail and
//! say why; they never skip. One cell per test, the tests side by side.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_core::redis::RedisSettings;
use forge_core::{BackendUrl, Reloadable, Shutdown, ToolName};
use forge_test_support::{GridCell, GridCellOptions, Oidentd, RedisServer, ToolAccount};
use fred::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webservicemonitor::config::{GridengineCommands, ProbeKind, UidSourceKind};
use webservicemonitor::proxy::HttpClient;
use webservicemonitor::scheduler::{Job, parse_qstat_xml};
use webservicemonitor::template::ArgvTemplate;
use webservicemonitor::{Action, Monitor, MonitorConfig, PassReport, WebserviceConfig};

/// Generous bound of every wait (a loaded two-core machine).
const PATIENCE: Duration = Duration::from_secs(180);

/// `webservice-runner` and `portreleaser` of this workspace, built by cargo
/// for this test (they are another package's binaries, so cargo does not
/// build them for this one's tests); their directory. The build is the
/// workspace's `cargo build --workspace --bins` — the one `scripts/demo`
/// runs — so its dependencies are compiled with the same features once, not
/// a third time for one package.
fn runner_binaries() -> &'static PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        // This test is <target>/<profile>/deps/grid-<hash>.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
        let target_dir = profile_dir.parent().unwrap();
        let mut cargo = std::process::Command::new(env!("CARGO"));
        // Not the variables cargo sets for this test: build scripts track
        // some (ring's, CARGO_MANIFEST_DIR), and seeing them changed would
        // rebuild the shared dependencies here and again in the next build.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_MANIFEST_LINKS",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&name.as_ref())
            {
                cargo.env_remove(name.as_ref());
            }
        }
        cargo
            .args(["build", "--quiet", "--workspace", "--bins"])
            .arg("--target-dir")
            .arg(target_dir);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                cargo.args(["--profile", profile]);
            }
        }
        let out = cargo.output().unwrap();
        assert!(
            out.status.success(),
            "building webservice-runner failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir
    })
}

/// Copies `from` to `dir` as a 0755 file; the copy.
fn install(from: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(from.file_name().unwrap());
    std::fs::copy(from, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// The whole site: a cell, Redis, oidentd, proxylistener, dynamicproxy, the
/// binaries. Fields drop in order: the cell (and every job) goes first.
struct Grid {
    cell: GridCell,
    shutdown: Shutdown,
    _oidentd: Oidentd,
    redis: RedisServer,
    db: Client,
    /// dynamicproxy's HTTP listener.
    proxy: SocketAddr,
    /// dynamicproxy's admin listener (`/list`).
    proxy_admin: SocketAddr,
    /// World-readable: binaries, the active-proxy file, configurations.
    shared: tempfile::TempDir,
    webservice: PathBuf,
    runner: PathBuf,
    active_proxy: PathBuf,
}

impl Drop for Grid {
    fn drop(&mut self) {
        self.shutdown.force();
    }
}

impl Grid {
    async fn start() -> Grid {
        let built = tokio::task::spawn_blocking(runner_binaries).await.unwrap();
        let shared = tempfile::tempdir().unwrap();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let webservice = install(Path::new(env!("CARGO_BIN_EXE_webservice")), shared.path());
        let runner = install(&built.join("webservice-runner"), shared.path());
        let releaser = install(&built.join("portreleaser"), shared.path());

        let redis = RedisServer::start().await.unwrap();
        let db = RedisSettings::for_url(&redis.url()).client().unwrap();
        db.init().await.unwrap();
        let oidentd = Oidentd::start()
            .await
            .unwrap_or_else(|e| panic!("oidentd (the real identd) did not start: {e}"));
        let shutdown = Shutdown::new();

        // proxylistener: who registers is asked of oidentd, which reads the
        // kernel's socket table; so is who serves a backend.
        let mut pl = proxylistener::Config::default();
        pl.ident.port = oidentd.port();
        pl.ident.read_timeout_ms = 10_000;
        pl.ident.connect_timeout_ms = 10_000;
        pl.redis = RedisSettings::for_url(&redis.url());
        let store = proxylistener::RouteStore::connect(&pl.redis).unwrap();
        assert!(store.wait_connected(Duration::from_secs(30)).await);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let registration = listener.local_addr().unwrap();
        tokio::spawn(proxylistener::run(
            listener,
            proxylistener::Context {
                config: Reloadable::new(pl),
                store,
                pending: proxylistener::PendingChecks::default(),
            },
            shutdown.clone(),
        ));
        let active_proxy = shared.path().join("active-proxy");
        std::fs::write(&active_proxy, format!("{registration}\n")).unwrap();
        std::fs::set_permissions(&active_proxy, std::fs::Permissions::from_mode(0o644)).unwrap();

        // dynamicproxy, plain HTTP, domain toolforge.org; unrouted hosts go
        // to a default upstream that says so.
        let default = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let default_url = format!("http://{}", default.local_addr().unwrap());
        let app = axum::Router::new().fallback(|| async { "default upstream" });
        tokio::spawn(async move { axum::serve(default, app).await });
        let mut dp = dynamicproxy::Config {
            default_upstream: Some(BackendUrl::parse(&default_url).unwrap()),
            domains: vec!["toolforge.org".into()],
            ..Default::default()
        };
        dp.redis.url = redis.url();
        dp.routes.resync_interval_ms = 1000;
        dp.tls.redirect_http = false;
        dp.limits.rate_per_second = 0;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (proxy, proxy_admin) = (http.local_addr().unwrap(), admin.local_addr().unwrap());
        tokio::spawn(dynamicproxy::run(
            dynamicproxy::Listeners {
                http,
                admin,
                https: None,
            },
            dp,
            shutdown.clone(),
        ));

        // Today's web queues: SIGTERM on qdel (the runner unregisters), and
        // portreleaser as the epilog on the exec host.
        let epilog = shared.path().join("epilog");
        std::fs::write(
            &epilog,
            format!(
                "#!/bin/sh\nexec {} --active-proxy {}\n",
                releaser.display(),
                active_proxy.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&epilog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cell = GridCell::start(GridCellOptions {
            epilog: Some(epilog),
            terminate_with_sigterm: true,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("the Grid Engine test cell did not come up: {e}"));

        Grid {
            cell,
            shutdown,
            _oidentd: oidentd,
            redis,
            db,
            proxy,
            proxy_admin,
            shared,
            webservice,
            runner,
            active_proxy,
        }
    }

    /// `env SGE_…=… <argv>`: a command of this cell.
    fn sge(&self, argv: &[&str]) -> ArgvTemplate {
        let mut v = self.cell.env_argv();
        v.extend(argv.iter().map(|s| (*s).to_owned()));
        ArgvTemplate::new(v)
    }

    /// A `webservice` configuration for tools under `homes`, written where
    /// tool users can read it; its path.
    fn webservice_config(&self, homes: &Path) -> PathBuf {
        let mut c = WebserviceConfig::default();
        c.tools.root = homes.to_owned();
        c.tools.min_uid = 1000;
        c.scheduler.timeout_secs = 120;
        // The shipped templates, run in this cell, with the runner's copy
        // (and the active-proxy file) where the package installs the runner.
        let shipped = GridengineCommands::default();
        let runner = self.runner.display().to_string();
        let active_proxy = self.active_proxy.display().to_string();
        let mut submit = Vec::new();
        for arg in shipped.submit.args().iter().cloned() {
            if arg == "/usr/bin/webservice-runner" {
                submit.extend([
                    runner.clone(),
                    "--active-proxy".into(),
                    active_proxy.clone(),
                ]);
            } else {
                submit.push(arg);
            }
        }
        assert!(
            submit.contains(&runner),
            "the shipped submit template names /usr/bin/webservice-runner"
        );
        let sge = |v: &[String]| self.sge(&v.iter().map(String::as_str).collect::<Vec<_>>());
        c.scheduler.gridengine.list = sge(shipped.list.args());
        c.scheduler.gridengine.submit = sge(&submit);
        c.scheduler.gridengine.stop = sge(shipped.stop.args());
        c.stop_wait_secs = 120;
        c.poll_ms = 200;
        c.validate().unwrap();
        let name = homes.file_name().unwrap().to_string_lossy().into_owned();
        let path = self.shared.path().join(format!("webservice-{name}.toml"));
        std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    /// The monitor's configuration for tools under `homes`, restarting as
    /// production does: `sudo -i -u <tool> webservice … restart`.
    fn monitor_config(&self, homes: &Path, webservice_config: &Path) -> MonitorConfig {
        let mut c = MonitorConfig::default();
        c.tools.root = homes.to_owned();
        c.tools.min_uid = 1000;
        c.users.source = UidSourceKind::Passwd;
        c.scheduler.timeout_secs = 120;
        c.scheduler.gridengine.list = self.sge(&["qstat", "-u", "*", "-xml"]);
        c.scheduler.gridengine.stop = self.sge(&["qdel", "{job_id}"]);
        c.proxy.list_url = format!("http://{}/list", self.proxy_admin);
        c.proxy.timeout_ms = 10_000;
        c.health.probe = ProbeKind::Tcp;
        c.health.timeout_ms = 5000;
        c.restart.command = ArgvTemplate::new(
            [
                "sudo",
                "-i",
                "-u",
                "{user}",
                &self.webservice.display().to_string(),
                "--config",
                &webservice_config.display().to_string(),
                "--backend={backend}",
                "--release={release}",
                "restart",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        );
        c.restart.timeout_secs = 300;
        c.redis = RedisSettings::for_url(&self.redis.url());
        c.pass.interval_secs = 1;
        c.lease.ttl_secs = 600;
        c.validate().unwrap();
        c
    }

    fn monitor(&self, config: MonitorConfig) -> Monitor {
        let store = webservicemonitor::Store::new(self.db.clone());
        Monitor::new(
            Arc::new(config),
            store,
            HttpClient::new(),
            "grid-test".into(),
        )
        .verbose(true)
    }

    /// Every job of the cell (`qstat -u '*' -xml`, parsed as the monitor does).
    async fn jobs(&self) -> Vec<Job> {
        let xml = self.cell.run("qstat", &["-u", "*", "-xml"]).await.unwrap();
        parse_qstat_xml(&xml).unwrap()
    }

    async fn jobs_named(&self, name: &str) -> Vec<Job> {
        self.jobs()
            .await
            .into_iter()
            .filter(|j| j.name == name)
            .collect()
    }

    /// Waits until no job is named `name`.
    async fn until_no_job(&self, name: &str) {
        eventually(&format!("job {name} to be gone"), || async {
            self.jobs_named(name).await.is_empty()
        })
        .await;
    }

    async fn routes(&self, tool: &str) -> HashMap<String, String> {
        let key = forge_core::RedisKey::Prefix(ToolName::parse(tool).unwrap()).to_key();
        self.db.hgetall(key).await.unwrap()
    }

    /// dynamicproxy's `/list` (what the monitor reads).
    async fn list(&self) -> String {
        let fetch = async {
            let mut s = tokio::net::TcpStream::connect(self.proxy_admin)
                .await
                .ok()?;
            s.write_all(b"GET /list HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.ok()?;
            Some(String::from_utf8_lossy(&out).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(60), fetch)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// `GET path` of `<tool>.toolforge.org` through dynamicproxy: status line
    /// and body (empty on a connection failure).
    async fn page(&self, tool: &str, path: &str) -> String {
        let fetch = async {
            let mut s = tokio::net::TcpStream::connect(self.proxy).await.ok()?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {tool}.toolforge.org\r\nUser-Agent: forge-grid-test\r\nConnection: close\r\n\r\n"
            );
            s.write_all(request.as_bytes()).await.ok()?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.ok()?;
            Some(String::from_utf8_lossy(&out).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(60), fetch)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Waits until the tool's page through the proxy contains `text`.
    async fn until_page_says(&self, tool: &ToolAccount, path: &str, text: &str) {
        let started = Instant::now();
        loop {
            let page = self.page(tool.name(), path).await;
            if page.contains(text) {
                return;
            }
            if started.elapsed() > PATIENCE {
                let log =
                    std::fs::read_to_string(tool.home().join("error.log")).unwrap_or_default();
                panic!(
                    "{}{path} never said {text:?}; last answer:\n{page}\nroutes: {:?}\njobs: {:?}\nerror.log:\n{log}",
                    tool.name(),
                    self.routes(tool.name()).await,
                    self.jobs().await,
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// Retries `check` every 200 ms until it holds; fails after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < PATIENCE,
            "waited {PATIENCE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the real `webservice` as the tool: (success, stdout, stderr).
async fn webservice(
    grid: &Grid,
    tool: &ToolAccount,
    config: &Path,
    args: &[&str],
) -> (bool, String, String) {
    let mut c = tool.command(&grid.webservice);
    c.arg("--config").arg(config).args(args).kill_on_drop(true);
    let out = tokio::time::timeout(PATIENCE, c.output())
        .await
        .unwrap_or_else(|_| panic!("webservice {args:?} did not finish"))
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory of tool homes (one per scenario, so a monitor pass sees only
/// that scenario's tools) and the `webservice` configuration for it.
struct Homes {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Homes {
    fn new(grid: &Grid) -> Homes {
        let dir = tempfile::tempdir().unwrap();
        let config = grid.webservice_config(dir.path());
        Homes { dir, config }
    }

    fn tool(&self, prefix: &str) -> ToolAccount {
        ToolAccount::create("tools", prefix, self.dir.path())
            .unwrap_or_else(|e| panic!("cannot create a tool account: {e}"))
    }
}

fn decision<'a>(r: &'a PassReport, tool: &ToolAccount) -> &'a webservicemonitor::ToolDecision {
    r.decisions
        .iter()
        .find(|d| d.tool == tool.name())
        .unwrap_or_else(|| panic!("no decision for {}: {r:#?}", tool.name()))
}

/// The whole life of one web service through the real binaries: start →
/// page through the proxy → status → restart (never two jobs) → stop (job
/// and route gone).
async fn life_of(
    grid: &Grid,
    homes: &Homes,
    tool: &ToolAccount,
    web_type: &str,
    start_args: &[&str],
    path: &str,
    says: &str,
) {
    let name = format!("{web_type}-{}", tool.name());
    let mut args = vec![web_type, "start"];
    args.extend(start_args);
    let (ok, out, err) = webservice(grid, tool, &homes.config, &args).await;
    assert!(ok, "{web_type} start: {out} {err}");
    assert!(
        out.contains(&format!("Your job {name} has been submitted")),
        "{out}"
    );
    let manifest = std::fs::read_to_string(tool.home().join("service.manifest")).unwrap();
    assert!(manifest.contains(&format!("web: {web_type}")), "{manifest}");

    grid.until_page_says(tool, path, says).await;
    let routes = grid.routes(tool.name()).await;
    assert_eq!(routes.len(), 1, "{routes:?}");
    let jobs = grid.jobs_named(&name).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].owner, tool.user());
    let first = jobs[0].id.clone();

    let (ok, out, err) = webservice(grid, tool, &homes.config, &["status"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("Your webservice of type {web_type} is running")),
        "{out}"
    );

    // restart: the old job is deleted and gone before the new one is
    // submitted — never two jobs.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = Arc::clone(&watching);
        let env = grid.cell.env();
        let name = name.clone();
        tokio::task::spawn_blocking(move || {
            let mut most = 0;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(out) = std::process::Command::new("qstat")
                    .args(["-u", "*", "-xml"])
                    .envs(env.clone())
                    .output()
                    && let Ok(jobs) = parse_qstat_xml(&String::from_utf8_lossy(&out.stdout))
                {
                    most = most.max(jobs.iter().filter(|j| j.name == name).count());
                }
                std::thread::sleep(Duration::from_millis(150));
            }
            most
        })
    };
    let (ok, out, err) = webservice(grid, tool, &homes.config, &["restart"]).await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let most = watcher.await.unwrap();
    assert!(ok, "restart: {out} {err}");
    assert_eq!(most, 1, "restart left two jobs side by side");
    let jobs = grid.jobs_named(&name).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_ne!(jobs[0].id, first, "restart submitted a new job");
    grid.until_page_says(tool, path, says).await;

    // stop: the job and the route go.
    let (ok, out, err) = webservice(grid, tool, &homes.config, &["stop"]).await;
    assert!(ok, "stop: {out} {err}");
    assert!(out.contains("Stopping webservice"), "{out}");
    assert!(
        grid.jobs_named(&name).await.is_empty(),
        "stop waits for the job to go"
    );
    eventually("the route to be removed", || async {
        grid.routes(tool.name()).await.is_empty()
    })
    .await;
    grid.until_page_says(tool, path, "default upstream").await;
    let (_, out, _) = webservice(grid, tool, &homes.config, &["status"]).await;
    assert!(out.contains("Your webservice is not running"), "{out}");
    // The jobs' standard error (qsub -e ~/error.log): both jobs' runners
    // registered; both jobs' epilogs released the route. (qdel's SIGTERM
    // reaches every process of the job at once, and the runner does not
    // always get to unregister by itself before the job is torn down: the
    // epilog is what reliably removes the route.)
    let log = std::fs::read_to_string(tool.home().join("error.log")).unwrap_or_default();
    assert_eq!(
        log.matches("webservice-runner: registered http://").count(),
        2,
        "{log}"
    );
    assert_eq!(
        log.matches("portreleaser: released route").count(),
        2,
        "{log}"
    );
    assert!(
        !log.contains("Some(") && !log.contains("Pid("),
        "the runner's log speaks in words: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lighttpd_uwsgi_python_and_generic_serve_through_the_grid_and_the_proxy() {
    let grid = Grid::start().await;
    let homes = Homes::new(&grid);

    let php = homes.tool("php");
    php.write(
        "public_html/index.php",
        "<?php echo 'php on the grid says ', 6 * 7, \"\\n\";\n",
    )
    .unwrap();

    let wsgi = homes.tool("wsgi");
    wsgi.write(
        "www/python/src/app.py",
        "def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'wsgi on the grid says hello']\n",
    )
    .unwrap();

    let generic = homes.tool("gen");
    generic
        .write("www/static/hello.txt", "generic on the grid says hi\n")
        .unwrap();
    let dir = generic.home().join("www/static").display().to_string();

    let wsgi_path = format!("/{}/", wsgi.name());
    let generic_command = [
        "/usr/bin/python3",
        "-m",
        "http.server",
        "{port}",
        "--bind",
        "127.0.0.1",
        "--directory",
        &dir,
    ];
    tokio::join!(
        life_of(
            &grid,
            &homes,
            &php,
            "lighttpd",
            &[],
            "/index.php",
            "php on the grid says 42"
        ),
        life_of(
            &grid,
            &homes,
            &wsgi,
            "uwsgi-python",
            &[],
            &wsgi_path,
            "wsgi on the grid says hello"
        ),
        life_of(
            &grid,
            &homes,
            &generic,
            "generic",
            &generic_command,
            "/hello.txt",
            "generic on the grid says hi",
        ),
    );
}

/// Stops the cell's execd while it lives (new jobs stay in `t`, being
/// transferred); lets it go on when dropped, also when the test fails.
struct ExecdStopped(nix::unistd::Pid);

impl ExecdStopped {
    fn new(grid: &Grid) -> ExecdStopped {
        let pid = grid
            .cell
            .execd_pid()
            .unwrap_or_else(|| panic!("the cell's sge_execd wrote no pid file"));
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        ExecdStopped(pid)
    }
}

impl Drop for ExecdStopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_monitor_reads_the_real_qstat() {
    let grid = Grid::start().await;

    // --- `t` right after qsub counts as running: no stale-route deletion, no
    // restart of a healthy job.
    {
        let homes = Homes::new(&grid);
        let monitor = grid.monitor(grid.monitor_config(homes.dir.path(), &homes.config));
        let tool = homes.tool("tt");
        tool.write("public_html/index.php", "<?php echo 'transferred';\n")
            .unwrap();
        // A live registration of the tool (its previous server, say).
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_url = format!("http://{}", live.local_addr().unwrap());
        let key = forge_core::RedisKey::Prefix(ToolName::parse(tool.name()).unwrap()).to_key();
        let _: i64 = grid
            .db
            .hset(key.clone(), (".*", live_url.as_str()))
            .await
            .unwrap();
        eventually("the proxy's /list to list the tool", || async {
            grid.list().await.contains(&format!("\"{}\"", tool.name()))
        })
        .await;
        let name = format!("lighttpd-{}", tool.name());
        {
            let _stopped = ExecdStopped::new(&grid);
            let (ok, out, err) =
                webservice(&grid, &tool, &homes.config, &["lighttpd", "start"]).await;
            assert!(ok, "{out} {err}");
            eventually("the job to be in state t", || async {
                grid.jobs_named(&name).await.iter().any(|j| j.state == "t")
            })
            .await;
            let (_, out, _) = webservice(&grid, &tool, &homes.config, &["status"]).await;
            assert!(
                out.contains("Your webservice of type lighttpd is running")
                    && out.contains("state t"),
                "{out}"
            );
            let report = monitor.pass(false).await;
            assert!(report.error.is_none(), "{report:#?}");
            let d = decision(&report, &tool);
            assert_eq!(d.action, Action::Healthy, "{report:#?}");
            assert_eq!(d.routes_removed, 0);
            assert_eq!(report.restarts_attempted, 0);
            assert_eq!(
                grid.routes(tool.name()).await.get(".*"),
                Some(&live_url),
                "the live route was removed"
            );
            assert_eq!(grid.jobs_named(&name).await.len(), 1);
        }
        drop(live);
        grid.until_page_says(&tool, "/", "transferred").await;
        let (ok, _, err) = webservice(&grid, &tool, &homes.config, &["stop"]).await;
        assert!(ok, "{err}");
    }

    // --- qdel of a job the manifest still wants: resubmitted.
    {
        let homes = Homes::new(&grid);
        let monitor = grid.monitor(grid.monitor_config(homes.dir.path(), &homes.config));
        let tool = homes.tool("qd");
        tool.write("public_html/index.php", "<?php echo 'back again';\n")
            .unwrap();
        let name = format!("lighttpd-{}", tool.name());
        let (ok, out, err) = webservice(&grid, &tool, &homes.config, &["lighttpd", "start"]).await;
        assert!(ok, "{out} {err}");
        grid.until_page_says(&tool, "/", "back again").await;
        let report = monitor.pass(false).await;
        assert_eq!(
            decision(&report, &tool).action,
            Action::Healthy,
            "{report:#?}"
        );
        let first = grid.jobs_named(&name).await[0].id.clone();
        grid.cell.run("qdel", &[&first]).await.unwrap();
        grid.until_no_job(&name).await;
        // SIGTERM (terminate_method) let the runner unregister; the epilog's
        // portreleaser too.
        eventually("the route of the deleted job to go", || async {
            grid.routes(tool.name()).await.is_empty()
        })
        .await;
        let report = monitor.pass(false).await;
        let d = decision(&report, &tool);
        assert_eq!(d.action, Action::Restarted, "{report:#?}");
        assert!(d.reason.contains("is not running"), "{}", d.reason);
        let jobs = grid.jobs_named(&name).await;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_ne!(jobs[0].id, first);
        grid.until_page_says(&tool, "/", "back again").await;
        let log = std::fs::read_to_string(tool.home().join("service.log")).unwrap();
        assert!(log.contains("restart succeeded"), "{log}");

        // kill -9 of the runner: it cannot unregister (its server dies with
        // it), but once the job ends the epilog's portreleaser does.
        let out = std::process::Command::new("pgrep")
            .args(["-u", &tool.uid().to_string(), "-x", "webservice-runn"])
            .output()
            .unwrap();
        let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        assert_eq!(pids.len(), 1, "one runner of {}: {pids:?}", tool.name());
        assert!(!grid.routes(tool.name()).await.is_empty());
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pids[0]),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        grid.until_no_job(&name).await;
        eventually("the epilog's portreleaser to remove the route", || async {
            grid.routes(tool.name()).await.is_empty()
        })
        .await;
        let (ok, _, err) = webservice(&grid, &tool, &homes.config, &["stop"]).await;
        assert!(ok, "{err}");
    }

    // --- a job in Eqw (its shell cannot start: no such working directory)
    // is not running: the monitor restarts the web service.
    {
        let homes = Homes::new(&grid);
        let monitor = grid.monitor(grid.monitor_config(homes.dir.path(), &homes.config));
        let tool = homes.tool("eq");
        tool.write("public_html/index.php", "<?php echo 'out of error';\n")
            .unwrap();
        tool.write(
            "service.manifest",
            "# This file is used by toollabs infrastructure.\n# Please do not edit manually at this time.\nbackend: gridengine\nrelease: buster\nversion: 3\nweb: lighttpd\n",
        )
        .unwrap();
        let name = format!("lighttpd-{}", tool.name());
        let mut qsub = tool.command("qsub");
        qsub.envs(grid.cell.env())
            .args([
                "-wd",
                "/nonexistent-working-directory",
                "-o",
                "/dev/null",
                "-e",
                "/dev/null",
            ])
            .args([
                "-q",
                "webgrid-lighttpd",
                "-l",
                "release=buster",
                "-b",
                "y",
                "-N",
                &name,
                "/bin/true",
            ]);
        let out = qsub.output().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eventually("the job to be in Eqw", || async {
            grid.jobs_named(&name)
                .await
                .iter()
                .any(|j| j.state == "Eqw")
        })
        .await;
        let (_, out, _) = webservice(&grid, &tool, &homes.config, &["status"]).await;
        assert!(out.contains("error state Eqw"), "{out}");
        let report = monitor.pass(false).await;
        let d = decision(&report, &tool);
        assert_eq!(d.action, Action::Restarted, "{report:#?}");
        assert!(d.reason.contains("error state Eqw"), "{}", d.reason);
        grid.until_page_says(&tool, "/", "out of error").await;
        let jobs = grid.jobs_named(&name).await;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0].state, "r");
        let (ok, _, err) = webservice(&grid, &tool, &homes.config, &["stop"]).await;
        assert!(ok, "{err}");
    }

    // --- a crash-looping service: restarted until the throttle stops it.
    {
        let homes = Homes::new(&grid);
        let mut config = grid.monitor_config(homes.dir.path(), &homes.config);
        config.throttle.max_restarts = 2;
        let monitor = grid.monitor(config);
        let tool = homes.tool("cr");
        let crash = tool
            .write(
                "crash.sh",
                "#!/bin/sh\necho 'crashing on purpose' >&2\nexit 3\n",
            )
            .unwrap();
        std::fs::set_permissions(&crash, std::fs::Permissions::from_mode(0o755)).unwrap();
        let crash = crash.display().to_string();
        let name = format!("generic-{}", tool.name());
        let (ok, out, err) =
            webservice(&grid, &tool, &homes.config, &["generic", "start", &crash]).await;
        assert!(ok, "{out} {err}");
        grid.until_no_job(&name).await;
        for round in 1..=2 {
            let report = monitor.pass(false).await;
            assert_eq!(
                decision(&report, &tool).action,
                Action::Restarted,
                "round {round}: {report:#?}"
            );
            grid.until_no_job(&name).await;
        }
        let report = monitor.pass(false).await;
        let d = decision(&report, &tool);
        assert_eq!(d.action, Action::Throttled, "{report:#?}");
        assert!(
            grid.jobs_named(&name).await.is_empty(),
            "no job after the throttle"
        );
        let log = std::fs::read_to_string(tool.home().join("service.log")).unwrap();
        assert!(log.contains("Throttled for 2 restarts"), "{log}");
        let errors = std::fs::read_to_string(tool.home().join("error.log")).unwrap_or_default();
        assert_eq!(
            errors.matches("crashing on purpose").count(),
            3,
            "the start and two restarts ran: {errors}"
        );
    }
}

/// `puppet apply` of `site` with every Puppet path in `dir` and this
/// repository's module; its exit code (`--detailed-exitcodes`: 0 nothing
/// changed, 2 changes made, 4 or 6 failures) and output.
async fn puppet_apply(dir: &Path, site: &str) -> (Option<i32>, String) {
    let module_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../puppet");
    let mut c = tokio::process::Command::new("puppet");
    c.args(["apply", "--color=false", "--detailed-exitcodes"]);
    for (flag, sub) in [
        ("confdir", "conf"),
        ("vardir", "var"),
        ("codedir", "code"),
        ("logdir", "log"),
        ("rundir", "run"),
    ] {
        c.arg(format!("--{flag}={}", dir.join(sub).display()));
    }
    c.arg(format!("--modulepath={}", module_path.display()))
        .args(["-e", site])
        .env("LANG", "C.UTF-8")
        .kill_on_drop(true);
    let out = tokio::time::timeout(PATIENCE, c.output())
        .await
        .unwrap_or_else(|_| panic!("puppet apply did not finish"))
        .unwrap_or_else(|e| panic!("cannot run puppet (package puppet): {e}"));
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_puppet_define_gives_a_real_web_queue_sigterm_and_the_portreleaser_epilog() {
    // A queue as Grid Engine makes it: qdel sends SIGKILL, no epilog.
    let cell = GridCell::start(GridCellOptions {
        queues: vec!["webgrid-lighttpd".into()],
        epilog: None,
        terminate_with_sigterm: false,
    })
    .await
    .unwrap_or_else(|e| panic!("the Grid Engine test cell did not come up: {e}"));
    let queue = cell
        .run("qconf", &["-sq", "webgrid-lighttpd"])
        .await
        .unwrap();
    assert!(queue.contains("epilog                NONE"), "{queue}");

    // forge::gridqueue, with `qconf` speaking to this cell.
    let dir = tempfile::tempdir().unwrap();
    let qconf = dir.path().join("qconf");
    std::fs::write(
        &qconf,
        format!(
            "#!/bin/sh\nexec {} /usr/bin/qconf \"$@\"\n",
            cell.env_argv().join(" ")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&qconf, std::fs::Permissions::from_mode(0o755)).unwrap();
    let site = format!(
        "forge::gridqueue {{ 'webgrid-lighttpd': qconf => '{}' }}\n",
        qconf.display()
    );
    let (code, out) = puppet_apply(dir.path(), &site).await;
    assert_eq!(code, Some(2), "the first run changes the queue:\n{out}");
    let queue = cell
        .run("qconf", &["-sq", "webgrid-lighttpd"])
        .await
        .unwrap();
    let attribute = |name: &str| {
        queue
            .lines()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some(name)).then(|| words.collect::<Vec<_>>().join(" "))
            })
            .unwrap_or_default()
    };
    assert_eq!(attribute("terminate_method"), "SIGTERM", "{queue}");
    assert_eq!(attribute("epilog"), "/usr/bin/portreleaser", "{queue}");
    // Idempotent: the second run finds nothing to do.
    let (code, out) = puppet_apply(dir.path(), &site).await;
    assert_eq!(code, Some(0), "the second run changes nothing:\n{out}");
}
