//! Registration clients of proxylistener.
//!
//! * [`client`] — [`client::RegistrationClient`]: the line protocol
//!   (`register`, `registerCanonical`, `unregister`) against the endpoints
//!   named by `/etc/active-proxy` or `live.toml`, trying each in turn. Usable
//!   by any tool that needs to register a backend.
//! * [`runner`] — what the `webservice-runner` binary does: start the web
//!   server, register once it listens, forward signals, unregister on exit.
//! * [`wstype`] — today's web service types (`--type lighttpd`, …): what each
//!   needs in the tool's home and which server it runs.
//!
//! The `portreleaser` binary (the job-end hook) is `client::unregister` with
//! exit codes.

pub mod client;
pub mod runner;
pub mod wstype;

use std::path::{Path, PathBuf};
use std::time::Duration;

use forge_core::live::LiveState;

pub use client::{ClientError, RegistrationClient};

/// Where the active proxy is named, unless `--active-proxy` or
/// `FORGE_ACTIVE_PROXY` say otherwise.
pub const DEFAULT_ACTIVE_PROXY: &str = "/etc/active-proxy";

/// The flags both binaries share for finding and talking to the endpoints.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArgs {
    /// The live-state file: today's active-proxy file (one host name; empty =
    /// don't register) or a `.toml` live state listing every registration
    /// host (tried in order).
    #[arg(long, env = "FORGE_ACTIVE_PROXY", value_name = "FILE", default_value = DEFAULT_ACTIVE_PROXY)]
    pub active_proxy: PathBuf,
    /// Per-endpoint connect timeout, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub connect_timeout: f64,
    /// How long an endpoint may take to reply, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    pub reply_timeout: f64,
}

impl EndpointArgs {
    /// The client these flags describe.
    pub fn client(&self) -> Result<RegistrationClient, String> {
        let state = load_live_state(&self.active_proxy)?;
        let mut client = RegistrationClient::from_live_state(&state);
        client.connect_timeout = secs(self.connect_timeout, "--connect-timeout")?;
        client.reply_timeout = secs(self.reply_timeout, "--reply-timeout")?;
        Ok(client)
    }
}

/// Reads the live-state file with a message naming it on failure.
pub fn load_live_state(path: &Path) -> Result<LiveState, String> {
    LiveState::load(path).map_err(|e| e.to_string())
}

/// A positive number of seconds as a duration.
pub fn secs(value: f64, flag: &str) -> Result<Duration, String> {
    if value.is_finite() && value > 0.0 && value < 86_400.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!(
            "{flag}: {value} is not a positive number of seconds"
        ))
    }
}

/// `60 s`, `1.5 s`, `250 ms`.
pub fn human_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
