//! Idmapped writable trees: how the agent owns what it may write without
//! ever being root on the host.
//!
//! As root, the agent runs as an unprivileged uid (65534 unless `--uid`),
//! yet the workspace and the profile's `write` paths usually belong to
//! root (a container's `/work`, CI, root's own checkouts) or to another
//! user. Each such tree is bind-mounted *idmapped* (Linux 5.12+,
//! `mount_setattr(2)` with `MOUNT_ATTR_IDMAP`): a user namespace that maps
//! the tree owner's uid and gid onto the agent's. Inside, the agent owns
//! the files; on disk, what it creates belongs to the tree's owner, and
//! root's files stay root's.
//!
//! Not in an unprivileged container (no `CAP_SYS_ADMIN` over the host's
//! filesystems) nor on overlayfs itself (a container's root): there a
//! tree owned by another non-root user runs the agent as that user, and a
//! root-owned one is refused with the fix (`plan::root_agent_ids`).
//!
//! Setting an idmapping needs `CAP_SYS_ADMIN` over the filesystem's user
//! namespace, which only the supervisor (root in the initial namespace)
//! has: it clones each tree into a detached mount (`open_tree`) and
//! idmaps it before the sandbox is cloned; init, which inherits the
//! descriptors, attaches them in the new root (`move_mount`).
//!
//! Files the agent creates are root's on disk, so a set-user-ID bit would
//! be a way to root for anyone who can reach the tree: the seccomp layer
//! refuses every mode change or creation that asks for S_ISUID or S_ISGID.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::SetupError;
use crate::mounts::MountStep;

const LAYER: &str = "mounts";

/// Owner ids of a tree mapped onto the agent's host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// The tree owner's uid (on disk).
    pub owner_uid: u32,
    /// The tree owner's gid (on disk).
    pub owner_gid: u32,
    /// The agent's host uid.
    pub agent_uid: u32,
    /// The agent's host gid.
    pub agent_gid: u32,
}

/// Filesystems whose kernels support idmapped mounts: `(statfs magic,
/// name, first Linux version)`.
const SUPPORT: &[(i64, &str, (u32, u32))] = &[
    (0xEF53, "ext4", (5, 12)),
    (0x5846_5342, "xfs", (5, 12)),
    (0x4d44, "vfat", (5, 12)),
    (0x9123_683E, "btrfs", (5, 15)),
    (0xF2F5_2010, "f2fs", (5, 18)),
    (0x0102_1994, "tmpfs", (6, 3)),
    (0x00c3_6400, "ceph", (6, 7)),
];

/// Whether the filesystem with statfs `magic` supports idmapped mounts on
/// Linux `kernel`: `Ok(name)` or `Err(why not)`.
pub fn support(magic: i64, kernel: (u32, u32)) -> Result<&'static str, String> {
    match SUPPORT.iter().find(|(m, _, _)| *m == magic) {
        Some((_, name, since)) if kernel >= *since => Ok(name),
        Some((_, name, since)) => Err(format!(
            "{name} supports idmapped mounts from Linux {}.{}, this is {}.{}",
            since.0, since.1, kernel.0, kernel.1
        )),
        None => Err(format!(
            "its filesystem (statfs type {magic:#x}) does not support idmapped mounts"
        )),
    }
}

/// [`support`] for the filesystem holding `path` on the running kernel,
/// for this process: setting an idmapping needs `CAP_SYS_ADMIN` over the
/// filesystem's user namespace, which root has on the host but not in an
/// unprivileged container.
pub fn supported(path: &Path) -> Result<&'static str, String> {
    privileged()?;
    let fs = nix::sys::statfs::statfs(path).map_err(|e| format!("statfs: {e}"))?;
    support(fs.filesystem_type().0 as i64, kernel())
}

/// The initial user namespace's inode number (`PROC_USER_INIT_INO`).
const INIT_USER_NS: u64 = 0xEFFF_FFFD;

/// Whether this process may idmap a host filesystem: `CAP_SYS_ADMIN`,
/// effective, in the initial user namespace.
fn privileged() -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let initial = std::fs::metadata("/proc/self/ns/user").is_ok_and(|m| m.ino() == INIT_USER_NS);
    let admin = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    )
    .unwrap_or(false);
    if initial && admin {
        return Ok(());
    }
    Err(
        "idmapped mounts need CAP_SYS_ADMIN in the initial user namespace, which this \
         process lacks (an unprivileged container?)"
            .into(),
    )
}

/// The running kernel's `(major, minor)`.
pub fn kernel() -> (u32, u32) {
    let Ok(u) = nix::sys::utsname::uname() else {
        return (0, 0);
    };
    let release = u.release().to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// The detached, idmapped trees for a plan's [`MountStep::IdmappedBind`]
/// steps, by mount target.
#[derive(Default)]
pub struct Detached(Vec<(PathBuf, OwnedFd)>);

impl Detached {
    /// Clones and idmaps every idmapped tree in `steps` (in the supervisor,
    /// as root, before the sandbox is cloned). Fails closed, naming the
    /// tree and the fix.
    pub fn prepare(steps: &[MountStep]) -> Result<Self, SetupError> {
        let mut trees = Vec::new();
        let mut namespaces: Vec<(IdMap, OwnedFd)> = Vec::new();
        for step in steps {
            let MountStep::IdmappedBind {
                source,
                target,
                map,
                ..
            } = step
            else {
                continue;
            };
            if !namespaces.iter().any(|(m, _)| m == map) {
                namespaces.push((*map, user_namespace(map)?));
            }
            let userns = namespaces
                .iter()
                .find(|(m, _)| m == map)
                .map(|(_, fd)| fd)
                .ok_or_else(|| SetupError::new(LAYER, "idmap namespace vanished"))?;
            trees.push((target.clone(), idmapped_tree(source, userns, map)?));
        }
        Ok(Detached(trees))
    }

    /// The detached tree for `target`, once.
    pub fn take(&mut self, target: &Path) -> Option<OwnedFd> {
        let i = self.0.iter().position(|(t, _)| t == target)?;
        Some(self.0.swap_remove(i).1)
    }
}

/// A user namespace whose only mapping is the tree owner's ids onto the
/// agent's: a process in it waits until we have its descriptor.
fn user_namespace(map: &IdMap) -> Result<OwnedFd, SetupError> {
    /// The child's whole life: wait to be killed.
    extern "C" fn wait_forever(_: *mut libc::c_void) -> libc::c_int {
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
    // The child shares our memory (CLONE_VM: no page tables to copy, the
    // cheapest clone there is) and runs only `wait_forever` on this stack,
    // which outlives it: it is killed and reaped below before the stack
    // is dropped.
    let mut stack = vec![0u8; 16 << 10];
    // SAFETY: the stack pointer is the (16-byte aligned) top of a live
    // buffer; `wait_forever` touches no shared state; the child is reaped
    // before `stack` goes away.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        libc::clone(
            wait_forever,
            top as *mut libc::c_void,
            libc::CLONE_NEWUSER | libc::CLONE_VM | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    if pid < 0 {
        return Err(SetupError::io(
            LAYER,
            "create the idmapping's user namespace",
            std::io::Error::last_os_error(),
        ));
    }
    let result = (|| {
        let proc = format!("/proc/{pid}");
        write_map(
            &format!("{proc}/uid_map"),
            &format!("{} {} 1\n", map.owner_uid, map.agent_uid),
        )?;
        write_map(
            &format!("{proc}/gid_map"),
            &format!("{} {} 1\n", map.owner_gid, map.agent_gid),
        )?;
        std::fs::File::open(format!("{proc}/ns/user"))
            .map(OwnedFd::from)
            .map_err(|e| SetupError::io(LAYER, "open the idmapping's user namespace", e))
    })();
    // SAFETY: plain kill and waitpid on our own child (__WALL: a clone
    // child may not report with SIGCHLD semantics to every waiter).
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL);
    }
    drop(stack);
    result
}

fn write_map(path: &str, line: &str) -> Result<(), SetupError> {
    std::fs::write(path, line).map_err(|e| SetupError::io(LAYER, format!("write {path}"), e))
}

/// `source` cloned (with its submounts) into a detached mount, idmapped
/// through `userns`, `nosuid` and `nodev`.
fn idmapped_tree(source: &Path, userns: &OwnedFd, map: &IdMap) -> Result<OwnedFd, SetupError> {
    let path = CString::new(source.as_os_str().as_bytes())
        .map_err(|_| SetupError::new(LAYER, format!("path with NUL: {}", source.display())))?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32)
                as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(SetupError::io(
            LAYER,
            format!("clone {} for an idmapped mount", source.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: `tree` is an open mount descriptor, `empty` a valid string,
    // `attr` a fully initialised mount_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        let why = supported(source).err().unwrap_or_else(|| {
            "a mount inside it may be of a filesystem that cannot be idmapped".into()
        });
        return Err(SetupError::new(
            LAYER,
            format!(
                "idmap {} (owner {}:{} as the agent's {}:{}): {err}; {why}. Run sandbox as \
                 the tree's owner instead of root, or use a tree on ext4, xfs, btrfs or tmpfs",
                source.display(),
                map.owner_uid,
                map.owner_gid,
                map.agent_uid,
                map.agent_gid
            ),
        ));
    }
    Ok(tree)
}

/// Attaches a detached tree at `at` (in init, in the new root).
pub fn attach(tree: &OwnedFd, at: &Path) -> Result<(), SetupError> {
    let path = CString::new(at.as_os_str().as_bytes())
        .map_err(|_| SetupError::new(LAYER, format!("path with NUL: {}", at.display())))?;
    let empty = c"";
    // SAFETY: valid descriptor and NUL-terminated strings for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    Err(SetupError::io(
        LAYER,
        format!("attach the idmapped tree at {}", at.display()),
        std::io::Error::last_os_error(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_follows_the_filesystem_and_the_kernel() {
        type Row = (i64, (u32, u32), Result<&'static str, &'static str>);
        let rows: &[Row] = &[
            (0xEF53, (6, 1), Ok("ext4")),
            (0xEF53, (5, 10), Err("from Linux 5.12")),
            (
                0x0102_1994,
                (6, 1),
                Err("tmpfs supports idmapped mounts from Linux 6.3"),
            ),
            (0x0102_1994, (6, 18), Ok("tmpfs")),
            // overlayfs supports idmapped layers, not idmapped overlay mounts.
            (
                0x794c_7630,
                (6, 18),
                Err("does not support idmapped mounts"),
            ),
            (0x858458f6, (6, 18), Err("does not support idmapped mounts")),
        ];
        for (magic, kernel, want) in rows {
            match (support(*magic, *kernel), want) {
                (Ok(a), Ok(b)) => assert_eq!(a, *b),
                (Err(a), Err(b)) => assert!(a.contains(b), "{a}"),
                (got, want) => panic!("{magic:#x} {kernel:?}: {got:?}, want {want:?}"),
            }
        }
    }
}
