//! The session directory: private (0700) scratch space outside the sandbox
//! that holds the new root's mount point (and, later, the egress socket and
//! audit log). Removed when the session ends.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::SetupError;

/// A session's private directory; removed on drop.
#[derive(Debug)]
pub struct SessionDir {
    path: PathBuf,
}

impl SessionDir {
    /// Creates `airlock-<id>` (0700) under `$XDG_RUNTIME_DIR`, else the
    /// system temp dir, with an empty `root/` inside.
    ///
    /// As root, init builds the new root as the agent's uid (see
    /// `init::setup`), so the directory is 0711 (traversable, not listable)
    /// and `root/` belongs to the agent.
    pub fn create(agent: Option<(u32, u32)>) -> Result<Self, SetupError> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = format!("{}-{nanos:08x}", std::process::id());
        let path = base.join(format!("airlock-{id}"));
        let mut builder = DirBuilder::new();
        builder.mode(if agent.is_some() { 0o711 } else { 0o700 });
        builder
            .create(&path)
            .map_err(|e| SetupError::io("session", format!("create {}", path.display()), e))?;
        let session = Self { path };
        builder.mode(0o700);
        builder
            .create(session.root())
            .map_err(|e| SetupError::io("session", "create root mount point", e))?;
        if let Some((uid, gid)) = agent {
            std::os::unix::fs::chown(session.root(), Some(uid), Some(gid))
                .map_err(|e| SetupError::io("session", "chown root mount point", e))?;
        }
        Ok(session)
    }

    /// Mount point of the sandbox's new root (inside init's mount namespace).
    pub fn root(&self) -> PathBuf {
        self.path.join("root")
    }
}

impl Drop for SessionDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
