//! `service.manifest`: the YAML file in a tool's home that says which web
//! service the tool wants.
//!
//! Today's keys: `version` (3), `web` (the web service type; absent when the
//! service is stopped), `backend` (`gridengine` or `kubernetes`), `release`,
//! `memory`, `web::extra_args`, and whatever else other tools wrote. Parsing
//! is tolerant: only the keys the monitor needs are interpreted, everything
//! else is kept as it was so `webservice` rewrites the file without losing it.
//!
//! The monitor runs with privileges and the files are written by tools, so
//! [`read_owned`] refuses symlinks (and opens with `O_NOFOLLOW`), anything but
//! a regular file, files not owned by the tool's uid and oversized files, each
//! with a specific [`ManifestError`]. [`write_atomic`] writes a temporary file
//! in the same directory and renames it over the manifest, so a concurrent
//! reader sees the old or the new file, never half of one.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde_norway::{Mapping, Value};

/// The manifest format version `webservice` writes when a file has none.
pub const MANIFEST_VERSION: u64 = 3;

/// The comment at the top of every manifest `webservice` writes (today's).
pub const MANIFEST_HEADER: &str = "# This file is used by toollabs infrastructure.\n# Please do not edit manually at this time.\n";

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The path is a symbolic link.
    #[error("is a symbolic link; refused")]
    Symlink,
    /// The path is a directory, FIFO, socket or device.
    #[error("is not a regular file ({0})")]
    NotRegular(&'static str),
    /// The file's owner is not the tool.
    #[error("is owned by uid {owner}, not by the tool's uid {expected}")]
    WrongOwner {
        /// The file's owner.
        owner: u32,
        /// The tool's uid.
        expected: u32,
    },
    /// The file is larger than the configured limit.
    #[error("is {size} bytes; at most {limit} are read")]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The file could not be opened or read.
    #[error("cannot be read: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not UTF-8.
    #[error("is not UTF-8 text")]
    NotUtf8,
    /// The file is not valid YAML.
    #[error("is not valid YAML: {0}")]
    Yaml(String),
    /// The YAML document is not a mapping.
    #[error("is not a YAML mapping (found {0})")]
    NotAMapping(&'static str),
    /// A key the monitor needs has the wrong type.
    #[error("key {key:?} {reason}")]
    BadKey {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A parsed manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    /// The whole document, kept for rewriting.
    doc: Mapping,
}

impl Manifest {
    /// Parses manifest text. An empty document is an empty manifest.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let value: Value =
            serde_norway::from_str(text).map_err(|e| ManifestError::Yaml(one_line(&e)))?;
        let doc = match value {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m,
            other => return Err(ManifestError::NotAMapping(kind(&other))),
        };
        let m = Manifest { doc };
        // Interpret the keys we rely on once, so a bad type is reported now.
        m.checked_str("web")?;
        m.checked_str("backend")?;
        m.checked_str("release")?;
        m.extra_args_checked()?;
        Ok(m)
    }

    fn checked_str(&self, key: &'static str) -> Result<Option<String>, ManifestError> {
        match self.doc.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // YAML turns `release: 12` into a number; accept scalars.
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ManifestError::BadKey {
                key,
                reason: "must be a string",
            }),
        }
    }

    fn extra_args_checked(&self) -> Result<Vec<String>, ManifestError> {
        const KEY: &str = "web::extra_args";
        match self.doc.get(KEY) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(s.split_whitespace().map(str::to_owned).collect()),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(ManifestError::BadKey {
                        key: KEY,
                        reason: "must be a list of strings",
                    }),
                })
                .collect(),
            Some(_) => Err(ManifestError::BadKey {
                key: KEY,
                reason: "must be a string or a list of strings",
            }),
        }
    }

    /// The web service type, when the tool wants one.
    pub fn web(&self) -> Option<String> {
        self.checked_str("web")
            .ok()
            .flatten()
            .filter(|s| !s.is_empty())
    }

    /// The backend named by the manifest, if any.
    pub fn backend(&self) -> Option<String> {
        self.checked_str("backend").ok().flatten()
    }

    /// The release (distribution) named by the manifest, if any.
    pub fn release(&self) -> Option<String> {
        self.checked_str("release").ok().flatten()
    }

    /// The memory limit named by the manifest, if any.
    pub fn memory(&self) -> Option<String> {
        self.checked_str("memory").ok().flatten()
    }

    /// `web::extra_args` as arguments.
    pub fn extra_args(&self) -> Vec<String> {
        self.extra_args_checked().unwrap_or_default()
    }

    /// Sets a string key.
    pub fn set(&mut self, key: &str, value: &str) {
        self.doc.insert(
            Value::String(key.to_owned()),
            Value::String(value.to_owned()),
        );
    }

    /// Sets `web::extra_args` (removed when empty).
    pub fn set_extra_args(&mut self, args: &[String]) {
        let key = Value::String("web::extra_args".into());
        if args.is_empty() {
            self.doc.remove(&key);
        } else {
            let seq = args.iter().map(|a| Value::String(a.clone())).collect();
            self.doc.insert(key, Value::Sequence(seq));
        }
    }

    /// Removes a key.
    pub fn remove(&mut self, key: &str) {
        self.doc.remove(key);
    }

    /// Removes the keys that describe a running web service: `web`,
    /// `web::*` and `memory`.
    pub fn clear_web(&mut self) {
        self.doc.retain(|k, _| match k.as_str() {
            Some(k) => k != "web" && !k.starts_with("web::") && k != "memory",
            None => true,
        });
    }

    /// The file's text as `webservice` writes it: today's header comment,
    /// then the keys sorted, block style (like `yaml.safe_dump`).
    pub fn render(&self) -> String {
        let mut doc = self.doc.clone();
        if !doc.contains_key("version") {
            doc.insert(
                Value::String("version".into()),
                Value::from(MANIFEST_VERSION),
            );
        }
        let mut entries: Vec<(Value, Value)> = doc.into_iter().collect();
        entries.sort_by_key(|(k, _)| sort_key(k));
        let sorted: Mapping = entries.into_iter().collect();
        let body = serde_norway::to_string(&Value::Mapping(sorted)).unwrap_or_default();
        format!("{MANIFEST_HEADER}{body}")
    }
}

fn sort_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other).unwrap_or_default(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads a manifest written by a tool, trusting it only if `expected_uid`
/// owns it. `Ok(None)` when there is no manifest.
pub fn read_owned(
    path: &Path,
    expected_uid: u32,
    max_bytes: u64,
) -> Result<Option<Manifest>, ManifestError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if meta.file_type().is_symlink() {
        return Err(ManifestError::Symlink);
    }
    // O_NOFOLLOW closes the race with a symlink swapped in after the check;
    // O_NONBLOCK keeps a FIFO from blocking the open.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(ManifestError::Symlink),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    check_regular(&meta)?;
    if meta.uid() != expected_uid {
        return Err(ManifestError::WrongOwner {
            owner: meta.uid(),
            expected: expected_uid,
        });
    }
    if meta.len() > max_bytes {
        return Err(ManifestError::TooLarge {
            size: meta.len(),
            limit: max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ManifestError::TooLarge {
            size: bytes.len() as u64,
            limit: max_bytes,
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
    Manifest::parse(&text).map(Some)
}

fn check_regular(meta: &std::fs::Metadata) -> Result<(), ManifestError> {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(());
    }
    Err(ManifestError::NotRegular(if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "unknown type"
    }))
}

/// Reads the caller's own manifest (the `webservice` command): missing → empty.
pub fn read_own(path: &Path, max_bytes: u64) -> Result<Manifest, ManifestError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
        Err(e) => return Err(e.into()),
    };
    if meta.file_type().is_symlink() {
        return Err(ManifestError::Symlink);
    }
    check_regular(&meta)?;
    if meta.len() > max_bytes {
        return Err(ManifestError::TooLarge {
            size: meta.len(),
            limit: max_bytes,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => ManifestError::NotUtf8,
        _ => ManifestError::Io(e),
    })?;
    Manifest::parse(&text)
}

/// Writes `manifest` to `path` atomically: a temporary file in the same
/// directory (mode 0644), flushed and synced, renamed over `path`.
pub fn write_atomic(path: &Path, manifest: &Manifest) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".service.manifest.")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.write_all(manifest.render().as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // Make the rename durable too.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_todays_manifests_tolerantly() {
        let m = Manifest::parse(
            "# This file is used by toollabs infrastructure.\n# Please do not edit manually at this time.\nbackend: gridengine\ndistribution: Debian\nrelease: buster\nversion: 3\nweb: lighttpd\nweb::extra_args: [--foo, '1']\nsomething: {nested: [1, 2]}\n",
        )
        .unwrap();
        assert_eq!(m.web().as_deref(), Some("lighttpd"));
        assert_eq!(m.backend().as_deref(), Some("gridengine"));
        assert_eq!(m.release().as_deref(), Some("buster"));
        assert_eq!(m.extra_args(), ["--foo", "1"]);
        assert_eq!(Manifest::parse("").unwrap().web(), None);
        assert_eq!(Manifest::parse("version: 3\n").unwrap().web(), None);
    }

    #[test]
    fn bad_manifests_say_why() {
        let e = Manifest::parse("web: [a\n").unwrap_err().to_string();
        assert!(e.starts_with("is not valid YAML"), "{e}");
        let e = Manifest::parse("- a\n").unwrap_err().to_string();
        assert!(e.contains("not a YAML mapping (found a list)"), "{e}");
        let e = Manifest::parse("web: {a: 1}\n").unwrap_err().to_string();
        assert!(e.contains("\"web\" must be a string"), "{e}");
    }

    #[test]
    fn render_keeps_unknown_keys_and_sorts() {
        let mut m = Manifest::parse("zeta: 1\nbackend: gridengine\n").unwrap();
        m.set("web", "uwsgi-python");
        m.set_extra_args(&["--x".into()]);
        let text = m.render();
        assert!(text.starts_with(MANIFEST_HEADER));
        let back = Manifest::parse(&text).unwrap();
        assert_eq!(back.web().as_deref(), Some("uwsgi-python"));
        assert_eq!(back.extra_args(), ["--x"]);
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(body[0], "backend: gridengine");
        assert!(body.last().unwrap().starts_with("zeta"));
        let mut stopped = back.clone();
        stopped.clear_web();
        let again = Manifest::parse(&stopped.render()).unwrap();
        assert_eq!(again.web(), None);
        assert!(again.extra_args().is_empty());
        assert_eq!(again.backend().as_deref(), Some("gridengine"));
    }
}
