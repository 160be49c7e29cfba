//! TLS termination: certificates from a directory, chosen per handshake by
//! SNI, replaced on reload without dropping connections.
//!
//! The directory holds pairs `<name>.crt` (PEM chain, leaf first) and
//! `<name>.key` (PEM private key). A handshake gets the first pair (in file
//! name order) whose leaf certificate is valid for the SNI name — wildcards
//! included, as the certificate's own names decide — or, without SNI or
//! without a match, the first pair. On reload (`SIGHUP`) the directory is
//! read again; a pair that no longer loads keeps its previous certificate
//! and is logged, so a half-written renewal never takes a site down.
//! ALPN offers `h2` and `http/1.1`.
//!
//! Each loaded pair's leaf expiry is exported as
//! `forge_dynamicproxy_certificate_expiry_timestamp_seconds{certificate="<name>"}`
//! (unix seconds of its `notAfter`), which the shipped alert
//! `ForgeCertificateExpiringSoon` watches; a pair already expired at load is
//! logged at `warn`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate directory or pair can't be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The directory can't be read.
    #[error("{path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A pair is broken.
    #[error("{path}: {reason}")]
    Pair {
        /// The `.crt` file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No usable pair at all.
    #[error("{0}: no usable <name>.crt + <name>.key pair")]
    Empty(PathBuf),
}

/// One loaded pair.
#[derive(Debug)]
struct Pair {
    /// The chain and signing key rustls serves.
    key: Arc<CertifiedKey>,
    /// The leaf's `notAfter`, unix seconds (`None`: the leaf could not be
    /// read as X.509, which rustls would refuse at the handshake anyway).
    not_after: Option<i64>,
}

/// The certificates in force, by file stem.
#[derive(Debug, Default)]
pub struct CertStore {
    pairs: BTreeMap<String, Pair>,
}

impl CertStore {
    /// Loads every pair of `dir`; pairs that fail are replaced by the same
    /// stem's pair in `previous` when there is one (and logged either way).
    pub fn load(dir: &Path, previous: Option<&CertStore>) -> Result<CertStore, TlsError> {
        let entries = std::fs::read_dir(dir).map_err(|source| TlsError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let mut stems: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                (p.extension()? == "crt").then(|| p.file_stem()?.to_str().map(str::to_owned))?
            })
            .collect();
        stems.sort();
        let mut pairs = BTreeMap::new();
        for stem in stems {
            let crt = dir.join(format!("{stem}.crt"));
            match load_pair(&crt, &dir.join(format!("{stem}.key"))) {
                Ok(key) => {
                    let not_after = key.cert.first().and_then(|leaf| leaf_not_after(leaf));
                    pairs.insert(
                        stem,
                        Pair {
                            key: Arc::new(key),
                            not_after,
                        },
                    );
                }
                Err(reason) => {
                    let kept = previous.and_then(|p| p.pairs.get(&stem));
                    tracing::error!(
                        path = %crt.display(),
                        %reason,
                        kept_previous = kept.is_some(),
                        "certificate not loaded"
                    );
                    if let Some(old) = kept {
                        pairs.insert(
                            stem,
                            Pair {
                                key: old.key.clone(),
                                not_after: old.not_after,
                            },
                        );
                    }
                }
            }
        }
        if pairs.is_empty() {
            return Err(TlsError::Empty(dir.to_owned()));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        for (stem, pair) in &pairs {
            let Some(not_after) = pair.not_after else {
                continue;
            };
            if not_after <= now {
                tracing::warn!(certificate = %stem, not_after, "certificate has expired");
            }
            metrics::gauge!(
                "forge_dynamicproxy_certificate_expiry_timestamp_seconds",
                "certificate" => stem.clone()
            )
            .set(not_after as f64);
        }
        Ok(CertStore { pairs })
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The certificate for `sni` (or the default one).
    fn find(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni.and_then(|n| ServerName::try_from(n.to_owned()).ok()) {
            for pair in self.pairs.values() {
                let Some(leaf) = pair.key.cert.first() else {
                    continue;
                };
                if let Ok(parsed) = ParsedCertificate::try_from(leaf)
                    && rustls::client::verify_server_name(&parsed, &name).is_ok()
                {
                    return Some(pair.key.clone());
                }
            }
        }
        self.pairs.values().next().map(|p| p.key.clone())
    }
}

/// The `notAfter` of a DER certificate, unix seconds.
fn leaf_not_after(leaf: &CertificateDer<'_>) -> Option<i64> {
    match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, cert)) => Some(cert.validity().not_after.timestamp()),
        Err(e) => {
            tracing::warn!(error = %e, "leaf certificate not readable as X.509; no expiry exported");
            None
        }
    }
}

fn load_pair(crt: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(crt)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no certificate in the file".into());
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(certified)
}

/// Chooses certificates for handshakes; the store behind it is swapped on
/// reload.
#[derive(Debug)]
pub struct CertResolver {
    store: ArcSwap<CertStore>,
    dir: PathBuf,
}

impl CertResolver {
    /// Loads `dir`.
    pub fn new(dir: &Path) -> Result<Arc<Self>, TlsError> {
        let store = CertStore::load(dir, None)?;
        tracing::info!(dir = %dir.display(), certificates = store.len(), "TLS certificates loaded");
        Ok(Arc::new(CertResolver {
            store: ArcSwap::from_pointee(store),
            dir: dir.to_owned(),
        }))
    }

    /// Re-reads the directory, keeping certificates that fail to load.
    pub fn reload(&self) -> Result<usize, TlsError> {
        let old = self.store.load_full();
        let new = CertStore::load(&self.dir, Some(&old))?;
        let n = new.len();
        self.store.store(Arc::new(new));
        tracing::info!(dir = %self.dir.display(), certificates = n, "TLS certificates reloaded");
        Ok(n)
    }

    /// A rustls server configuration using this resolver, ALPN h2 + http/1.1.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.store.load().find(hello.server_name())
    }
}
