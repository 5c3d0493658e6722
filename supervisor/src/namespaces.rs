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

/// [`FLAGS`]; in the selftest's weakened runs only (debug builds,
/// `netns`), without the network namespace.
fn flags() -> libc::c_int {
    if crate::selftest::weakened("netns") {
        FLAGS & !libc::CLONE_NEWNET
    } else {
        FLAGS
    }
}

/// Which side of the clone we are on.
pub enum Side {
    /// The supervisor, holding the child's pid.
    Parent(Pid),
    /// The child: PID 1 of the new namespaces.
    Child,
}

/// `clone_args` of clone3(2), up to the `cgroup` field (version 2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Start the child in this cgroup (Linux 5.7+).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks into the new namespaces (fork-style: the child continues here and
/// becomes PID 1 of them). With `cgroup` (a cgroup v2 directory), the child
/// is born in that cgroup: `clone3(CLONE_INTO_CGROUP)` spares the migration
/// a write to `cgroup.procs` costs (a cgroup-wide lock and an RCU grace
/// period: about 10 ms here). Returns the side and whether the child was
/// placed in the cgroup; on kernels without clone3 or CLONE_INTO_CGROUP
/// the caller attaches it.
pub fn clone_into_namespaces(
    cgroup: Option<&std::os::fd::OwnedFd>,
) -> Result<(Side, bool), SetupError> {
    if let Some(fd) = cgroup {
        let args = CloneArgs {
            flags: flags() as u64 | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: std::os::fd::AsRawFd::as_raw_fd(fd) as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 with no stack behaves like fork(2) for this
        // single-threaded process; `args` is a valid, fully initialized
        // clone_args of the size we pass.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match rc {
            0 => return Ok((Side::Child, true)),
            pid if pid > 0 => return Ok((Side::Parent(Pid::from_raw(pid as libc::pid_t)), true)),
            _ => {
                let err = std::io::Error::last_os_error();
                // Old kernel, or a seccomp profile that hides clone3: fall
                // back to clone and a migration.
                if !matches!(
                    err.raw_os_error(),
                    Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EPERM)
                ) {
                    return Err(clone_error(err));
                }
            }
        }
    }
    // SAFETY: raw clone with a NULL stack behaves like fork(2): the child
    // gets a copy-on-write copy of this single-threaded process. No pointer
    // arguments are passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags() | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match rc {
        -1 => Err(clone_error(std::io::Error::last_os_error())),
        0 => Ok((Side::Child, false)),
        pid => Ok((Side::Parent(Pid::from_raw(pid as libc::pid_t)), false)),
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
