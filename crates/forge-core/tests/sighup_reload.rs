//! A real `SIGHUP` sent to the process reloads a daemon configuration and
//! changes its generation. In its own test binary, since it signals the
//! whole process.

use std::sync::Arc;
use std::time::Duration;

use forge_core::config::{ConfigSource, Loaded};
use forge_core::lifecycle::{ReloadSignal, Shutdown, spawn_signal_handler};
use forge_core::reload::Reloadable;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DaemonConfig {
    listen: String,
    maintenance: bool,
}

#[tokio::test]
async fn sighup_reloads_and_changes_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("daemon.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:1\"\n").unwrap();
    let source = ConfigSource::new(Some(path.clone()), "");
    let first: Loaded<DaemonConfig> = source.load().unwrap();
    let first_generation = first.generation.clone();
    let live = Reloadable::new(first);
    let shutdown = Shutdown::new();
    let reload = ReloadSignal::new();
    spawn_signal_handler(shutdown.clone(), reload.clone()).unwrap();
    // No file watch here: only the signal may trigger the reload.
    let src = source.clone();
    live.spawn_reloader("daemon", vec![], reload, shutdown.clone(), move || {
        src.load::<DaemonConfig>()
    });
    let mut changes = live.subscribe();

    std::fs::write(&path, "listen = \"127.0.0.1:1\"\nmaintenance = true\n").unwrap();
    // Nothing changes without the signal.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!live.get().config.maintenance);

    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("reload after SIGHUP")
        .unwrap();
    let now: Arc<Loaded<DaemonConfig>> = live.get();
    assert!(now.config.maintenance);
    assert_ne!(now.generation, first_generation);

    // A broken file on the next SIGHUP keeps the running configuration.
    std::fs::write(&path, "listen = [\n").unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(live.get().config.maintenance);
    assert_eq!(live.get().generation, now.generation);
    shutdown.trigger();
}
