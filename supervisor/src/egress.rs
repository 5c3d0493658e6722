//! The sandbox's one way out, as data: which proxy serves it (one started
//! for this session, or a sidecar's socket), where its socket appears
//! inside, the network policy the session proxy enforces, the audit log,
//! and the environment that points ordinary tools at the relay.

use std::path::{Path, PathBuf};

use egress_proxy::credentials::{Apply, CredentialSpec, SecretSource};
use egress_proxy::NetworkPolicy;

use crate::error::SetupError;

/// Where the egress socket appears inside the sandbox.
pub const INSIDE_SOCKET: &str = "/run/airlock/egress.sock";
/// The in-sandbox HTTP proxy port (relayed to the egress socket).
pub const HTTP_PORT: u16 = 3128;
/// The in-sandbox SOCKS5 port (relayed to the egress socket).
pub const SOCKS_PORT: u16 = 1080;
/// Where the CA bundle (system roots plus the session CA) appears inside.
pub const INSIDE_CA_BUNDLE: &str = "/run/airlock/ca-bundle.pem";
/// Variables that point TLS clients at the bundle, whatever their library.
pub const CA_ENV: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "CARGO_HTTP_CAINFO",
];

/// The network part of the command line.
#[derive(Debug, Clone, Default)]
pub struct NetworkRequest {
    /// `--allow PATTERN`.
    pub allow: Vec<String>,
    /// `--deny PATTERN`.
    pub deny: Vec<String>,
    /// `--allow-cidr CIDR`.
    pub allow_cidr: Vec<String>,
    /// `--allow-port PORT`: added to the default ports (80, 443).
    pub allow_port: Vec<u16>,
    /// `--egress-socket PATH`: use a running `egress-proxy serve`.
    pub egress_socket: Option<PathBuf>,
    /// `--egress-control PATH`: ask a shared `egress-proxy serve --control`
    /// for a socket of this session's own.
    pub egress_control: Option<PathBuf>,
    /// `--upstream-ca FILE`: extra roots the proxy trusts upstream.
    pub upstream_ca: Vec<PathBuf>,
}

/// Who serves the egress socket.
// One plan per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyPlacement {
    /// `sandbox run` starts a proxy for this session.
    Session {
        /// What it allows.
        policy: NetworkPolicy,
        /// Credentials it holds, from the profiles (secrets are read at
        /// start, never here).
        credentials: Vec<CredentialSpec>,
        /// The placeholder the sandbox sees for each placeholder credential:
        /// (credential name, variable, placeholder).
        placeholders: Vec<(String, String, String)>,
        /// Extra roots for its own TLS to upstreams.
        upstream_ca: Vec<PathBuf>,
    },
    /// A sidecar already serves `socket`; its own policy applies.
    External,
}

/// The egress plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPlan {
    /// Who serves the socket.
    pub proxy: ProxyPlacement,
    /// The socket on the host side (bind-mounted into the sandbox).
    pub host_socket: PathBuf,
    /// The socket inside the sandbox.
    pub inside_socket: PathBuf,
    /// The in-sandbox ports relayed to it.
    pub relay_ports: Vec<u16>,
    /// The trust bundle, when the session proxy intercepts TLS.
    pub ca_bundle: Option<CaBundle>,
    /// A shared sidecar's control socket: at run time `host_socket` is
    /// linked to the socket it opens for this session.
    pub sidecar_control: Option<PathBuf>,
}

/// The sandbox's trust bundle: the system roots plus the session CA, written
/// by `sandbox run` into the session directory and mounted read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    /// The file on the host side (in the session directory).
    pub host_file: PathBuf,
    /// Where it appears inside; the CA variables point here.
    pub inside: PathBuf,
    /// The system bundle it is also mounted over (tools that ignore the
    /// variables), if the host has one.
    pub system_path: Option<PathBuf>,
}

/// Builds the egress plan. `policy` and `credentials` are the effective
/// policy's (profiles and flags merged, managed policy applied);
/// `session_dir` holds the session proxy's socket.
pub fn plan(
    req: &NetworkRequest,
    policy: &NetworkPolicy,
    credentials: &[CredentialSpec],
    session_dir: &Path,
) -> Result<EgressPlan, SetupError> {
    // A sidecar's socket (given, or opened through its control socket) is
    // configured by the sidecar's policy alone.
    let sidecar = req.egress_socket.as_ref().or(req.egress_control.as_ref());
    let proxy = match sidecar {
        Some(_)
            if !(req.allow.is_empty()
                && req.deny.is_empty()
                && req.allow_cidr.is_empty()
                && req.allow_port.is_empty()) =>
        {
            return Err(SetupError::new(
                "network",
                "--allow/--deny/--allow-cidr/--allow-port configure this session's own proxy; \
                 with a sidecar (--egress-socket, --egress-control) the sidecar's policy decides",
            ))
        }
        Some(_) if *policy != NetworkPolicy::default() || !credentials.is_empty() => {
            return Err(SetupError::new(
                "network",
                "the profile's [network] and [[credentials]] configure this session's own proxy; \
                 with a sidecar (--egress-socket, --egress-control) the sidecar's policy decides (give it the profile with \
                 `egress-proxy serve --policy FILE`)",
            ))
        }
        Some(_) if !req.upstream_ca.is_empty() => {
            return Err(SetupError::new(
                "network",
                "--upstream-ca configures this session's own proxy; with --egress-socket the \
                 sidecar verifies upstreams",
            ))
        }
        Some(_) => ProxyPlacement::External,
        None => {
            let placeholders = credentials
                .iter()
                .filter_map(|c| match &c.apply {
                    Apply::Placeholder { env, .. } => Some((
                        c.name.clone(),
                        env.clone(),
                        format!(
                            "airlock-placeholder-{}-{}",
                            c.name,
                            egress_proxy::new_session_id()
                        ),
                    )),
                    Apply::Header { .. } => None,
                })
                .collect();
            ProxyPlacement::Session {
                policy: session_proxy_policy(policy),
                credentials: credentials.to_vec(),
                placeholders,
                upstream_ca: req.upstream_ca.clone(),
            }
        }
    };
    let ca_bundle = match &proxy {
        ProxyPlacement::Session {
            policy,
            credentials,
            ..
        } if !credentials.is_empty() || !policy.rules.is_empty() => Some(CaBundle {
            host_file: session_dir.join("ca-bundle.pem"),
            inside: PathBuf::from(INSIDE_CA_BUNDLE),
            system_path: egress_proxy::tls::system_bundle(),
        }),
        _ => None,
    };
    if let Some(c) = &req.egress_control {
        let meta = std::fs::metadata(c).map_err(|e| {
            SetupError::io("network", format!("--egress-control {}", c.display()), e)
        })?;
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            return Err(SetupError::new(
                "network",
                format!("--egress-control {} is not a socket", c.display()),
            ));
        }
    }
    let host_socket = match &req.egress_socket {
        Some(p) => {
            let meta = std::fs::metadata(p).map_err(|e| {
                SetupError::io("network", format!("--egress-socket {}", p.display()), e)
            })?;
            if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
                return Err(SetupError::new(
                    "network",
                    format!("--egress-socket {} is not a socket", p.display()),
                ));
            }
            p.clone()
        }
        None => session_dir.join("egress.sock"),
    };
    Ok(EgressPlan {
        proxy,
        host_socket,
        inside_socket: PathBuf::from(INSIDE_SOCKET),
        relay_ports: vec![HTTP_PORT, SOCKS_PORT],
        ca_bundle,
        sidecar_control: req.egress_control.clone(),
    })
}

impl EgressPlan {
    /// Variables the agent gets: proxy variables, CA variables when TLS is
    /// intercepted, and each placeholder credential's placeholder.
    pub fn agent_env(&self) -> Vec<(String, String)> {
        let mut env = proxy_env();
        if let Some(b) = &self.ca_bundle {
            for name in CA_ENV {
                env.push((name.to_string(), b.inside.display().to_string()));
            }
        }
        if let ProxyPlacement::Session { placeholders, .. } = &self.proxy {
            for (_, var, value) in placeholders {
                env.push((var.clone(), value.clone()));
            }
        }
        env
    }

    /// The variables that hold placeholders.
    pub fn placeholder_vars(&self) -> impl Iterator<Item = &str> {
        let list: &[(String, String, String)] = match &self.proxy {
            ProxyPlacement::Session { placeholders, .. } => placeholders,
            ProxyPlacement::External => &[],
        };
        list.iter().map(|(_, var, _)| var.as_str())
    }

    /// Environment variables that hold a credential's secret on the host:
    /// they never enter the sandbox.
    pub fn secret_env_sources(&self) -> Vec<(String, String)> {
        match &self.proxy {
            ProxyPlacement::Session { credentials, .. } => credentials
                .iter()
                .filter_map(|c| match &c.source {
                    SecretSource::Env(v) => Some((v.clone(), c.name.clone())),
                    _ => None,
                })
                .collect(),
            ProxyPlacement::External => Vec::new(),
        }
    }
}

/// The variables that point ordinary tools (curl, git, python, pip, node,
/// cargo) at the relay, in both spellings.
pub fn proxy_env() -> Vec<(String, String)> {
    let http = format!("http://127.0.0.1:{HTTP_PORT}");
    let socks = format!("socks5h://127.0.0.1:{SOCKS_PORT}");
    let mut env = Vec::new();
    for (name, value) in [
        ("HTTP_PROXY", &http),
        ("HTTPS_PROXY", &http),
        ("ALL_PROXY", &socks),
        ("NO_PROXY", &"localhost,127.0.0.1,::1".to_string()),
    ] {
        env.push((name.to_string(), value.clone()));
        env.push((name.to_lowercase(), value.clone()));
    }
    env
}

/// The session proxy's policy. In the selftest's weakened runs only (debug
/// builds, which the tests run in a network namespace of their own, with
/// no resolver and no route out): `ssrf` turns the address guard off (every
/// range and port allowed, IP literals included), `allowlist` lets names
/// off the allowlist through (report mode).
fn session_proxy_policy(policy: &NetworkPolicy) -> NetworkPolicy {
    let mut p = policy.clone();
    if crate::selftest::weakened("allowlist") {
        p.report_only = true;
    }
    if crate::selftest::weakened("ssrf") {
        for range in ["0.0.0.0/0", "::/0"] {
            if let Ok(c) = egress_proxy::policy::Cidr::parse(range) {
                p.allow_cidr.push(c);
            }
        }
        p.ports = Some((1..=u16::MAX).collect());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> NetworkRequest {
        NetworkRequest::default()
    }

    #[test]
    fn the_session_proxy_gets_the_effective_policy() {
        let policy =
            NetworkPolicy::from_toml("[network]\nallow = [\"api.example.com\"]\n").expect("valid");
        let plan = plan(&req(), &policy, &[], Path::new("/s")).expect("plan");
        let ProxyPlacement::Session {
            policy: got,
            credentials,
            ..
        } = plan.proxy
        else {
            panic!("expected a session proxy");
        };
        assert_eq!(got, policy);
        assert!(credentials.is_empty());
        assert_eq!(plan.host_socket, Path::new("/s/egress.sock"));
        assert_eq!(plan.inside_socket, Path::new(INSIDE_SOCKET));
    }

    #[test]
    fn a_sidecar_socket_excludes_local_rules() {
        let mut r = req();
        r.egress_socket = Some(PathBuf::from("/nonexistent.sock"));
        r.allow = vec!["api.example.com".into()];
        let none = NetworkPolicy::default();
        assert!(plan(&r, &none, &[], Path::new("/s")).is_err());
        let mut r = req();
        r.egress_socket = Some(PathBuf::from("/nonexistent.sock"));
        let profile =
            NetworkPolicy::from_toml("[network]\nallow = [\"api.example.com\"]\n").expect("valid");
        let err = plan(&r, &profile, &[], Path::new("/s")).unwrap_err();
        assert!(
            err.message.contains("sidecar's policy decides"),
            "{}",
            err.message
        );
    }

    #[test]
    fn proxy_variables_come_in_both_spellings() {
        let env = proxy_env();
        for name in ["HTTP_PROXY", "https_proxy", "ALL_PROXY", "no_proxy"] {
            assert!(env.iter().any(|(k, _)| k == name), "{name}");
        }
        assert!(env.contains(&("ALL_PROXY".into(), "socks5h://127.0.0.1:1080".into())));
    }
}
