//! PID 1 of the sandbox: builds the filesystem view, binds the proxy ports
//! (handing them to the supervisor, whose session proxy serves them or
//! whose relay takes them to a sidecar's socket), drops its own privileges, starts the agent, forwards signals to
//! it, reaps every orphan, and exits with the agent's status. When it exits the kernel
//! kills everything left in the PID namespace, so nothing the agent started
//! outlives it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};

use crate::caps;
use crate::error::SetupError;
use crate::mounts;
use crate::network;
use crate::plan::{Identity, SandboxPlan};
use crate::relay::Relay;
use crate::signals;

/// Exit code when the sandbox could not be set up.
pub const SETUP_FAILED: i32 = 125;

/// The pipes between the supervisor and init.
pub struct Channels {
    /// Readable once the supervisor has written our id maps; hangs up when
    /// the supervisor dies.
    pub go: OwnedFd,
    /// Setup errors go here; closed (EOF for the supervisor) once the agent
    /// has exec'd.
    pub errors: OwnedFd,
    /// Where the proxy ports go: to the supervisor, for its session proxy
    /// or its relay to a sidecar (see `handoff.rs`); absent, init relays
    /// them itself.
    pub handoff: Option<OwnedFd>,
    /// The agent's exit status goes here once nothing of the sandbox but
    /// init is left, so the supervisor can tear down while init's own exit
    /// (its namespaces' teardown) runs.
    pub status: OwnedFd,
    /// The writable trees the supervisor idmapped for us (as root).
    pub idmapped: crate::idmap::Detached,
    /// When the session started: what the agent changes is newer.
    pub since: crate::surface::Since,
}

/// Runs as PID 1 in the new namespaces and never returns.
pub fn run(plan: &SandboxPlan, new_root: &Path, channels: Channels) -> ! {
    crate::prefault::hot_code();
    let Channels {
        go,
        errors,
        handoff,
        status,
        idmapped,
        since,
    } = channels;
    let code = match setup(plan, new_root, &go, handoff, idmapped) {
        Ok(relay) => match start_agent(plan, errors, relay) {
            Ok((agent, sfd, relay)) => {
                let ended = supervise(agent, &sfd, relay, &go);
                end_sandbox();
                match ended {
                    Some(code) => {
                        let _ = nix::unistd::write(&status, &code.to_le_bytes());
                        code
                    }
                    // The supervisor is gone (killed): nobody else will
                    // check what the agent left in the workspace.
                    None => {
                        for finding in crate::surface::check(
                            &plan.writable,
                            &plan.protect,
                            since,
                            plan.identity.privileged,
                        ) {
                            eprintln!("{}", finding.line());
                        }
                        SETUP_FAILED
                    }
                }
            }
            Err((e, errors)) => report(&errors, &e),
        },
        Err(e) => report(&errors, &e),
    };
    // SAFETY: _exit ends the process without running destructors or atexit
    // handlers that belong to the supervisor we were cloned from.
    unsafe { libc::_exit(code) }
}

/// Waits for the supervisor's second byte: this process is now in the
/// session cgroup, so the agent it forks will be too.
fn in_cgroup(go: &OwnedFd) -> Result<(), SetupError> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(go, &mut byte) {
            Ok(1) => return Ok(()),
            Err(Errno::EINTR) => continue,
            _ => {
                return Err(SetupError::new(
                    "init",
                    "the supervisor went away during setup",
                ))
            }
        }
    }
}

/// Writes `err` for the supervisor to print and returns the setup exit code.
pub fn report(errors: &OwnedFd, err: &SetupError) -> i32 {
    let _ = nix::unistd::write(errors, err.to_string().as_bytes());
    SETUP_FAILED
}

fn setup(
    plan: &SandboxPlan,
    new_root: &Path,
    go: &OwnedFd,
    handoff: Option<OwnedFd>,
    idmapped: crate::idmap::Detached,
) -> Result<Relay, SetupError> {
    die_with_supervisor()?;
    let mut byte = [0u8; 1];
    match nix::unistd::read(go, &mut byte) {
        Ok(1) => {}
        _ => {
            return Err(SetupError::new(
                "init",
                "the supervisor went away during setup",
            ))
        }
    }
    // Our own session: the caller's terminal signals reach the supervisor
    // only, which forwards them exactly once.
    nix::unistd::setsid().map_err(|e| SetupError::io("init", "setsid", e))?;
    // Before the ids change: see `mounts::Sources`.
    let mut sources =
        mounts::Sources::open(&plan.mounts, plan.identity.privileged).with_idmapped(idmapped);
    // Become the agent's ids first: as root, our own host uid is unmapped in
    // the new user namespace, and the kernel refuses to create files owned by
    // an unmapped id (EOVERFLOW). We keep our namespace capabilities: the
    // old uid was not the namespace's root, so setresuid does not clear them.
    become_agent_user(&plan.identity)?;
    // Changing ids cleared the parent-death signal: set it again, then make
    // sure the supervisor did not die in between.
    die_with_supervisor()?;
    let mut fds = [PollFd::new(go.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::ZERO);
    if fds[0]
        .revents()
        .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
    {
        return Err(SetupError::new(
            "init",
            "the supervisor went away during setup",
        ));
    }
    nix::unistd::sethostname(&plan.hostname)
        .map_err(|e| SetupError::io("namespaces", "set hostname", e))?;
    mounts::build_root(new_root, &plan.mounts, &mut sources)?;
    drop(sources);
    network::loopback_up()?;
    let mut relay = Relay::bind(
        &plan.egress.relay_ports,
        &plan.egress.inside_socket,
        relay_capacity(),
    )?;
    if let Some(channel) = handoff {
        // The supervisor serves the ports (its session proxy, or its relay
        // to a sidecar): hand them over and keep no copy.
        crate::handoff::send(&channel, relay.listeners())?;
        relay = Relay::none();
    }
    // The supervisor moves us into the session's cgroup while we build the
    // sandbox; wait until it has, then make that cgroup our cgroup
    // namespace's root (so nothing above it is visible inside). Both before
    // the capabilities go, and before the agent is forked (born inside).
    in_cgroup(go)?;
    crate::cgroup::enter_namespace()?;
    if crate::selftest::weakened("caps") {
        // The agent keeps init's capabilities (in the sandbox's user
        // namespace) across execve.
        caps::pass_all_to_agent();
    } else {
        caps::drop_all()?;
    }
    // Not dumpable: the agent (same uid) cannot open /proc/1/mem or attach.
    // (Changing ids already cleared it; this holds it whatever the ids.)
    // The selftest's weakened runs (debug builds) make init dumpable.
    nix::sys::prctl::set_dumpable(crate::selftest::weakened("dumpable"))
        .map_err(|e| SetupError::io("init", "set dumpable", e))?;
    std::env::set_current_dir(&plan.cwd)
        .map_err(|e| SetupError::io("workspace", format!("chdir {}", plan.cwd.display()), e))?;
    Ok(relay)
}

/// How many relayed connections init can hold: each costs six descriptors
/// (two sockets, two pipes). Init raises its own soft limit to the hard one
/// after the agent is forked, so the agent keeps the limit it was given.
fn relay_capacity() -> usize {
    let hard = getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024);
    (hard.min(1 << 16) as usize).saturating_sub(32) / 6
}

/// SIGKILL for us when the supervisor dies, so the sandbox never outlives it.
fn die_with_supervisor() -> Result<(), SetupError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| SetupError::io("init", "set parent-death signal", e))
}

fn become_agent_user(id: &Identity) -> Result<(), SetupError> {
    let gid = Gid::from_raw(id.inner_gid);
    let uid = Uid::from_raw(id.inner_uid);
    if id.privileged {
        // Drop root's supplementary groups (allowed: we mapped without
        // denying setgroups, as only root can).
        nix::unistd::setgroups(&[gid])
            .map_err(|e| SetupError::io("identity", "drop supplementary groups", e))?;
    }
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| SetupError::io("identity", "setresgid", e))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| SetupError::io("identity", "setresuid", e))
}

type StartError = (SetupError, OwnedFd);

fn start_agent(
    plan: &SandboxPlan,
    errors: OwnedFd,
    relay: Relay,
) -> Result<(Pid, SignalFd, Relay), StartError> {
    let sfd = match SignalFd::with_flags(
        &signals::supervised(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    ) {
        Ok(s) => s,
        Err(e) => return Err((SetupError::io("init", "signalfd", e), errors)),
    };
    // From the agent's start on, the supervisor's death is noticed in
    // `supervise` (the go pipe hangs up, level-triggered, so a death
    // during the spawn counts too): init then ends the sandbox and checks
    // the workspace before it exits, instead of dying at once. Cleared
    // before the spawn, or a death right after it would kill init first.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(None) {
        return Err((
            SetupError::io("init", "clear the parent-death signal", e),
            errors,
        ));
    }
    // The agent's copies of the signalfd and the relay's sockets close at
    // its execve (it marks every descriptor above stderr close-on-exec).
    match crate::spawn::agent(plan, &errors) {
        Ok(child) => {
            // Our copy closes now; the agent's closed at execve, which the
            // supervisor sees as EOF: setup succeeded.
            drop(errors);
            if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            }
            Ok((child, sfd, relay))
        }
        Err(e) => Err((e, errors)),
    }
}

/// Kills every other process of the sandbox and reaps them all. As PID 1
/// of the sandbox's PID namespace, kill(-1) reaches every process in it
/// (all run as the agent's user, and none can have gained another: no
/// capabilities, no_new_privs), and a fork racing with it fails rather
/// than leave a child behind. What the kernel does when init exits, done
/// before init reports the status, so that nothing but init's own exit
/// remains then.
fn end_sandbox() {
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
            Ok(_) | Err(Errno::EINTR) => continue,
            // ECHILD: nobody left.
            Err(_) => return,
        }
    }
}

/// Token of the signalfd in init's epoll set (relay tokens are below it).
const SIGNAL_TOKEN: u64 = u64::MAX;
/// Token of the go pipe: readable (at EOF) only once the supervisor died.
const SUPERVISOR_TOKEN: u64 = u64::MAX - 1;

/// Relays connections, forwards signals to the agent and reaps until the
/// agent exits; returns its exit code (128+N for death by signal N), or
/// `None` when the supervisor died first.
fn supervise(agent: Pid, sfd: &SignalFd, mut relay: Relay, go: &OwnedFd) -> Option<i32> {
    let Ok(epoll) = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) else {
        return Some(SETUP_FAILED);
    };
    if epoll
        .add(
            sfd.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_TOKEN),
        )
        .is_err()
        || epoll
            .add(
                go.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, SUPERVISOR_TOKEN),
            )
            .is_err()
        || relay.register(&epoll).is_err()
    {
        return Some(SETUP_FAILED);
    }
    // The agent may have exited before the signalfd was watched.
    if let Some(code) = reap(agent) {
        return Some(code);
    }
    let mut events = [EpollEvent::empty(); 64];
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(_) => return Some(SETUP_FAILED),
        };
        for ev in &events[..n] {
            if ev.data() == SUPERVISOR_TOKEN {
                return None;
            }
            if ev.data() != SIGNAL_TOKEN {
                relay.on_event(&epoll, ev.data());
                continue;
            }
            loop {
                let signo = match sfd.read_signal() {
                    Ok(Some(info)) => info.ssi_signo as i32,
                    Ok(None) => break,
                    Err(Errno::EINTR) => continue,
                    Err(_) => return Some(SETUP_FAILED),
                };
                if signo == libc::SIGCHLD {
                    if let Some(code) = reap(agent) {
                        return Some(code);
                    }
                    continue;
                }
                if let Ok(sig) = Signal::try_from(signo) {
                    // The agent leads its own process group: signal all of
                    // it, as a terminal would.
                    if kill(Pid::from_raw(-agent.as_raw()), sig).is_err() {
                        let _ = kill(agent, sig);
                    }
                }
            }
        }
    }
}

/// Reaps every exited child; returns the agent's code once it is among them.
fn reap(agent: Pid) -> Option<i32> {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => return Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == agent => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}
