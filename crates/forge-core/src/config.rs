//! Configuration loading: one TOML file per daemon, environment overrides,
//! command-line overrides, and the *config generation*.
//!
//! Every daemon describes its configuration as a `serde` struct (with
//! `#[serde(default, deny_unknown_fields)]`) and loads it through
//! [`ConfigSource::load`]. Layers, last wins:
//!
//! 1. the struct's defaults;
//! 2. the TOML file (`--config`); a syntax or type error names the file, the
//!    line and the reason;
//! 3. environment variables `<PREFIX>_<SECTION>__<KEY>` (double underscore
//!    between nesting levels, e.g. `FORGE_PROXY_REDIS__URL`); values are parsed
//!    as TOML (`8080`, `true`, `["a","b"]`) or else taken as a string;
//! 4. command-line flags, which the daemon passes as dotted keys.
//!
//! The *generation* is a short stable hash of the effective configuration;
//! every daemon reports it on its status endpoint so an operator can see at a
//! glance which hosts run the same configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type or is refused.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// An environment or command-line override is invalid.
    #[error("{origin}: {message}")]
    Override {
        /// The environment variable or flag.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A value passed syntax checks but is refused by the daemon's validation.
    #[error("{location}: {message}")]
    Invalid {
        /// `file:line` where the key is set, or the key when it is not set in a file.
        location: String,
        /// What is wrong.
        message: String,
    },
}

/// Where a daemon's configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The TOML file, if any.
    pub path: Option<PathBuf>,
    /// Prefix of environment overrides, e.g. `FORGE_PROXY`.
    pub env_prefix: String,
    /// Command-line overrides as (dotted key, value, flag name).
    pub cli: Vec<(String, toml::Value, String)>,
    /// Environment to read overrides from; `None` = the process environment.
    /// Tests set this to stay independent of the real environment.
    pub env: Option<BTreeMap<String, String>>,
}

/// A loaded configuration with its provenance.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The effective configuration.
    pub config: T,
    /// Stable short hash of `config` (see the module docs).
    pub generation: String,
    /// The file it came from.
    pub path: Option<PathBuf>,
    /// The file's text (empty without a file), for locating keys in errors.
    text: String,
}

impl ConfigSource {
    /// A source reading `path` (if any) with env overrides under `env_prefix`.
    pub fn new(path: Option<PathBuf>, env_prefix: &str) -> Self {
        ConfigSource {
            path,
            env_prefix: env_prefix.to_owned(),
            cli: Vec::new(),
            env: None,
        }
    }

    /// Adds a command-line override if `value` is set.
    pub fn cli<V: Into<toml::Value>>(mut self, key: &str, flag: &str, value: Option<V>) -> Self {
        if let Some(v) = value {
            self.cli.push((key.to_owned(), v.into(), flag.to_owned()));
        }
        self
    }

    /// Loads, merges and deserializes the configuration.
    pub fn load<T>(&self) -> Result<Loaded<T>, ConfigError>
    where
        T: DeserializeOwned + Serialize,
    {
        let (text, path_for_errors) = match &self.path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?,
                p.clone(),
            ),
            None => (String::new(), PathBuf::from("<defaults>")),
        };
        // First pass: the file alone, so errors carry its line numbers.
        let file_config: T =
            toml::from_str(&text).map_err(|e| parse_error(&path_for_errors, &text, &e))?;

        let overrides = self.overrides()?;
        let config = if overrides.is_empty() {
            file_config
        } else {
            let mut table: toml::Table =
                toml::from_str(&text).map_err(|e| parse_error(&path_for_errors, &text, &e))?;
            let origins: Vec<String> = overrides.iter().map(|(_, _, o)| o.clone()).collect();
            for (key, value, origin) in overrides {
                set_dotted(&mut table, &key, value).map_err(|message| ConfigError::Override {
                    origin: origin.clone(),
                    message,
                })?;
            }
            toml::Value::Table(table)
                .try_into::<T>()
                .map_err(|e| ConfigError::Override {
                    origin: origins.join(", "),
                    message: e.message().trim().to_owned(),
                })?
        };
        let generation = generation_of(&config);
        Ok(Loaded {
            config,
            generation,
            path: self.path.clone(),
            text,
        })
    }

    fn overrides(&self) -> Result<Vec<(String, toml::Value, String)>, ConfigError> {
        let mut out = Vec::new();
        if !self.env_prefix.is_empty() {
            let prefix = format!("{}_", self.env_prefix);
            let vars: Vec<(String, String)> = match &self.env {
                Some(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                None => std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                    .collect(),
            };
            let mut vars: Vec<_> = vars
                .into_iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .collect();
            vars.sort();
            for (name, raw) in vars {
                let key = name[prefix.len()..].to_ascii_lowercase().replace("__", ".");
                if key.is_empty() || key.split('.').any(str::is_empty) {
                    return Err(ConfigError::Override {
                        origin: name,
                        message: "malformed variable name".into(),
                    });
                }
                out.push((key, parse_override_value(&raw), name));
            }
        }
        out.extend(self.cli.iter().cloned());
        Ok(out)
    }
}

impl<T> Loaded<T> {
    /// An error for a value refused by a daemon's own validation, located at
    /// the line of the file that sets `dotted_key` when there is one.
    pub fn invalid(&self, dotted_key: &str, message: impl fmt::Display) -> ConfigError {
        let location = match (&self.path, locate_key(&self.text, dotted_key)) {
            (Some(p), Some(line)) => format!("{}:{line}", p.display()),
            (Some(p), None) => format!("{} (key {dotted_key})", p.display()),
            (None, _) => format!("key {dotted_key}"),
        };
        ConfigError::Invalid {
            location,
            message: message.to_string(),
        }
    }
}

impl<T: Serialize> Loaded<T> {
    /// The effective configuration rendered as TOML (for `--print-config`).
    /// Credentials are redacted ([`crate::redact`]): the output is safe to paste.
    pub fn to_toml(&self) -> String {
        let rendered = toml::Value::try_from(&self.config).and_then(|mut v| {
            crate::redact::redact_toml(&mut v);
            toml::to_string_pretty(&v)
        });
        rendered.unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// The stable short hash of a configuration value.
pub fn generation_of<T: Serialize>(config: &T) -> String {
    // serde_json's Value keeps maps sorted, so the bytes are canonical.
    let canonical = serde_json::to_value(config)
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    hex::encode(&digest[..6])
}

fn parse_override_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_dotted(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().ok_or("empty key")?;
    let mut cur = table;
    for p in parts {
        let entry = cur
            .entry(p.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("{p} is not a section")),
        };
    }
    cur.insert(last.to_owned(), value);
    Ok(())
}

fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message: e.message().trim().to_owned(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Finds the line that sets `a.b.c` (a `c = ` line inside `[a.b]`, or a
/// dotted/inline form at top level). Good enough for error messages.
fn locate_key(text: &str, dotted_key: &str) -> Option<usize> {
    let (section, leaf) = match dotted_key.rsplit_once('.') {
        Some((s, l)) => (s, l),
        None => ("", dotted_key),
    };
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = l.strip_prefix('[') {
            current = h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_owned();
            continue;
        }
        let Some((k, _)) = l.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        if (current == section && k == leaf) || (current.is_empty() && k == dotted_key) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        listen: String,
        workers: u32,
        redis: Redis,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Redis {
        url: String,
        timeout_ms: u64,
    }
    impl Default for Sample {
        fn default() -> Self {
            Sample {
                listen: "0.0.0.0:80".into(),
                workers: 1,
                redis: Redis::default(),
            }
        }
    }
    impl Default for Redis {
        fn default() -> Self {
            Redis {
                url: "redis://127.0.0.1:6379".into(),
                timeout_ms: 2000,
            }
        }
    }

    fn source(text: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, ConfigSource) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.toml");
        std::fs::write(&path, text).unwrap();
        let mut s = ConfigSource::new(Some(path), "FORGE_T");
        s.env = Some(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        (dir, s)
    }

    #[test]
    fn defaults_file_env_cli_layering() {
        let (_d, s) = source(
            "workers = 4\n[redis]\nurl = \"redis://a:1\"\n",
            &[
                ("FORGE_T_REDIS__TIMEOUT_MS", "500"),
                ("FORGE_T_WORKERS", "8"),
                ("OTHER", "x"),
            ],
        );
        let s = s.cli("listen", "--listen", Some("127.0.0.1:1"));
        let l: Loaded<Sample> = s.load().unwrap();
        assert_eq!(l.config.workers, 8);
        assert_eq!(l.config.redis.url, "redis://a:1");
        assert_eq!(l.config.redis.timeout_ms, 500);
        assert_eq!(l.config.listen, "127.0.0.1:1");
    }

    #[test]
    fn errors_name_file_and_line() {
        let (_d, s) = source("workers = 4\n\n[redis]\nurl = 5\n", &[]);
        let e = s.load::<Sample>().unwrap_err().to_string();
        assert!(e.contains("daemon.toml:4:"), "{e}");
        assert!(e.contains("string"), "{e}");

        let (_d, s) = source("workers = 4\nbogus = 1\n", &[]);
        let e = s.load::<Sample>().unwrap_err().to_string();
        assert!(e.contains("daemon.toml:2:"), "{e}");
        assert!(e.contains("bogus"), "{e}");

        let (_d, s) = source("workers = [\n", &[]);
        let e = s.load::<Sample>().unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");

        let (_d, s) = source("", &[("FORGE_T_WORKERS", "many")]);
        let e = s.load::<Sample>().unwrap_err().to_string();
        assert!(e.starts_with("FORGE_T_WORKERS"), "{e}");

        let missing = ConfigSource::new(Some("/nonexistent/forge.toml".into()), "X");
        let e = missing.load::<Sample>().unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/forge.toml: cannot read"), "{e}");
    }

    #[test]
    fn invalid_locates_the_key() {
        let (_d, s) = source("workers = 4\n\n[redis]\n  timeout_ms = 0\n", &[]);
        let l: Loaded<Sample> = s.load().unwrap();
        let e = l
            .invalid("redis.timeout_ms", "must be positive")
            .to_string();
        assert!(e.contains("daemon.toml:4: must be positive"), "{e}");
    }

    #[test]
    fn generation_is_stable_and_tracks_content() {
        let (_d, s) = source("workers = 4\n", &[]);
        let a: Loaded<Sample> = s.load().unwrap();
        let b: Loaded<Sample> = s.load().unwrap();
        assert_eq!(a.generation, b.generation);
        assert_eq!(a.generation.len(), 12);
        let (_d2, s2) = source("# a comment changes nothing\nworkers = 4\n", &[]);
        assert_eq!(s2.load::<Sample>().unwrap().generation, a.generation);
        let (_d3, s3) = source("workers = 5\n", &[]);
        assert_ne!(s3.load::<Sample>().unwrap().generation, a.generation);
        assert!(a.to_toml().contains("workers = 4"));
    }
}
