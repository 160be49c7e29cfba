//! `forge-smtp-sink`: an SMTP server that writes every message it receives to a directory.
//!
//! The local demo points the identity app's mail settings here, so activation and reset mails
//! can be read (and their links followed) without sending anything anywhere. Each message is
//! written as `DIR/<n>.eml` (numbering continues after the highest file already there), and
//! one line is logged per message. It speaks the same SMTP subset as the tests' `SmtpSink`:
//! no authentication, no TLS — bind it to loopback.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use forge_test_support::smtp::{CapturedMail, Deliver, serve};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "An SMTP sink that writes every message to DIR/<n>.eml"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2525", env = "FORGE_SMTP_SINK_LISTEN")]
    listen: SocketAddr,
    /// Directory to write messages to (created if missing).
    #[arg(long, env = "FORGE_SMTP_SINK_DIR")]
    dir: PathBuf,
    /// Host name announced in the greeting.
    #[arg(long, default_value = "forge-smtp-sink.local")]
    hostname: String,
}

/// The highest `<n>.eml` in `dir`, or 0.
fn highest_message_number(dir: &Path) -> io::Result<u64> {
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_suffix(".eml"))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .max()
        .unwrap_or(0))
}

/// Writes `mail` as `dir/<n>.eml` (through a temporary file, so readers never see half a
/// message) and logs it.
fn store(dir: &Path, counter: &AtomicU64, mail: &CapturedMail) -> io::Result<String> {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    let path = dir.join(format!("{n}.eml"));
    let partial = dir.join(format!(".{n}.eml.partial"));
    std::fs::write(&partial, &mail.data)?;
    std::fs::rename(&partial, &path)?;
    tracing::info!(
        message = n,
        from = %mail.from,
        to = %mail.recipients.join(", "),
        subject = %mail.subject().unwrap_or_default(),
        bytes = mail.data.len(),
        path = %path.display(),
        "message stored"
    );
    Ok(n.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
    let args = Args::parse();

    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let counter = Arc::new(AtomicU64::new(highest_message_number(&args.dir)?));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, dir = %args.dir.display(), "forge-smtp-sink ready");

    let dir = args.dir.clone();
    let deliver: Deliver = Arc::new(move |mail| store(&dir, &counter, &mail));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = serve(listener, args.hostname, deliver) => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, exiting"),
        _ = terminate.recv() => tracing::info!("terminated, exiting"),
    }
    Ok(())
}
