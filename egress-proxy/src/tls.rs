//! TLS configuration: the proxy's client side (to upstreams, verified
//! against the system roots plus any `--upstream-ca`) and its server side
//! (to the sandbox, with a leaf from the session CA). Both speak HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Where Debian, Fedora and Alpine keep the system bundle.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A trust store that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A CA file was unreadable or held no certificate.
    #[error("CA file {path}: {why}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// No roots at all.
    #[error("no trusted roots: no system bundle ({}) and no --upstream-ca", SYSTEM_BUNDLES.join(", "))]
    NoRoots,
}

/// The first system bundle that exists.
pub fn system_bundle() -> Option<PathBuf> {
    SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn add_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, TlsSetupError> {
    let fail = |why: String| TlsSetupError::CaFile {
        path: path.display().to_string(),
        why,
    };
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))?;
    let mut added = 0;
    for cert in iter {
        let cert = cert.map_err(|e| fail(e.to_string()))?;
        if roots.add(cert).is_ok() {
            added += 1;
        }
    }
    if added == 0 {
        return Err(fail("no usable certificate".into()));
    }
    Ok(added)
}

/// Client config for upstream connections: system roots plus `extra`.
pub fn upstream_config(extra: &[PathBuf]) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    if let Some(bundle) = system_bundle() {
        add_file(&mut roots, &bundle)?;
    }
    for path in extra {
        add_file(&mut roots, path)?;
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoRoots);
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::CaFile {
                path: "-".into(),
                why: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Server config presenting `leaf` to the sandbox.
pub fn sandbox_facing(leaf: Arc<CertifiedKey>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(leaf)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
