//! The code surface at the top of each writable tree, pinned for the run:
//! git's config and hooks (run by the user's next `git` command), shell rc
//! files (run by the user's next shell), `.envrc` (direnv) and editor task
//! and settings folders. An agent that could change them would run code
//! outside the sandbox the next time the user opens the project.
//!
//! What exists gets a read-only bind over itself, and a `.git` directory a
//! read-write bind onto itself, so it cannot be renamed away or replaced
//! (a mount point cannot be: EBUSY). A bind creates nothing on the host.
//! What does not exist is not created here (no placeholders littering the
//! workspace): the agent may create it, and the check after the run
//! (`surface.rs`) quarantines it, together with everything deeper in the
//! tree (nested repositories, `.envrc` files).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::SetupError;
use crate::mounts::MountStep;
use crate::surface::{ANYWHERE_FILES, EDITOR_DIRS, RC_FILES};

/// Inside a top-level `.git` directory: bound read-only when present.
pub const GIT_SURFACE: &[&str] = &["config", "config.worktree", "commondir", "hooks"];

/// Every path pinned at the top of a writable tree, for `policy explain`.
pub fn always_protected() -> Vec<String> {
    GIT_SURFACE
        .iter()
        .map(|p| format!(".git/{p}"))
        .chain(
            RC_FILES
                .iter()
                .chain(ANYWHERE_FILES)
                .chain(EDITOR_DIRS)
                .map(|p| p.to_string()),
        )
        .collect()
}

/// The mount steps pinning the surface that exists at the top of each of
/// `roots`, and the `extra` paths (relative, from `filesystem.protect`).
pub fn steps(roots: &[PathBuf], extra: &[PathBuf]) -> Result<Vec<MountStep>, SetupError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut push = |step: MountStep| {
        if seen.insert(step.target().to_path_buf()) {
            out.push(step);
        }
    };
    for root in roots {
        let git = root.join(".git");
        match kind(root, &git)? {
            Some(Kind::Dir) => {
                push(MountStep::SelfBind {
                    target: git.clone(),
                    writable: true,
                });
                for rel in GIT_SURFACE {
                    let at = git.join(rel);
                    if kind(root, &at)?.is_some() {
                        push(read_only(at));
                    }
                }
            }
            Some(Kind::Other) => push(read_only(git)),
            None => {}
        }
        let top = RC_FILES.iter().chain(ANYWHERE_FILES).chain(EDITOR_DIRS);
        for rel in top.map(PathBuf::from).chain(extra.iter().cloned()) {
            let at = root.join(&rel);
            if kind(root, &at)?.is_some() {
                push(read_only(at));
            }
        }
    }
    Ok(out)
}

enum Kind {
    Dir,
    Other,
}

/// What `at` is, if it exists; a symlink on the way is refused (an agent
/// could retarget it, and a bind would follow it).
fn kind(root: &Path, at: &Path) -> Result<Option<Kind>, SetupError> {
    let mut cur = root.to_path_buf();
    let rel = at.strip_prefix(root).unwrap_or(at);
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        cur.push(part);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(SetupError::new(
                    "mounts",
                    format!(
                        "{} is a symlink inside the writable tree {}: it cannot be protected \
                         (an agent could retarget it); replace it with the file it points to",
                        cur.display(),
                        root.display()
                    ),
                ))
            }
            Err(_) => return Ok(None),
            Ok(m) if i + 1 == parts.len() => {
                return Ok(Some(if m.is_dir() { Kind::Dir } else { Kind::Other }))
            }
            Ok(m) if !m.is_dir() => return Ok(None),
            Ok(_) => {}
        }
    }
    Ok(None)
}

/// Bound from inside the new root, so the pin keeps the tree's idmapping.
fn read_only(path: PathBuf) -> MountStep {
    MountStep::SelfBind {
        target: path,
        writable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_surface_is_pinned_and_missing_surface_creates_nothing() {
        let root = std::env::temp_dir().join(format!("airlock-protect-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join(".git/hooks")).expect("mkdir");
        fs::write(root.join(".git/config"), "").expect("write");
        fs::write(root.join(".bashrc"), "").expect("write");
        let steps = steps(std::slice::from_ref(&root), &[PathBuf::from("Makefile")]).expect("plan");
        let find = |rel: &str| steps.iter().find(|s| s.target() == root.join(rel)).cloned();
        assert_eq!(
            find(".git"),
            Some(MountStep::SelfBind {
                target: root.join(".git"),
                writable: true
            })
        );
        assert_eq!(
            find(".git/config"),
            Some(read_only(root.join(".git/config")))
        );
        assert_eq!(find(".git/hooks"), Some(read_only(root.join(".git/hooks"))));
        assert_eq!(find(".bashrc"), Some(read_only(root.join(".bashrc"))));
        for missing in [".zshrc", ".envrc", "Makefile", ".git/commondir", ".vscode"] {
            assert_eq!(find(missing), None, "{missing}");
        }
        let listing = |dir: &Path| {
            let mut names: Vec<_> = fs::read_dir(dir)
                .expect("ls")
                .map(|e| e.expect("entry").file_name())
                .collect();
            names.sort();
            names
        };
        assert_eq!(listing(&root).len(), 2, "planning created files");

        // No .git at all: nothing for it.
        fs::remove_dir_all(root.join(".git")).expect("rm");
        let steps = super::steps(std::slice::from_ref(&root), &[]).expect("plan");
        assert!(steps
            .iter()
            .all(|s| !s.target().starts_with(root.join(".git"))));

        std::os::unix::fs::symlink("/etc/passwd", root.join(".envrc")).expect("symlink");
        assert!(super::steps(std::slice::from_ref(&root), &[]).is_err());
        let _ = fs::remove_dir_all(&root);
    }
}
