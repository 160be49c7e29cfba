//! Logs and metrics, set up once per process.
//!
//! Logs go through `tracing`, formatted by `tracing-subscriber` as text or
//! JSON. Under systemd (`JOURNAL_STREAM` set) text logs carry no timestamps or
//! colours: the journal adds its own. The filter (`info`,
//! `dynamicproxy=debug,fred=warn`, …) can be changed while the daemon runs,
//! through [`LogControl`] — the admin endpoint `PUT /log-filter` and a config
//! reload both use it — so operators never restart a daemon to debug it.
//!
//! Metrics use the `metrics` facade with the Prometheus exporter as the one
//! global recorder; [`metrics_handle`] renders them for `/metrics`.

use std::sync::{Arc, Mutex, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text; without timestamps when the journal captures stdout.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `[log]` section every daemon's configuration has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info,dynamicproxy=debug`.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// Why logging could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter directive does not parse.
    #[error("invalid log filter {filter:?}: {reason}")]
    BadFilter {
        /// The directive as given.
        filter: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialised")]
    AlreadyInitialised,
}

/// Changes the log filter of a running process.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Arc<Mutex<String>>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("filter", &self.filter())
            .finish()
    }
}

impl LogControl {
    /// Replaces the filter; an invalid directive changes nothing.
    pub fn set_filter(&self, directive: &str) -> Result<(), TelemetryError> {
        let filter = parse_filter(directive)?;
        self.handle
            .reload(filter)
            .map_err(|e| TelemetryError::BadFilter {
                filter: directive.to_owned(),
                reason: e.to_string(),
            })?;
        if let Ok(mut c) = self.current.lock() {
            *c = directive.to_owned();
        }
        tracing::info!(filter = directive, "log filter changed");
        Ok(())
    }

    /// The filter in force.
    pub fn filter(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

fn parse_filter(directive: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::builder()
        .parse(directive)
        .map_err(|e| TelemetryError::BadFilter {
            filter: directive.to_owned(),
            reason: e.to_string(),
        })
}

/// Whether text logs carry ANSI colour: only when stderr is a terminal, and
/// never when `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
/// A timer's output piped to mail, a file or a pipe stays plain text.
pub fn colour_wanted(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the
/// configured filter at start-up.
pub fn init_logging(settings: &LogSettings) -> Result<LogControl, TelemetryError> {
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.filter.clone());
    let (filter_layer, handle) = reload::Layer::new(parse_filter(&directive)?);
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let registry = tracing_subscriber::registry().with(filter_layer);
    let result = match settings.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text if journal => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .without_time()
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colour_wanted(
                        std::io::IsTerminal::is_terminal(&std::io::stderr()),
                        std::env::var_os("NO_COLOR").as_deref(),
                    ))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInitialised)?;
    Ok(LogControl {
        handle,
        current: Arc::new(Mutex::new(directive)),
    })
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // In tests several daemons share a process: the first wins.
            let _ = metrics::set_global_recorder(recorder);
            // Histogram samples pile up until they are folded into buckets;
            // fold them regularly, not only when `/metrics` is scraped, so
            // an unscraped daemon under load doesn't grow.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filter_is_refused() {
        assert!(parse_filter("info,foo=debug").is_ok());
        let e = parse_filter("foo=notalevel").unwrap_err().to_string();
        assert!(e.contains("foo=notalevel"), "{e}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour_wanted(true, None));
        assert!(
            colour_wanted(true, Some(OsStr::new(""))),
            "empty NO_COLOR is unset"
        );
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(
            !colour_wanted(false, None),
            "a pipe or a file gets plain text"
        );
        assert!(!colour_wanted(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn metrics_render() {
        let h = metrics_handle();
        metrics::counter!("forge_test_counter_total").increment(3);
        assert!(h.render().contains("forge_test_counter_total 3"));
    }
}
