//! Live configuration: a value that is reloaded on `SIGHUP` and when its file
//! changes, and that readers see swapped atomically.
//!
//! [`Reloadable`] holds the current value; [`Reloadable::spawn_reloader`]
//! starts a task that re-runs a load function on every [`ReloadSignal`] and on
//! changes of the watched files (inotify via `notify`, debounced). A load that
//! fails leaves the old value in place and logs why, so a typo in a file never
//! takes a running daemon down. systemd is told `RELOADING=1` / `READY=1`
//! around each reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::lifecycle::{ReloadReason, ReloadSignal, Shutdown, systemd};

/// A configuration (or other reloadable state) shared by a daemon's tasks.
#[derive(Debug)]
pub struct Reloadable<T> {
    /// The current value; readers `load()` it without locking.
    current: ArcSwap<T>,
    /// Bumped after every successful reload, for tasks that react to changes.
    version: watch::Sender<u64>,
}

impl<T: Send + Sync + 'static> Reloadable<T> {
    /// Wraps an initial value.
    pub fn new(initial: T) -> Arc<Self> {
        let (version, _) = watch::channel(0);
        Arc::new(Reloadable {
            current: ArcSwap::from_pointee(initial),
            version,
        })
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Replaces the value and notifies subscribers.
    pub fn replace(&self, value: T) {
        self.current.store(Arc::new(value));
        self.version.send_modify(|v| *v += 1);
    }

    /// A receiver that changes after each successful reload.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Reloads on every reload signal and on changes of `watch_files`, until
    /// shutdown. `load` builds the new value; `Err` keeps the old one.
    pub fn spawn_reloader<F, E>(
        self: &Arc<Self>,
        what: &'static str,
        watch_files: Vec<PathBuf>,
        reload: ReloadSignal,
        shutdown: Shutdown,
        load: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Result<T, E> + Send + 'static,
        E: std::fmt::Display,
    {
        let this = Arc::clone(self);
        let _watcher = watch_paths(&watch_files, reload.clone());
        let mut rx = reload.subscribe();
        tokio::spawn(async move {
            // Keep the file watcher alive as long as the task runs.
            let _watcher = _watcher;
            loop {
                let reason = tokio::select! {
                    r = rx.recv() => match r {
                        Ok(r) => r,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => ReloadReason::Requested,
                        Err(_) => break,
                    },
                    _ = shutdown.triggered() => break,
                };
                if reason == ReloadReason::FileChanged {
                    // Editors write in several steps: let them finish.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    while rx.try_recv().is_ok() {}
                }
                systemd::reloading();
                match load() {
                    Ok(v) => {
                        this.replace(v);
                        tracing::info!(what, ?reason, "reloaded");
                    }
                    Err(e) => {
                        tracing::error!(what, ?reason, error = %e, "reload refused; keeping the running configuration");
                        metrics::counter!("forge_reload_failures_total", "what" => what)
                            .increment(1);
                    }
                }
                systemd::ready();
            }
        })
    }
}

/// Watches the parent directories of `files` (so atomic rename-replacements
/// are seen) and requests a reload when one of the files changes.
fn watch_paths(files: &[PathBuf], reload: ReloadSignal) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    if files.is_empty() {
        return None;
    }
    let names: Vec<PathBuf> = files.to_vec();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !ev.kind.is_access()
            && ev
                .paths
                .iter()
                .any(|p| names.iter().any(|n| p.ends_with(n) || n.ends_with(p)))
        {
            reload.request(ReloadReason::FileChanged);
        }
    })
    .map_err(
        |e| tracing::warn!(error = %e, "cannot watch configuration files; SIGHUP still reloads"),
    )
    .ok()?;
    for f in files {
        let dir = f
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(path = %dir.display(), error = %e, "cannot watch directory");
        }
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reload_signal_swaps_and_bad_load_keeps_old() {
        let r = Reloadable::new(1u32);
        let reload = ReloadSignal::new();
        let shutdown = Shutdown::new();
        let next = Arc::new(std::sync::Mutex::new(Ok::<u32, String>(2)));
        let n2 = next.clone();
        let mut changes = r.subscribe();
        let task = r.spawn_reloader(
            "test",
            vec![],
            reload.clone(),
            shutdown.clone(),
            move || n2.lock().unwrap().clone(),
        );
        tokio::task::yield_now().await;
        reload.request(ReloadReason::Requested);
        changes.changed().await.unwrap();
        assert_eq!(*r.get(), 2);
        *next.lock().unwrap() = Err("broken".into());
        reload.request(ReloadReason::Requested);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*r.get(), 2);
        shutdown.trigger();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn file_change_triggers_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.conf");
        std::fs::write(&path, "1").unwrap();
        let p2 = path.clone();
        let read = move || std::fs::read_to_string(&p2).map(|s| s.trim().to_owned());
        let r = Reloadable::new(read().unwrap());
        let mut changes = r.subscribe();
        let shutdown = Shutdown::new();
        r.spawn_reloader(
            "file",
            vec![path.clone()],
            ReloadSignal::new(),
            shutdown.clone(),
            read,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        // atomic replace, as editors and Puppet do
        let tmp = dir.path().join("x.conf.tmp");
        std::fs::write(&tmp, "2").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .expect("reload after file change")
            .unwrap();
        assert_eq!(r.get().as_str(), "2");
        shutdown.trigger();
    }
}
