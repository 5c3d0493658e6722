//! `sandbox run`: the supervisor's side of a session. Creates the session,
//! clones init into new namespaces, writes its id maps, relays setup errors,
//! forwards signals, enforces the timeout and returns the exit code.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Instant;

use std::collections::HashMap;

use egress_proxy::ca::SessionCa;
use egress_proxy::credentials::CredentialSpec;
use egress_proxy::proxy::Interception;
use egress_proxy::secrets::Credentials;
use egress_proxy::{AuditLog, Limits, Proxy, SessionProxy};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cgroup;
use crate::egress::{CaBundle, ProxyPlacement};
use crate::error::SetupError;
use crate::init::{self, Channels};
use crate::namespaces::{self, Side};
use crate::plan::SandboxPlan;
use crate::session::SessionDir;
use crate::signals;

/// Exit code when the timeout killed the sandbox (as `timeout(1)`).
pub const TIMED_OUT: i32 = 124;

/// Exit code when an escalated SIGINT/SIGTERM killed the sandbox (128 +
/// SIGKILL, as `timeout -k`).
pub const KILLED: i32 = 137;

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The agent's status (128+N for a signal).
    Exited(i32),
    /// `--timeout` expired and the sandbox was killed.
    TimedOut,
    /// A second SIGINT/SIGTERM, or `--kill-after` past the first, killed
    /// the whole sandbox (exit 137, as `timeout -k`).
    Killed,
}

impl Outcome {
    /// The exit code `sandbox` returns.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Exited(c) => c,
            Outcome::TimedOut => TIMED_OUT,
            Outcome::Killed => KILLED,
        }
    }
}

/// Runs the plan to completion, recording it in the audit trail. Must be
/// called while single-threaded.
pub fn run(plan: &SandboxPlan) -> Result<Outcome, SetupError> {
    let mut audit = crate::audit::open(plan)?;
    let interception = match prepare_interception(plan) {
        Ok(i) => i,
        Err(e) => {
            audit.start(plan);
            audit.isolation_failure(&e);
            audit.end(Err(&e), None);
            return Err(e);
        }
    };
    if let Some(i) = &interception {
        audit.set_redactions(i.credentials.redactions());
    }
    // A full session records its start while init builds the sandbox, and
    // its end itself (while init's exit runs); the degraded one returns
    // its usage for the end.
    let result = match plan.isolation {
        crate::degraded::Isolation::Full => {
            run_session(plan, &audit, interception).map(|o| (o, None))
        }
        crate::degraded::Isolation::LandlockOnly => {
            audit.start(plan);
            crate::degraded::run_session(plan, &audit, interception).map(|(o, u)| (o, Some(u)))
        }
    };
    match &result {
        Ok((_, None)) => {}
        Ok((outcome, Some(usage))) => audit.end(Ok(*outcome), Some(usage)),
        Err(e) => {
            // (Unless the session failed before it was recorded.)
            audit.start(plan);
            audit.isolation_failure(e);
            audit.end(Err(e), None);
        }
    }
    result.map(|(outcome, _)| outcome)
}

/// One session from the session directory to teardown; records its end
/// (with what it used, from the cgroup) and returns how it ended. Nothing
/// fails once the end is recorded.
fn run_session(
    plan: &SandboxPlan,
    audit: &crate::audit::SessionAudit,
    interception: Option<Interception>,
) -> Result<Outcome, SetupError> {
    let started = Instant::now();
    let id = &plan.identity;
    let session = SessionDir::create(
        &plan.session_dir,
        id.privileged.then_some((id.outer_uid, id.outer_gid)),
    )?;
    // Held for the whole session: closing it tells a shared sidecar to
    // remove this session's socket.
    let sidecar = crate::sidecar::open(plan)?;
    let egress = prepare_egress(plan, audit.log.clone(), interception)?;
    // Before the clone: a limit that cannot be applied stops the run here.
    let cgroup = cgroup::Session::create(&cgroup_name(plan), &plan.limits)?;
    for w in cgroup::warnings(cgroup.skipped()) {
        eprintln!("{w}");
    }
    // As root: the writable trees, idmapped onto the agent (init attaches
    // them); a tree that cannot be idmapped stops the run here.
    let idmapped = crate::idmap::Detached::prepare(&plan.mounts)?;
    // Whatever the agent changes is newer than this (see `surface.rs`).
    let since = crate::surface::Since::now();
    let (go_read, go_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let (status_read, status_write) = pipe()?;
    let mask = signals::supervised();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| SetupError::io("supervisor", "block signals", e))?;

    // Init hands the proxy ports over in both placements: to the session
    // proxy, or to our relay to a sidecar (which connects with our ids:
    // see `relay.rs`).
    let (handoff_ours, handoff_init) = if plan.egress.relay_ports.is_empty() {
        (None, None)
    } else {
        let (a, b) = crate::handoff::pair()?;
        (Some(a), Some(b))
    };
    let cgroup_fd = cgroup.v2_fd();
    // Init is born in the v1 groups too: we step into them for the clone.
    let in_v1 = cgroup.enter_v1();
    let cloned = namespaces::clone_into_namespaces(cgroup_fd.as_ref());
    if in_v1 {
        if let Ok((Side::Child, _)) = &cloned {
            // Init: its groups are the session's, where it stays.
        } else if let Err(e) = cgroup.leave_v1() {
            if let Ok((Side::Parent(pid), _)) = &cloned {
                let _ = KillOnDrop(*pid);
            }
            return Err(e);
        }
    }
    let (side, in_v2) = cloned?;
    drop(cgroup_fd);
    let child = match side {
        Side::Child => {
            drop(egress);
            drop(sidecar);
            drop(go_write);
            drop(err_read);
            drop(status_read);
            drop(handoff_ours);
            init::run(
                plan,
                &session.root(),
                Channels {
                    go: go_read,
                    errors: err_write,
                    handoff: handoff_init,
                    status: status_write,
                    idmapped,
                    since,
                },
            )
        }
        Side::Parent(pid) => pid,
    };
    drop(idmapped);
    drop(go_read);
    drop(err_write);
    drop(status_write);
    drop(handoff_init);
    // From here on, any early return must not leave the child behind.
    let guard = KillOnDrop(child);
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| SetupError::io("supervisor", "signalfd", e))?;
    namespaces::write_id_maps(child, &plan.identity)?;
    // "go" first, so init builds the sandbox while the cgroup migration
    // (several ms of kernel locking on v1) runs; init waits for the second
    // byte before it forks the agent, so the agent is born in the cgroup.
    nix::unistd::write(&go_write, b"1")
        .map_err(|e| SetupError::io("supervisor", "start init", e))?;
    // Recorded before the agent can start (init waits for "2").
    audit.start(plan);
    cgroup.attach_where_needed(child, in_v2, in_v1)?;
    nix::unistd::write(&go_write, b"2")
        .map_err(|e| SetupError::io("supervisor", "start init", e))?;
    // The proxy ports arrive before init starts the agent (or the channel
    // closes because init failed: then the error pipe says why).
    let ports = handoff_ours
        .as_ref()
        .map(crate::handoff::receive)
        .unwrap_or_default();
    if handoff_ours.is_some() && ports.len() != plan.egress.relay_ports.len() {
        // Init failed before it could hand them over (its error says why),
        // or the handover itself broke: either way, no half-wired network.
        // (Returning drops the guard: init is killed and reaped.)
        let setup_error = read_all(err_read);
        return Err(if setup_error.is_empty() {
            SetupError::new(
                "network",
                format!(
                    "init handed over {} of {} proxy ports",
                    ports.len(),
                    plan.egress.relay_ports.len()
                ),
            )
        } else {
            parse_setup_error(&setup_error)
        });
    }
    let agent = egress_proxy::audit::Peer {
        pid: None,
        uid: plan.identity.outer_uid,
        gid: plan.identity.outer_gid,
    };
    let sidecar_target = sidecar
        .as_ref()
        .map(|s| s.path.clone())
        .unwrap_or_else(|| plan.egress.host_socket.clone());
    let (ports, _sidecar_relay) = if egress.is_none() && !ports.is_empty() {
        let relay = crate::sidecar::relay(ports, sidecar_target, audit.log.clone())?;
        (Vec::new(), Some(relay))
    } else {
        (ports, None)
    };
    // Idle until the sandbox connects: the wait below starts it.
    let mut session_proxy = match egress {
        Some((listener, proxy)) => Some(
            SessionProxy::idle(
                listener,
                ports.into_iter().map(|l| (l, agent)).collect(),
                proxy,
            )
            .map_err(|e| SetupError::io("network", "start the egress proxy", e))?,
        ),
        None => None,
    };

    let setup_error = read_all(err_read);
    if !setup_error.is_empty() {
        let _ = waitpid(child, None);
        std::mem::forget(guard);
        return Err(parse_setup_error(&setup_error));
    }
    // The agent has started, so init's mounts are in place: they hold the
    // new root and the files bound from the session directory (the egress
    // socket, the CA bundle), and their names on the host are no longer
    // needed. Removing the directory now takes it off the path from the
    // agent's exit to ours, and leaves nothing behind should the
    // supervisor be killed.
    drop(session);
    // While the agent runs: groups of earlier sessions whose supervisor
    // was killed before its teardown.
    cgroup.sweep_stale();
    let (outcome, reaped) = wait(
        child,
        &sfd,
        plan.timeout.map(|t| started + t),
        plan.kill_after,
        &cgroup,
        session_proxy.as_mut(),
        Some(&status_read),
    );
    // The agent and everything it started are gone: init reported the
    // status only after killing and reaping them (or init itself is gone).
    // What may remain is init's own exit, the teardown of the sandbox's
    // namespaces; ours runs meanwhile. The sandbox's connections are
    // closing: the proxy records them (dropping it below waits for that).
    if let Some(p) = &mut session_proxy {
        p.begin_stop();
    }
    let usage = cgroup.usage();
    drop(session_proxy);
    if let Some(sc) = &sidecar {
        if !sc.sidecar_alive() {
            audit.proxy_error(
                "the egress sidecar went away during the session: from then on the sandbox \
                 had no way out",
            );
        }
    }
    drop(sidecar);
    // Nothing of the agent runs any more (init reported after killing
    // everything, or the whole cgroup was killed): check what it left.
    check_workspace(plan, audit, since);
    audit.end(Ok(outcome), Some(&usage));
    if !reaped {
        reap(child);
    }
    std::mem::forget(guard);
    // No kill first: init's exit took every process of its PID namespace
    // with it, and only those can be in the cgroup. Should one remain,
    // dropping the cgroup kills it before removing the directory (the
    // second lock on the door).
    drop(cgroup);
    // Kept open until init is gone: its hang-up means "the supervisor
    // died".
    drop(go_write);
    Ok(outcome)
}

/// Quarantines what the agent changed of the workspace's code surface
/// (`surface.rs`), on stderr and in the audit trail.
pub(crate) fn check_workspace(
    plan: &SandboxPlan,
    audit: &crate::audit::SessionAudit,
    since: crate::surface::Since,
) {
    let cache = listings_dir(plan.identity.privileged);
    for finding in crate::surface::check_with(
        &plan.writable,
        &plan.protect,
        since,
        cache.as_deref(),
        plan.identity.privileged,
    ) {
        eprintln!("{}", finding.line());
        audit.tamper(&finding);
    }
}

/// Where the supervisor keeps the workspace check's directory listings
/// (`surface::check_with`): `/run/airlock/listings` as root, else
/// `$XDG_RUNTIME_DIR/airlock-listings`. They decide what the check skips,
/// so a directory anyone else could write (or a symlink) is never used:
/// then every directory is listed.
fn listings_dir(privileged: bool) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = if privileged {
        std::path::PathBuf::from("/run/airlock/listings")
    } else {
        std::path::PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?).join("airlock-listings")
    };
    if !dir.is_absolute() {
        return None;
    }
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir);
    let me = nix::unistd::geteuid().as_raw();
    let ours = |p: &std::path::Path| {
        std::fs::symlink_metadata(p).is_ok_and(|m| {
            m.is_dir() && m.uid() == me && (m.mode() & 0o022 == 0 || m.mode() & 0o1000 != 0)
        })
    };
    let private = std::fs::symlink_metadata(&dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o077 == 0);
    (private && dir.parent().is_some_and(ours)).then_some(dir)
}

/// Waits for `child` to be gone.
fn reap(child: Pid) {
    while let Err(nix::errno::Errno::EINTR) = waitpid(child, None) {}
}

/// `airlock-<first 16 hex digits of the session id>-<our PID namespace>-<our
/// pid>` ([`cgroup::group_name`]).
pub(crate) fn cgroup_name(plan: &SandboxPlan) -> String {
    let short: String = plan.session_id.chars().take(16).collect();
    cgroup::group_name(&short)
}

/// Binds the session proxy's socket (before the clone, so init can mount
/// it) and writes the sandbox's trust bundle when TLS is intercepted. Fails
/// closed if either is impossible.
pub(crate) fn prepare_egress(
    plan: &SandboxPlan,
    audit: Arc<AuditLog>,
    interception: Option<Interception>,
) -> Result<Option<(UnixListener, Arc<Proxy>)>, SetupError> {
    let ProxyPlacement::Session { policy, .. } = &plan.egress.proxy else {
        return Ok(None);
    };
    if let (Some(bundle), Some(i)) = (&plan.egress.ca_bundle, &interception) {
        write_bundle(bundle, &i.ca)?;
    }
    let path = &plan.egress.host_socket;
    let listener = UnixListener::bind(path)
        .map_err(|e| SetupError::io("network", format!("listen on {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| SetupError::io("network", format!("chmod {}", path.display()), e))?;
    let id = &plan.identity;
    if id.privileged {
        // The relay in init runs as the agent's uid and must connect.
        std::os::unix::fs::chown(path, Some(id.outer_uid), Some(id.outer_gid))
            .map_err(|e| SetupError::io("network", format!("chown {}", path.display()), e))?;
    }
    Ok(Some((
        listener,
        Proxy::with_interception(policy.clone(), Limits::default(), audit, interception),
    )))
}

/// Reads the credentials' secrets and makes the session CA, when the
/// session proxy intercepts TLS. A missing secret stops the run.
fn prepare_interception(plan: &SandboxPlan) -> Result<Option<Interception>, SetupError> {
    let ProxyPlacement::Session {
        credentials,
        placeholders,
        upstream_ca,
        ..
    } = &plan.egress.proxy
    else {
        return Ok(None);
    };
    if plan.egress.ca_bundle.is_none() {
        return Ok(None);
    }
    interception(plan, credentials, placeholders, upstream_ca).map(Some)
}

/// The system bundle plus the session CA, readable by the agent.
fn write_bundle(bundle: &CaBundle, ca: &SessionCa) -> Result<(), SetupError> {
    let system = bundle
        .system_path
        .as_ref()
        .map(std::fs::read_to_string)
        .transpose()
        .map_err(|e| SetupError::io("credentials", "read the system CA bundle", e))?
        .unwrap_or_default();
    let mut text = system;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(ca.cert_pem());
    std::fs::write(&bundle.host_file, text).map_err(|e| {
        SetupError::io(
            "credentials",
            format!("write {}", bundle.host_file.display()),
            e,
        )
    })?;
    std::fs::set_permissions(&bundle.host_file, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| SetupError::io("credentials", "chmod the CA bundle", e))
}

fn interception(
    plan: &SandboxPlan,
    specs: &[CredentialSpec],
    placeholders: &[(String, String, String)],
    upstream_ca: &[std::path::PathBuf],
) -> Result<Interception, SetupError> {
    let ph: HashMap<String, String> = placeholders
        .iter()
        .map(|(name, _, value)| (name.clone(), value.clone()))
        .collect();
    let credentials = Credentials::load_all(specs, &|var| std::env::var(var).ok(), &ph)
        .map_err(|e| SetupError::new("credentials", e.to_string()))?;
    let ca = SessionCa::generate(&plan.session_id)
        .map_err(|e| SetupError::new("credentials", format!("session CA: {e}")))?;
    let upstream_tls = egress_proxy::tls::upstream_config(upstream_ca)
        .map_err(|e| SetupError::new("credentials", e.to_string()))?;
    Ok(Interception {
        credentials,
        ca: Arc::new(ca),
        upstream_tls,
    })
}

pub(crate) struct KillOnDrop(pub(crate) Pid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
        let _ = waitpid(self.0, None);
    }
}

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), SetupError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SetupError::io("supervisor", "pipe", e))
}

pub(crate) fn read_all(fd: OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match nix::unistd::read(&fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Init and the agent report "layer: message".
pub(crate) fn parse_setup_error(text: &str) -> SetupError {
    const LAYERS: &[&str] = &[
        "namespaces",
        "cgroup",
        "rlimits",
        "mounts",
        "network",
        "identity",
        "capabilities",
        "landlock",
        "seccomp",
        "workspace",
        "credentials",
        "audit",
        "agent",
        "init",
    ];
    if let Some((layer, message)) = text.split_once(": ") {
        if let Some(known) = LAYERS.iter().find(|l| **l == layer) {
            return SetupError::new(known, message.trim_end());
        }
    }
    SetupError::new("init", text.trim_end())
}

/// Waits for init, forwarding signals, enforcing the deadline, and
/// starting the session proxy when the sandbox first connects. Returns
/// how the session ended and whether `child` was reaped: with a `status`
/// pipe, init reports the agent's status once it is the sandbox's last
/// process, and this returns then, before init's own exit is over.
pub(crate) fn wait(
    child: Pid,
    sfd: &SignalFd,
    deadline: Option<Instant>,
    kill_after: Option<std::time::Duration>,
    cgroup: &cgroup::Session,
    mut proxy: Option<&mut SessionProxy>,
    mut status: Option<&OwnedFd>,
) -> (Outcome, bool) {
    let mut escalation = signals::Escalation::new(kill_after);
    let kill_everything = || {
        cgroup.kill_all();
        let _ = kill(child, Signal::SIGKILL);
        reap(child);
    };
    loop {
        if let Some(code) = exited(child) {
            return (Outcome::Exited(code), true);
        }
        let escalated = escalation.deadline();
        let next = match (deadline, escalated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = match next {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    kill_everything();
                    if deadline.is_some_and(|t| t <= d) {
                        return (Outcome::TimedOut, true);
                    }
                    eprintln!(
                        "sandbox: still running {:?} after SIGINT/SIGTERM (--kill-after): \
                         killed the whole sandbox",
                        kill_after.unwrap_or_default()
                    );
                    return (Outcome::Killed, true);
                }
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        let (signalled, reported, connected) = {
            let idle = proxy.as_ref().map(|p| p.idle_fds()).unwrap_or_default();
            let mut fds: Vec<PollFd> = [Some(sfd.as_fd()), status.map(|s| s.as_fd())]
                .into_iter()
                .flatten()
                .chain(idle)
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, timeout) {
                Ok(0) | Err(_) => continue,
                Ok(_) => {}
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let watched = 1 + usize::from(status.is_some());
            (
                ready(&fds[0]),
                status.is_some() && ready(&fds[1]),
                fds[watched..].iter().any(ready),
            )
        };
        if let (true, Some(pipe)) = (reported, status) {
            let mut code = [0u8; 4];
            match nix::unistd::read(pipe, &mut code) {
                Ok(4) => return (Outcome::Exited(i32::from_le_bytes(code)), false),
                Err(nix::errno::Errno::EINTR) => {}
                // Init is gone without a report (it failed, or was
                // killed): reaping it gives the status.
                _ => status = None,
            }
        }
        if connected {
            if let Some(p) = proxy.as_deref_mut() {
                // On failure the proxy recorded it and closed its sockets:
                // the sandbox's connections are refused, nothing gets out.
                let _ = p.run_now();
            }
        }
        if !signalled {
            continue;
        }
        if let Ok(Some(info)) = sfd.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo != libc::SIGCHLD {
                if let Ok(sig) = Signal::try_from(signo) {
                    match escalation.on_signal(sig, Instant::now()) {
                        signals::Action::Forward => {
                            let _ = kill(child, sig);
                        }
                        signals::Action::KillSandbox => {
                            kill_everything();
                            eprintln!(
                                "sandbox: {sig} again within {:?}: killed the whole sandbox",
                                signals::SECOND_SIGNAL_GRACE
                            );
                            return (Outcome::Killed, true);
                        }
                    }
                }
            }
        }
    }
}

fn exited(child: Pid) -> Option<i32> {
    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
        Ok(_) => None,
        Err(_) => Some(init::SETUP_FAILED),
    }
}
