//! The session directory: private scratch space outside the sandbox that
//! holds the new root's mount point and the session proxy's egress socket.
//! Removed when the session ends.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::SetupError;

/// A session's private directory; removed on drop.
#[derive(Debug)]
pub struct SessionDir {
    path: PathBuf,
}

impl SessionDir {
    /// Creates `path` (0700) with an empty `root/` inside.
    ///
    /// As root, init builds the new root as the agent's uid (see
    /// `init::setup`), so the directory is 0711 (traversable, not listable,
    /// under a name with 64 random bits) and `root/` belongs to the agent.
    pub fn create(path: &Path, agent: Option<(u32, u32)>) -> Result<Self, SetupError> {
        let mut builder = DirBuilder::new();
        builder.mode(if agent.is_some() { 0o711 } else { 0o700 });
        builder
            .create(path)
            .map_err(|e| SetupError::io("session", format!("create {}", path.display()), e))?;
        let session = Self {
            path: path.to_path_buf(),
        };
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
