//! Acceptance tests of webservice-runner, portreleaser and the client
//! library against a real proxylistener (in-process), a real Redis and a real
//! identd. The web server is `python3 -m http.server`.

#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use forge_core::redis::RedisSettings;
use forge_core::{Reloadable, Shutdown};
use forge_test_support::{IdentAnswer, Identd, RedisServer, ToolAccount, free_port};
use fred::prelude::*;
use tokio::process::Command;
use webservice_runner::client::{ClientError, RegistrationClient};

const RUNNER: &str = env!("CARGO_BIN_EXE_webservice-runner");
const RELEASER: &str = env!("CARGO_BIN_EXE_portreleaser");

struct Env {
    _redis: RedisServer,
    identd: Identd,
    addr: SocketAddr,
    db: Client,
    _dir: tempfile::TempDir,
    active_proxy: PathBuf,
    shutdown: Shutdown,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn env() -> Env {
    let redis = RedisServer::start().await.unwrap();
    let identd = Identd::start(IdentAnswer::User("tools.mytool".into()))
        .await
        .unwrap();
    let mut config = proxylistener::Config::default();
    config.ident.port = identd.port();
    config.redis = RedisSettings {
        command_timeout_ms: 1000,
        ..RedisSettings::for_url(&redis.url())
    };
    let store = proxylistener::RouteStore::connect(&config.redis).unwrap();
    assert!(store.wait_connected(Duration::from_secs(5)).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(proxylistener::run(
        listener,
        proxylistener::Context {
            config: Reloadable::new(config),
            store,
            pending: proxylistener::PendingChecks::default(),
        },
        shutdown.clone(),
    ));
    let db = RedisSettings::for_url(&redis.url()).client().unwrap();
    db.init().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let active_proxy = dir.path().join("active-proxy");
    std::fs::write(&active_proxy, format!("127.0.0.1:{}\n", addr.port())).unwrap();
    Env {
        _redis: redis,
        identd,
        addr,
        db,
        _dir: dir,
        active_proxy,
        shutdown,
    }
}

impl Env {
    async fn routes(&self) -> HashMap<String, String> {
        self.db.hgetall("prefix:mytool").await.unwrap()
    }

    fn redis_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self._redis.port()))
    }

    fn runner(&self, port: u16, server: &str) -> Command {
        self.runner_with(port, &[], server)
    }

    fn runner_with(&self, port: u16, flags: &[&str], server: &str) -> Command {
        let mut c = Command::new(RUNNER);
        c.arg("--active-proxy")
            .arg(&self.active_proxy)
            .args(["--port", &port.to_string(), "--ready-timeout", "20"])
            .args(flags)
            .args(["--", "sh", "-c", server])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }
}

fn http_server(delay: &str) -> String {
    format!("sleep {delay}; exec python3 -m http.server \"$PORT\" --bind 127.0.0.1")
}

async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

async fn stderr_of(child: tokio::process::Child) -> (Option<i32>, String) {
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("runner exits")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn route_appears_after_listen_and_goes_when_the_server_exits() {
    let e = env().await;
    let port = free_port();
    // Listens after 1 s, exits with 124 after 3 s more.
    let server = "sleep 1; exec timeout 3 python3 -m http.server \"$PORT\" --bind 127.0.0.1";
    let child = e.runner(port, server).spawn().unwrap();
    let started = Instant::now();
    let mut seen = false;
    while started.elapsed() < Duration::from_secs(10) {
        let routes = e.routes().await;
        if let Some(url) = routes.get(".*") {
            assert_eq!(url, &format!("http://127.0.0.1:{port}"));
            assert!(listening(port).await, "registered before listening");
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "the route never appeared");
    let (code, stderr) = stderr_of(child).await;
    assert_eq!(code, Some(124), "{stderr}");
    assert!(e.routes().await.is_empty(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_server_and_removes_the_route() {
    let e = env().await;
    let port = free_port();
    let child = e.runner(port, &http_server("0")).spawn().unwrap();
    let pid = child.id().unwrap();
    let started = Instant::now();
    while e.routes().await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (code, stderr) = stderr_of(child).await;
    assert_eq!(code, Some(128 + 15), "{stderr}");
    assert!(stderr.contains("unregistered"), "{stderr}");
    assert!(e.routes().await.is_empty());
    assert!(!listening(port).await, "the server still runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_registration_exits_non_zero_with_the_reason() {
    let e = env().await;
    e.identd.set_default(IdentAnswer::User("root".into()));
    let port = free_port();
    let child = e.runner(port, &http_server("0")).spawn().unwrap();
    let (code, stderr) = stderr_of(child).await;
    assert_eq!(code, Some(77), "{stderr}");
    assert!(stderr.contains("not a tool account"), "{stderr}");
    assert!(e.routes().await.is_empty());
    assert!(!listening(port).await, "the server was left running");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_endpoint_and_bad_file_have_their_own_codes() {
    let e = env().await;
    std::fs::write(&e.active_proxy, format!("127.0.0.1:{}\n", free_port())).unwrap();
    let (code, stderr) = stderr_of(e.runner(free_port(), &http_server("0")).spawn().unwrap()).await;
    assert_eq!(code, Some(69), "{stderr}");
    assert!(
        stderr.contains("no registration endpoint answered"),
        "{stderr}"
    );

    std::fs::write(&e.active_proxy, "a\nb\n").unwrap();
    let (code, stderr) = stderr_of(e.runner(free_port(), &http_server("0")).spawn().unwrap()).await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("active-proxy:2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_that_never_listens_is_not_registered() {
    let e = env().await;
    let mut c = Command::new(RUNNER);
    c.arg("--active-proxy")
        .arg(&e.active_proxy)
        .args(["--ready-timeout", "1", "--", "sleep", "30"])
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let (code, stderr) = stderr_of(c.spawn().unwrap()).await;
    assert_eq!(code, Some(75), "{stderr}");
    assert!(e.routes().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_active_proxy_means_just_run() {
    let e = env().await;
    std::fs::write(&e.active_proxy, "").unwrap();
    let mut c = Command::new(RUNNER);
    c.arg("--active-proxy")
        .arg(&e.active_proxy)
        .args(["--", "sh", "-c", "exit 3"])
        .stderr(Stdio::piped());
    let (code, stderr) = stderr_of(c.spawn().unwrap()).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("registration is disabled"), "{stderr}");
    let out = Command::new(RELEASER)
        .arg("--active-proxy")
        .arg(&e.active_proxy)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn portreleaser_is_safe_to_run_twice() {
    let e = env().await;
    let client = RegistrationClient::new(vec![e.addr.to_string()]);
    let done = client
        .register_self(".*", "http", 34567, false)
        .await
        .unwrap();
    assert_eq!(done.url, "http://127.0.0.1:34567");
    assert_eq!(e.routes().await.len(), 1);
    for _ in 0..2 {
        let out = Command::new(RELEASER)
            .env("FORGE_ACTIVE_PROXY", &e.active_proxy)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(e.routes().await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_tries_each_endpoint_and_reports_refusals() {
    let e = env().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let client = RegistrationClient::new(vec![dead.clone(), e.addr.to_string()]);
    let done = client
        .register_self(".*", "http", 40000, true)
        .await
        .unwrap();
    assert_eq!(done.endpoint, e.addr.to_string());
    let redirect: HashMap<String, String> = e.db.hgetall("redirect:mytool").await.unwrap();
    assert_eq!(
        redirect.get(".*").map(String::as_str),
        Some("mytool.toolforge.org")
    );

    let err = client
        .register(".*", "http://10.9.9.9:40000")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused(_)), "{err}");
    assert!(
        err.reason().unwrap().contains("not this client's address"),
        "{err}"
    );

    let err = RegistrationClient::new(vec![dead])
        .unregister(".*")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unavailable(_)), "{err}");
    assert_eq!(
        RegistrationClient::new(vec![]).unregister(".*").await,
        Err(ClientError::Disabled)
    );
}

/// Waits until `port` refuses connections (the server is gone).
async fn wait_closed(port: u16, within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if !listening(port).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn wait_route(e: &Env, tool: &str, within: Duration) -> Option<String> {
    let started = Instant::now();
    while started.elapsed() < within {
        let routes: HashMap<String, String> = e.db.hgetall(format!("prefix:{tool}")).await.unwrap();
        if let Some(url) = routes.get(".*") {
            return Some(url.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// A plain HTTP/1.0 GET on loopback; the whole response.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
        .await
        .expect("the server answers")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_runner_stops_the_server() {
    // The server used to run on in its own process group after the runner was
    // SIGKILLed, holding its port; the monitor then started a second one.
    let e = env().await;
    let port = free_port();
    let child = e.runner(port, &http_server("0")).spawn().unwrap();
    let pid = child.id().unwrap();
    assert!(
        wait_route(&e, "mytool", Duration::from_secs(30))
            .await
            .is_some()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = stderr_of(child).await;
    assert!(
        wait_closed(port, Duration::from_secs(30)).await,
        "the server outlived its runner and still holds port {port}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn todays_daemon_double_ok_is_success_and_unregister_works() {
    // Today's proxylistener answers `register` with `ok` twice; the runner
    // read `okok`, called it a refusal, exited 77 and stopped the server —
    // after the route was written.
    let e = env().await;
    let legacy = forge_test_support::LegacyProxyListener::start(
        e.redis_addr(),
        e.identd.port(),
        "tools",
        forge_test_support::LegacyQuirk::None,
    )
    .await
    .unwrap();
    std::fs::write(&e.active_proxy, format!("{}\n", legacy.addr())).unwrap();
    let port = free_port();
    let server = "exec timeout 4 python3 -m http.server \"$PORT\" --bind 127.0.0.1";
    let child = e.runner(port, server).spawn().unwrap();
    let url = wait_route(&e, "mytool", Duration::from_secs(30)).await;
    assert_eq!(url, Some(format!("http://127.0.0.1:{port}")));
    let (code, stderr) = stderr_of(child).await;
    assert_eq!(code, Some(124), "{stderr}");
    assert!(stderr.contains("unregistered"), "{stderr}");
    assert!(e.routes().await.is_empty(), "{stderr}");

    // The library and portreleaser against it too.
    let client = RegistrationClient::new(vec![legacy.addr().to_string()]);
    client
        .register_self(".*", "http", 34567, true)
        .await
        .unwrap();
    let redirect: HashMap<String, String> = e.db.hgetall("redirect:mytool").await.unwrap();
    assert_eq!(
        redirect.get(".*").map(String::as_str),
        Some("mytool.toolforge.org")
    );
    let out = Command::new(RELEASER)
        .env("FORGE_ACTIVE_PROXY", &e.active_proxy)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(e.routes().await.is_empty());
    let redirect: HashMap<String, String> = e.db.hgetall("redirect:mytool").await.unwrap();
    assert!(redirect.is_empty());

    // Its refusals are refusals.
    e.identd.set_default(IdentAnswer::User("root".into()));
    let err = client.unregister(".*").await.unwrap_err();
    assert!(matches!(err, ClientError::Refused(_)), "{err}");
    assert!(err.to_string().contains("only to tool accounts"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_that_gives_up_after_sending_unregisters_first() {
    // A daemon that writes the route and never answers: the runner gives up
    // (no reply), and must not leave the route pointing at the server it stops.
    let e = env().await;
    let legacy = forge_test_support::LegacyProxyListener::start(
        e.redis_addr(),
        e.identd.port(),
        "tools",
        forge_test_support::LegacyQuirk::SilentAfterWrite,
    )
    .await
    .unwrap();
    std::fs::write(&e.active_proxy, format!("{}\n", legacy.addr())).unwrap();
    let port = free_port();
    let c = e.runner_with(port, &["--reply-timeout", "2"], &http_server("0"));
    let mut c = c;
    let (code, stderr) = stderr_of(c.spawn().unwrap()).await;
    assert_eq!(code, Some(69), "{stderr}");
    assert!(stderr.contains("unregistered"), "{stderr}");
    assert!(!listening(port).await, "the server was left running");
    assert!(e.routes().await.is_empty(), "{stderr}");
}

/// A tool account whose identd answer is set, and a runner command as it.
fn tool_runner(e: &Env, tool: &ToolAccount, port: u16, args: &[&str]) -> Command {
    use std::os::unix::fs::PermissionsExt;
    // The tool must be able to read the active-proxy file.
    let dir = e.active_proxy.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&e.active_proxy, std::fs::Permissions::from_mode(0o644)).unwrap();
    e.identd.set_default(IdentAnswer::User(tool.user().into()));
    let mut c = tool.command(RUNNER);
    c.arg("--active-proxy")
        .arg(&e.active_proxy)
        .args(["--port", &port.to_string(), "--ready-timeout", "60"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

fn sigterm(child: &tokio::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

fn leftover_run_dirs(tool: &ToolAccount) -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|d| d.ok())
        .map(|d| d.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .starts_with(&format!("webservice-{}-", tool.name()))
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn lighttpd_type_serves_the_tools_php_page() {
    let e = env().await;
    let homes = tempfile::tempdir().unwrap();
    let tool = ToolAccount::create("tools", "lt", homes.path()).unwrap();
    tool.write(
        "public_html/index.php",
        "<?php echo 'php says ', 6 * 7, \"\\n\";\n",
    )
    .unwrap();
    tool.write(
        ".lighttpd.conf",
        "setenv.add-response-header = ( \"X-Tool\" => \"mine\" )\n",
    )
    .unwrap();
    let port = free_port();
    let child = tool_runner(&e, &tool, port, &["--register-proxy", "--type", "lighttpd"])
        .spawn()
        .unwrap();
    let url = wait_route(&e, tool.name(), Duration::from_secs(60)).await;
    assert_eq!(url, Some(format!("http://127.0.0.1:{port}")));
    let page = http_get(port, "/").await;
    assert!(page.contains("php says 42"), "{page}");
    assert!(
        page.contains("X-Tool: mine"),
        "the tool's .lighttpd.conf is appended: {page}"
    );
    assert!(!leftover_run_dirs(&tool).is_empty());
    sigterm(&child);
    let (code, stderr) = stderr_of(child).await;
    // lighttpd ends gracefully on SIGTERM (status 0).
    assert!(matches!(code, Some(0 | 143)), "{code:?} {stderr}");
    assert!(
        stderr.contains("started /usr/sbin/lighttpd (pid "),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Some("),
        "log in words, not debug output: {stderr}"
    );
    let routes: HashMap<String, String> =
        e.db.hgetall(format!("prefix:{}", tool.name()))
            .await
            .unwrap();
    assert!(routes.is_empty(), "{stderr}");
    assert!(wait_closed(port, Duration::from_secs(30)).await, "{stderr}");
    assert!(
        leftover_run_dirs(&tool).is_empty(),
        "the generated config is removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uwsgi_python_and_generic_types_serve_as_the_tool() {
    let e = env().await;
    let homes = tempfile::tempdir().unwrap();
    let tool = ToolAccount::create("tools", "py", homes.path()).unwrap();
    tool.write(
        "www/python/src/app.py",
        "def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'wsgi says hello at ' + environ['PATH_INFO'].encode()]\n",
    )
    .unwrap();
    let port = free_port();
    let child = tool_runner(
        &e,
        &tool,
        port,
        &["--register-proxy", "--type", "uwsgi-python"],
    )
    .spawn()
    .unwrap();
    assert!(
        wait_route(&e, tool.name(), Duration::from_secs(60))
            .await
            .is_some()
    );
    let page = http_get(port, &format!("/{}/", tool.name())).await;
    assert!(page.contains("wsgi says hello"), "{page}");
    sigterm(&child);
    let (code, stderr) = stderr_of(child).await;
    assert!(wait_closed(port, Duration::from_secs(30)).await, "{stderr}");
    let _ = code;

    // generic: the extra arguments are the command, run in the home.
    tool.write("hello.txt", "generic says hi\n").unwrap();
    let port = free_port();
    let child = tool_runner(
        &e,
        &tool,
        port,
        &[
            "--register-proxy",
            "--type",
            "generic",
            "python3",
            "-m",
            "http.server",
            "{port}",
            "--bind",
            "127.0.0.1",
        ],
    )
    .spawn()
    .unwrap();
    assert!(
        wait_route(&e, tool.name(), Duration::from_secs(60))
            .await
            .is_some()
    );
    let page = http_get(port, "/hello.txt").await;
    assert!(page.contains("generic says hi"), "{page}");
    sigterm(&child);
    let (_, stderr) = stderr_of(child).await;
    assert!(wait_closed(port, Duration::from_secs(30)).await, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn types_that_cannot_run_say_why() {
    let e = env().await;
    let homes = tempfile::tempdir().unwrap();
    let tool = ToolAccount::create("tools", "no", homes.path()).unwrap();
    for (args, code, words) in [
        (
            vec!["--type", "lighttpd"],
            66,
            "Could not find a public_html folder",
        ),
        (vec!["--type", "uwsgi-plain"], 66, "uwsgi.ini"),
        (vec!["--type", "nodejs"], 66, "package.json"),
        (vec!["--type", "tomcat"], 64, "tomcat type is not supported"),
        (vec!["--type", "generic"], 64, "needs the command"),
        (vec!["--type", "php"], 64, "known types: lighttpd"),
    ] {
        let mut all = vec!["--register-proxy"];
        all.extend(args.iter());
        let (got, stderr) =
            stderr_of(tool_runner(&e, &tool, free_port(), &all).spawn().unwrap()).await;
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
    let routes: HashMap<String, String> =
        e.db.hgetall(format!("prefix:{}", tool.name()))
            .await
            .unwrap();
    assert!(routes.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn todays_clients_register_and_unregister_with_ours() {
    use forge_test_support::LegacyRegister;
    use forge_test_support::legacy::{
        legacy_register_2020, legacy_register_last, legacy_unregister,
    };
    let e = env().await;
    // Something really listens on the registered port, as it would.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = backend.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let redirect = || async {
        let r: HashMap<String, String> = e.db.hgetall("redirect:mytool").await.unwrap();
        r
    };

    // 2020, `register`: exactly `ok` (one recv), prefix written, no redirect.
    let reply = legacy_register_2020(e.addr, LegacyRegister::Plain, "127.0.0.1", port)
        .await
        .unwrap();
    assert_eq!(reply.0, b"ok");
    assert_eq!(e.routes().await.get(".*"), Some(&url));
    assert!(redirect().await.is_empty());
    // portreleaser.py / unregister(): exactly `ok`, route gone.
    let reply = legacy_unregister(e.addr).await.unwrap();
    assert!(reply.is_success(), "{reply:?}");
    assert!(e.routes().await.is_empty());

    // 2020, `registerCanonical`, and the last client (always canonical).
    for last in [false, true] {
        let reply = if last {
            legacy_register_last(e.addr, "127.0.0.1", port)
                .await
                .unwrap()
        } else {
            legacy_register_2020(e.addr, LegacyRegister::Canonical, "127.0.0.1", port)
                .await
                .unwrap()
        };
        assert_eq!(reply.0, b"ok", "last={last}");
        assert_eq!(e.routes().await.get(".*"), Some(&url));
        assert_eq!(
            redirect().await.get(".*").map(String::as_str),
            Some("mytool.toolforge.org")
        );
        let reply = legacy_unregister(e.addr).await.unwrap();
        assert!(reply.is_success(), "{reply:?}");
        assert!(e.routes().await.is_empty());
        assert!(redirect().await.is_empty());
    }
    // Nothing registered: unregister is still `ok` (today's clients raise otherwise).
    assert!(legacy_unregister(e.addr).await.unwrap().is_success());
    drop(backend);
}
