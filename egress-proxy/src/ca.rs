//! The per-session certificate authority that lets the proxy terminate TLS
//! for hosts that carry a credential: ECDSA P-256, path length 0, valid for
//! a day, its private key only ever in the proxy's memory. Leaf
//! certificates are issued per host on first use and cached; concurrent
//! first uses of one host wait for a single issuance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use tokio::sync::OnceCell;

/// Why the CA could not issue.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen refused.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the key.
    #[error("certificate key: {0}")]
    Key(#[from] rustls::Error),
}

/// A session CA.
pub struct SessionCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    leaves: Mutex<HashMap<String, Arc<OnceCell<Arc<CertifiedKey>>>>>,
}

impl std::fmt::Debug for SessionCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCa").finish_non_exhaustive()
    }
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    // A little slack for clocks that disagree by a few minutes.
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + lifetime).into();
}

impl SessionCa {
    /// A fresh CA named for `session`.
    pub fn generate(session: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "airlock");
        let short: String = session.chars().take(16).collect();
        dn.push(DnType::CommonName, format!("airlock session CA {short}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, Duration::from_secs(24 * 3600));
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate (PEM), for the sandbox's trust store.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The leaf for `host`, issued once and cached.
    pub async fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let cell = {
            let mut leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
            leaves.entry(host.to_string()).or_default().clone()
        };
        cell.get_or_try_init(|| async { self.issue(host).map(Arc::new) })
            .await
            .cloned()
    }

    /// How many leaves have been issued (for tests and benchmarks).
    pub fn issued(&self) -> usize {
        let leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        leaves.values().filter(|c| c.initialized()).count()
    }

    /// Forgets every cached leaf (benchmarks of the cold path).
    pub fn clear_cache(&self) {
        self.leaves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn issue(&self, host: &str) -> Result<CertifiedKey, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, Duration::from_secs(12 * 3600));
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            signing,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leaves_are_issued_once_per_host_even_under_concurrency() {
        let ca = Arc::new(SessionCa::generate("test").expect("ca"));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let ca = ca.clone();
            tasks.push(tokio::spawn(
                async move { ca.leaf("api.example.com").await },
            ));
        }
        let mut first = None;
        for t in tasks {
            let leaf = t.await.expect("join").expect("leaf");
            let first = first.get_or_insert_with(|| leaf.clone());
            assert!(Arc::ptr_eq(first, &leaf), "a second leaf was issued");
        }
        assert_eq!(ca.issued(), 1);
        ca.leaf("other.example.com").await.expect("leaf");
        assert_eq!(ca.issued(), 2);
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
