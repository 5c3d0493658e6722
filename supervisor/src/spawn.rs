//! Starting the agent from init as a vfork-style child.
//!
//! The child shares init's memory until its `execve` (init is suspended
//! meanwhile, as with `vfork` or glibc's `posix_spawn`), so none of init's
//! address space (a copy of the supervisor's, several megabytes) is copied
//! into it, faulted in again by its writes, and torn down by its exec.
//!
//! What makes the sharing safe:
//! - the child only reads the plan and drops nothing of init's; what it
//!   changes is its own (Landlock domain, seccomp filter, no_new_privs,
//!   rlimits, descriptor table, signal dispositions and mask, session);
//! - it allocates and frees on init's heap, which stays consistent: init
//!   is single-threaded (checked in debug builds) and suspended, and the
//!   child blocks every signal until the execve call itself (agent.rs), so
//!   none can stop it halfway through an allocation (only SIGKILL, which
//!   cannot be blocked, and which kills the whole sandbox when it comes
//!   from the supervisor);
//! - it ends in `execve` (a fresh address space: the agent never sees
//!   init's memory) or `_exit`;
//! - init is not dumpable, and dumpability lives with the memory, so
//!   nothing can attach to the child while it shares it. (Changing the
//!   child's uid, gid or capabilities would reset that flag for both:
//!   those changes belong in init, before the spawn.)
//!
//! It runs on a stack of its own (it uses ~11 KiB in debug builds), with
//! a `PROT_NONE` guard page below so an overflow faults instead of
//! writing into init's memory.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::agent;
use crate::error::SetupError;
use crate::plan::SandboxPlan;

/// The child's stack. Confinement (Landlock, seccomp, argv and the
/// environment) uses a small fraction; untouched pages cost nothing.
const STACK_BYTES: usize = 1 << 20;

/// Starts the agent (see [`agent::exec`]); returns once it has exec'd or
/// failed (then `errors` says why).
pub fn agent(plan: &SandboxPlan, errors: &OwnedFd) -> Result<Pid, SetupError> {
    debug_assert!(
        single_threaded(),
        "init must be single-threaded to share its heap"
    );
    let mut stack = Stack::new(STACK_BYTES)?;
    let errors_fd = errors.as_raw_fd();
    let child = Box::new(move || -> isize {
        // SAFETY: the child has its own descriptor table (no CLONE_FILES),
        // a copy of init's, so this owns the child's copy of `errors`.
        let errors = unsafe { OwnedFd::from_raw_fd(errors_fd) };
        agent::exec(plan, errors)
    });
    // SAFETY: see the module comment. The stack outlives the child's use of
    // it (CLONE_VFORK returns only after its execve or exit).
    unsafe {
        nix::sched::clone(
            child,
            stack.usable(),
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| SetupError::io("init", "start the agent", e))
}

/// Whether this process has one thread (`Threads:` in its status).
fn single_threaded() -> bool {
    crate::procfs::read("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().eq(["Threads:", "1"]))
        })
        .unwrap_or(false)
}

/// An anonymous mapping with its lowest page unmapped-in-effect
/// (`PROT_NONE`): stacks grow down into it and fault.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
    guard: usize,
}

impl Stack {
    fn new(bytes: usize) -> Result<Self, SetupError> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = bytes + page;
        // SAFETY: a fresh private anonymous mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(SetupError::io(
                "init",
                "map the agent's stack",
                std::io::Error::last_os_error(),
            ));
        }
        let stack = Stack {
            base,
            len,
            guard: page,
        };
        // SAFETY: the first page of the mapping made above.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(SetupError::io(
                "init",
                "guard the agent's stack",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(stack)
    }

    /// Everything above the guard page.
    fn usable(&mut self) -> &mut [u8] {
        // SAFETY: [base + guard, base + len) is mapped read-write and owned
        // by self for its lifetime.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.cast::<u8>().add(self.guard),
                self.len - self.guard,
            )
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), no longer used.
        unsafe { libc::munmap(self.base, self.len) };
    }
}
