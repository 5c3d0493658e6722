//! The mount layer: builds the sandbox's filesystem view from scratch.
//!
//! A fresh tmpfs becomes the new root; host paths are bind-mounted into it
//! exactly as the plan says; then `pivot_root` swaps roots and the old root
//! is detached, so nothing of the host is reachable except what was bound.
//! Every mount is `nosuid,nodev` except the handful of device-node binds in
//! `/dev`, which need device access to work at all (they are `noexec`).

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, pivot_root};

use crate::error::SetupError;

const LAYER: &str = "mounts";

/// Bytes of tmpfs size per inode allowed (`nr_inodes`).
pub const TMPFS_BYTES_PER_INODE: u64 = 16 << 10;

/// Device nodes bound from the host's `/dev`.
pub const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// One step of building the new root. Targets are absolute paths as the
/// agent will see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    /// A fresh tmpfs with the given octal mode, owner (inside ids) and size.
    Tmpfs {
        /// Mount point.
        target: PathBuf,
        /// Octal mode of the tmpfs root.
        mode: u32,
        /// Owner uid and gid of the tmpfs root, as seen inside.
        owner: Option<(u32, u32)>,
        /// Size limit in bytes.
        size: u64,
    },
    /// A recursive bind of a host path.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Mount point.
        target: PathBuf,
        /// Read-write when true, read-only otherwise.
        writable: bool,
    },
    /// A recursive bind of a writable host tree through an idmapped mount
    /// (see `idmap.rs`): its owner's ids appear as the agent's.
    IdmappedBind {
        /// Host path.
        source: PathBuf,
        /// Mount point.
        target: PathBuf,
        /// The tree owner's ids and the agent's.
        map: crate::idmap::IdMap,
        /// A directory (else a file).
        dir: bool,
    },
    /// Re-bind a path already in the new root onto itself (keeping what
    /// its tree's mount has, e.g. an idmapping): pins it in place (a mount
    /// point cannot be renamed or replaced), read-only unless `writable`.
    SelfBind {
        /// Path inside the new root.
        target: PathBuf,
        /// Read-write when true.
        writable: bool,
    },
    /// A bind of a host device node (device access kept, exec refused).
    Device {
        /// Host device node, e.g. `/dev/null`.
        source: PathBuf,
        /// Mount point.
        target: PathBuf,
    },
    /// A symbolic link created in the new root (e.g. `/bin -> usr/bin`).
    Symlink {
        /// Where the link lives.
        target: PathBuf,
        /// What it points to.
        points_to: PathBuf,
    },
    /// A fresh procfs for the sandbox's PID namespace (only sandbox PIDs).
    Proc {
        /// Mount point.
        target: PathBuf,
    },
    /// A fresh devpts instance, private to the sandbox.
    DevPts {
        /// Mount point.
        target: PathBuf,
    },
    /// Re-bind an already mounted path onto itself read-only (e.g. `/proc/sys`).
    ReadOnlyAgain {
        /// Path inside the new root.
        target: PathBuf,
    },
    /// Hide a denied file: an unopenable node is mounted over it.
    MaskFile {
        /// The hidden file.
        target: PathBuf,
    },
    /// Hide a denied directory: an empty read-only tmpfs over it.
    MaskDir {
        /// The hidden directory.
        target: PathBuf,
    },
}

impl MountStep {
    /// The path this step creates or covers, as seen inside.
    pub fn target(&self) -> &Path {
        match self {
            MountStep::Tmpfs { target, .. }
            | MountStep::Bind { target, .. }
            | MountStep::IdmappedBind { target, .. }
            | MountStep::SelfBind { target, .. }
            | MountStep::Device { target, .. }
            | MountStep::Symlink { target, .. }
            | MountStep::Proc { target }
            | MountStep::DevPts { target }
            | MountStep::ReadOnlyAgain { target }
            | MountStep::MaskFile { target }
            | MountStep::MaskDir { target } => target,
        }
    }
}

/// `target` (absolute, as seen inside) placed under `root`.
fn under(root: &Path, target: &Path) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in target.components() {
        if let Component::Normal(n) = c {
            p.push(n);
        }
    }
    p
}

/// The bind sources, opened before init takes the agent's ids
/// (`init::setup`), as root only. With its first ids init reaches a source
/// below a directory that only its owner may enter (root's 0700 home); the
/// agent's ids cannot, and binding such a workspace by its path failed.
/// Where the agent's ids are refused a source's path (`EACCES`), the bind
/// goes through the open file instead (`/proc/self/fd/N`: a procfs lookup,
/// so only then). A source that cannot be opened is left to the bind,
/// which reports it.
pub struct Sources(Vec<(PathBuf, OwnedFd)>, crate::idmap::Detached);

impl Sources {
    /// Opens (`O_PATH`) the source of every bind in `steps`; nothing when
    /// init keeps its ids (as an ordinary user), which reach what the
    /// agent's do.
    pub fn open(steps: &[MountStep], privileged: bool) -> Self {
        let mut opened = Vec::new();
        if !privileged {
            return Sources(opened, Default::default());
        }
        for step in steps {
            if let MountStep::Bind { source, .. } = step {
                let file = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH)
                    .open(source);
                if let Ok(file) = file {
                    opened.push((source.clone(), OwnedFd::from(file)));
                }
            }
        }
        Sources(opened, Default::default())
    }

    /// With the idmapped trees the supervisor prepared.
    pub fn with_idmapped(self, trees: crate::idmap::Detached) -> Self {
        Sources(self.0, trees)
    }

    /// The path through the open file of `source`, if it was opened.
    fn path_of(&self, source: &Path) -> Option<PathBuf> {
        self.0
            .iter()
            .find(|(p, _)| p == source)
            .map(|(_, fd)| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
    }
}

/// Builds the new root at `root` (an empty directory), applies `steps` in
/// order (binds through `sources`), then pivots into it and detaches the
/// host's root.
///
/// Runs in the sandbox's init, inside the new user and mount namespaces.
pub fn build_root(
    root: &Path,
    steps: &[MountStep],
    sources: &mut Sources,
) -> Result<(), SetupError> {
    // Our mounts must never propagate back to the host, while host unmounts
    // still reach us (a slave, as bubblewrap does).
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| SetupError::io(LAYER, "make / a recursive slave", e))?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=4m,nr_inodes=4096"),
    )
    .map_err(|e| SetupError::io(LAYER, format!("tmpfs on new root {}", root.display()), e))?;
    let mut dirs = Dirs::new(root);
    for step in steps {
        let mask = matches!(step, MountStep::MaskFile { .. } | MountStep::MaskDir { .. });
        if mask && crate::selftest::weakened("mounts") {
            continue;
        }
        apply(root, step, &mut dirs, sources)?;
        // Whatever this step mounted hides what was under it.
        dirs.covered(&under(root, step.target()));
    }
    pivot(root)
}

/// Swaps the root for `root` and detaches the old one, then makes the new
/// root's own tmpfs read-only so the agent cannot add files next to `/usr`.
fn pivot(root: &Path) -> Result<(), SetupError> {
    chdir(root).map_err(|e| SetupError::io(LAYER, "chdir to new root", e))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; the
    // detach below removes it (see pivot_root(2), "NOTES").
    pivot_root(".", ".").map_err(|e| SetupError::io(LAYER, "pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| SetupError::io(LAYER, "detach old root", e))?;
    chdir("/").map_err(|e| SetupError::io(LAYER, "chdir /", e))?;
    set_attrs(
        Path::new("/"),
        libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        false,
    )
}

fn apply(
    root: &Path,
    step: &MountStep,
    dirs: &mut Dirs,
    sources: &mut Sources,
) -> Result<(), SetupError> {
    let at = under(root, step.target());
    let what = |verb: &str| format!("{verb} {}", step.target().display());
    match step {
        MountStep::Tmpfs {
            mode, owner, size, ..
        } => {
            dirs.make(&at)?;
            // Inodes bounded too (one per 16 KiB, like tmpfs's own default
            // for RAM), so a flood of empty files cannot exhaust memory.
            let inodes = (size / TMPFS_BYTES_PER_INODE).max(1024);
            let mut data = if crate::selftest::weakened("tmpfs") {
                // The selftest's weakened runs only (debug builds): the
                // kernel's defaults (half of RAM).
                format!("mode={mode:04o}")
            } else {
                format!("mode={mode:04o},size={size},nr_inodes={inodes}")
            };
            if let Some((uid, gid)) = owner {
                data.push_str(&format!(",uid={uid},gid={gid}"));
            }
            mount(
                Some("tmpfs"),
                &at,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(data.as_str()),
            )
            .map_err(|e| SetupError::io(LAYER, what("tmpfs on"), e))
        }
        MountStep::Bind {
            source, writable, ..
        } => {
            let (from, meta) = bind_source(source, sources)?;
            make_mount_point(&meta, &at, dirs)?;
            mount(
                Some(from.as_path()),
                &at,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| SetupError::io(LAYER, format!("bind {} on", source.display()), e))
            .and_then(|()| {
                let mut attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
                if !writable && !crate::selftest::weakened("readonly") {
                    attrs |= libc::MOUNT_ATTR_RDONLY;
                }
                set_attrs(&at, attrs, true)
            })
        }
        MountStep::IdmappedBind { dir, .. } => {
            let tree = sources
                .1
                .take(step.target())
                .ok_or_else(|| SetupError::new(LAYER, what("no idmapped tree was prepared for")))?;
            if *dir {
                dirs.make(&at)?;
            } else {
                if let Some(parent) = at.parent() {
                    dirs.make(parent)?;
                }
                if fs::symlink_metadata(&at).is_err() {
                    fs::File::create(&at)
                        .map(drop)
                        .map_err(|e| SetupError::io(LAYER, what("create mount point"), e))?;
                }
            }
            crate::idmap::attach(&tree, &at)
        }
        // Hidden by a later mount (a HOME tmpfs over a write path): there
        // is nothing of it to pin in the view.
        MountStep::SelfBind { .. } if fs::symlink_metadata(&at).is_err() => Ok(()),
        MountStep::SelfBind { writable, .. } => {
            mount(
                Some(at.as_path()),
                &at,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| SetupError::io(LAYER, what("pin"), e))?;
            let mut attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
            if !writable && !crate::selftest::weakened("readonly") {
                attrs |= libc::MOUNT_ATTR_RDONLY;
            }
            set_attrs(&at, attrs, true)
        }
        MountStep::Device { source, .. } => {
            // Always a fresh node in the sandbox's own /dev tmpfs.
            if let Some(parent) = at.parent() {
                dirs.make(parent)?;
            }
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&at)
                .map(drop)
                .map_err(|e| SetupError::io(LAYER, what("create mount point for"), e))?;
            mount(
                Some(source.as_path()),
                &at,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| SetupError::io(LAYER, what("bind device"), e))?;
            set_attrs(
                &at,
                libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC,
                false,
            )
        }
        MountStep::Symlink { points_to, .. } => {
            if let Some(parent) = at.parent() {
                dirs.make(parent)?;
            }
            symlink(points_to, &at).map_err(|e| SetupError::io(LAYER, what("symlink"), e))
        }
        MountStep::Proc { .. } => {
            dirs.make(&at)?;
            mount(
                Some("proc"),
                &at,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("hidepid=invisible"),
            )
            .map_err(|e| SetupError::io(LAYER, what("proc on"), e))
        }
        MountStep::DevPts { .. } => {
            dirs.make(&at)?;
            mount(
                Some("devpts"),
                &at,
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=0620"),
            )
            .map_err(|e| SetupError::io(LAYER, what("devpts on"), e))
        }
        MountStep::ReadOnlyAgain { .. } => {
            if fs::symlink_metadata(&at).is_err() || crate::selftest::weakened("readonly") {
                return Ok(());
            }
            mount(
                Some(at.as_path()),
                &at,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| SetupError::io(LAYER, what("re-bind"), e))?;
            set_attrs(
                &at,
                libc::MOUNT_ATTR_RDONLY
                    | libc::MOUNT_ATTR_NOSUID
                    | libc::MOUNT_ATTR_NODEV
                    | libc::MOUNT_ATTR_NOEXEC,
                true,
            )
        }
        MountStep::MaskFile { .. } => {
            // /dev/null on a nodev mount: opening it fails with EACCES, so a
            // masked file reads as "permission denied", not as empty.
            mount(
                Some("/dev/null"),
                &at,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| SetupError::io(LAYER, what("mask file"), e))?;
            set_attrs(
                &at,
                libc::MOUNT_ATTR_RDONLY
                    | libc::MOUNT_ATTR_NOSUID
                    | libc::MOUNT_ATTR_NODEV
                    | libc::MOUNT_ATTR_NOEXEC,
                false,
            )
        }
        MountStep::MaskDir { .. } => mount(
            Some("tmpfs"),
            &at,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0000,size=4k,nr_inodes=1"),
        )
        .map_err(|e| SetupError::io(LAYER, what("mask directory"), e)),
    }
}

/// The directories of the new root known to exist, so each is created
/// once instead of probed before every step (`/dev`'s nodes, the links at
/// `/`). A mount forgets what it covers. Kept as normalized bytes (no
/// `//`, `.` or trailing `/`): compared once per mount step against every
/// entry, `Path`'s component-wise comparisons were a measurable part of a
/// start.
struct Dirs(Vec<Vec<u8>>);

impl Dirs {
    fn new(root: &Path) -> Self {
        Dirs(vec![normalized(root)])
    }

    /// Creates a directory (and its parents) in the new root. An existing
    /// path is fine: mounting over a directory of a read-only bind needs
    /// no write.
    fn make(&mut self, at: &Path) -> Result<(), SetupError> {
        let key = normalized(at);
        if self.0.contains(&key) {
            return Ok(());
        }
        // create_dir_all answers an existing directory with Ok (EEXIST wins
        // over EROFS), so no stat first.
        fs::create_dir_all(at)
            .map_err(|e| SetupError::io(LAYER, format!("mkdir {}", at.display()), e))?;
        self.0.push(key);
        Ok(())
    }

    /// `at` is now a mount point: what was known beneath it is hidden.
    fn covered(&mut self, at: &Path) {
        let at = normalized(at);
        self.0.retain(|d| !strictly_under(d, &at));
    }
}

/// `path` as bytes, spelled the one way its components allow.
fn normalized(path: &Path) -> Vec<u8> {
    path.components()
        .collect::<PathBuf>()
        .into_os_string()
        .into_vec()
}

/// Whether normalized `path` lies beneath normalized `dir` (not at it).
fn strictly_under(path: &[u8], dir: &[u8]) -> bool {
    match path.strip_prefix(dir) {
        Some(rest) => dir.ends_with(b"/") ^ rest.starts_with(b"/") && !rest.is_empty(),
        None => false,
    }
}

/// What a bind of `source` mounts from, and what it is: the path itself,
/// or, where the agent's ids may not reach it, its file opened beforehand
/// (see [`Sources`]).
fn bind_source(source: &Path, sources: &Sources) -> Result<(PathBuf, fs::Metadata), SetupError> {
    let failed = |e| SetupError::io(LAYER, format!("stat {}", source.display()), e);
    match fs::metadata(source) {
        Ok(meta) => Ok((source.to_path_buf(), meta)),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => match sources.path_of(source) {
            Some(via) => fs::metadata(&via).map(|meta| (via, meta)).map_err(failed),
            None => Err(failed(e)),
        },
        Err(e) => Err(failed(e)),
    }
}

/// Creates a mount point of the same kind as the source `meta` describes
/// (directory or file).
fn make_mount_point(meta: &fs::Metadata, at: &Path, dirs: &mut Dirs) -> Result<(), SetupError> {
    if meta.is_dir() {
        return dirs.make(at);
    }
    if fs::symlink_metadata(at).is_ok() {
        return Ok(());
    }
    if let Some(parent) = at.parent() {
        dirs.make(parent)?;
    }
    fs::File::create(at)
        .map(drop)
        .map_err(|e| SetupError::io(LAYER, format!("create mount point {}", at.display()), e))
}

/// Sets mount attributes with `mount_setattr(2)` (Linux 5.12+), on the whole
/// subtree when `recursive`, so read-only also covers host submounts.
fn set_attrs(at: &Path, attr_set: u64, recursive: bool) -> Result<(), SetupError> {
    let path = CString::new(at.as_os_str().as_bytes())
        .map_err(|_| SetupError::new(LAYER, format!("path with NUL: {}", at.display())))?;
    let attr = libc::mount_attr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: `path` is a valid NUL-terminated string and `attr` a properly
    // sized, initialised mount_attr that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let hint = if err.raw_os_error() == Some(libc::ENOSYS) {
        " (mount_setattr needs Linux 5.12+)"
    } else {
        ""
    };
    Err(SetupError::io(
        LAYER,
        format!("set mount attributes on {}{hint}", at.display()),
        err,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_placed_under_the_new_root() {
        assert_eq!(
            under(Path::new("/s/root"), Path::new("/usr/lib")),
            PathBuf::from("/s/root/usr/lib")
        );
        assert_eq!(
            under(Path::new("/s/root"), Path::new("/")),
            PathBuf::from("/s/root")
        );
    }

    #[test]
    fn a_mount_forgets_the_directories_it_covers() {
        let mut dirs = Dirs::new(Path::new("/s/root"));
        for d in ["/s/root/dev/", "/s/root//dev/pts", "/s/root/devices"] {
            dirs.0.push(normalized(Path::new(d)));
        }
        dirs.covered(Path::new("/s/root/dev/"));
        let left: Vec<_> = dirs.0.iter().map(|d| String::from_utf8_lossy(d)).collect();
        assert_eq!(left, ["/s/root", "/s/root/dev", "/s/root/devices"]);
        dirs.covered(Path::new("/s/root"));
        assert_eq!(dirs.0, [b"/s/root".to_vec()]);
        // Everything is beneath "/".
        dirs.0.push(normalized(Path::new("/s/x")));
        dirs.covered(Path::new("/"));
        assert!(dirs.0.is_empty());
    }
}
