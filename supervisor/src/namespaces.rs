//! The namespace layer: creates the sandbox's user, mount, PID, network,
//! IPC, UTS and cgroup namespaces in one `clone`, and writes the user
//! namespace's uid/gid maps from the parent.

use std::fs;
use std::io::Write;

use nix::unistd::Pid;

use crate::error::SetupError;
use crate::plan::Identity;

const LAYER: &str = "namespaces";

/// Every namespace the sandbox gets.
pub const FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// Which side of the clone we are on.
pub enum Side {
    /// The supervisor, holding the child's pid.
    Parent(Pid),
    /// The child: PID 1 of the new namespaces.
    Child,
}

/// Clones the calling process into new namespaces, fork-style: the child
/// continues from here on a copy of the stack.
///
/// The caller must be single-threaded, so the child inherits no lock held by
/// another thread and may allocate (`sandbox` starts no thread before this).
pub fn clone_into_namespaces() -> Result<Side, SetupError> {
    // SAFETY: raw clone with a NULL stack behaves like fork(2): the child
    // gets a copy-on-write copy of this single-threaded process. No pointer
    // arguments are passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (FLAGS | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match rc {
        -1 => Err(clone_error(std::io::Error::last_os_error())),
        0 => Ok(Side::Child),
        pid => Ok(Side::Parent(Pid::from_raw(pid as libc::pid_t))),
    }
}

fn clone_error(err: std::io::Error) -> SetupError {
    let hint = match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "; unprivileged user namespaces look disabled (check \
             /proc/sys/kernel/unprivileged_userns_clone, /proc/sys/user/max_user_namespaces, \
             kernel.apparmor_restrict_unprivileged_userns, or a container seccomp profile); \
             run 'sandbox doctor'"
        }
        Some(libc::ENOSPC) => "; the user namespace limit is reached (/proc/sys/user/max_user_namespaces)",
        Some(libc::EINVAL) => "; this kernel lacks one of the namespaces (needs user, mount, pid, net, ipc, uts, cgroup)",
        _ => "",
    };
    SetupError::new(LAYER, format!("clone with new namespaces: {err}{hint}"))
}

/// Writes the child's uid and gid maps: exactly one id each, the agent's.
///
/// As an ordinary user the kernel only allows mapping our own ids, after
/// denying `setgroups`. As root we may map the unprivileged agent id and
/// keep `setgroups` so the agent can drop root's supplementary groups.
pub fn write_id_maps(child: Pid, id: &Identity) -> Result<(), SetupError> {
    let proc = format!("/proc/{}", child.as_raw());
    if !id.privileged {
        write_proc(&format!("{proc}/setgroups"), "deny")?;
    }
    write_proc(
        &format!("{proc}/uid_map"),
        &format!("{} {} 1\n", id.inner_uid, id.outer_uid),
    )?;
    write_proc(
        &format!("{proc}/gid_map"),
        &format!("{} {} 1\n", id.inner_gid, id.outer_gid),
    )
}

fn write_proc(path: &str, content: &str) -> Result<(), SetupError> {
    // One write(2): these files accept a map only in a single write.
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|e| SetupError::io(LAYER, format!("write {path}"), e))
}
