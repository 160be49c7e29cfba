//! `forge-devstack`: the backing servers of a local forge stack, for the demo.
//!
//! Starts a fresh redis-server, an OpenLDAP slapd (with our schemas, ppolicy
//! and argon2) and an identd that answers every query with one tool user, each
//! on a free loopback port in a temporary directory, writes their coordinates
//! as shell variables to `--env-file`, and keeps them running until `SIGTERM`
//! or `SIGINT`, then stops them and removes their data. `scripts/demo` sources
//! the file and points the daemons at these servers.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use forge_test_support::{IdentAnswer, Identd, RedisServer, Slapd};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Runs Redis, slapd and an identd for a local forge demo"
)]
struct Args {
    /// Where to write `FORGE_DEMO_*=...` shell assignments once everything is up.
    #[arg(long)]
    env_file: PathBuf,
    /// The user the identd reports for every connection (`<project>.<tool>`).
    #[arg(long, default_value = "tools.demo")]
    ident_user: String,
    /// LDAP base DN.
    #[arg(long, default_value = "dc=example,dc=org")]
    base_dn: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let redis = RedisServer::start()
        .await
        .context("starting redis-server")?;
    let slapd = Slapd::builder()
        .base_dn(args.base_dn.clone())
        .start()
        .await
        .context("starting slapd")?;
    let identd = Identd::start(IdentAnswer::User(args.ident_user.clone()))
        .await
        .context("starting identd")?;
    let env = format!(
        "FORGE_DEMO_REDIS_URL={}\nFORGE_DEMO_REDIS_PORT={}\nFORGE_DEMO_LDAP_URL={}\n\
         FORGE_DEMO_LDAP_BASE='{}'\nFORGE_DEMO_LDAP_PEOPLE='{}'\nFORGE_DEMO_LDAP_ADMIN_DN='{}'\n\
         FORGE_DEMO_LDAP_ADMIN_PASSWORD='{}'\nFORGE_DEMO_LDAP_ARGON2={}\nFORGE_DEMO_IDENT_PORT={}\n",
        redis.url(),
        redis.port(),
        slapd.url(),
        slapd.base_dn(),
        slapd.people_dn(),
        slapd.admin_dn(),
        slapd.admin_password(),
        slapd.has_argon2(),
        identd.port(),
    );
    let partial = args.env_file.with_extension("partial");
    std::fs::write(&partial, env).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &args.env_file)
        .with_context(|| format!("writing {}", args.env_file.display()))?;
    eprintln!(
        "forge-devstack: redis {} · slapd {} · identd 127.0.0.1:{} — Ctrl-C to stop",
        redis.url(),
        slapd.url(),
        identd.port()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(identd);
    drop(slapd);
    drop(redis);
    let _ = std::fs::remove_file(&args.env_file);
    Ok(())
}
