//! Credentials the proxy holds for the sandbox: where each secret comes
//! from, which hosts it may go to, and how it is applied (a header the
//! proxy injects, or a placeholder in the sandbox's environment that the
//! proxy swaps for the secret). Plain data; reading the secret is
//! `secrets.rs`' job, on the proxy's side only.

use std::path::PathBuf;

use crate::policy::DomainRule;

/// One declared credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSpec {
    /// Its name, as logged (`credential.used`), never the value.
    pub name: String,
    /// Where the secret is read from.
    pub source: SecretSource,
    /// The hosts it may be sent to.
    pub hosts: Vec<DomainRule>,
    /// How it is applied.
    pub apply: Apply,
}

/// Where a secret is read from (by the proxy, never inside the sandbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the supervisor or sidecar; the supervisor
    /// scrubs it from the agent's environment.
    Env(String),
    /// A file, e.g. a mounted Kubernetes secret.
    File(PathBuf),
    /// A command whose standard output (trimmed) is the secret.
    Command(Vec<String>),
}

/// How the secret reaches the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apply {
    /// The proxy sets header `name` to `template` with `{secret}` replaced.
    Header {
        /// Header name, e.g. `Authorization`.
        name: String,
        /// Value template containing `{secret}` once, e.g. `Bearer {secret}`.
        template: String,
    },
    /// The sandbox gets a random placeholder in `env`; the proxy replaces
    /// it with the secret in the named request headers bound for the
    /// hosts, and refuses it anywhere else (another header, the URL, the
    /// body), so an upstream that reflects requests cannot be made to hand
    /// the secret back.
    Placeholder {
        /// The variable the agent sees.
        env: String,
        /// Lowercase header names the placeholder is swapped in.
        headers: Vec<String>,
    },
}

impl CredentialSpec {
    /// Is `host` (normalized) one this credential may go to?
    pub fn bound_to(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.matches(host))
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An HTTP header name (RFC 9110 token).
pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
