//! `portreleaser`: the job-end hook; unregisters this host's route.

use clap::Parser;
use webservice_runner::EndpointArgs;
use webservice_runner::client::ClientError;
use webservice_runner::runner::ExitCode;

/// Removes this host's registration of a tool's route (run when the web
/// service's job ends).
///
/// Sends `unregister` for the route to the registration endpoint named in the
/// active-proxy file. The proxy only removes the route if it still points at
/// this host, so a newer registration elsewhere is left alone; running it
/// twice is harmless. An empty active-proxy file means registration is
/// disabled: nothing to do.
///
/// Exit status: 0 done (or nothing to do), 69 no endpoint answered,
/// 77 refused (the reason is printed), 78 unreadable active-proxy file.
#[derive(Debug, Parser)]
#[command(name = "portreleaser", version, verbatim_doc_comment)]
struct Args {
    /// The route pattern to unregister.
    #[arg(long, default_value = ".*")]
    route: String,
    #[command(flatten)]
    endpoints: EndpointArgs,
}

fn main() -> std::process::ExitCode {
    forge_core::cli::generate_if_asked::<Args>("portreleaser");
    let args = Args::parse();
    let fail = |code: ExitCode, msg: &str| {
        eprintln!("portreleaser: {msg}");
        std::process::ExitCode::from(code as u8)
    };
    let client = match args.endpoints.client() {
        Ok(c) => c,
        Err(e) => return fail(ExitCode::Config, &e),
    };
    if client.is_disabled() {
        eprintln!("portreleaser: registration is disabled; nothing to release");
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(ExitCode::CannotStart, &format!("cannot start: {e}")),
    };
    match runtime.block_on(client.unregister(&args.route)) {
        Ok(endpoint) => {
            eprintln!(
                "portreleaser: released route {:?} with {endpoint}",
                args.route
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e @ ClientError::Disabled) => {
            eprintln!("portreleaser: {e}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => fail(ExitCode::for_client_error(&e), &e.to_string()),
    }
}
