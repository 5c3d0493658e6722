//! Where a `filesystem.deny` shows up in the sandbox's view, and the masks
//! that hide it there.
//!
//! A denied path is hidden where the view shows it, not where the host
//! has it: the view is made of binds, and a bind of a parent directory
//! (`read = ["/home/me"]`, a workspace that contains the path) shows the
//! denied child under the bind's target. So each deny is resolved to its
//! canonical path and mapped through every bind whose canonical source
//! holds it (or lies inside it). A denied path that no bind shows (under
//! the private HOME or `/tmp`, or not granted at all) is already hidden: it
//! needs no mask, and masking it would fail (`ENOENT`) on a path the view
//! does not have.

use std::fs;
use std::path::{Path, PathBuf};

use crate::mounts::MountStep;

/// The step of `view` (applied in order) that shows `path`: the last one
/// whose target is `path` or one of its ancestors, since a mount hides
/// whatever earlier steps put beneath its target.
pub fn shown_by(view: &[MountStep], path: &Path) -> Option<usize> {
    view.iter().rposition(|s| path.starts_with(s.target()))
}

/// Masks for `deny` (host paths) in `view`: one per place a bind shows a
/// denied path, outermost first, none inside another masked directory.
/// Reads the metadata of the denied paths and the bind sources.
pub fn masks(view: &[MountStep], deny: &[PathBuf]) -> Vec<MountStep> {
    let binds: Vec<(usize, PathBuf, &Path)> = view
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            MountStep::Bind { source, target, .. }
            | MountStep::IdmappedBind { source, target, .. } => fs::canonicalize(source)
                .ok()
                .map(|src| (i, src, target.as_path())),
            _ => None,
        })
        .collect();
    let mut found: Vec<(PathBuf, bool)> = Vec::new();
    let mut parents: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    for d in deny {
        // Nothing there, nothing to hide.
        let Some((denied, is_dir)) = existing_canonical(d, &mut parents) else {
            continue;
        };
        for (i, src, target) in &binds {
            let (at, dir) = if let Ok(rel) = denied.strip_prefix(src) {
                let at = if rel.as_os_str().is_empty() {
                    target.to_path_buf()
                } else {
                    target.join(rel)
                };
                (at, is_dir)
            } else if src.starts_with(&denied) {
                // The bind's whole source is denied: it is hidden whole.
                (
                    target.to_path_buf(),
                    fs::metadata(src).map_or(true, |m| m.is_dir()),
                )
            } else {
                continue;
            };
            if shown_by(view, &at) == Some(*i) && !found.iter().any(|(p, _)| *p == at) {
                found.push((at, dir));
            }
        }
    }
    // A mask inside a masked directory has no mount point left (the outer
    // mask is an empty tmpfs), and needs none.
    let outer: Vec<PathBuf> = found
        .iter()
        .filter(|(_, dir)| *dir)
        .map(|(p, _)| p.clone())
        .collect();
    found.retain(|(p, _)| !outer.iter().any(|o| p != o && p.starts_with(o)));
    found.sort_by_key(|(p, _)| p.components().count());
    found
        .into_iter()
        .map(|(target, dir)| {
            if dir {
                MountStep::MaskDir { target }
            } else {
                MountStep::MaskFile { target }
            }
        })
        .collect()
}

/// `path`'s canonical form and whether it is a directory, if it exists.
/// Denies share a few parents (`/etc`, `/etc/ssh`): each parent is
/// resolved once (`parents` caches them) and each entry costs one
/// `lstat`, which keeps this off a run's start-up time.
fn existing_canonical(
    path: &Path,
    parents: &mut Vec<(PathBuf, Option<PathBuf>)>,
) -> Option<(PathBuf, bool)> {
    let meta = fs::symlink_metadata(path).ok()?;
    let (Some(name), Some(parent), false) = (
        path.file_name(),
        path.parent(),
        meta.file_type().is_symlink(),
    ) else {
        let real = fs::canonicalize(path).ok()?;
        let is_dir = fs::metadata(&real).ok()?.is_dir();
        return Some((real, is_dir));
    };
    let real_parent = match parents.iter().find(|(p, _)| p == parent) {
        Some((_, real)) => real.clone(),
        None => {
            let real = fs::canonicalize(parent).ok();
            parents.push((parent.to_path_buf(), real.clone()));
            real
        }
    }?;
    Some((real_parent.join(name), meta.is_dir()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn bind(source: &Path, target: &Path) -> MountStep {
        MountStep::Bind {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            writable: false,
        }
    }

    fn tmpfs(target: &Path) -> MountStep {
        MountStep::Tmpfs {
            target: target.to_path_buf(),
            mode: 0o700,
            owner: None,
            size: 1 << 20,
        }
    }

    #[test]
    fn a_denied_key_is_masked_wherever_a_bind_shows_it_and_nowhere_else() {
        let root = std::env::temp_dir().join(format!("airlock-deny-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let home = root.join("home/u");
        fs::create_dir_all(home.join(".ssh")).expect("mkdir");
        fs::write(home.join(".ssh/id_ed25519"), "key").expect("write");
        fs::create_dir_all(root.join("other")).expect("mkdir");
        symlink(&home, root.join("homelink")).expect("symlink");
        symlink(home.join(".ssh"), root.join("sshlink")).expect("symlink");
        let ssh = home.join(".ssh");
        let key = ssh.join("id_ed25519");
        let mask_dir = |p: &Path| MountStep::MaskDir {
            target: p.to_path_buf(),
        };
        struct Case {
            what: &'static str,
            view: Vec<MountStep>,
            deny: Vec<PathBuf>,
            want: Vec<MountStep>,
        }
        for c in [
            Case {
                what: "a bind of the parent shows the child: masked",
                view: vec![bind(&home, &home)],
                deny: vec![ssh.clone()],
                want: vec![mask_dir(&ssh)],
            },
            Case {
                what: "a bind of the grandparent, the deny written with a trailing slash and ..",
                view: vec![bind(&root, &root)],
                deny: vec![PathBuf::from(format!("{}/../u/.ssh/", home.display()))],
                want: vec![mask_dir(&ssh)],
            },
            Case {
                what: "the parent bound through a symlink: masked at the bind's target",
                view: vec![bind(&root.join("homelink"), &root.join("homelink"))],
                deny: vec![ssh.clone()],
                want: vec![mask_dir(&root.join("homelink/.ssh"))],
            },
            Case {
                what: "the deny written through a symlink",
                view: vec![bind(&home, &home)],
                deny: vec![root.join("sshlink")],
                want: vec![mask_dir(&ssh)],
            },
            Case {
                what: "the denied directory itself bound: the whole bind is masked",
                view: vec![bind(&root.join("sshlink"), &root.join("sshlink"))],
                deny: vec![ssh.clone()],
                want: vec![mask_dir(&root.join("sshlink"))],
            },
            Case {
                what: "a file inside the denied directory bound: masked as a file",
                view: vec![bind(&key, &key)],
                deny: vec![ssh.clone()],
                want: vec![MountStep::MaskFile {
                    target: key.clone(),
                }],
            },
            Case {
                what: "an empty HOME over the parent: nothing shows it, no mask",
                view: vec![bind(&home, &home), tmpfs(&home)],
                deny: vec![ssh.clone()],
                want: vec![],
            },
            Case {
                what: "not in the view at all: satisfied, no mask (was ENOENT)",
                view: vec![bind(&root.join("other"), &root.join("other"))],
                deny: vec![ssh.clone()],
                want: vec![],
            },
            Case {
                what: "a denied path that does not exist: no mask",
                view: vec![bind(&home, &home)],
                deny: vec![home.join(".gnupg")],
                want: vec![],
            },
            Case {
                what: "a mask inside a masked directory is dropped",
                view: vec![bind(&home, &home)],
                deny: vec![key.clone(), ssh.clone()],
                want: vec![mask_dir(&ssh)],
            },
        ] {
            assert_eq!(masks(&c.view, &c.deny), c.want, "{}", c.what);
        }
        let _ = fs::remove_dir_all(&root);
    }
}
