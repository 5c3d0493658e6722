//! The cgroup layer: one cgroup per session that holds init and everything
//! the agent starts, enforces `[limits] memory`, `pids` and `cpu`, measures
//! the session's CPU time and peak memory, and kills the whole group at
//! teardown.
//!
//! Plan, then apply: [`v2_settings`] and [`v1_settings`] turn the limits
//! into the exact files and values written, and are unit-tested; only
//! [`Session::create`] touches `/sys/fs/cgroup`.
//!
//! Where each part lives:
//! - cgroup v2 (unified) is used whenever it is mounted and we can create a
//!   child of our own cgroup there: it gives `cgroup.kill` and `cpu.stat`
//!   even without controllers, and `memory`/`pids`/`cpu` when they are
//!   enabled in our cgroup's `cgroup.subtree_control`.
//! - Each controller that v2 does not offer comes from its cgroup v1
//!   hierarchy (hybrid hosts such as systemd's "hybrid" mode), and without
//!   v2 the v1 `freezer` makes teardown freeze-then-kill.
//!
//! The agent cannot change its limits: init enters a new cgroup namespace
//! once it is inside the session's cgroup (so `/proc/self/cgroup` shows
//! `/`), no cgroup filesystem is mounted inside, the agent has no
//! capabilities and seccomp refuses `mount`; and as root the files belong
//! to host root and are not writable by the agent's uid
//! (<https://docs.kernel.org/admin-guide/cgroup-v2.html#delegation-containment>).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::error::SetupError;
use crate::policy::Limits;

const LAYER: &str = "cgroup";

/// The CFS period for `cpu` limits (100 ms, the kernel default).
pub const CPU_PERIOD_USEC: u64 = 100_000;

/// Which cgroup interface a setting or group belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The legacy per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

/// One file write that enforces (part of) a limit, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The `[limits]` key it enforces: `memory`, `pids` or `cpu`.
    pub limit: &'static str,
    /// The controller that owns the file.
    pub controller: &'static str,
    /// File name inside the session's cgroup.
    pub file: &'static str,
    /// What is written.
    pub value: String,
    /// Whether a missing file fails the limit. Refinements (swap 0 where the
    /// kernel accounts swap) are skipped when the kernel lacks them.
    pub required: bool,
}

fn setting(
    limit: &'static str,
    controller: &'static str,
    file: &'static str,
    value: String,
    required: bool,
) -> Setting {
    Setting {
        limit,
        controller,
        file,
        value,
        required,
    }
}

/// The cgroup v2 files that enforce `limits`.
///
/// `pids.max` counts init too, so the agent gets exactly `pids` processes.
pub fn v2_settings(limits: &Limits) -> Vec<Setting> {
    let mut out = Vec::new();
    if let Some(m) = limits.memory {
        out.push(setting(
            "memory",
            "memory",
            "memory.max",
            m.to_string(),
            true,
        ));
        // No swap: a memory limit that spills to swap is no limit.
        out.push(setting(
            "memory",
            "memory",
            "memory.swap.max",
            "0".into(),
            false,
        ));
        // An OOM kills the whole sandbox, not one process picked by the
        // kernel, so the agent never runs on half-killed.
        out.push(setting(
            "memory",
            "memory",
            "memory.oom.group",
            "1".into(),
            true,
        ));
    }
    if let Some(p) = limits.pids {
        out.push(setting(
            "pids",
            "pids",
            "pids.max",
            (p + 1).to_string(),
            true,
        ));
    }
    if let Some(c) = limits.cpu_millis {
        out.push(setting("cpu", "cpu", "cpu.max", cpu_max(c), true));
    }
    out
}

/// The cgroup v1 files that enforce `limits`. v1 has no whole-group OOM
/// kill: the kernel kills the largest process in the group.
pub fn v1_settings(limits: &Limits) -> Vec<Setting> {
    let mut out = Vec::new();
    if let Some(m) = limits.memory {
        out.push(setting(
            "memory",
            "memory",
            "memory.limit_in_bytes",
            m.to_string(),
            true,
        ));
        // memory+swap equal to memory: no swap (only with swap accounting).
        out.push(setting(
            "memory",
            "memory",
            "memory.memsw.limit_in_bytes",
            m.to_string(),
            false,
        ));
        out.push(setting(
            "memory",
            "memory",
            "memory.swappiness",
            "0".into(),
            false,
        ));
    }
    if let Some(p) = limits.pids {
        out.push(setting(
            "pids",
            "pids",
            "pids.max",
            (p + 1).to_string(),
            true,
        ));
    }
    if let Some(c) = limits.cpu_millis {
        out.push(setting(
            "cpu",
            "cpu",
            "cpu.cfs_period_us",
            CPU_PERIOD_USEC.to_string(),
            true,
        ));
        out.push(setting(
            "cpu",
            "cpu",
            "cpu.cfs_quota_us",
            cpu_quota(c).to_string(),
            true,
        ));
    }
    out
}

fn cpu_quota(millis: u64) -> u64 {
    // The kernel refuses quotas under 1 ms.
    (millis * CPU_PERIOD_USEC / 1000).max(1000)
}

fn cpu_max(millis: u64) -> String {
    format!("{} {CPU_PERIOD_USEC}", cpu_quota(millis))
}

/// The cgroup hierarchies this process belongs to: for v2 and for each v1
/// controller, the directory of our own cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// Our cgroup in the unified hierarchy.
    pub v2: Option<PathBuf>,
    /// Our cgroup in each v1 controller's hierarchy (`memory`, `pids`, ...).
    pub v1: Vec<(String, PathBuf)>,
}

impl Hierarchies {
    /// Reads `/proc/self/mounts` and `/proc/self/cgroup`.
    pub fn current() -> Self {
        let mounts = crate::procfs::read("/proc/self/mounts").unwrap_or_default();
        let own = crate::procfs::read("/proc/self/cgroup").unwrap_or_default();
        let mut h = Self::parse(&mounts, &own);
        if test_switch("v1") {
            h.v2 = None;
        }
        h
    }

    /// Pure part of [`Hierarchies::current`]: `mounts` as in
    /// `/proc/self/mounts`, `own` as in `/proc/self/cgroup`.
    pub fn parse(mounts: &str, own: &str) -> Self {
        let mut v2_path = None;
        let mut v1_paths: Vec<(Vec<String>, String)> = Vec::new();
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if ctrls.is_empty() {
                v2_path = Some(path.to_string());
            } else {
                v1_paths.push((ctrls.split(',').map(String::from).collect(), path.into()));
            }
        }
        let mut out = Self::default();
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let (mount_point, fstype, options) = (f[1], f[2], f[3]);
            if fstype == "cgroup2" && out.v2.is_none() {
                if let Some(p) = &v2_path {
                    out.v2 = Some(join(mount_point, p));
                }
            } else if fstype == "cgroup" {
                let opts: Vec<&str> = options.split(',').collect();
                for (ctrls, path) in &v1_paths {
                    if ctrls.iter().all(|c| opts.contains(&c.as_str())) {
                        for c in ctrls {
                            if !out.v1.iter().any(|(have, _)| have == c) {
                                out.v1.push((c.clone(), join(mount_point, path)));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn v1(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, p)| p.as_path())
    }
}

fn join(mount_point: &str, path: &str) -> PathBuf {
    Path::new(mount_point).join(path.trim_start_matches('/'))
}

/// Debug builds only: `AIRLOCK_TEST_CGROUP=v1` ignores cgroup v2 so the
/// tests exercise the v1 path (freeze-then-kill) on a hybrid host.
fn test_switch(value: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        std::env::var("AIRLOCK_TEST_CGROUP").is_ok_and(|v| v == value)
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = value;
        false
    }
}

/// What the session used, for the session-end audit event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of every process in the sandbox, in microseconds.
    pub cpu_usec: Option<u64>,
    /// Highest memory use of the whole sandbox, in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// The cgroup limit the sandbox ran into (`memory`: an OOM kill;
    /// `pids`: a fork was refused), if any.
    pub limit_hit: Option<&'static str>,
}

/// A limit that could not be applied and was skipped (`best_effort`, or
/// a ceiling of the default policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `memory`, `pids` or `cpu`.
    pub limit: &'static str,
    /// Why.
    pub reason: String,
    /// One of the default policy's own ceilings (not a profile's limit).
    pub default_ceiling: bool,
}

/// The v1 controllers a session group may be made in (limits and the
/// helpers for accounting and the freezer).
const SESSION_V1_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "cpuacct", "freezer"];

/// Our own groups in every hierarchy a session group may be made in.
fn sweep_homes(h: &Hierarchies) -> Vec<PathBuf> {
    let mut homes: Vec<PathBuf> = h.v2.iter().cloned().collect();
    for c in SESSION_V1_CONTROLLERS {
        if let Some(p) = h.v1(c) {
            if !homes.iter().any(|x| x == p) {
                homes.push(p.to_path_buf());
            }
        }
    }
    homes
}

/// The name of a session's group: `airlock-<tag>-<pid namespace>-<pid>`
/// of its supervisor, so that a later run can tell a live session's group
/// from one a killed supervisor left behind.
pub fn group_name(tag: &str) -> String {
    format!(
        "airlock-{tag}-{}-{}",
        own_pid_namespace(),
        std::process::id()
    )
}

/// The inode of our PID namespace (0 if unknown): a pid means something
/// only in its own namespace.
fn own_pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// A group whose supervisor cannot be checked (a name from before pids
/// were recorded, or one made in another PID namespace) is taken for
/// stale once it is this old: a live session's group is never empty for
/// longer than its start-up, and removing a group that holds a process
/// fails (EBUSY).
const UNCHECKABLE_STALE_AGE: Duration = Duration::from_secs(600);

/// Whether the group `name` (beside ours, `own`) belongs to a session
/// whose supervisor is gone: its pid, in our PID namespace `ns`, names no
/// live process; or it cannot be checked that way and `age()` is at least
/// [`UNCHECKABLE_STALE_AGE`].
pub fn is_stale(
    name: &str,
    own: &str,
    ns: u64,
    alive: impl Fn(i32) -> bool,
    age: impl Fn() -> Option<Duration>,
) -> bool {
    let Some(rest) = name.strip_prefix("airlock-") else {
        return false;
    };
    if name == own || rest.is_empty() {
        return false;
    }
    let old = || age().is_some_and(|a| a >= UNCHECKABLE_STALE_AGE);
    let legacy = rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit());
    if legacy {
        return old();
    }
    let mut parts = rest.rsplitn(3, '-');
    let (Some(pid), Some(their_ns), Some(_tag)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    match (pid.parse::<i32>(), their_ns.parse::<u64>()) {
        (Ok(pid), Ok(their_ns)) if pid > 0 && their_ns == ns && ns != 0 => !alive(pid),
        (Ok(pid), Ok(_)) if pid > 0 => old(),
        _ => false,
    }
}

/// Does `pid` name a process (ours to signal or not)?
fn pid_alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The warnings for skipped limits, as printed on stderr: one line for
/// all the default policy's ceilings together (a user without a delegated
/// cgroup sees it on every run, so once is enough), one per limit a
/// profile made best-effort.
pub fn warnings(skipped: &[Skipped]) -> Vec<String> {
    let mut out = Vec::new();
    let defaults: Vec<&Skipped> = skipped.iter().filter(|s| s.default_ceiling).collect();
    if let Some(first) = defaults.first() {
        let names: Vec<String> = defaults
            .iter()
            .map(|s| format!("limits.{}", s.limit))
            .collect();
        out.push(format!(
            "sandbox: warning: cgroup: the default ceilings ({}) are not enforced: this user \
             has no cgroup to enforce them in here ({}); delegate one (e.g. systemd-run --user -p \
             Delegate=yes) or run as root; see 'sandbox doctor'",
            names.join(", "),
            first.reason
        ));
    }
    for s in skipped.iter().filter(|s| !s.default_ceiling) {
        out.push(format!(
            "sandbox: warning: cgroup: limits.{} is not enforced (best_effort): {}",
            s.limit, s.reason
        ));
    }
    out
}

/// The session's cgroup (one directory per hierarchy used). Dropping it
/// kills whatever is left inside and removes the directories.
#[derive(Debug)]
pub struct Session {
    /// The v2 directory, when v2 is usable.
    v2: Option<PathBuf>,
    /// v1 directories by controller.
    v1: Vec<(&'static str, PathBuf)>,
    /// Our own v1 group for each entry of `v1`, in the same order (where
    /// [`Session::leave_v1`] returns to).
    v1_home: Vec<PathBuf>,
    /// Where session groups are made (our own groups), for
    /// [`Session::sweep_stale`], and this session's name.
    homes: Vec<PathBuf>,
    name: String,
    /// The controllers enabled for the v2 directory: a counter file of a
    /// controller that is not is simply absent, so it is not looked for.
    v2_controllers: Vec<String>,
    /// Where each applied limit lives: (`memory`, `v1`), ...
    applied: Vec<(&'static str, Version)>,
    /// Limits skipped because of `best_effort`.
    skipped: Vec<Skipped>,
}

impl Session {
    /// Creates `name` in every hierarchy needed for `limits` and writes the
    /// limits. A limit that cannot be applied is an error naming the limit
    /// and the fix, unless `limits.best_effort` (then it is in
    /// [`Session::skipped`]). Accounting and the kill switch are always
    /// best-effort: without any cgroup the PID namespace still takes
    /// everything down with init (the session then has no directory).
    pub fn create(name: &str, limits: &Limits) -> Result<Session, SetupError> {
        if crate::selftest::weakened("cgroup") {
            return Self::create_in(&Hierarchies::current(), name, &Limits::default());
        }
        Self::create_in(&Hierarchies::current(), name, limits)
    }

    /// [`Session::create`] for given hierarchies.
    pub fn create_in(h: &Hierarchies, name: &str, limits: &Limits) -> Result<Session, SetupError> {
        let mut s = Session {
            v2: None,
            v1: Vec::new(),
            v1_home: Vec::new(),
            homes: sweep_homes(h),
            name: name.to_string(),
            v2_controllers: Vec::new(),
            applied: Vec::new(),
            skipped: Vec::new(),
        };
        let mut v2_controllers: Vec<String> = Vec::new();
        let mut v2_error = String::from("no cgroup v2 hierarchy is mounted");
        if let Some(parent) = &h.v2 {
            let dir = parent.join(name);
            match fs::create_dir(&dir) {
                Ok(()) => {
                    v2_controllers = read_words(&parent.join("cgroup.subtree_control"));
                    s.v2 = Some(dir);
                }
                Err(e) => v2_error = format!("cannot create {}: {e}", dir.display()),
            }
        }
        s.v2_controllers = v2_controllers.clone();
        let v2s = v2_settings(limits);
        let v1s = v1_settings(limits);
        for limit in ["memory", "pids", "cpu"] {
            let want_v2: Vec<&Setting> = v2s.iter().filter(|x| x.limit == limit).collect();
            if want_v2.is_empty() {
                continue;
            }
            let controller = want_v2[0].controller;
            let mut reasons = Vec::new();
            if let Some(dir) = s.v2.clone() {
                if v2_controllers.iter().any(|c| c == controller) {
                    match write_all(&dir, &want_v2) {
                        Ok(()) => {
                            s.applied.push((limit, Version::V2));
                            continue;
                        }
                        Err(e) => reasons.push(format!("v2: {e}")),
                    }
                } else {
                    reasons.push(format!(
                        "v2: '{controller}' is not enabled in {}",
                        dir.with_file_name("cgroup.subtree_control").display()
                    ));
                }
            } else {
                reasons.push(format!("v2: {v2_error}"));
            }
            let want_v1: Vec<&Setting> = v1s.iter().filter(|x| x.limit == limit).collect();
            match s.v1_dir(h, controller, name) {
                Ok(dir) => match write_all(&dir, &want_v1) {
                    Ok(()) => {
                        s.applied.push((limit, Version::V1));
                        continue;
                    }
                    Err(e) => reasons.push(format!("v1: {e}")),
                },
                Err(e) => reasons.push(format!("v1: {e}")),
            }
            let reason = reasons.join("; ");
            let default_ceiling = limits.default_ceilings.contains(&limit);
            if !limits.best_effort && !default_ceiling {
                // Dropping `s` removes what was created so far.
                return Err(SetupError::new(
                    LAYER,
                    format!(
                        "cannot enforce limits.{limit} on this host ({reason}); run as root, \
                         delegate a cgroup with the '{controller}' controller to this user \
                         (e.g. systemd-run --user -p Delegate=yes), or set \
                         [limits] best_effort = true; see 'sandbox doctor'"
                    ),
                ));
            }
            s.skipped.push(Skipped {
                limit,
                reason,
                default_ceiling,
            });
        }
        // Accounting (and, without v2, the freezer) from v1 where v2 lacks
        // it. A v1 group costs a migration (~8 ms of kernel locking on this
        // kind of host, on the startup path), so peak-memory accounting
        // from v1 is only set up when the session has a memory limit
        // anyway; otherwise session.end reports no peak memory there.
        let helpers: &[&'static str] = if s.v2.is_none() {
            &["cpuacct", "freezer", "memory"]
        } else if v2_controllers.iter().any(|c| c == "memory") || limits.memory.is_none() {
            &[]
        } else {
            &["memory"]
        };
        for helper in helpers {
            let _ = s.v1_dir(h, helper, name);
        }
        Ok(s)
    }

    /// Creates (once) the v1 group of `controller`.
    fn v1_dir(
        &mut self,
        h: &Hierarchies,
        controller: &'static str,
        name: &str,
    ) -> Result<PathBuf, String> {
        if let Some((_, dir)) = self.v1.iter().find(|(c, _)| *c == controller) {
            return Ok(dir.clone());
        }
        let Some(parent) = h.v1(controller) else {
            return Err(format!("no '{controller}' hierarchy is mounted"));
        };
        let dir = parent.join(name);
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        self.v1.push((controller, dir.clone()));
        self.v1_home.push(parent.to_path_buf());
        Ok(dir)
    }

    /// Removes the session groups that supervisors killed before their
    /// teardown left behind (a SIGKILL during start-up leaves an empty
    /// group; the kernel never removes one). Called once the agent runs,
    /// off the start's critical path; a group still holding a process
    /// cannot be removed (EBUSY) and is left alone. Returns how many went.
    pub fn sweep_stale(&self) -> usize {
        let now = std::time::SystemTime::now();
        let ns = own_pid_namespace();
        let mut removed = 0;
        for home in &self.homes {
            let Ok(entries) = fs::read_dir(home) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if !name.starts_with("airlock-") {
                    continue;
                }
                let age = || {
                    e.metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| now.duration_since(t).ok())
                };
                if is_stale(name, &self.name, ns, pid_alive, age)
                    && fs::remove_dir(e.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Limits skipped because this host cannot enforce them (only with
    /// `best_effort`).
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Moves the calling thread into the session's v1 groups, so that a
    /// process it forks now is born in them; [`Session::leave_v1`] moves it
    /// back. Writing `0` to `tasks` moves only the caller, which the kernel
    /// does without the global threadgroup lock that moving another
    /// process takes (its RCU sync cost ~16 ms per start on a hybrid host,
    /// against ~0.1 ms this way). Returns whether the thread moved: where
    /// it cannot (no v1 group, no way back), the caller attaches the child
    /// afterwards instead.
    pub fn enter_v1(&self) -> bool {
        if self.v1.is_empty() || self.v1_home.len() != self.v1.len() {
            return false;
        }
        for (n, (_, dir)) in self.v1.iter().enumerate() {
            if fs::write(dir.join("tasks"), "0").is_err() {
                // Back out of the groups entered so far.
                for home in &self.v1_home[..n] {
                    let _ = fs::write(home.join("tasks"), "0");
                }
                return false;
            }
        }
        true
    }

    /// Moves the calling thread back to its own v1 groups, after
    /// [`Session::enter_v1`]. A failure is an error: the supervisor must not
    /// stay in the group it kills at the end.
    pub fn leave_v1(&self) -> Result<(), SetupError> {
        for home in &self.v1_home {
            let file = home.join("tasks");
            fs::write(&file, "0").map_err(|e| {
                SetupError::io(LAYER, format!("move back to {}", file.display()), e)
            })?;
        }
        Ok(())
    }

    /// A directory fd of the v2 cgroup, for `clone3(CLONE_INTO_CGROUP)`.
    pub fn v2_fd(&self) -> Option<std::os::fd::OwnedFd> {
        let dir = self.v2.as_ref()?;
        std::fs::File::open(dir)
            .ok()
            .map(std::os::fd::OwnedFd::from)
    }

    /// Moves `pid` (init, before it starts the agent) into every group,
    /// skipping the v2 cgroup and the v1 groups when it was born in them.
    pub fn attach_where_needed(
        &self,
        pid: Pid,
        skip_v2: bool,
        skip_v1: bool,
    ) -> Result<(), SetupError> {
        let v2 = if skip_v2 { None } else { self.v2.as_ref() };
        let v1 = if skip_v1 { &[][..] } else { &self.v1[..] };
        let dirs = v2.into_iter().chain(v1.iter().map(|(_, d)| d));
        for dir in dirs {
            let file = dir.join("cgroup.procs");
            fs::write(&file, pid.as_raw().to_string()).map_err(|e| {
                SetupError::io(LAYER, format!("move init into {}", file.display()), e)
            })?;
        }
        Ok(())
    }

    /// Kills everything in the group: `cgroup.kill` on v2; on v1, freeze
    /// (so nothing can fork or dodge), SIGKILL every member, thaw (so the
    /// kills are delivered). Stopped and SIGTERM-ignoring processes die too.
    pub fn kill_all(&self) {
        if let Some(dir) = &self.v2 {
            if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                return;
            }
        }
        let freezer = self.v1_path("freezer");
        if let Some(f) = freezer {
            let _ = fs::write(f.join("freezer.state"), "FROZEN");
            let deadline = Instant::now() + Duration::from_secs(2);
            while read_trim(&f.join("freezer.state")).as_deref() == Some("FREEZING")
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let me = std::process::id().to_string();
        for dir in self.v2.iter().chain(self.v1.iter().map(|(_, d)| d)) {
            for pid in read_words(&dir.join("cgroup.procs")) {
                // Never ourselves (had a move back after enter_v1 failed).
                if pid == me {
                    continue;
                }
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                }
            }
        }
        if let Some(f) = freezer {
            let _ = fs::write(f.join("freezer.state"), "THAWED");
        }
    }

    fn v1_path(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// CPU time, peak memory and the limit that was hit, read from the
    /// group's counters (call after the sandbox exited, before drop).
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        if let Some(dir) = &self.v2 {
            let enabled = |c: &str| self.v2_controllers.iter().any(|x| x == c);
            u.cpu_usec = keyed(&dir.join("cpu.stat"), "usage_usec");
            if enabled("memory") {
                u.peak_memory_bytes = read_u64(&dir.join("memory.peak"));
                if keyed(&dir.join("memory.events"), "oom_kill").unwrap_or(0) > 0 {
                    u.limit_hit = Some("memory");
                }
            }
            if u.limit_hit.is_none()
                && enabled("pids")
                && keyed(&dir.join("pids.events"), "max").unwrap_or(0) > 0
            {
                u.limit_hit = Some("pids");
            }
        }
        if u.cpu_usec.is_none() {
            u.cpu_usec = self
                .v1_path("cpuacct")
                .or(self.v1_path("cpu"))
                .and_then(|d| read_u64(&d.join("cpuacct.usage")))
                .map(|ns| ns / 1000);
        }
        if let Some(mem) = self.v1_path("memory") {
            u.peak_memory_bytes = u
                .peak_memory_bytes
                .or_else(|| read_u64(&mem.join("memory.max_usage_in_bytes")));
            if u.limit_hit.is_none()
                && keyed(&mem.join("memory.oom_control"), "oom_kill").unwrap_or(0) > 0
            {
                u.limit_hit = Some("memory");
            }
        }
        if let Some(pids) = self.v1_path("pids") {
            if u.limit_hit.is_none() && keyed(&pids.join("pids.events"), "max").unwrap_or(0) > 0 {
                u.limit_hit = Some("pids");
            }
        }
        u
    }

    /// Every directory of the group (v2 first).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.v2
            .iter()
            .cloned()
            .chain(self.v1.iter().map(|(_, d)| d.clone()))
            .collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Members of a dying PID namespace can linger for a moment: kill
        // again and retry until the directories can go.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut dirs = self.dirs();
        loop {
            dirs.retain(|d| fs::remove_dir(d).is_err() && d.exists());
            if dirs.is_empty() || Instant::now() >= deadline {
                break;
            }
            self.kill_all();
            std::thread::sleep(Duration::from_millis(10));
        }
        for d in dirs {
            eprintln!("sandbox: warning: cgroup: could not remove {}", d.display());
        }
    }
}

fn write_all(dir: &Path, settings: &[&Setting]) -> Result<(), String> {
    for s in settings {
        let path = dir.join(s.file);
        if !s.required && !path.exists() {
            continue;
        }
        fs::write(&path, &s.value)
            .map_err(|e| format!("write {} to {}: {e}", s.value, path.display()))?;
    }
    Ok(())
}

fn read_trim(path: &Path) -> Option<String> {
    crate::procfs::read(path).ok().map(|s| s.trim().to_string())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trim(path)?.parse().ok()
}

fn read_words(path: &Path) -> Vec<String> {
    read_trim(path)
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// The value of `key` in a flat-keyed file (`cpu.stat`, `memory.events`).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = crate::procfs::read(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Enters a new cgroup namespace rooted at our current cgroup. Init calls
/// it once the supervisor has moved it into the session's cgroup, so the
/// sandbox sees that cgroup as `/` and nothing above it.
pub fn enter_namespace() -> Result<(), SetupError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| SetupError::io(LAYER, "enter a cgroup namespace", e))
}

/// One row of `sandbox doctor`: whether this host can enforce a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    /// `memory`, `pids` or `cpu`.
    pub limit: &'static str,
    /// `Ok(version)` when enforceable, else why not.
    pub result: Result<Version, String>,
}

/// Tries each limit in a scratch cgroup (removed again), the only honest
/// answer to "can this host enforce it, for this user".
pub fn host_support() -> Vec<Support> {
    let limits = Limits {
        memory: Some(1 << 30),
        pids: Some(1024),
        cpu_millis: Some(1000),
        best_effort: true,
        ..Limits::default()
    };
    let name = group_name("doctor");
    // The host's answer, whatever a test switch does to sessions.
    let session = Session::create_in(&Hierarchies::current(), &name, &limits);
    ["memory", "pids", "cpu"]
        .into_iter()
        .map(|limit| {
            let result = match &session {
                Ok(s) => match s.applied.iter().find(|(l, _)| *l == limit) {
                    Some((_, v)) => Ok(*v),
                    None => Err(s
                        .skipped
                        .iter()
                        .find(|x| x.limit == limit)
                        .map(|x| x.reason.clone())
                        .unwrap_or_default()),
                },
                Err(e) => Err(e.to_string()),
            };
            Support { limit, result }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 group's counters, read from a directory that stands in for
    /// cgroupfs: the memory and pids files count only where their
    /// controller is enabled (elsewhere cgroupfs has no such files).
    #[test]
    fn usage_reads_the_counters_of_enabled_controllers_only() {
        let parent = std::env::temp_dir().join(format!("airlock-cg-usage-{}", std::process::id()));
        fs::create_dir_all(&parent).expect("parent");
        for (controllers, peak, hit) in [
            ("cpu memory pids", Some(4096), Some("pids")),
            ("cpu", None, None),
        ] {
            fs::write(parent.join("cgroup.subtree_control"), controllers).expect("controllers");
            let h = Hierarchies {
                v2: Some(parent.clone()),
                v1: Vec::new(),
            };
            let s = Session::create_in(&h, "s", &Limits::default()).expect("create");
            let dir = parent.join("s");
            let counters = [
                ("cpu.stat", "usage_usec 7\nuser_usec 5\n"),
                ("memory.peak", "4096\n"),
                ("memory.events", "low 0\noom_kill 0\n"),
                ("pids.events", "max 2\n"),
            ];
            for (file, text) in counters {
                fs::write(dir.join(file), text).expect("counter");
            }
            let u = s.usage();
            for (file, _) in counters {
                let _ = fs::remove_file(dir.join(file));
            }
            drop(s);
            assert_eq!(u.cpu_usec, Some(7), "{controllers}");
            assert_eq!(u.peak_memory_bytes, peak, "{controllers}");
            assert_eq!(u.limit_hit, hit, "{controllers}");
        }
        let _ = fs::remove_dir_all(&parent);
    }

    fn limits() -> Limits {
        Limits {
            memory: Some(256 << 20),
            pids: Some(64),
            cpu_millis: Some(500),
            ..Limits::default()
        }
    }

    fn files(s: &[Setting]) -> Vec<(&str, &str)> {
        s.iter().map(|s| (s.file, s.value.as_str())).collect()
    }

    #[test]
    fn v2_plan_sets_memory_without_swap_with_group_oom_kill() {
        assert_eq!(
            files(&v2_settings(&limits())),
            vec![
                ("memory.max", "268435456"),
                ("memory.swap.max", "0"),
                ("memory.oom.group", "1"),
                ("pids.max", "65"),
                ("cpu.max", "50000 100000"),
            ]
        );
    }

    #[test]
    fn v1_plan_caps_memory_plus_swap_at_memory() {
        assert_eq!(
            files(&v1_settings(&limits())),
            vec![
                ("memory.limit_in_bytes", "268435456"),
                ("memory.memsw.limit_in_bytes", "268435456"),
                ("memory.swappiness", "0"),
                ("pids.max", "65"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
            ]
        );
    }

    #[test]
    fn no_limits_means_no_settings() {
        assert!(v2_settings(&Limits::default()).is_empty());
        assert!(v1_settings(&Limits::default()).is_empty());
    }

    #[test]
    fn tiny_cpu_share_is_rounded_up_to_the_kernel_minimum() {
        assert_eq!(cpu_max(1), "1000 100000");
    }

    #[test]
    fn hybrid_host_hierarchies_are_found() {
        let mounts = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
                      cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n\
                      cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n";
        let own = "0::/user.slice\n4:memory:/process_api/x\n3:cpu,cpuacct:/\n8:pids:/a\n";
        let h = Hierarchies::parse(mounts, own);
        assert_eq!(
            h.v2,
            Some(PathBuf::from("/sys/fs/cgroup/unified/user.slice"))
        );
        assert_eq!(
            h.v1("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/process_api/x"))
        );
        assert_eq!(
            h.v1("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(h.v1("pids"), Some(Path::new("/sys/fs/cgroup/pids/a")));
        assert_eq!(h.v1("freezer"), None);
    }

    #[test]
    fn pure_v2_host_has_no_v1_paths() {
        let h = Hierarchies::parse(
            "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n",
            "0::/system.slice/x.service\n",
        );
        assert_eq!(
            h.v2,
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/x.service"))
        );
        assert!(h.v1.is_empty());
    }

    #[test]
    fn unapplicable_limit_fails_closed_naming_the_limit_and_the_fix() {
        let h = Hierarchies::default();
        let err = Session::create_in(&h, "airlock-test", &limits()).unwrap_err();
        assert_eq!(err.layer, "cgroup");
        assert!(err.message.contains("limits.memory"), "{err}");
        assert!(err.message.contains("best_effort"), "{err}");
    }

    #[test]
    fn only_groups_of_gone_supervisors_are_stale() {
        let alive = |pid: i32| pid == 100;
        let old = Some(Duration::from_secs(3600));
        let young = Some(Duration::from_secs(2));
        let own = "airlock-ffffffffffffffff-7-200";
        for (name, age, stale) in [
            ("airlock-0123456789abcdef-7-200", None, true),
            ("airlock-doctor-7-200", None, true),
            ("airlock-0123456789abcdef-7-100", None, false),
            ("airlock-0123456789abcdef-7-100", old, false),
            // Our own group, whatever its pid says.
            (own, None, false),
            // Another PID namespace: its pids mean nothing here; by age.
            ("airlock-0123456789abcdef-8-200", None, false),
            ("airlock-0123456789abcdef-8-200", young, false),
            ("airlock-0123456789abcdef-8-200", old, true),
            // From before pids were recorded: by age.
            ("airlock-0123456789abcdef", old, true),
            ("airlock-0123456789abcdef", young, false),
            ("airlock-0123456789abcdef", None, false),
            // Not ours to judge.
            ("user.slice", old, false),
            ("airlock-x-7-0", None, false),
            ("airlock-x-7-notapid", old, false),
            ("airlock-7-200", old, false),
            ("airlock-", old, false),
        ] {
            assert_eq!(
                is_stale(name, own, 7, alive, || age),
                stale,
                "{name} {age:?}"
            );
        }
    }

    #[test]
    fn the_defaults_ceilings_warn_in_one_line_and_best_effort_per_limit() {
        let skip = |limit, default_ceiling| Skipped {
            limit,
            reason: "v2: no".into(),
            default_ceiling,
        };
        let w = warnings(&[skip("memory", true), skip("pids", true)]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("default ceilings (limits.memory, limits.pids)"));
        assert!(w[0].contains("v2: no"));
        let w = warnings(&[skip("memory", true), skip("cpu", false)]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[1].contains("limits.cpu is not enforced (best_effort)"));
        assert!(warnings(&[]).is_empty());
    }

    /// A default ceiling the host cannot enforce is skipped even without
    /// best_effort; a profile's limit beside it still fails closed.
    #[test]
    fn only_the_defaults_own_ceilings_are_skipped_without_best_effort() {
        let h = Hierarchies::default();
        let defaults = Limits {
            memory: Some(1 << 30),
            pids: Some(4096),
            default_ceilings: vec!["memory", "pids"],
            ..Limits::default()
        };
        let s = Session::create_in(&h, "airlock-test", &defaults).expect("runs");
        assert!(s.skipped().iter().all(|x| x.default_ceiling));
        assert_eq!(s.skipped().len(), 2);
        let mixed = Limits {
            default_ceilings: vec!["memory"],
            ..defaults
        };
        let err = Session::create_in(&h, "airlock-test", &mixed).unwrap_err();
        assert!(err.message.contains("limits.pids"), "{err}");
    }

    #[test]
    fn best_effort_skips_what_cannot_be_applied() {
        let h = Hierarchies::default();
        let l = Limits {
            best_effort: true,
            ..limits()
        };
        let s = Session::create_in(&h, "airlock-test", &l).unwrap();
        assert!(s.dirs().is_empty());
        let skipped: Vec<&str> = s.skipped().iter().map(|x| x.limit).collect();
        assert_eq!(skipped, ["memory", "pids", "cpu"]);
    }
}
