//! A small tool-hosting site for tests: tool homes with manifests owned by
//! test uids, a job scheduler made of shell scripts whose state is a
//! directory, a restart command that records its calls, a real redis-server,
//! and a real HTTP server answering `/list`.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use forge_core::redis::RedisSettings;
use forge_test_support::RedisServer;
use fred::prelude::*;
use webservicemonitor::config::{
    MonitorConfig, ProbeKind, SchedulerKind, UidSourceKind, WebserviceConfig,
};
use webservicemonitor::template::ArgvTemplate;

/// The tools listed by the test's `/list` server.
pub type Listed = Arc<Mutex<BTreeMap<String, serde_json::Value>>>;

pub struct Site {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub bin: PathBuf,
    pub state: PathBuf,
    pub restarts_log: PathBuf,
    pub uids: BTreeMap<String, u32>,
    pub redis: RedisServer,
    pub client: Client,
    pub listed: Listed,
    pub list_url: String,
    pub hanging_list_url: String,
    _hang: tokio::task::JoinHandle<()>,
}

/// The fake Grid Engine: one file per job in `$STATE/jobs/<id>` holding
/// `name owner state`. `qstat` renders them as `qstat -xml` does.
const QSTAT: &str = r#"#!/bin/sh
set -e
if [ -e "$STATE/qstat-fails" ]; then echo "error: commlib error: got select error (Connection refused)" >&2; exit 1; fi
echo "<?xml version='1.0'?>"
echo '<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">'
echo '  <queue_info>'
for f in "$STATE"/jobs/*; do
  [ -e "$f" ] || continue
  read name owner state < "$f"
  id=$(basename "$f")
  echo '    <job_list state="running">'
  echo "      <JB_job_number>$id</JB_job_number>"
  echo '      <JAT_prio>0.25000</JAT_prio>'
  echo "      <JB_name>$name</JB_name>"
  echo "      <JB_owner>$owner</JB_owner>"
  echo "      <state>$state</state>"
  echo '      <queue_name>webgrid-lighttpd@tools-sgewebgrid-lighttpd-0917.tools.eqiad1.wikimedia.cloud</queue_name>'
  echo '      <slots>1</slots>'
  echo '    </job_list>'
done
echo '  </queue_info>'
echo '  <job_info>'
echo '  </job_info>'
echo '</job_info>'
"#;

/// `qsub <job_name> <user> <type> [extra…]`: records a running job.
const QSUB: &str = r#"#!/bin/sh
set -e
name="$1"; owner="$2"
mkdir -p "$STATE/jobs"
n=$(cat "$STATE/next-id" 2>/dev/null || echo 100)
echo $((n + 1)) > "$STATE/next-id"
echo "$name $owner r" > "$STATE/jobs/$n"
echo "$*" >> "$STATE/qsub.log"
echo "Your job $n (\"$name\") has been submitted"
"#;

/// `qdel <id>`: marks the job as being deleted, removes it a moment later
/// (like Grid Engine, the job stays listed for a while).
const QDEL: &str = r#"#!/bin/sh
f="$STATE/jobs/$1"
[ -e "$f" ] || { echo "denied: job \"$1\" does not exist" >&2; exit 1; }
read name owner state < "$f"
echo "$name $owner dr" > "$f"
echo "$1" >> "$STATE/qdel.log"
( sleep 1; rm -f "$f" ) </dev/null >/dev/null 2>&1 &
echo "root has registered the job $1 for deletion"
"#;

/// The restart command: records its arguments; fails if `$STATE/restart-fails` exists.
const RESTART: &str = r#"#!/bin/sh
echo "$*" >> "$STATE/restarts.log"
if [ -e "$STATE/restart-fails" ]; then echo "webservice: no such type" >&2; exit 3; fi
exit 0
"#;

/// The JSON scheduler (`command` backend): prints `$STATE/jobs.json`.
const JSON_JOBS: &str = r#"#!/bin/sh
cat "$STATE/jobs.json"
"#;

fn script(dir: &Path, name: &str, body: &str, state: &Path) -> String {
    let path = dir.join(name);
    // Each script knows its state directory without relying on the environment.
    let body = body.replacen(
        "#!/bin/sh\n",
        &format!("#!/bin/sh\nSTATE='{}'\n", state.display()),
        1,
    );
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn argv(v: &[&str]) -> ArgvTemplate {
    ArgvTemplate::new(v.iter().map(|s| (*s).to_owned()).collect())
}

impl Site {
    pub async fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        let bin = dir.path().join("bin");
        let state = dir.path().join("state");
        for d in [&root, &bin, &state, &state.join("jobs")] {
            std::fs::create_dir_all(d).unwrap();
        }
        for (name, body) in [
            ("qstat", QSTAT),
            ("qsub", QSUB),
            ("qdel", QDEL),
            ("restart", RESTART),
            ("jobs-json", JSON_JOBS),
        ] {
            script(&bin, name, body, &state);
        }
        let redis = RedisServer::start().await.unwrap();
        let client = RedisSettings::for_url(&redis.url()).client().unwrap();
        client.init().await.unwrap();

        let listed: Listed = Arc::default();
        let app = {
            let listed = Arc::clone(&listed);
            axum::Router::new().route(
                "/list",
                axum::routing::get(move || {
                    let listed = Arc::clone(&listed);
                    async move { axum::Json(listed.lock().unwrap().clone()) }
                }),
            )
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let list_url = format!("http://{}/list", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        // A /list that accepts connections and never answers.
        let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hanging_list_url = format!("http://{}/list", hang.local_addr().unwrap());
        let hang_task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = hang.accept().await {
                held.push(s);
            }
        });
        Site {
            restarts_log: state.join("restarts.log"),
            dir,
            root,
            bin,
            state,
            uids: BTreeMap::new(),
            redis,
            client,
            listed,
            list_url,
            hanging_list_url,
            _hang: hang_task,
        }
    }

    pub fn bin(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }

    /// A monitor configuration for this site (gridengine backend, map uids).
    pub fn monitor_config(&self) -> MonitorConfig {
        let mut c = MonitorConfig::default();
        c.tools.root = self.root.clone();
        c.users.source = UidSourceKind::Map;
        c.users.map = self.uids.clone();
        c.scheduler.backend = SchedulerKind::Gridengine;
        c.scheduler.timeout_secs = 10;
        c.scheduler.gridengine.list = argv(&[&self.bin("qstat")]);
        c.scheduler.gridengine.submit = argv(&[
            &self.bin("qsub"),
            "{job_name}",
            "{user}",
            "{type}",
            "{extra_args}",
        ]);
        c.scheduler.gridengine.stop = argv(&[&self.bin("qdel"), "{job_id}"]);
        c.proxy.list_url = self.list_url.clone();
        c.proxy.timeout_ms = 2000;
        c.health.probe = ProbeKind::Tcp;
        c.health.timeout_ms = 500;
        c.restart.command = argv(&[
            &self.bin("restart"),
            "{user}",
            "--release={release}",
            "{type}",
        ]);
        c.restart.timeout_secs = 10;
        c.redis = RedisSettings::for_url(&self.redis.url());
        c.pass.interval_secs = 1;
        c.validate().unwrap();
        c
    }

    /// A `webservice` configuration for this site.
    pub fn webservice_config(&self) -> WebserviceConfig {
        let mut c = WebserviceConfig::default();
        c.tools.root = self.root.clone();
        c.users.source = UidSourceKind::Map;
        c.users.map = self.uids.clone();
        c.scheduler.gridengine.list = argv(&[&self.bin("qstat")]);
        c.scheduler.gridengine.submit = argv(&[
            &self.bin("qsub"),
            "{job_name}",
            "{user}",
            "{type}",
            "{extra_args}",
        ]);
        c.scheduler.gridengine.stop = argv(&[&self.bin("qdel"), "{job_id}"]);
        c.stop_wait_secs = 10;
        c.poll_ms = 100;
        c.validate().unwrap();
        c
    }

    /// Creates a tool home owned by `uid`, with `manifest` (if any) owned by `uid`.
    pub fn add_tool(&mut self, tool: &str, uid: u32, manifest: Option<&str>) -> PathBuf {
        let home = self.root.join(tool);
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
        self.uids.insert(format!("tools.{tool}"), uid);
        if let Some(text) = manifest {
            let path = home.join("service.manifest");
            std::fs::write(&path, text).unwrap();
            std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        }
        home
    }

    /// Adds a job to the fake scheduler.
    pub fn add_job(&self, id: u32, name: &str, owner: &str, state: &str) {
        std::fs::write(
            self.state.join("jobs").join(id.to_string()),
            format!("{name} {owner} {state}\n"),
        )
        .unwrap();
    }

    /// Jobs currently known to the fake scheduler: (id, name, state).
    pub fn jobs(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.state.join("jobs"))
            .unwrap()
            .flatten()
        {
            if let Ok(text) = std::fs::read_to_string(e.path()) {
                let parts: Vec<&str> = text.split_whitespace().collect();
                if parts.len() == 3 {
                    out.push((
                        e.file_name().into_string().unwrap(),
                        parts[0].to_owned(),
                        parts[2].to_owned(),
                    ));
                }
            }
        }
        out.sort();
        out
    }

    /// Puts a tool in `/list`.
    pub fn list(&self, tool: &str) {
        self.listed
            .lock()
            .unwrap()
            .insert(tool.to_owned(), serde_json::json!({"status": "active"}));
    }

    /// Registers a route in Redis (as proxylistener would).
    pub async fn register(&self, tool: &str, backend: &str) {
        let key = forge_core::RedisKey::Prefix(forge_core::ToolName::parse(tool).unwrap()).to_key();
        let _: i64 = self.client.hset(key, (".*", backend)).await.unwrap();
    }

    /// A canonical registration, as proxylistener's `registerCanonical`
    /// writes it: the route in `prefix:<tool>` and its `redirect:<tool>`
    /// entry naming `<tool>.toolforge.org`.
    pub async fn register_canonical(&self, tool: &str, backend: &str) {
        self.register(tool, backend).await;
        let name = forge_core::ToolName::parse(tool).unwrap();
        let key = forge_core::RedisKey::Redirect(name).to_key();
        let canonical = format!("{tool}.toolforge.org");
        let _: i64 = self.client.hset(key, (".*", canonical)).await.unwrap();
    }

    /// The tool's `redirect:` entries.
    pub async fn redirects(&self, tool: &str) -> std::collections::HashMap<String, String> {
        let key =
            forge_core::RedisKey::Redirect(forge_core::ToolName::parse(tool).unwrap()).to_key();
        self.client.hgetall(key).await.unwrap()
    }

    pub async fn routes(&self, tool: &str) -> std::collections::HashMap<String, String> {
        let key = forge_core::RedisKey::Prefix(forge_core::ToolName::parse(tool).unwrap()).to_key();
        self.client.hgetall(key).await.unwrap()
    }

    /// Lines the restart command was called with.
    pub fn restarts(&self) -> Vec<String> {
        std::fs::read_to_string(&self.restarts_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn service_log(&self, tool: &str) -> String {
        std::fs::read_to_string(self.root.join(tool).join("service.log")).unwrap_or_default()
    }

    pub fn store(&self) -> webservicemonitor::Store {
        webservicemonitor::Store::new(self.client.clone())
    }
}

/// A backend that answers TCP connections (and HTTP), alive for the test.
pub async fn live_backend() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

/// A backend URL where nothing listens.
pub fn dead_backend() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

pub const GRID_MANIFEST: &str = "# This file is used by toollabs infrastructure.\n# Please do not edit manually at this time.\nbackend: gridengine\nrelease: buster\nversion: 3\nweb: lighttpd\n";
