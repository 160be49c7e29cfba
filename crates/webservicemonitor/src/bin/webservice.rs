//! `webservice`: wiring only — flags, configuration, who the caller is; the
//! logic is `webservicemonitor::webservice`.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use forge_core::{ConfigSource, ToolName};
use webservicemonitor::webservice::{Invocation, Webservice, parse_words};
use webservicemonitor::{WebserviceConfig, users};

/// Start, stop, restart or show your tool's web service.
///
///   webservice [--backend gridengine] [--release R] [--mem 4G] <type> start [extra args…]
///   webservice [<type>] stop | restart | status
///
/// `start` submits the job and records it in ~/service.manifest (so
/// webservicemonitor keeps it running); `stop` removes it from the manifest and
/// deletes the job; `restart` deletes the job, waits until it is gone, and
/// submits a new one. Without <type>, the type recorded in the manifest is used.
#[derive(Debug, Parser)]
#[command(name = "webservice", version = forge_core::VERSION, verbatim_doc_comment)]
struct Args {
    /// Configuration file (TOML); default /etc/forge/webservice.toml when it exists.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Backend: only `gridengine` is handled by this command.
    #[arg(long)]
    backend: Option<String>,
    /// Release (distribution) of the execution hosts.
    #[arg(long)]
    release: Option<String>,
    /// Memory limit of the job, e.g. 4G.
    #[arg(long, short = 'm')]
    mem: Option<String>,
    /// Act on this tool (default: the tool whose account runs the command;
    /// only root may name another tool).
    #[arg(long)]
    tool: Option<String>,
    /// [<type>] start|stop|restart|status [extra arguments for the web server]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    words: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match real_main().await {
        Ok(msg) => {
            println!("{msg}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("webservice: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main() -> anyhow::Result<String> {
    forge_core::cli::generate_if_asked::<Args>("webservice");
    let args = Args::parse();
    let default = PathBuf::from("/etc/forge/webservice.toml");
    let path = args
        .config
        .clone()
        .or_else(|| default.exists().then_some(default));
    let loaded = ConfigSource::new(path, "FORGE_WEBSERVICE").load::<WebserviceConfig>()?;
    if let Err((key, reason)) = loaded.config.validate() {
        return Err(loaded.invalid(&key, reason).into());
    }
    let config = loaded.config;
    let tool = caller_tool(&config, args.tool.as_deref())?;
    let (web_type, verb, extra_args) = parse_words(&args.words).map_err(|e| anyhow!(e))?;
    let inv = Invocation {
        tool,
        web_type,
        verb,
        backend: args.backend,
        release: args.release,
        mem: args.mem,
        extra_args,
    };
    Ok(Webservice::new(config).execute(&inv).await?)
}

/// The tool the caller may act on.
fn caller_tool(config: &WebserviceConfig, requested: Option<&str>) -> anyhow::Result<ToolName> {
    let uid = nix::unistd::geteuid().as_raw();
    let source = users::from_config(&config.users);
    let prefix = format!("{}.", config.tools.project);
    let own = source
        .name_of(uid)
        .and_then(|n| n.strip_prefix(&prefix).map(str::to_owned));
    match (requested, own) {
        (Some(t), own) => {
            let t = ToolName::parse(t).context("--tool")?;
            if uid != 0 && own.as_deref() != Some(t.as_str()) {
                bail!("only root may act on another tool than its own");
            }
            Ok(t)
        }
        (None, Some(own)) => ToolName::parse(&own).context("your account name"),
        (None, None) => bail!(
            "this command must be run as a tool account ({prefix}<tool>); become the tool first (`become <tool>`)"
        ),
    }
}
