//! The sandbox policy: what the agent may see and which environment passes.
//!
//! `sandbox run` builds it from the profiles (`profile/`): the embedded
//! default (`profiles/default.toml`, compiled in, so no file is needed),
//! the profile chain, the flags and the managed policy, merged and with
//! path variables expanded. [`Policy::embedded_default`] is the same
//! default written as code, and a test keeps the two equal.

// The code form of the default is what unit tests build plans from.
#![cfg_attr(not(test), allow(dead_code))]

use std::path::PathBuf;
use std::time::Duration;

use egress_proxy::credentials::CredentialSpec;
use egress_proxy::NetworkPolicy;

/// Host system directories the agent may read and execute from.
const SYSTEM_READ: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];

/// Files and directories under the read-only system paths that hold host
/// secrets. They are masked (an unreadable empty file or directory) even
/// though their parent is visible.
const SYSTEM_DENY: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/security/opasswd",
    "/etc/ssl/private",
    "/etc/krb5.keytab",
    "/etc/credstore",
    "/etc/credstore.encrypted",
    "/etc/wireguard",
    "/etc/NetworkManager/system-connections",
    "/etc/ppp/chap-secrets",
    "/etc/ppp/pap-secrets",
];

/// Environment variables passed through from the host when set. Everything
/// else is dropped: host secrets in the environment never reach the agent.
const ENV_PASS: &[&str] = &[
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_COLLATE",
    "LC_NUMERIC",
    "LC_TIME",
    "LC_MONETARY",
    "TZ",
    "COLUMNS",
    "LINES",
];

/// Which host paths the agent sees, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesystemPolicy {
    /// Visible read-only (and executable).
    pub read: Vec<PathBuf>,
    /// Visible read-write. The workspace is always added to this.
    pub write: Vec<PathBuf>,
    /// Never visible, even inside a granted path.
    pub deny: Vec<PathBuf>,
    /// Relative paths protected inside every writable tree, besides the
    /// always-protected ones (`profile::protect::ALWAYS_PROTECTED`).
    pub protect: Vec<PathBuf>,
}

/// Resource limits (`[limits]`). `memory`, `pids` and `cpu_millis` are
/// applied by the cgroup layer (`cgroup.rs`), `nofile` by `rlimits.rs`,
/// `tmp_size` by the mount plan and `timeout` by the supervisor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory for the whole sandbox.
    pub memory: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// Thousandths of a CPU.
    pub cpu_millis: Option<u64>,
    /// Open files per process.
    pub nofile: Option<u64>,
    /// Largest file a process may write, in bytes.
    pub fsize: Option<u64>,
    /// Bytes of the private `/tmp`.
    pub tmp_size: Option<u64>,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// `memory`, `pids` and `cpu` that this host cannot enforce are skipped
    /// with a warning instead of stopping the run.
    pub best_effort: bool,
    /// Which of `memory`, `pids` and `cpu` are the embedded default's own
    /// ceilings (no profile or managed policy set them): where this host
    /// cannot enforce them the run warns once and goes on, while limits a
    /// profile or the managed policy set fail closed (unless `best_effort`).
    pub default_ceilings: Vec<&'static str>,
}

/// A file the policy was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// Its path, or `<embedded default>`.
    pub label: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// `profile` or `managed`.
    pub role: &'static str,
}

/// The policy `sandbox run` enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Filesystem grants and denials.
    pub filesystem: FilesystemPolicy,
    /// Host environment variables that pass through when set.
    pub env_pass: Vec<String>,
    /// Variables set to a value (before `--env`).
    pub env_set: Vec<(String, String)>,
    /// What the session's egress proxy allows.
    pub network: NetworkPolicy,
    /// Credentials the session's egress proxy applies.
    pub credentials: Vec<CredentialSpec>,
    /// Resource limits.
    pub limits: Limits,
    /// SHA-256 of the canonical effective policy (`sandbox policy show`).
    pub hash: String,
    /// The files it was built from, in order.
    pub sources: Vec<PolicySource>,
}

impl Policy {
    /// The policy compiled into the binary: system directories read-only,
    /// the workspace read-write, host secrets masked, no network.
    pub fn embedded_default() -> Self {
        let mut deny: Vec<PathBuf> = SYSTEM_DENY.iter().map(PathBuf::from).collect();
        deny.extend(ssh_host_keys());
        Self {
            filesystem: FilesystemPolicy {
                read: SYSTEM_READ.iter().map(PathBuf::from).collect(),
                write: Vec::new(),
                deny,
                protect: Vec::new(),
            },
            env_pass: ENV_PASS.iter().map(|s| s.to_string()).collect(),
            env_set: Vec::new(),
            network: NetworkPolicy::default(),
            credentials: Vec::new(),
            limits: Limits::default(),
            hash: String::new(),
            sources: Vec::new(),
        }
    }
}

/// The host's SSH private host keys (`/etc/ssh/ssh_host_*_key`): readable
/// only by root on a sane host, masked anyway in case a host is not sane.
fn ssh_host_keys() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/etc/ssh") else {
        return Vec::new();
    };
    let mut keys: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("ssh_host_") && name.ends_with("_key")
        })
        .map(|e| e.path())
        .collect();
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_reads_system_dirs_and_masks_shadow() {
        let p = Policy::embedded_default();
        assert!(p.filesystem.read.contains(&PathBuf::from("/usr")));
        assert!(p.filesystem.deny.contains(&PathBuf::from("/etc/shadow")));
        assert!(p.filesystem.write.is_empty());
        assert!(!p.env_pass.iter().any(|v| v == "PATH" || v == "HOME"));
    }
}
