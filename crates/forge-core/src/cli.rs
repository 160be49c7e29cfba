//! Command-line pieces every daemon shares.
//!
//! Each daemon's `clap` parser flattens [`CommonArgs`] (`--config`,
//! `--print-config`, `--check-config`), builds a [`ConfigSource`] from it plus
//! its own flags, and calls [`CommonArgs::finish_config_flags`] before
//! starting, so the two inspection flags behave the same everywhere.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::Loaded;

/// Flags common to every daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Configuration file (TOML). Every key can also be set with an
    /// environment variable (see docs/configuration.md) or a flag.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (file + environment + flags) as TOML
    /// with its generation hash, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Load and validate the configuration, report problems, and exit.
    #[arg(long)]
    pub check_config: bool,
}

impl CommonArgs {
    /// Handles `--print-config` / `--check-config`; returns `true` when the
    /// process should exit now.
    pub fn finish_config_flags<T: Serialize>(&self, loaded: &Loaded<T>) -> bool {
        if self.print_config {
            println!("# config generation {}", loaded.generation);
            print!("{}", loaded.to_toml());
            return true;
        }
        if self.check_config {
            println!("configuration OK (generation {})", loaded.generation);
            return true;
        }
        false
    }
}

/// Installs rustls's `ring` crypto provider as the process default. Call once
/// at start-up, before any TLS is set up; calling again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
