//! The agent process: the last steps before the user's command runs.
//!
//! Started by init (sharing init's memory until its execve: spawn.rs),
//! it leaves the caller's session (no terminal keystroke
//! injection), restores default signal handling, applies Landlock and then
//! seccomp, and execs the command, searching the agent's own PATH.

use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow};

use crate::error::SetupError;
use crate::init;
use crate::landlock;
use crate::plan::SandboxPlan;
use crate::seccomp;

/// Exit code when the command exists but cannot be executed.
pub const CANNOT_EXECUTE: i32 = 126;
/// Exit code when the command is not found.
pub const NOT_FOUND: i32 = 127;

/// Confines this process and execs the command; never returns.
pub fn exec(plan: &SandboxPlan, errors: OwnedFd) -> ! {
    let code = match confine(plan) {
        Ok(()) => {
            // `errors` is close-on-exec: the supervisor sees EOF when execve
            // succeeds. On failure we exit with 126/127 as `env` does.
            let code = exec_command(plan);
            drop(errors);
            code
        }
        Err(e) => init::report(&errors, &e),
    };
    // SAFETY: ends this child without running any destructor: its memory
    // is init's (spawn.rs), and what lives there is init's to drop.
    unsafe { libc::_exit(code) }
}

fn confine(plan: &SandboxPlan) -> Result<(), SetupError> {
    nix::unistd::setsid().map_err(|e| SetupError::io("agent", "setsid", e))?;
    reset_signals()?;
    // Nothing but stdin, stdout and stderr crosses execve.
    // SAFETY: close_range only marks descriptors close-on-exec.
    if unsafe {
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    } != 0
    {
        return Err(SetupError::io(
            "agent",
            "mark fds close-on-exec",
            std::io::Error::last_os_error(),
        ));
    }
    use crate::selftest::weakened;
    if !weakened("rlimits") {
        crate::rlimits::apply(&crate::rlimits::plan(&plan.limits))?;
    }
    if !weakened("landlock") {
        landlock::restrict_self(&plan.landlock)?;
    }
    if weakened("seccomp") {
        return Ok(());
    }
    seccomp::install(&plan.seccomp)
}

/// Blocks every signal (SIGKILL and SIGSTOP cannot be) and restores
/// default dispositions: the supervisor blocks the forwarded signals and
/// Rust ignores SIGPIPE, and the command must see neither. The mask opens
/// only around each execve ([`execve`]): until then this child shares
/// init's memory (spawn.rs), and a signal stopping it halfway through an
/// allocation would leave init's heap half-updated.
fn reset_signals() -> Result<(), SetupError> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None)
        .map_err(|e| SetupError::io("agent", "block signals", e))?;
    // Only ignored dispositions survive execve (handlers turn into SIG_DFL
    // by themselves), so the ignored ones are reset: real-time ones
    // included (a caller may ignore those too), with the raw call because
    // glibc refuses the two it reserves for itself (32 and 33). Every
    // signal when /proc cannot say which.
    let ignored = crate::procfs::read("/proc/thread-self/status")
        .ok()
        .and_then(|s| ignored_signals(&s))
        .unwrap_or(u64::MAX);
    let default = KernelSigaction::default();
    for sig in 1..=NSIG {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || ignored & (1 << (sig - 1)) == 0 {
            continue;
        }
        // SAFETY: `default` is a valid kernel sigaction (SIG_DFL, no flags,
        // empty mask) that outlives the call; no old action is read back.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            )
        };
        if rc != 0 {
            return Err(SetupError::io(
                "agent",
                format!("reset signal {sig}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// The `SigIgn:` mask of a `/proc/*/status` text (bit N-1: signal N).
fn ignored_signals(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The highest signal number (the kernel's `_NSIG`).
const NSIG: libc::c_int = 64;

/// `struct sigaction` as the kernel takes it (not glibc's layout).
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: libc::c_ulong,
    flags: libc::c_ulong,
    restorer: libc::c_ulong,
    mask: u64,
}

/// Execs the command; returns the exit code for why it could not.
fn exec_command(plan: &SandboxPlan) -> i32 {
    let env: Vec<CString> = plan
        .env
        .iter()
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    let Some(program) = plan.argv.first() else {
        return NOT_FOUND;
    };
    let name = program.to_string_lossy().into_owned();
    let args = ExecArgs::new(&plan.argv, &env);
    if program.as_bytes().contains(&b'/') {
        let err = execve(program, &args);
        return failed(&name, err);
    }
    let path = plan
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(crate::plan::DEFAULT_PATH);
    let candidates: Vec<CString> = path
        .split(':')
        .filter_map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            CString::new([dir.as_bytes(), b"/", program.as_bytes()].concat()).ok()
        })
        .collect();
    let mut denied = None;
    for candidate in &candidates {
        match execve(candidate, &args) {
            Errno::ENOENT | Errno::ENOTDIR => continue,
            Errno::EACCES => denied = Some(Errno::EACCES),
            other => return failed(&name, other),
        }
    }
    match denied {
        Some(e) => failed(&name, e),
        None => {
            eprintln!("sandbox: {name}: command not found");
            NOT_FOUND
        }
    }
}

/// execve's NULL-terminated argument and environment arrays, built once:
/// nothing is allocated while signals are open around the call.
struct ExecArgs<'a> {
    argv: Vec<*const libc::c_char>,
    env: Vec<*const libc::c_char>,
    _strings: std::marker::PhantomData<&'a CString>,
}

impl<'a> ExecArgs<'a> {
    fn new(argv: &'a [CString], env: &'a [CString]) -> Self {
        let array = |v: &'a [CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        ExecArgs {
            argv: array(argv),
            env: array(env),
            _strings: std::marker::PhantomData,
        }
    }
}

/// One execve with the signal mask open for exactly the call (blocked
/// again if it fails); returns why it failed.
fn execve(path: &CStr, args: &ExecArgs) -> Errno {
    let mask = |set: SigSet| {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&set), None);
    };
    mask(SigSet::empty());
    // SAFETY: the arrays are NULL-terminated and point into strings that
    // `args` borrows for the whole call.
    unsafe { libc::execve(path.as_ptr(), args.argv.as_ptr(), args.env.as_ptr()) };
    let err = Errno::last();
    mask(SigSet::all());
    err
}

fn failed(name: &str, err: Errno) -> i32 {
    eprintln!("sandbox: {name}: {}", err.desc());
    if err == Errno::ENOENT {
        NOT_FOUND
    } else {
        CANNOT_EXECUTE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ignored_mask_is_read_from_status() {
        let status =
            "Name:\tsh\nSigBlk:\t0000000000010000\nSigIgn:\t0000000180001000\nSigCgt:\t0\n";
        let mask = ignored_signals(status).expect("a mask");
        assert_eq!(mask & (1 << (libc::SIGPIPE - 1)), 1 << (libc::SIGPIPE - 1));
        assert_ne!(mask & (1 << 31), 0, "signal 32");
        assert_eq!(mask & (1 << (libc::SIGCHLD - 1)), 0);
        assert_eq!(ignored_signals("Name:\tsh\n"), None);
    }
}
