//! `webservice-runner`: wires flags to [`webservice_runner::wstype::prepare`]
//! and [`webservice_runner::runner::run`].

use clap::Parser;
use webservice_runner::runner::{self, ExitCode, RunEnd, RunOptions};
use webservice_runner::wstype::{self, Tool, TypeError, WebServiceType};
use webservice_runner::{EndpointArgs, secs};

/// Runs a tool's web server and registers it with the proxy.
///
/// Two forms:
///
///   webservice-runner --register-proxy --type TYPE [--port N] [--canonical] [EXTRA ARGS...]
///       today's interface (what the grid's submit template runs): starts the
///       TYPE's server for the tool this runs as — lighttpd, lighttpd-plain,
///       uwsgi-python, uwsgi-plain, nodejs, generic (EXTRA ARGS are the
///       command); tomcat is refused. Registers only with --register-proxy.
///
///   webservice-runner [--port N] [--canonical] -- COMMAND [ARGS...]
///       runs COMMAND (the generic type in the current directory) and always
///       registers.
///
/// `{port}` in the command's arguments is replaced by the port; PORT and
/// TOOL_WEB_PORT are set in its environment. Once the port accepts
/// connections, http://<this host>:<port> is registered for the route with
/// the registration endpoint named in the active-proxy file (an empty file:
/// don't register). Signals are forwarded to the server, the route is
/// removed when it exits, and the server never outlives the runner.
///
/// Exit status: the server's own (128+N when killed by signal N), or
///   64  unknown or unsupported type, or no command
///   66  the tool's home lacks what the type needs (e.g. public_html)
///   69  no registration endpoint answered
///   71  the command could not be started
///   75  the server did not accept connections in time (or exited first)
///   77  the registration was refused (the reason is printed)
///   78  the active-proxy file is unreadable or invalid
#[derive(Debug, Parser)]
#[command(name = "webservice-runner", version, verbatim_doc_comment)]
struct Args {
    /// The web service type (today's names).
    #[arg(long = "type", value_name = "TYPE")]
    wstype: Option<String>,
    /// Register the server with the proxy (with --type; the `-- COMMAND` form
    /// always registers).
    #[arg(long)]
    register_proxy: bool,
    /// The port to run on; default (or 0): a free one.
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
    /// The type's extra arguments, or the command after `--`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    extra_args: Vec<String>,
}

fn main() -> std::process::ExitCode {
    forge_core::cli::generate_if_asked::<Args>("webservice-runner");
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
    let port = match args.port.filter(|p| *p != 0) {
        Some(p) => p,
        None => match runner::pick_port() {
            Ok(p) => p,
            Err(e) => return fail(ExitCode::CannotStart, &format!("cannot pick a port: {e}")),
        },
    };
    // The typed form prepares the type's server; the `-- COMMAND` form runs
    // the command as it is.
    let (launch, register) = match &args.wstype {
        None => {
            if args.extra_args.is_empty() {
                return fail(
                    ExitCode::Usage,
                    "give --type TYPE, or the command to run after --",
                );
            }
            (None, true)
        }
        Some(name) => {
            let prepared = name.parse::<WebServiceType>().and_then(|ty| {
                let tool = Tool::current()?;
                wstype::prepare(ty, &tool, port, &args.extra_args)
            });
            match prepared {
                Ok(l) => (Some(l), args.register_proxy),
                Err(e @ (TypeError::NotSetUp(_) | TypeError::CannotPrepare(_))) => {
                    return fail(ExitCode::NotSetUp, &e.to_string());
                }
                Err(e @ TypeError::NoUser(_)) => {
                    return fail(ExitCode::CannotStart, &e.to_string());
                }
                Err(e) => return fail(ExitCode::Usage, &e.to_string()),
            }
        }
    };
    if let Some(l) = &launch
        && !l.ignored_args.is_empty()
    {
        eprintln!(
            "webservice-runner: the {} type takes no extra arguments; ignoring {:?}",
            args.wstype.as_deref().unwrap_or_default(),
            l.ignored_args
        );
    }
    let (command, cwd) = match &launch {
        Some(l) => (l.command.clone(), l.cwd.clone()),
        None => (args.extra_args.clone(), None),
    };
    let opts = RunOptions {
        command,
        port: Some(port),
        cwd,
        register,
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
    let end = runtime.block_on(runner::run(opts, client));
    // The generated files go once the server is gone.
    drop(launch);
    match end {
        RunEnd::Exited(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        RunEnd::Failed(code, msg) => fail(code, &msg),
    }
}
