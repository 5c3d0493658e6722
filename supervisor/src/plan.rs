//! Plan, then apply: turns the policy and the command line into plain data
//! (identity, mount steps, Landlock rules, seccomp filters, environment)
//! before anything touches the kernel. The same plan drives `sandbox run`,
//! is printable, and is checked in unit tests.

use std::ffi::{CString, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::egress::{self, EgressPlan, NetworkRequest};
use crate::error::SetupError;
use crate::landlock::{FsAccess, FsRule, LandlockPlan};
use crate::mounts::{MountStep, DEV_NODES};
use crate::policy::{Limits, Policy, PolicySource};
use crate::seccomp::{self, SeccompPlan};

/// The uid/gid the agent gets when `sandbox` runs as root and none is given.
pub const DEFAULT_UNPRIVILEGED_ID: u32 = 65534;
/// The PATH the agent gets unless `--env PATH` says otherwise.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Size of the private `/tmp`.
const TMP_SIZE: u64 = 1 << 30;
/// Size of the fresh, empty HOME.
const HOME_SIZE: u64 = 256 << 20;
/// Paths the workspace may not be, or live under: they are built by us.
const RESERVED: &[&str] = &["/proc", "/dev", "/sys"];

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// `--workspace`; the current directory when absent.
    pub workspace: Option<PathBuf>,
    /// `--env NAME` (pass from host) and `--env NAME=VALUE` (set).
    pub env: Vec<String>,
    /// `--uid`: the agent's host uid (root only).
    pub uid: Option<u32>,
    /// `--gid`: the agent's host gid (root only).
    pub gid: Option<u32>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// The command and its arguments.
    pub argv: Vec<OsString>,
    /// Network flags.
    pub network: NetworkRequest,
    /// Audit flags.
    pub audit: crate::audit::AuditRequest,
}

/// Facts about the invoking process that the plan depends on.
#[derive(Debug, Clone)]
pub struct Host {
    /// Effective uid of `sandbox`.
    pub euid: u32,
    /// Effective gid of `sandbox`.
    pub egid: u32,
    /// `$HOME`, if set.
    pub home: Option<PathBuf>,
    /// The current directory.
    pub cwd: PathBuf,
    /// The whole environment of `sandbox`.
    pub vars: Vec<(OsString, OsString)>,
    /// A fresh random id for this session.
    pub session_id: String,
}

impl Host {
    /// Reads the facts from the running process.
    pub fn current() -> Result<Self, SetupError> {
        Ok(Self {
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
            home: std::env::var_os("HOME").map(PathBuf::from),
            cwd: std::env::current_dir()
                .map_err(|e| SetupError::io("workspace", "current directory", e))?,
            vars: std::env::vars_os().collect(),
            session_id: egress_proxy::new_session_id(),
        })
    }

    fn var(&self, name: &str) -> Option<&OsString> {
        self.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// Who the agent is, outside and inside the user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The host uid the agent's files and processes belong to.
    pub outer_uid: u32,
    /// The host gid.
    pub outer_gid: u32,
    /// The uid the agent sees (`id -u`).
    pub inner_uid: u32,
    /// The gid the agent sees.
    pub inner_gid: u32,
    /// `sandbox` runs as root: it may map any id and drop supplementary groups.
    pub privileged: bool,
}

/// Everything `sandbox run` will do, as data.
#[derive(Debug, Clone)]
pub struct SandboxPlan {
    /// Ids inside and outside.
    pub identity: Identity,
    /// How the new root is built, in order.
    pub mounts: Vec<MountStep>,
    /// The agent's Landlock ruleset.
    pub landlock: LandlockPlan,
    /// The agent's seccomp filters.
    pub seccomp: SeccompPlan,
    /// The agent's whole environment.
    pub env: Vec<(String, String)>,
    /// The command.
    pub argv: Vec<CString>,
    /// The agent's working directory (inside).
    pub cwd: PathBuf,
    /// The workspace (same path inside and out).
    pub workspace: PathBuf,
    /// Every writable tree (the workspace last), checked after the run
    /// (`surface.rs`).
    pub writable: Vec<PathBuf>,
    /// `filesystem.protect`: paths relative to each writable tree.
    pub protect: Vec<PathBuf>,
    /// Hostname inside the UTS namespace.
    pub hostname: String,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// `--kill-after`: how long the sandbox may run on after a SIGINT or
    /// SIGTERM before it is killed (set after [`build`]).
    pub kill_after: Option<Duration>,
    /// This session's id (in the audit log and `AIRLOCK_SESSION_ID`).
    pub session_id: String,
    /// The session's private directory on the host.
    pub session_dir: PathBuf,
    /// The way out.
    pub egress: EgressPlan,
    /// Where and how the session is recorded.
    pub audit: crate::audit::AuditPlan,
    /// Resource limits: cgroup (`cgroup.rs`), rlimits (`rlimits.rs`),
    /// /tmp size (mounts) and timeout (supervisor).
    pub limits: Limits,
    /// SHA-256 of the effective policy, for the audit log.
    pub policy_hash: String,
    /// The profile and managed-policy files, with their SHA-256.
    pub policy_sources: Vec<PolicySource>,
    /// Full isolation, or the explicitly requested degraded mode.
    pub isolation: crate::degraded::Isolation,
}

/// Builds the plan. Reads file metadata to see which policy paths exist,
/// and nothing else.
pub fn build(policy: &Policy, req: &RunRequest, host: &Host) -> Result<SandboxPlan, SetupError> {
    if req.argv.is_empty() {
        return Err(SetupError::new(
            "command",
            "no command given: sandbox run [OPTIONS] -- CMD [ARGS...]",
        ));
    }
    let session_dir = session_dir(host);
    let egress = egress::plan(
        &req.network,
        &policy.network,
        &policy.credentials,
        &session_dir,
    )?;
    let audit = crate::audit::plan(&req.audit, host)?;
    let home = inside_home(host);
    let workspace = workspace(req, host)?;
    let cwd = if host.cwd.starts_with(&workspace) {
        host.cwd.clone()
    } else {
        workspace.clone()
    };

    let mut layout: Vec<MountStep> = Vec::new();
    let mut rules = vec![FsRule {
        path: PathBuf::from("/"),
        access: FsAccess::ListOnly,
    }];
    for (key, path) in policy
        .filesystem
        .read
        .iter()
        .map(|p| ("read", p))
        .chain(policy.filesystem.write.iter().map(|p| ("write", p)))
    {
        // Expanded grants (`${HOME}` = `/`) meet the check the profile's
        // literal ones met in `policy check`, with its message.
        if let Some(why) = crate::profile::load::grant_conflict(path) {
            return Err(SetupError::new(
                "filesystem",
                format!("filesystem.{key}: {why}"),
            ));
        }
    }
    for path in &policy.filesystem.read {
        match fs::symlink_metadata(path) {
            Err(_) => continue,
            Ok(m) if m.file_type().is_symlink() => {
                let points_to = fs::read_link(path).map_err(|e| {
                    SetupError::io("mounts", format!("readlink {}", path.display()), e)
                })?;
                layout.push(MountStep::Symlink {
                    target: path.clone(),
                    points_to,
                });
            }
            Ok(_) => {
                layout.push(MountStep::Bind {
                    source: path.clone(),
                    target: path.clone(),
                    writable: false,
                });
                rules.push(FsRule {
                    path: path.clone(),
                    access: FsAccess::ReadOnlyMount,
                });
            }
        }
    }
    let mut writable: Vec<PathBuf> = policy
        .filesystem
        .write
        .iter()
        .filter(|p| p.exists())
        .cloned()
        .collect();
    writable.push(workspace.clone());
    let trees: Vec<Tree> = if host.euid == 0 {
        writable.iter().filter_map(|p| Tree::read(p)).collect()
    } else {
        Vec::new()
    };
    let identity = identity(req, host, &trees)?;
    for path in &writable {
        let tree = trees.iter().find(|t| &t.path == path);
        match tree {
            Some(t) if identity.privileged && t.uid != identity.outer_uid => {
                layout.push(MountStep::IdmappedBind {
                    source: path.clone(),
                    target: path.clone(),
                    map: crate::idmap::IdMap {
                        owner_uid: t.uid,
                        owner_gid: t.gid,
                        agent_uid: identity.outer_uid,
                        agent_gid: identity.outer_gid,
                    },
                    dir: t.dir,
                })
            }
            _ => layout.push(MountStep::Bind {
                source: path.clone(),
                target: path.clone(),
                writable: true,
            }),
        }
    }
    // A granted symlink inside another granted tree is already there, as
    // the host has it; making it again failed with EEXIST
    // (`read = ["/usr/bin/python3"]` beside `/usr`).
    let bound: Vec<PathBuf> = layout
        .iter()
        .filter(|s| matches!(s, MountStep::Bind { .. } | MountStep::IdmappedBind { .. }))
        .map(|s| s.target().to_path_buf())
        .collect();
    layout.retain(|s| match s {
        MountStep::Symlink { target, .. } => {
            !bound.iter().any(|b| target.starts_with(b) && target != b)
        }
        _ => true,
    });
    layout.extend(crate::profile::protect::steps(
        &writable,
        &policy.filesystem.protect,
    )?);
    layout.push(MountStep::Tmpfs {
        target: PathBuf::from("/tmp"),
        mode: 0o1777,
        owner: None,
        size: policy.limits.tmp_size.unwrap_or(TMP_SIZE),
    });
    layout.push(MountStep::Bind {
        source: egress.host_socket.clone(),
        target: egress.inside_socket.clone(),
        writable: true,
    });
    if let Some(bundle) = &egress.ca_bundle {
        layout.push(MountStep::Bind {
            source: bundle.host_file.clone(),
            target: bundle.inside.clone(),
            writable: false,
        });
        if let Some(system) = &bundle.system_path {
            layout.push(MountStep::Bind {
                source: bundle.host_file.clone(),
                target: system.clone(),
                writable: false,
            });
        }
    }
    layout.push(MountStep::Tmpfs {
        target: home.clone(),
        mode: 0o700,
        owner: Some((identity.inner_uid, identity.inner_gid)),
        size: HOME_SIZE,
    });
    // Parents before children: /tmp before a workspace under /tmp, HOME
    // before a workspace inside HOME. The sort is stable, so equal depths
    // keep policy order.
    layout.sort_by_key(|s| s.target().components().count());
    for path in writable.iter().chain([&PathBuf::from("/tmp"), &home]) {
        rules.push(FsRule {
            path: path.clone(),
            access: FsAccess::ReadWrite,
        });
    }

    let mut mounts = layout;
    mounts.extend(proc_steps());
    mounts.extend(dev_steps());
    rules.push(FsRule {
        path: PathBuf::from("/proc"),
        access: FsAccess::ReadNoExec,
    });
    if let Some(dir) = egress.inside_socket.parent() {
        // The egress socket and the CA bundle: readable, nothing more.
        rules.push(FsRule {
            path: dir.to_path_buf(),
            access: FsAccess::ReadNoExec,
        });
    }
    for node in DEV_NODES {
        rules.push(FsRule {
            path: Path::new("/dev").join(node),
            access: if *node == "tty" {
                FsAccess::Terminal
            } else {
                FsAccess::Device
            },
        });
    }
    rules.push(FsRule {
        path: PathBuf::from("/dev/pts"),
        access: FsAccess::Terminal,
    });
    rules.push(FsRule {
        path: PathBuf::from("/dev/shm"),
        access: FsAccess::ReadWrite,
    });

    if crate::selftest::weakened("view") {
        // The selftest's weakened runs only (debug builds): host trees the
        // view never holds, read-only and outside every Landlock grant.
        for dir in ["/var", "/sys"] {
            mounts.push(MountStep::Bind {
                source: PathBuf::from(dir),
                target: PathBuf::from(dir),
                writable: false,
            });
        }
    }
    // Denies are masked where the view shows them (profile/deny.rs).
    let masks = crate::profile::deny::masks(&mounts, &policy.filesystem.deny);
    if let Some(m) = masks.iter().find(|m| workspace.starts_with(m.target())) {
        return Err(SetupError::new(
            "workspace",
            format!(
                "{} is hidden by a filesystem.deny (masked at {}); pick another workspace or \
                 narrow the deny",
                workspace.display(),
                m.target().display()
            ),
        ));
    }
    mounts.extend(masks);

    Ok(SandboxPlan {
        identity,
        mounts,
        landlock: LandlockPlan {
            fs: rules,
            tcp_connect: egress.relay_ports.clone(),
        },
        seccomp: seccomp::compile()?,
        env: environment(policy, req, host, &identity, &home, &cwd, &egress).map(|mut env| {
            if crate::selftest::weakened("env") {
                // The selftest's weakened runs only (debug builds).
                for (k, v) in &host.vars {
                    if let (Some(k), Some(v)) = (k.to_str(), v.to_str()) {
                        if !env.iter().any(|(e, _)| e == k) {
                            env.push((k.to_string(), v.to_string()));
                        }
                    }
                }
            }
            env
        })?,
        isolation: Default::default(),
        session_id: host.session_id.clone(),
        session_dir,
        egress,
        audit,
        argv: req
            .argv
            .iter()
            .map(|a| {
                CString::new(a.as_bytes())
                    .map_err(|_| SetupError::new("command", "an argument contains a NUL byte"))
            })
            .collect::<Result<_, _>>()?,
        cwd,
        workspace: workspace.clone(),
        writable,
        protect: policy.filesystem.protect.clone(),
        hostname: "airlock".to_string(),
        timeout: policy.limits.timeout.or(req.timeout),
        kill_after: None,
        limits: policy.limits.clone(),
        policy_hash: policy.hash.clone(),
        policy_sources: policy.sources.clone(),
    })
}

/// A writable tree as the identity decision sees it (root only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// The tree (as inside and out).
    pub path: PathBuf,
    /// Its owner uid on disk.
    pub uid: u32,
    /// Its owner gid on disk.
    pub gid: u32,
    /// A directory (else a file).
    pub dir: bool,
    /// Whether its filesystem can be idmapped here: its name, or why not.
    pub idmap: Result<&'static str, String>,
}

impl Tree {
    fn read(path: &Path) -> Option<Tree> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).ok()?;
        Some(Tree {
            path: path.to_path_buf(),
            uid: m.uid(),
            gid: m.gid(),
            dir: m.is_dir(),
            idmap: crate::idmap::supported(path),
        })
    }
}

fn identity(req: &RunRequest, host: &Host, trees: &[Tree]) -> Result<Identity, SetupError> {
    if host.euid == 0 {
        let (uid, gid) = root_agent_ids(req.uid, req.gid, trees)?;
        return Ok(Identity {
            outer_uid: uid,
            outer_gid: gid,
            inner_uid: uid,
            inner_gid: gid,
            privileged: true,
        });
    }
    for (flag, asked, own) in [("--uid", req.uid, host.euid), ("--gid", req.gid, host.egid)] {
        if let Some(id) = asked {
            if id != own {
                return Err(SetupError::new(
                    "identity",
                    format!("{flag} {id} needs root; as an ordinary user the agent runs as {own}"),
                ));
            }
        }
    }
    Ok(Identity {
        outer_uid: host.euid,
        outer_gid: host.egid,
        inner_uid: host.euid,
        inner_gid: host.egid,
        privileged: false,
    })
}

/// The agent's host ids when `sandbox` runs as root: `--uid`/`--gid`, or
/// 65534. Each writable tree owned by another uid is idmapped onto them;
/// where a tree's filesystem cannot be idmapped and its owner is not
/// root (and no ids were asked for), the agent runs as that owner
/// instead. Otherwise the run is refused: the agent could not write the
/// tree, and running anyway would fail later and less clearly.
pub fn root_agent_ids(
    uid: Option<u32>,
    gid: Option<u32>,
    trees: &[Tree],
) -> Result<(u32, u32), SetupError> {
    if uid == Some(0) || gid == Some(0) {
        return Err(SetupError::new(
            "identity",
            "the agent never runs as host root: pass a non-zero --uid/--gid",
        ));
    }
    let asked = uid.is_some() || gid.is_some();
    let mut ids = (
        uid.unwrap_or(DEFAULT_UNPRIVILEGED_ID),
        gid.unwrap_or(DEFAULT_UNPRIVILEGED_ID),
    );
    let stuck = |agent: u32| trees.iter().find(|t| t.uid != agent && t.idmap.is_err());
    if let Some(t) = stuck(ids.0) {
        if !asked && t.uid != 0 {
            ids = (t.uid, t.gid);
        }
    }
    match stuck(ids.0) {
        None => Ok(ids),
        Some(t) => {
            let owner = if t.uid == 0 {
                "root".to_string()
            } else {
                format!("uid {}", t.uid)
            };
            let why = t.idmap.as_ref().err().cloned().unwrap_or_default();
            let fix = if t.uid == 0 {
                "run sandbox as an ordinary user who owns it, chown it to a non-root user (the \
                 agent then runs as that user), or put it on ext4, xfs, btrfs or tmpfs (Linux 6.3+)"
            } else {
                "drop --uid/--gid (the agent then runs as the tree's owner), or put it on ext4, \
                 xfs, btrfs or tmpfs (Linux 6.3+)"
            };
            Err(SetupError::new(
                "identity",
                format!(
                    "{} belongs to {owner} and cannot be mounted idmapped here ({why}), so the \
                     agent (uid {}) could not write it. Fix: {fix}",
                    t.path.display(),
                    ids.0
                ),
            ))
        }
    }
}

/// `airlock-<id>` in the first RAM-backed runtime directory: the session
/// dir holds only a mount point and a socket, and creating and removing
/// them on a disk filesystem (journal, discard) costs a measurable part of
/// a short run. Candidates: `$XDG_RUNTIME_DIR`, `/run` (root only: it is
/// root's), `/dev/shm` (world-writable and sticky, like `/tmp`); else the
/// system temp dir. The name carries 64 random bits, so it cannot be
/// guessed, and it is created exclusively (an existing one is an error).
fn session_dir(host: &Host) -> PathBuf {
    let xdg = host
        .var("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir());
    let mut candidates: Vec<PathBuf> = xdg.iter().cloned().collect();
    if host.euid == 0 {
        candidates.push(PathBuf::from("/run"));
    }
    candidates.push(PathBuf::from("/dev/shm"));
    let base = candidates
        .into_iter()
        .find(|dir| on_tmpfs(dir) && (Some(dir) == xdg.as_ref() || sticky_or_root_owned(dir)))
        .or(xdg)
        .unwrap_or_else(std::env::temp_dir);
    let short: String = host.session_id.chars().take(16).collect();
    base.join(format!("airlock-{short}"))
}

fn on_tmpfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// A shared directory we may create in: root-owned and either writable
/// only by root, or sticky (so nobody else can remove or rename our entry).
fn sticky_or_root_owned(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(dir).is_ok_and(|m| {
        m.is_dir() && m.uid() == 0 && (m.mode() & 0o1000 != 0 || m.mode() & 0o022 == 0)
    })
}

/// The agent's HOME: the host's HOME path (so paths that mention it still
/// make sense), but an empty tmpfs. `/home/agent` when HOME is unusable.
fn inside_home(host: &Host) -> PathBuf {
    match &host.home {
        Some(h) if h.is_absolute() && !reserved(h) => {
            fs::canonicalize(h).unwrap_or_else(|_| h.clone())
        }
        _ => PathBuf::from("/home/agent"),
    }
}

/// `/`, `/tmp` itself, or a path the sandbox builds (`/proc`, `/dev`, `/sys`).
fn reserved(path: &Path) -> bool {
    path == Path::new("/")
        || path == Path::new("/tmp")
        || RESERVED.iter().any(|r| path.starts_with(r))
}

fn workspace(req: &RunRequest, host: &Host) -> Result<PathBuf, SetupError> {
    let given = req.workspace.clone().unwrap_or_else(|| host.cwd.clone());
    let ws = fs::canonicalize(&given)
        .map_err(|e| SetupError::io("workspace", format!("{}", given.display()), e))?;
    if !ws.is_dir() {
        return Err(SetupError::new(
            "workspace",
            format!("{} is not a directory", ws.display()),
        ));
    }
    if reserved(&ws) {
        return Err(SetupError::new(
            "workspace",
            format!(
                "{} cannot be the workspace (it is / or a path the sandbox builds itself); \
                 pass --workspace DIR with a project directory",
                ws.display()
            ),
        ));
    }
    for system in [
        "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/var", "/run",
    ] {
        if Path::new(system).starts_with(&ws) || ws == Path::new(system) {
            return Err(SetupError::new(
                "workspace",
                format!(
                    "{} is or contains the system directory {system}; pass --workspace DIR \
                     with a project directory",
                    ws.display()
                ),
            ));
        }
    }
    if let Some(home) = &host.home {
        let home = fs::canonicalize(home).unwrap_or_else(|_| home.clone());
        if home.starts_with(&ws) {
            return Err(SetupError::new(
                "workspace",
                format!(
                    "{} is or contains your home directory {}, whose credentials must stay \
                     hidden; run from a project directory or pass --workspace DIR",
                    ws.display(),
                    home.display()
                ),
            ));
        }
    }
    Ok(ws)
}

fn proc_steps() -> Vec<MountStep> {
    let mut steps = vec![MountStep::Proc {
        target: PathBuf::from("/proc"),
    }];
    // Writable in a fresh procfs for the namespace's root: make them
    // read-only, as container runtimes do.
    for sub in ["sys", "sysrq-trigger", "irq", "bus", "fs"] {
        steps.push(MountStep::ReadOnlyAgain {
            target: Path::new("/proc").join(sub),
        });
    }
    steps
}

fn dev_steps() -> Vec<MountStep> {
    let dev = Path::new("/dev");
    let mut steps = vec![MountStep::Tmpfs {
        target: dev.to_path_buf(),
        mode: 0o755,
        owner: None,
        size: 64 << 10,
    }];
    for node in DEV_NODES {
        steps.push(MountStep::Device {
            source: dev.join(node),
            target: dev.join(node),
        });
    }
    steps.push(MountStep::DevPts {
        target: dev.join("pts"),
    });
    steps.push(MountStep::Tmpfs {
        target: dev.join("shm"),
        mode: 0o1777,
        owner: None,
        size: 64 << 20,
    });
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(MountStep::Symlink {
            target: dev.join(link),
            points_to: PathBuf::from(to),
        });
    }
    steps
}

fn environment(
    policy: &Policy,
    req: &RunRequest,
    host: &Host,
    id: &Identity,
    home: &Path,
    cwd: &Path,
    egress: &EgressPlan,
) -> Result<Vec<(String, String)>, SetupError> {
    let user = nix::unistd::User::from_uid(id.inner_uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "agent".to_string());
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), home.display().to_string()),
        ("USER".into(), user.clone()),
        ("LOGNAME".into(), user),
        ("SHELL".into(), "/bin/sh".into()),
        ("TMPDIR".into(), "/tmp".into()),
        ("PWD".into(), cwd.display().to_string()),
        ("AIRLOCK_SESSION_ID".into(), host.session_id.clone()),
    ];
    env.extend(egress.agent_env());
    let secret_sources = egress.secret_env_sources();
    let set = |name: &str, value: String, env: &mut Vec<(String, String)>| {
        env.retain(|(k, _)| k != name);
        env.push((name.to_string(), value));
    };
    for name in &policy.env_pass {
        if secret_sources.iter().any(|(v, _)| v == name) {
            continue;
        }
        if let Some(v) = host.var(name).and_then(|v| v.to_str()) {
            set(name, v.to_string(), &mut env);
        }
    }
    for (name, value) in &policy.env_set {
        // A placeholder credential's variable holds its placeholder, whatever
        // a profile sets.
        if egress.placeholder_vars().any(|v| v == name) {
            continue;
        }
        set(name, value.clone(), &mut env);
    }
    for arg in &req.env {
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        if name.is_empty()
            || name.contains('\0')
            || value.as_deref().is_some_and(|v| v.contains('\0'))
        {
            return Err(SetupError::new(
                "environment",
                format!("--env {name:?}: expected NAME or NAME=VALUE"),
            ));
        }
        if let Some((_, cred)) = secret_sources.iter().find(|(v, _)| v == name) {
            return Err(SetupError::new(
                "environment",
                format!(
                    "--env {name}: {name} holds the secret of credential '{cred}', which never \
                     enters the sandbox (the agent gets a placeholder or nothing)"
                ),
            ));
        }
        let value = match value {
            Some(v) => v,
            None => match host.var(name).and_then(|v| v.to_str()) {
                Some(v) => v.to_string(),
                None => continue,
            },
        };
        set(name, value, &mut env);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(euid: u32) -> Host {
        Host {
            euid,
            egid: euid,
            home: Some(PathBuf::from("/nonexistent-home-for-test")),
            cwd: std::env::temp_dir(),
            vars: vec![
                ("HOME".into(), "/nonexistent-home-for-test".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "canary".into()),
                ("TERM".into(), "xterm".into()),
                ("PATH".into(), "/host/only/bin".into()),
            ],
            session_id: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    fn request() -> RunRequest {
        let ws = std::env::temp_dir().join(format!("airlock-plan-test-{}", std::process::id()));
        fs::create_dir_all(&ws).expect("create test workspace");
        RunRequest {
            workspace: Some(ws),
            argv: vec!["true".into()],
            ..RunRequest::default()
        }
    }

    #[test]
    fn session_dir_prefers_a_ram_filesystem() {
        let mut h = host(1000);
        let shm_is_tmpfs =
            on_tmpfs(Path::new("/dev/shm")) && sticky_or_root_owned(Path::new("/dev/shm"));
        // A disk-backed XDG_RUNTIME_DIR loses to /dev/shm when that is tmpfs.
        let disk = std::env::current_dir().expect("cwd");
        if !on_tmpfs(&disk) {
            h.vars.push(("XDG_RUNTIME_DIR".into(), disk.clone().into()));
            let dir = session_dir(&h);
            if shm_is_tmpfs {
                assert_eq!(
                    dir.parent(),
                    Some(Path::new("/dev/shm")),
                    "{}",
                    dir.display()
                );
            } else {
                assert_eq!(dir.parent(), Some(disk.as_path()), "{}", dir.display());
            }
        }
        // A tmpfs XDG_RUNTIME_DIR is taken as it is (the user's own).
        if shm_is_tmpfs {
            let own =
                Path::new("/dev/shm").join(format!("airlock-xdg-test-{}", std::process::id()));
            fs::create_dir_all(&own).expect("create");
            h.vars.retain(|(k, _)| k != "XDG_RUNTIME_DIR");
            h.vars.push(("XDG_RUNTIME_DIR".into(), own.clone().into()));
            let dir = session_dir(&h);
            let _ = fs::remove_dir(&own);
            assert_eq!(dir.parent(), Some(own.as_path()));
            assert!(dir.ends_with("airlock-0123456789abcdef"));
        }
    }

    #[test]
    fn root_runs_the_agent_as_nobody_by_default() {
        let plan = build(&Policy::embedded_default(), &request(), &host(0)).expect("plan");
        assert_eq!(plan.identity.outer_uid, DEFAULT_UNPRIVILEGED_ID);
        assert!(plan.identity.privileged);
    }

    #[test]
    fn root_idmaps_foreign_trees_falls_back_to_their_owner_or_refuses() {
        let tree = |uid: u32, ok: bool| Tree {
            path: PathBuf::from(format!("/t{uid}")),
            uid,
            gid: uid,
            dir: true,
            idmap: if ok {
                Ok("ext4")
            } else {
                Err("ramfs cannot".into())
            },
        };
        let n = DEFAULT_UNPRIVILEGED_ID;
        // (asked uid, trees, agent uid or the start of the refusal)
        type Row = (Option<u32>, Vec<Tree>, Result<u32, &'static str>);
        let rows: Vec<Row> = vec![
            (None, vec![tree(0, true)], Ok(n)),
            (None, vec![tree(1000, true)], Ok(n)),
            (None, vec![tree(n, false)], Ok(n)),
            (None, vec![tree(1000, false)], Ok(1000)),
            (None, vec![tree(1000, false), tree(0, true)], Ok(1000)),
            (None, vec![tree(0, false)], Err("/t0 belongs to root")),
            (
                None,
                vec![tree(1000, false), tree(1001, false)],
                Err("/t1001 belongs to uid 1001"),
            ),
            (
                Some(4242),
                vec![tree(1000, false)],
                Err("/t1000 belongs to uid 1000"),
            ),
            (Some(4242), vec![tree(0, true)], Ok(4242)),
            (Some(0), vec![], Err("the agent never runs as host root")),
        ];
        for (asked, trees, want) in rows {
            let got = root_agent_ids(asked, None, &trees).map(|(u, _)| u);
            match (&got, &want) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{asked:?} {trees:?}"),
                (Err(e), Err(w)) => assert!(e.message.starts_with(w), "{e}"),
                _ => panic!("{asked:?} {trees:?}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn agent_as_host_root_is_refused() {
        let mut req = request();
        req.uid = Some(0);
        let err = build(&Policy::embedded_default(), &req, &host(0)).unwrap_err();
        assert_eq!(err.layer, "identity");
    }

    #[test]
    fn ordinary_user_cannot_pick_another_uid() {
        let mut req = request();
        req.uid = Some(4242);
        let err = build(&Policy::embedded_default(), &req, &host(1000)).unwrap_err();
        assert!(err.message.contains("needs root"));
    }

    #[test]
    fn host_secrets_and_path_do_not_pass_into_the_environment() {
        let plan = build(&Policy::embedded_default(), &request(), &host(1000)).expect("plan");
        assert!(!plan.env.iter().any(|(k, _)| k == "AWS_SECRET_ACCESS_KEY"));
        assert!(plan.env.contains(&("PATH".into(), DEFAULT_PATH.into())));
        assert!(plan.env.contains(&("TERM".into(), "xterm".into())));
    }

    #[test]
    fn env_flag_sets_and_passes() {
        let mut req = request();
        req.env = vec!["FOO=bar".into(), "TERM".into(), "MISSING".into()];
        let plan = build(&Policy::embedded_default(), &req, &host(1000)).expect("plan");
        assert!(plan.env.contains(&("FOO".into(), "bar".into())));
        assert!(!plan.env.iter().any(|(k, _)| k == "MISSING"));
    }

    #[test]
    fn root_and_system_dirs_are_refused_as_workspace() {
        for ws in ["/", "/usr", "/etc", "/proc", "/tmp"] {
            let mut req = request();
            req.workspace = Some(PathBuf::from(ws));
            let err = build(&Policy::embedded_default(), &req, &host(1000)).unwrap_err();
            assert_eq!(err.layer, "workspace", "{ws} was accepted");
        }
    }

    #[test]
    fn workspace_containing_home_is_refused() {
        let req = request();
        let mut h = host(1000);
        h.home = req.workspace.as_ref().map(|w| w.join("me"));
        let err = build(&Policy::embedded_default(), &req, &h).unwrap_err();
        assert!(err.message.contains("home directory"));
    }

    #[test]
    fn parents_are_mounted_before_children_and_masks_last() {
        let req = request();
        let plan = build(&Policy::embedded_default(), &req, &host(1000)).expect("plan");
        let workspace = fs::canonicalize(req.workspace.expect("set")).expect("exists");
        let tmp = plan
            .mounts
            .iter()
            .position(|s| s.target() == Path::new("/tmp"));
        let ws = plan.mounts.iter().position(|s| s.target() == workspace);
        assert!(tmp < ws, "/tmp must be mounted before a workspace under it");
        let last_non_mask = plan
            .mounts
            .iter()
            .rposition(|s| !matches!(s, MountStep::MaskFile { .. } | MountStep::MaskDir { .. }));
        let first_mask = plan
            .mounts
            .iter()
            .position(|s| matches!(s, MountStep::MaskFile { .. } | MountStep::MaskDir { .. }));
        if let (Some(a), Some(b)) = (last_non_mask, first_mask) {
            assert!(a < b);
        }
    }
}
