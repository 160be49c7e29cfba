//! Certificates for the TLS tests: a throw-away CA and certificates it
//! signs, made with `openssl(1)`, and a client configuration trusting it.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Runs `openssl args…` in `dir`; panics when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A self-signed CA (`ca.crt`, `ca.key`) in `dir`.
pub fn make_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=forge test CA",
        ],
    );
}

/// `name.crt`/`name.key` in `certs` for the DNS name `dns`, signed by the CA
/// in `ca`.
pub fn make_cert(ca: &Path, certs: &Path, name: &str, dns: &str) {
    let key = certs.join(format!("{name}.key"));
    let crt = certs.join(format!("{name}.crt"));
    let csr = ca.join(format!("{name}.csr"));
    let ext = ca.join(format!("{name}.ext"));
    std::fs::write(&ext, format!("subjectAltName=DNS:{dns}\n")).unwrap();
    openssl(
        ca,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
            "-subj",
            &format!("/CN={dns}"),
        ],
    );
    openssl(
        ca,
        &[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            crt.to_str().unwrap(),
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
        ],
    );
}

/// A TLS client configuration trusting the CA in `ca_dir`, offering the
/// ALPN protocols `alpn`.
pub fn client_config(ca_dir: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca_dir.join("ca.crt")).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
