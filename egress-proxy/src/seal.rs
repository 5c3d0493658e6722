//! Keys for sealing an audit chain: an Ed25519 private key (PKCS#8 PEM, as
//! `openssl genpkey -algorithm ed25519` writes it) held outside the sandbox
//! signs the chain head at session end; the public key (SPKI PEM, `openssl
//! pkey -pubout`) verifies it.

use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};

/// A signing key; its bytes never leave this type.
pub struct SigningKey(pub(crate) Ed25519KeyPair);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl SigningKey {
    /// Reads a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem_file(path: &Path) -> Result<Self, String> {
        let der =
            PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            return Err(format!("{}: expected a PKCS#8 Ed25519 key", path.display()));
        };
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.secret_pkcs8_der())
            .map(Self)
            .map_err(|e| format!("{}: not an Ed25519 key: {e}", path.display()))
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.0.public_key().as_ref().to_vec()
    }
}

/// Reads an SPKI PEM Ed25519 public key and returns its raw 32 bytes.
pub fn public_key_from_pem_file(path: &Path) -> Result<Vec<u8>, String> {
    let spki = SubjectPublicKeyInfoDer::from_pem_file(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let der: &[u8] = spki.as_ref();
    // id-Ed25519 SPKI: 30 2a 30 05 06 03 2b 65 70 03 21 00 || key (32 bytes).
    const PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    match der.strip_prefix(&PREFIX[..]) {
        Some(key) if key.len() == 32 => Ok(key.to_vec()),
        _ => Err(format!("{}: not an Ed25519 public key", path.display())),
    }
}
