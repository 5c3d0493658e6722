//! The agent process: the last steps before the user's command runs.
//!
//! Started by init (sharing init's memory until its execve: spawn.rs),
//! it leaves the caller's session (no terminal keystroke
//! injection), restores default signal handling, applies Landlock and then
//! seccomp, and execs the command, searching the agent's own PATH.

use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::signal::{signal, SigHandler, SigSet, SigmaskHow, Signal};

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

/// Default dispositions and an empty mask: the supervisor blocks the
/// forwarded signals and Rust ignores SIGPIPE; the command must see neither.
fn reset_signals() -> Result<(), SetupError> {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL registers no Rust code as a handler.
        unsafe { signal(sig, SigHandler::SigDfl) }
            .map_err(|e| SetupError::io("agent", format!("reset {sig}"), e))?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| SetupError::io("agent", "unblock signals", e))
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
    if program.as_bytes().contains(&b'/') {
        let err = execve(program, &plan.argv, &env);
        return failed(&name, err);
    }
    let path = plan
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(crate::plan::DEFAULT_PATH);
    let mut denied = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let Ok(candidate) = CString::new([dir.as_bytes(), b"/", program.as_bytes()].concat())
        else {
            continue;
        };
        match execve(&candidate, &plan.argv, &env) {
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

fn execve(path: &CStr, argv: &[CString], env: &[CString]) -> Errno {
    match nix::unistd::execve(path, argv, env) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

fn failed(name: &str, err: Errno) -> i32 {
    eprintln!("sandbox: {name}: {}", err.desc());
    if err == Errno::ENOENT {
        NOT_FOUND
    } else {
        CANNOT_EXECUTE
    }
}
