//! Paths inside writable trees that the agent may not create or change:
//! git hooks and config (run by the user's next `git` command), shell rc
//! files (run by the user's next shell), editor task and settings folders
//! and `.envrc` (run by direnv). An agent that could write them would run
//! code outside the sandbox the next time the user opens the project.
//!
//! Existing ones get a read-only bind over themselves; missing ones get an
//! empty read-only placeholder, so they cannot be created either (a mount
//! point cannot be unlinked or renamed over: EBUSY). Both are mount steps,
//! planned here from file metadata and applied by `mounts.rs`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::SetupError;
use crate::mounts::MountStep;

/// Always protected, relative to every writable tree: `(path, is_dir)`.
pub const ALWAYS_PROTECTED: &[(&str, bool)] = &[
    (".git/hooks", true),
    (".git/config", false),
    (".bashrc", false),
    (".bash_profile", false),
    (".profile", false),
    (".zshrc", false),
    (".vscode", true),
    (".idea", true),
    (".envrc", false),
];

/// The mount steps protecting [`ALWAYS_PROTECTED`] and `extra` (relative
/// paths, from `filesystem.protect`) inside each of `roots`.
pub fn steps(roots: &[PathBuf], extra: &[PathBuf]) -> Result<Vec<MountStep>, SetupError> {
    let mut wanted: Vec<(PathBuf, bool)> = ALWAYS_PROTECTED
        .iter()
        .map(|(p, d)| (PathBuf::from(p), *d))
        .collect();
    wanted.extend(extra.iter().map(|p| (p.clone(), false)));
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for root in roots {
        for (rel, is_dir) in &wanted {
            if let Some(step) = step_for(root, rel, *is_dir)? {
                if seen.insert(step.target().to_path_buf()) {
                    out.push(step);
                }
            }
        }
    }
    Ok(out)
}

fn step_for(root: &Path, rel: &Path, is_dir: bool) -> Result<Option<MountStep>, SetupError> {
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(SetupError::new(
                    "mounts",
                    format!(
                        "{} is a symlink inside the writable tree {}: it cannot be protected \
                         (an agent could retarget it); replace it with the file it points to",
                        at.display(),
                        root.display()
                    ),
                ))
            }
            // A missing parent (no .git yet): protect the parent itself,
            // or the agent could create it with hooks inside.
            Err(_) => {
                return Ok(Some(MountStep::Placeholder {
                    target: at,
                    dir: is_dir || !last,
                }))
            }
            // `.git` as a file (a worktree's pointer): protect the file.
            Ok(m) if !last && !m.is_dir() => {
                return Ok(Some(read_only(at)));
            }
            Ok(_) if last => return Ok(Some(read_only(at))),
            Ok(_) => {}
        }
    }
    Ok(None)
}

fn read_only(path: PathBuf) -> MountStep {
    MountStep::Bind {
        source: path.clone(),
        target: path,
        writable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_paths_get_read_only_binds_and_missing_ones_placeholders() {
        let root = std::env::temp_dir().join(format!("airlock-protect-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join(".git")).expect("mkdir");
        fs::write(root.join(".git/config"), "").expect("write");
        fs::write(root.join(".bashrc"), "").expect("write");
        let steps = steps(std::slice::from_ref(&root), &[PathBuf::from("Makefile")]).expect("plan");
        let find = |rel: &str| {
            steps
                .iter()
                .find(|s| s.target() == root.join(rel))
                .cloned()
                .unwrap_or_else(|| panic!("no step for {rel}: {steps:?}"))
        };
        assert_eq!(find(".git/config"), read_only(root.join(".git/config")));
        assert_eq!(find(".bashrc"), read_only(root.join(".bashrc")));
        assert_eq!(
            find(".git/hooks"),
            MountStep::Placeholder {
                target: root.join(".git/hooks"),
                dir: true
            }
        );
        assert_eq!(
            find(".zshrc"),
            MountStep::Placeholder {
                target: root.join(".zshrc"),
                dir: false
            }
        );
        assert_eq!(
            find("Makefile"),
            MountStep::Placeholder {
                target: root.join("Makefile"),
                dir: false
            }
        );

        // No .git at all: .git itself is the placeholder, once.
        fs::remove_dir_all(root.join(".git")).expect("rm");
        let steps = super::steps(std::slice::from_ref(&root), &[]).expect("plan");
        let git: Vec<_> = steps
            .iter()
            .filter(|s| s.target().starts_with(root.join(".git")))
            .collect();
        assert_eq!(
            git,
            vec![&MountStep::Placeholder {
                target: root.join(".git"),
                dir: true
            }]
        );

        std::os::unix::fs::symlink("/etc/passwd", root.join(".envrc")).expect("symlink");
        assert!(super::steps(std::slice::from_ref(&root), &[]).is_err());
        let _ = fs::remove_dir_all(&root);
    }
}
