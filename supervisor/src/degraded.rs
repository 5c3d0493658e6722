//! `sandbox run --isolation=landlock-only`: the explicitly named degraded
//! mode for hosts and containers where user namespaces are unavailable
//! (Docker's and Kubernetes' default seccomp profiles refuse `unshare`/
//! `clone(CLONE_NEWUSER)`). Never chosen automatically.
//!
//! What still holds: no capabilities, `no_new_privs`, the same seccomp deny
//! table (so no UDP, raw, netlink or vsock sockets), and a Landlock domain
//! built from the same plan: filesystem rights on the host's own paths, no
//! TCP connect or bind at all (ABI 4), no abstract Unix sockets and no
//! signals out of the domain (ABI 6). The agent's only way out is the egress
//! proxy's Unix socket, named in `AIRLOCK_EGRESS_SOCKET` and in the proxy
//! variables as `socks5h://localhost/PATH` (curl 7.84+; tools that only
//! speak TCP proxies have no network).
//!
//! What is lost, honestly (docs/KUBERNETES.md repeats it): the agent sees
//! the host's (container's) processes in /proc and its mount table; paths
//! outside the grants are invisible to `open` but their names can still be
//! learned by other means; pathname Unix sockets that file permissions let
//! the agent's uid connect to are reachable (Landlock does not mediate
//! `connect(2)` on them); policy `deny` paths beneath a granted directory
//! are carved out by granting their siblings instead (files created there
//! later are not granted); /tmp and the home directory are private
//! directories in the session directory, not tmpfs mounts; resource limits
//! other than the timeout are not applied.

use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};

use crate::error::SetupError;
use crate::landlock::{self, FsAccess, FsRule, LandlockPlan};
use crate::mounts::MountStep;
use crate::plan::SandboxPlan;

/// The Landlock ABI this mode needs: 6 (Linux 6.12+) for TCP rules,
/// abstract Unix socket scoping and signal scoping, since there is no
/// network or PID namespace behind them.
pub const MIN_ABI: i32 = 6;

/// The line `sandbox run --isolation=landlock-only` prints on stderr at
/// every start: what this mode does not isolate (the module comment says
/// why), so nobody mistakes it for the full sandbox.
pub const NOT_ISOLATED: &str = "sandbox: warning: --isolation=landlock-only has no namespaces: \
     the agent sees the host's processes (/proc), mount table, hostname and System V IPC, and \
     can connect to pathname Unix sockets its uid may open; only Landlock, seccomp and dropped \
     capabilities confine it";

/// Which isolation `sandbox run` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Namespaces, mounts, Landlock, seccomp, capabilities (the default).
    #[default]
    Full,
    /// No namespaces: Landlock, seccomp, capabilities only.
    LandlockOnly,
}

impl Isolation {
    /// Parses `--isolation`.
    pub fn parse(s: &str) -> Result<Self, SetupError> {
        match s {
            "full" => Ok(Self::Full),
            "landlock-only" => Ok(Self::LandlockOnly),
            other => Err(SetupError::new(
                "isolation",
                format!("--isolation {other}: expected full or landlock-only"),
            )),
        }
    }

    /// The name recorded in `session.start` (`airlock.isolation`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::LandlockOnly => "landlock-only",
        }
    }
}

/// The degraded session, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DegradedPlan {
    /// Landlock rules on host paths; no TCP port allowed.
    pub landlock: LandlockPlan,
    /// Private directories to create (agent-owned, 0700): /tmp and home.
    pub private_dirs: Vec<PathBuf>,
    /// The agent's environment.
    pub env: Vec<(String, String)>,
}

/// Refuses unless the kernel's Landlock can stand in for the namespaces.
pub fn check_abi(abi: i32) -> Result<(), SetupError> {
    if abi >= MIN_ABI {
        return Ok(());
    }
    let have = if abi < 1 {
        "no Landlock".to_string()
    } else {
        format!("Landlock ABI {abi}")
    };
    Err(SetupError::new(
        "landlock",
        format!(
            "--isolation=landlock-only needs Landlock ABI {MIN_ABI} (Linux 6.12+: TCP rules, \
             abstract-socket and signal scoping stand in for the missing namespaces); this \
             kernel offers {have}. Nothing ran. Run 'sandbox doctor'"
        ),
    ))
}

/// Builds the degraded plan from the full one. `list_dir` lists a
/// directory's entries (full paths), for carving out denied paths.
pub fn plan(
    full: &SandboxPlan,
    list_dir: &dyn Fn(&Path) -> Vec<PathBuf>,
) -> Result<DegradedPlan, SetupError> {
    // Without a mount namespace nothing can be idmapped: the agent would
    // run unable to write the tree. Say so instead.
    if let Some(MountStep::IdmappedBind { source, map, .. }) = full
        .mounts
        .iter()
        .find(|m| matches!(m, MountStep::IdmappedBind { .. }))
    {
        return Err(SetupError::new(
            "identity",
            format!(
                "--isolation landlock-only has no mount namespace, so {} (owned by uid {}) \
                 cannot be idmapped and the agent (uid {}) could not write it. Fix: use full \
                 isolation, or pass --uid/--gid of the tree's owner (never 0), or chown it to \
                 the agent's uid",
                source.display(),
                map.owner_uid,
                map.agent_uid
            ),
        ));
    }
    let session = &full.session_dir;
    let tmp = session.join("tmp");
    let home = session.join("home");
    let home_inside = full
        .env
        .iter()
        .find(|(k, _)| k == "HOME")
        .map(|(_, v)| PathBuf::from(v));
    let mut denied: Vec<PathBuf> = Vec::new();
    let mut read_only_again: Vec<PathBuf> = Vec::new();
    for step in &full.mounts {
        match step {
            MountStep::MaskFile { target } | MountStep::MaskDir { target } => {
                denied.push(target.clone())
            }
            MountStep::ReadOnlyAgain { target }
            | MountStep::SelfBind {
                target,
                writable: false,
            } => read_only_again.push(target.clone()),
            _ => {}
        }
    }
    let mut rules = Vec::new();
    for rule in &full.landlock.fs {
        // Where this path comes from on the host.
        let source = full.mounts.iter().find_map(|m| match m {
            MountStep::Bind { source, target, .. }
            | MountStep::IdmappedBind { source, target, .. }
                if *target == rule.path =>
            {
                Some(source.clone())
            }
            _ => None,
        });
        let is_tmpfs = full
            .mounts
            .iter()
            .any(|m| matches!(m, MountStep::Tmpfs { target, .. } if *target == rule.path));
        let path = if rule.path == Path::new("/tmp") {
            tmp.clone()
        } else if Some(&rule.path) == home_inside.as_ref() {
            home.clone()
        } else if is_tmpfs {
            // Another private tmpfs (e.g. /dev/shm): the host's is shared,
            // so it is not granted.
            continue;
        } else {
            source.unwrap_or_else(|| rule.path.clone())
        };
        if rule.path == Path::new("/") {
            rules.push(FsRule {
                path,
                access: rule.access,
            });
            continue;
        }
        carve(&path, rule.access, &denied, list_dir, &mut rules);
    }
    // Protected paths in writable trees (.git/hooks...): writable grants
    // are carved around them and they are granted read-only.
    let mut final_rules = Vec::new();
    for rule in rules {
        if rule.access == FsAccess::ReadWrite {
            carve(
                &rule.path,
                rule.access,
                &read_only_again,
                list_dir,
                &mut final_rules,
            );
        } else {
            final_rules.push(rule);
        }
    }
    for p in &read_only_again {
        if final_rules.iter().any(|r| p.starts_with(&r.path)) || p.exists() {
            final_rules.push(FsRule {
                path: p.clone(),
                access: FsAccess::ReadOnly,
            });
        }
    }
    final_rules.push(FsRule {
        path: tmp.clone(),
        access: FsAccess::ReadWrite,
    });
    final_rules.push(FsRule {
        path: home.clone(),
        access: FsAccess::ReadWrite,
    });
    final_rules.sort_by(|a, b| a.path.cmp(&b.path));
    final_rules.dedup();
    Ok(DegradedPlan {
        landlock: LandlockPlan {
            fs: final_rules,
            tcp_connect: Vec::new(),
        },
        private_dirs: vec![tmp.clone(), home.clone()],
        env: environment(full, &tmp, &home),
    })
}

/// Grants `access` beneath `path` except beneath every path in `holes`:
/// Landlock cannot deny beneath an allowed directory, so a directory that
/// contains a hole is replaced by its entries, recursively.
fn carve(
    path: &Path,
    access: FsAccess,
    holes: &[PathBuf],
    list_dir: &dyn Fn(&Path) -> Vec<PathBuf>,
    out: &mut Vec<FsRule>,
) {
    if holes.iter().any(|h| h == path) {
        return;
    }
    if !holes.iter().any(|h| h.starts_with(path)) {
        out.push(FsRule {
            path: path.to_path_buf(),
            access,
        });
        return;
    }
    // The directory itself stays listable; its entries are granted one by one.
    out.push(FsRule {
        path: path.to_path_buf(),
        access: FsAccess::ListOnly,
    });
    for entry in list_dir(path) {
        carve(&entry, access, holes, list_dir, out);
    }
}

fn environment(full: &SandboxPlan, tmp: &Path, home: &Path) -> Vec<(String, String)> {
    const PROXY_VARS: &[&str] = &["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"];
    let socket = full.egress.host_socket.display().to_string();
    let url = format!("socks5h://localhost{socket}");
    let mut env: Vec<(String, String)> = full
        .env
        .iter()
        .filter(|(k, _)| {
            !PROXY_VARS.iter().any(|p| k.eq_ignore_ascii_case(p))
                && !matches!(k.as_str(), "HOME" | "TMPDIR")
        })
        .cloned()
        .collect();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        env.push((name.to_string(), url.clone()));
        env.push((name.to_lowercase(), url.clone()));
    }
    env.push(("AIRLOCK_EGRESS_SOCKET".into(), socket));
    env.push(("AIRLOCK_ISOLATION".into(), "landlock-only".into()));
    env.push(("HOME".into(), home.display().to_string()));
    env.push(("TMPDIR".into(), tmp.display().to_string()));
    env
}

fn list_dir(path: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(path) {
        Ok(d) => {
            let mut v: Vec<PathBuf> = d.flatten().map(|e| e.path()).collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

/// Host paths that do not exist cannot carry a rule (e.g. /lib32 on a
/// system without it): they are dropped, which only removes a grant.
fn existing(mut plan: LandlockPlan) -> LandlockPlan {
    plan.fs.retain(|r| r.path.exists());
    plan
}

/// Prepares the degraded session and returns the agent's plan: the full
/// plan with the degraded Landlock rules and environment. Fails closed
/// when Landlock is too old.
pub fn prepare(full: &SandboxPlan) -> Result<SandboxPlan, SetupError> {
    check_abi(landlock::kernel_abi())?;
    let degraded = plan(full, &list_dir)?;
    let id = &full.identity;
    for dir in &degraded.private_dirs {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| SetupError::io("isolation", format!("create {}", dir.display()), e))?;
        if id.privileged {
            std::os::unix::fs::chown(dir, Some(id.outer_uid), Some(id.outer_gid))
                .map_err(|e| SetupError::io("isolation", format!("chown {}", dir.display()), e))?;
        }
    }
    let mut agent = full.clone();
    agent.landlock = existing(degraded.landlock);
    agent.env = degraded.env;
    Ok(agent)
}

/// The forked agent: become the agent's user (as root), die with the
/// supervisor, drop every capability (which sets `no_new_privs`), then the
/// agent's own steps (setsid, Landlock, seccomp, execve). Never returns.
pub fn exec_agent(agent: &SandboxPlan, errors: OwnedFd) -> ! {
    let setup = || -> Result<(), SetupError> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .map_err(|e| SetupError::io("agent", "set parent-death signal", e))?;
        let id = &agent.identity;
        if id.privileged {
            // Keep the permitted set across setresuid so that drop_all can
            // still empty the bounding set (that needs CAP_SETPCAP), then
            // empty everything.
            nix::sys::prctl::set_keepcaps(true)
                .map_err(|e| SetupError::io("capabilities", "keep caps across setuid", e))?;
            let gid = Gid::from_raw(id.outer_gid);
            let uid = Uid::from_raw(id.outer_uid);
            nix::unistd::setgroups(&[gid])
                .map_err(|e| SetupError::io("identity", "drop supplementary groups", e))?;
            nix::unistd::setresgid(gid, gid, gid)
                .map_err(|e| SetupError::io("identity", "setresgid", e))?;
            nix::unistd::setresuid(uid, uid, uid)
                .map_err(|e| SetupError::io("identity", "setresuid", e))?;
            let permitted = ::caps::read(None, ::caps::CapSet::Permitted)
                .map_err(|e| SetupError::io("capabilities", "read permitted", e))?;
            ::caps::set(None, ::caps::CapSet::Effective, &permitted)
                .map_err(|e| SetupError::io("capabilities", "raise effective", e))?;
            nix::sys::prctl::set_keepcaps(false)
                .map_err(|e| SetupError::io("capabilities", "clear keepcaps", e))?;
        }
        crate::caps::drop_all()?;
        nix::unistd::chdir(&agent.cwd).map_err(|e| {
            SetupError::io("workspace", format!("chdir {}", agent.cwd.display()), e)
        })?;
        Ok(())
    };
    match setup() {
        Ok(()) => crate::agent::exec(agent, errors),
        Err(e) => {
            let code = crate::init::report(&errors, &e);
            // SAFETY: ends this forked child without running the
            // supervisor's destructors.
            unsafe { libc::_exit(code) }
        }
    }
}

/// Runs the session without namespaces: fork, confine, exec; the
/// supervisor forwards signals, enforces the timeout, and at the end kills
/// the agent's process group (descendants that left it are not tracked:
/// no PID namespace), then the session cgroup's kill catches everything
/// else that descends from it.
pub fn run_session(
    plan: &SandboxPlan,
    audit: &crate::audit::SessionAudit,
    interception: Option<egress_proxy::proxy::Interception>,
) -> Result<(crate::run::Outcome, crate::cgroup::Usage), SetupError> {
    use nix::sys::signal::{kill, SigmaskHow, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use nix::unistd::{ForkResult, Pid};

    eprintln!("{NOT_ISOLATED}");
    let started = std::time::Instant::now();
    let id = &plan.identity;
    let session = crate::session::SessionDir::create(
        &plan.session_dir,
        id.privileged.then_some((id.outer_uid, id.outer_gid)),
    )?;
    let agent = prepare(plan)?;
    let sidecar = crate::sidecar::open(plan)?;
    let egress = crate::run::prepare_egress(plan, audit.log.clone(), interception)?;
    let cgroup = crate::cgroup::Session::create(&crate::run::cgroup_name(plan), &plan.limits)?;
    for w in crate::cgroup::warnings(cgroup.skipped()) {
        eprintln!("{w}");
    }
    let since = crate::surface::Since::now();
    let (err_read, err_write) = crate::run::pipe()?;
    // The agent waits for "go" until it is in the session cgroup.
    let (go_read, go_write) = crate::run::pipe()?;
    let mask = crate::signals::supervised();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| SetupError::io("supervisor", "block signals", e))?;
    // The agent is born in the v1 groups: we step into them for the fork.
    let in_v1 = cgroup.enter_v1();
    // SAFETY: the supervisor is single-threaded here (the session proxy's
    // thread starts after the fork), so the child may allocate.
    let forked = unsafe { nix::unistd::fork() };
    if in_v1 && !matches!(forked, Ok(ForkResult::Child)) {
        if let Err(e) = cgroup.leave_v1() {
            if let Ok(ForkResult::Parent { child }) = forked {
                drop(crate::run::KillOnDrop(child));
            }
            return Err(e);
        }
    }
    let child = match forked {
        Ok(ForkResult::Child) => {
            drop(egress);
            drop(sidecar);
            drop(err_read);
            drop(go_write);
            let mut byte = [0u8; 1];
            if !matches!(nix::unistd::read(&go_read, &mut byte), Ok(1)) {
                // SAFETY: the supervisor is gone; leave without its destructors.
                unsafe { libc::_exit(crate::init::SETUP_FAILED) }
            }
            drop(go_read);
            exec_agent(&agent, err_write)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(SetupError::io("supervisor", "fork", e)),
    };
    drop(err_write);
    drop(go_read);
    let guard = crate::run::KillOnDrop(child);
    cgroup.attach_where_needed(child, false, in_v1)?;
    nix::unistd::write(&go_write, b"1")
        .map_err(|e| SetupError::io("supervisor", "start the agent", e))?;
    drop(go_write);
    cgroup.sweep_stale();
    // Idle until the agent connects: the wait below starts it.
    let mut session_proxy = match egress {
        Some((listener, proxy)) => Some(
            egress_proxy::SessionProxy::idle(listener, Vec::new(), proxy)
                .map_err(|e| SetupError::io("network", "start the egress proxy", e))?,
        ),
        None => None,
    };
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| SetupError::io("supervisor", "signalfd", e))?;
    let setup_error = crate::run::read_all(err_read);
    if !setup_error.is_empty() {
        let _ = nix::sys::wait::waitpid(child, None);
        std::mem::forget(guard);
        return Err(crate::run::parse_setup_error(&setup_error));
    }
    let (outcome, _) = crate::run::wait(
        child,
        &sfd,
        plan.timeout.map(|t| started + t),
        plan.kill_after,
        &cgroup,
        session_proxy.as_mut(),
        None,
    );
    std::mem::forget(guard);
    // The agent called setsid(): its pid is its process group's id.
    let _ = kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL);
    cgroup.kill_all();
    let usage = cgroup.usage();
    drop(cgroup);
    drop(session_proxy);
    drop(sidecar);
    drop(session);
    crate::run::check_workspace(plan, audit, since);
    Ok((outcome, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lister(
        tree: &'static [(&'static str, &'static [&'static str])],
    ) -> impl Fn(&Path) -> Vec<PathBuf> {
        move |p: &Path| {
            tree.iter()
                .find(|(d, _)| Path::new(d) == p)
                .map(|(d, e)| e.iter().map(|n| Path::new(d).join(n)).collect())
                .unwrap_or_default()
        }
    }

    #[test]
    fn a_denied_file_under_a_granted_directory_is_carved_out() {
        let list = lister(&[
            ("/etc", &["hosts", "shadow", "ssl"]),
            ("/etc/ssl", &["certs", "private"]),
        ]);
        let mut out = Vec::new();
        let holes = vec![
            PathBuf::from("/etc/shadow"),
            PathBuf::from("/etc/ssl/private"),
        ];
        carve(
            Path::new("/etc"),
            FsAccess::ReadOnly,
            &holes,
            &list,
            &mut out,
        );
        let got: Vec<(String, FsAccess)> = out
            .iter()
            .map(|r| (r.path.display().to_string(), r.access))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/etc".into(), FsAccess::ListOnly),
                ("/etc/hosts".into(), FsAccess::ReadOnly),
                ("/etc/ssl".into(), FsAccess::ListOnly),
                ("/etc/ssl/certs".into(), FsAccess::ReadOnly),
            ]
        );
    }

    #[test]
    fn a_grant_without_holes_stays_one_rule() {
        let mut out = Vec::new();
        carve(
            Path::new("/usr"),
            FsAccess::ReadOnly,
            &[PathBuf::from("/etc/shadow")],
            &|_| panic!("no listing needed"),
            &mut out,
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn landlock_only_refuses_kernels_without_scoping() {
        for (abi, ok) in [
            (0, false),
            (1, false),
            (4, false),
            (5, false),
            (6, true),
            (7, true),
        ] {
            assert_eq!(check_abi(abi).is_ok(), ok, "ABI {abi}");
        }
        let msg = check_abi(0).unwrap_err().to_string();
        assert!(
            msg.contains("no Landlock") && msg.contains("sandbox doctor"),
            "{msg}"
        );
    }

    #[test]
    fn isolation_names_are_explicit() {
        assert_eq!(
            Isolation::parse("landlock-only").map(Isolation::name).ok(),
            Some("landlock-only")
        );
        assert!(Isolation::parse("auto").is_err());
        assert_eq!(Isolation::default().name(), "full");
    }
}
