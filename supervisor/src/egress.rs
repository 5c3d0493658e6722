//! The sandbox's one way out, as data: which proxy serves it (one started
//! for this session, or a sidecar's socket), where its socket appears
//! inside, the network policy the session proxy enforces, the audit log,
//! and the environment that points ordinary tools at the relay.

use std::path::{Path, PathBuf};

use egress_proxy::credentials::CredentialSpec;
use egress_proxy::NetworkPolicy;

use crate::error::SetupError;

/// Where the egress socket appears inside the sandbox.
pub const INSIDE_SOCKET: &str = "/run/airlock/egress.sock";
/// The in-sandbox HTTP proxy port (relayed to the egress socket).
pub const HTTP_PORT: u16 = 3128;
/// The in-sandbox SOCKS5 port (relayed to the egress socket).
pub const SOCKS_PORT: u16 = 1080;

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
    /// `--audit-log PATH`.
    pub audit_log: Option<PathBuf>,
}

/// Who serves the egress socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyPlacement {
    /// `sandbox run` starts a proxy for this session.
    Session {
        /// What it allows.
        policy: NetworkPolicy,
        /// The credentials it applies (from the profiles).
        credentials: Vec<CredentialSpec>,
        /// Where it appends audit events.
        audit_log: PathBuf,
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
}

/// Builds the egress plan. `policy` and `credentials` are the effective
/// policy's (profiles and flags merged, managed policy applied);
/// `session_dir` holds the session proxy's socket.
pub fn plan(
    req: &NetworkRequest,
    policy: &NetworkPolicy,
    credentials: &[CredentialSpec],
    session_dir: &Path,
    default_audit_log: PathBuf,
) -> Result<EgressPlan, SetupError> {
    let proxy = match &req.egress_socket {
        Some(_)
            if !(req.allow.is_empty()
                && req.deny.is_empty()
                && req.allow_cidr.is_empty()
                && req.allow_port.is_empty()) =>
        {
            return Err(SetupError::new(
                "network",
                "--allow/--deny/--allow-cidr/--allow-port configure this session's own proxy; \
                 with --egress-socket the sidecar's policy decides",
            ))
        }
        Some(_) if *policy != NetworkPolicy::default() || !credentials.is_empty() => {
            return Err(SetupError::new(
                "network",
                "the profile's [network] and [[credentials]] configure this session's own proxy; \
                 with --egress-socket the sidecar's policy decides (give it the profile with \
                 `egress-proxy serve --policy FILE`)",
            ))
        }
        Some(_) => ProxyPlacement::External,
        None => ProxyPlacement::Session {
            policy: policy.clone(),
            credentials: credentials.to_vec(),
            audit_log: req.audit_log.clone().unwrap_or(default_audit_log),
        },
    };
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
    })
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

/// Where audit events go unless `--audit-log` says otherwise: one
/// append-only file per user, every line tagged with its session.
pub fn default_audit_log(euid: u32, home: Option<&Path>, xdg_state: Option<&Path>) -> PathBuf {
    if euid == 0 {
        return PathBuf::from("/var/log/airlock/audit.jsonl");
    }
    let base = match (xdg_state, home) {
        (Some(s), _) if s.is_absolute() => s.to_path_buf(),
        (_, Some(h)) if h.is_absolute() => h.join(".local/state"),
        _ => std::env::temp_dir(),
    };
    base.join("airlock/audit.jsonl")
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
        let plan = plan(&req(), &policy, &[], Path::new("/s"), PathBuf::from("/a")).expect("plan");
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
        assert!(plan(&r, &none, &[], Path::new("/s"), PathBuf::from("/a")).is_err());
        let mut r = req();
        r.egress_socket = Some(PathBuf::from("/nonexistent.sock"));
        let profile =
            NetworkPolicy::from_toml("[network]\nallow = [\"api.example.com\"]\n").expect("valid");
        let err = plan(&r, &profile, &[], Path::new("/s"), PathBuf::from("/a")).unwrap_err();
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
