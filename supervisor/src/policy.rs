//! The sandbox policy: what the agent may see and which environment passes.
//!
//! For now the only source is the embedded default, compiled into the
//! binary, so `sandbox run` needs no files. Profiles (TOML) build on this
//! type later.

use std::path::PathBuf;

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
}

/// The policy `sandbox run` enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Filesystem grants and denials.
    pub filesystem: FilesystemPolicy,
    /// Host environment variables that pass through when set.
    pub env_pass: Vec<String>,
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
            },
            env_pass: ENV_PASS.iter().map(|s| s.to_string()).collect(),
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
