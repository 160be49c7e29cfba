//! Command-line pieces every daemon shares.
//!
//! Each daemon's `clap` parser flattens [`CommonArgs`] (`--config`,
//! `--print-config`, `--check-config`), builds a [`ConfigSource`] from it plus
//! its own flags, and calls [`CommonArgs::finish_config_flags`] before
//! starting, so the two inspection flags behave the same everywhere.
//!
//! Every binary (daemons and tools alike) also calls [`generate_if_asked`]
//! first: `<binary> --generate man|complete-bash|complete-zsh` writes its
//! man page or shell completion, generated from the same `clap` definition as
//! `--help`, so the package's pages can't drift from the flags (ripgrep's
//! `rg --generate` is the model).

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

/// What `--generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generated {
    /// The man page (roff, section 1).
    Man,
    /// A bash completion script.
    CompleteBash,
    /// A zsh completion script.
    CompleteZsh,
}

impl Generated {
    /// The argument of `--generate` naming it.
    pub fn parse(arg: &str) -> Option<Self> {
        match arg {
            "man" => Some(Generated::Man),
            "complete-bash" => Some(Generated::CompleteBash),
            "complete-zsh" => Some(Generated::CompleteZsh),
            _ => None,
        }
    }
}

/// Writes the man page or a completion script of `cmd` (named `name`, the
/// installed binary's name) to `out`.
pub fn generate(
    cmd: clap::Command,
    name: &'static str,
    what: Generated,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut cmd = cmd.name(name).bin_name(name);
    match what {
        Generated::Man => clap_mangen::Man::new(cmd).render(out),
        Generated::CompleteBash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, name, out);
            Ok(())
        }
        Generated::CompleteZsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, name, out);
            Ok(())
        }
    }
}

/// Handles `<binary> --generate man|complete-bash|complete-zsh` before the
/// real parse (which may require arguments or a subcommand): writes the page
/// to stdout and exits. Any other command line returns and is parsed as usual.
pub fn generate_if_asked<C: clap::CommandFactory>(name: &'static str) {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let [flag, what] = argv.as_slice() else {
        return;
    };
    if flag != "--generate" {
        return;
    }
    let Some(what) = what.to_str().and_then(Generated::parse) else {
        eprintln!(
            "{name}: --generate takes man, complete-bash or complete-zsh, not {:?}",
            what
        );
        std::process::exit(2);
    };
    let mut out = std::io::stdout().lock();
    match generate(C::command(), name, what, &mut out) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{name}: writing the generated page: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// A tool's CLI as the binaries write them.
    #[derive(Debug, clap::Parser)]
    struct Tool {
        #[command(flatten)]
        common: CommonArgs,
        /// How many times to frobnicate.
        #[arg(long)]
        times: Option<u32>,
    }

    fn render(what: Generated) -> String {
        let mut out = Vec::new();
        generate(Tool::command(), "frob", what, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn generates_a_man_page_and_completions_from_the_clap_definition() {
        let man = render(Generated::Man);
        assert!(man.contains(".TH frob 1"), "{man}");
        assert!(man.contains("frobnicate"), "flag docs in the page: {man}");
        assert!(man.contains("check\\-config"), "{man}");
        let bash = render(Generated::CompleteBash);
        assert!(
            bash.contains("complete") && bash.contains("--times"),
            "{bash}"
        );
        let zsh = render(Generated::CompleteZsh);
        assert!(zsh.starts_with("#compdef frob"), "{zsh}");
    }

    #[test]
    fn generate_names_only_known_pages() {
        assert_eq!(Generated::parse("man"), Some(Generated::Man));
        assert_eq!(
            Generated::parse("complete-zsh"),
            Some(Generated::CompleteZsh)
        );
        assert_eq!(Generated::parse("fish"), None);
    }
}
