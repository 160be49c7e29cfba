//! `webservice-runner`: wires flags to [`webservice_runner::runner::run`].

use clap::Parser;
use webservice_runner::runner::{self, ExitCode, RunEnd, RunOptions};
use webservice_runner::{EndpointArgs, secs};

/// Runs a tool's web server and registers it with the proxy.
///
/// Starts COMMAND (with `{port}` in its arguments replaced by the port and
/// PORT set in its environment), waits until the port accepts connections,
/// registers http://<this host>:<port> for the route with the registration
/// endpoint named in the active-proxy file (an empty file: don't register),
/// forwards signals to the server, and unregisters when it exits.
///
/// Exit status: the server's own (128+N when killed by signal N), or
///   69  no registration endpoint answered
///   71  the command could not be started
///   75  the server did not accept connections in time (or exited first)
///   77  the registration was refused (the reason is printed)
///   78  the active-proxy file is unreadable or invalid
#[derive(Debug, Parser)]
#[command(name = "webservice-runner", version, verbatim_doc_comment)]
struct Args {
    /// The port to run on; default: a free one.
    #[arg(long)]
    port: Option<u16>,
    /// The route pattern to register.
    #[arg(long, default_value = ".*")]
    route: String,
    /// The backend's scheme.
    #[arg(long, default_value = "http", value_parser = ["http", "https"])]
    scheme: String,
    /// Register with `registerCanonical` (also writes the legacy redirect entry).
    #[arg(long)]
    canonical: bool,
    /// How long the server may take to accept connections, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    ready_timeout: f64,
    /// How long the server gets to stop after SIGTERM when the runner stops it
    /// (failed registration), seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    stop_grace: f64,
    #[command(flatten)]
    endpoints: EndpointArgs,
    /// The web server command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let fail = |code: ExitCode, msg: &str| {
        eprintln!("webservice-runner: {msg}");
        std::process::ExitCode::from(code as u8)
    };
    let client = match args.endpoints.client() {
        Ok(c) => c,
        Err(e) => return fail(ExitCode::Config, &e),
    };
    let (ready_timeout, stop_grace) = match (
        secs(args.ready_timeout, "--ready-timeout"),
        secs(args.stop_grace, "--stop-grace"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return fail(ExitCode::Config, &e),
    };
    let opts = RunOptions {
        command: args.command,
        port: args.port,
        route: args.route,
        scheme: args.scheme,
        canonical: args.canonical,
        ready_timeout,
        stop_grace,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(ExitCode::CannotStart, &format!("cannot start: {e}")),
    };
    match runtime.block_on(runner::run(opts, client)) {
        RunEnd::Exited(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        RunEnd::Failed(code, msg) => fail(code, &msg),
    }
}
