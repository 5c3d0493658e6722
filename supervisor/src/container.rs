//! `sandbox doctor` inside a container: which kernel feature the container
//! runtime withholds, and the exact runtime flags that give it back.
//!
//! Container runtimes filter syscalls (Docker's default seccomp profile
//! refuses `unshare` and `clone(CLONE_NEWUSER)` without CAP_SYS_ADMIN;
//! Kubernetes `RuntimeDefault` is the runtime's profile) and mask parts of
//! `/proc`, which makes the kernel refuse a fresh procfs in a new user
//! namespace (`mnt_already_visible`, see proc(5) and
//! <https://github.com/opencontainers/runc/issues/2826>). The fix we print
//! is the profile we ship (`deploy/seccomp-airlock.json`: the default list
//! plus exactly what `sandbox run` needs), never `--privileged` or
//! `seccomp=unconfined`.
//!
//! Facts are gathered by probing (forked children try the real syscalls);
//! the diagnosis is a pure function of them, tested with a table.

use std::fmt::Write as _;

/// The shipped seccomp profile (its path in the source tree and image).
pub const PROFILE: &str = "deploy/seccomp-airlock.json";

/// The container runtime `sandbox` appears to run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Not in a container we recognise.
    None,
    /// Podman (`/run/.containerenv`).
    Podman,
    /// Docker (`/.dockerenv`).
    Docker,
    /// A Kubernetes pod (`KUBERNETES_SERVICE_HOST`).
    Kubernetes,
    /// Some other runtime (`container=` in the environment).
    Other,
}

/// The step of the namespace probe that the kernel refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NsStep {
    /// `unshare(CLONE_NEWUSER)`.
    UserNs = 1,
    /// `unshare` of the mount, PID, network, IPC, UTS and cgroup namespaces
    /// in the new user namespace.
    OtherNs = 2,
    /// `sethostname` in the new UTS namespace.
    Hostname = 3,
    /// Making `/` private in the new mount namespace (`mount(2)`).
    Mount = 4,
    /// `fork` into the new PID namespace.
    Fork = 5,
    /// Mounting a fresh procfs there.
    Proc = 6,
}

impl NsStep {
    fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            1 => Self::UserNs,
            2 => Self::OtherNs,
            3 => Self::Hostname,
            4 => Self::Mount,
            5 => Self::Fork,
            6 => Self::Proc,
            _ => return None,
        })
    }

    fn describe(self) -> &'static str {
        match self {
            Self::UserNs => "unshare(CLONE_NEWUSER)",
            Self::OtherNs => "unshare(CLONE_NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS|NEWCGROUP)",
            Self::Hostname => "sethostname in the new UTS namespace",
            Self::Mount => "mount(2) in the new mount namespace",
            Self::Fork => "fork into the new PID namespace",
            Self::Proc => "mounting a fresh /proc in the new namespaces",
        }
    }
}

/// What the probes found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The runtime we appear to run under.
    pub runtime: Runtime,
    /// `Err((step, errno))`: the first namespace step the kernel refused.
    pub namespaces: Result<(), (NsStep, i32)>,
    /// `/proc/sys/user/max_user_namespaces` is 0.
    pub userns_sysctl_off: bool,
    /// The Landlock ABI (0: none).
    pub landlock_abi: i32,
    /// The errno of the Landlock version query when it failed.
    pub landlock_errno: i32,
    /// `Err(errno)` when installing a seccomp filter failed.
    pub seccomp: Result<(), i32>,
    /// `Err(errno)` when `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    pub no_new_privs: Result<(), i32>,
    /// We already run under a seccomp filter (`Seccomp: 2` in /proc/self/status).
    pub filtered: bool,
    /// At least one cgroup limit (memory, pids, cpu) can be enforced here.
    pub cgroup_delegated: bool,
}

/// One thing the container withholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// A namespace step was refused.
    Namespaces {
        /// Which step.
        step: NsStep,
        /// The errno.
        errno: i32,
    },
    /// No Landlock (errno of the version query).
    Landlock(i32),
    /// Seccomp filters cannot be installed (errno).
    Seccomp(i32),
    /// `no_new_privs` cannot be set (errno).
    NoNewPrivs(i32),
    /// No cgroup limit can be enforced (not fatal).
    Cgroup,
}

/// What `sandbox run` can do here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Full isolation works.
    Full,
    /// Only namespaces are missing and Landlock is new enough:
    /// `--isolation=landlock-only` works (degraded, and logged as such).
    LandlockOnly,
    /// Neither mode can start until the runtime flags change.
    Nothing,
}

/// The diagnosis: what is missing, the verdict, and the fixes to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// Everything missing, most important first.
    pub missing: Vec<Missing>,
    /// What `sandbox run` can do.
    pub verdict: Verdict,
    /// Lines to print: the why and the exact flags.
    pub advice: Vec<String>,
}

/// The pure decision: from facts to what is missing and what fixes it.
pub fn diagnose(f: &Facts) -> Diagnosis {
    let mut missing = Vec::new();
    let mut advice = Vec::new();
    let mut runtime_fix = false;
    let mut proc_fix = false;
    if let Err((step, errno)) = f.namespaces {
        missing.push(Missing::Namespaces { step, errno });
        let err = errno_name(errno);
        if f.userns_sysctl_off || errno == libc::ENOSPC {
            advice.push(format!(
                "namespaces: {} failed with {err}: user namespaces are switched off \
                 (user.max_user_namespaces=0); only the host can fix it: \
                 sysctl -w user.max_user_namespaces=10000",
                step.describe()
            ));
        } else if step == NsStep::Proc {
            proc_fix = true;
            advice.push(format!(
                "namespaces: {} failed with {err}: the runtime masks parts of /proc, and \
                 the kernel refuses a fresh procfs while a mount hides part of the old one",
                step.describe()
            ));
        } else if f.filtered && matches!(errno, libc::EPERM | libc::ENOSYS | libc::EACCES) {
            runtime_fix = true;
            advice.push(format!(
                "namespaces: {} failed with {err}: the runtime's seccomp profile refuses it",
                step.describe()
            ));
        } else {
            advice.push(format!(
                "namespaces: {} failed with {err} (not a seccomp refusal we recognise: \
                 check kernel.unprivileged_userns_clone and \
                 kernel.apparmor_restrict_unprivileged_userns on the host)",
                step.describe()
            ));
        }
    }
    if let Err((step, _)) = f.namespaces {
        if step < NsStep::Proc {
            advice.push(
                "(the probe stops at the first refusal: run 'sandbox doctor' again after the \
                 fix, a later step may need another flag)"
                    .to_string(),
            );
        }
    }
    if f.landlock_abi < 1 {
        missing.push(Missing::Landlock(f.landlock_errno));
        let err = errno_name(f.landlock_errno);
        if f.filtered && f.landlock_errno == libc::EPERM {
            runtime_fix = true;
            advice.push(format!(
                "landlock: landlock_create_ruleset failed with {err}: the runtime's seccomp \
                 profile refuses it"
            ));
        } else {
            advice.push(format!(
                "landlock: landlock_create_ruleset failed with {err}: the kernel has no \
                 Landlock (Linux 5.13+ with landlock in lsm=), or the runtime's seccomp \
                 profile refuses it (the shipped profile allows it)"
            ));
            runtime_fix |= f.filtered;
        }
    }
    if let Err(errno) = f.seccomp {
        missing.push(Missing::Seccomp(errno));
        runtime_fix |= f.filtered;
        advice.push(format!(
            "seccomp: installing a filter failed with {}: the kernel lacks \
             CONFIG_SECCOMP_FILTER, or the runtime's profile refuses seccomp(2)/prctl(2)",
            errno_name(errno)
        ));
    }
    if let Err(errno) = f.no_new_privs {
        missing.push(Missing::NoNewPrivs(errno));
        runtime_fix |= f.filtered;
        advice.push(format!(
            "no_new_privs: prctl(PR_SET_NO_NEW_PRIVS) failed with {}: the runtime's \
             profile refuses prctl(2)",
            errno_name(errno)
        ));
    }
    if runtime_fix || proc_fix {
        advice.extend(runtime_flags(f.runtime, runtime_fix, proc_fix));
    }
    let only_namespaces = missing
        .iter()
        .all(|m| matches!(m, Missing::Namespaces { .. }));
    let verdict = if missing.is_empty() {
        Verdict::Full
    } else if only_namespaces && f.landlock_abi >= crate::degraded::MIN_ABI {
        advice.push(
            "or, without changing the runtime: sandbox run --isolation=landlock-only -- CMD \
             (degraded: no namespaces; Landlock, seccomp and no capabilities still hold; \
             logged as degraded in session.start)"
                .to_string(),
        );
        Verdict::LandlockOnly
    } else {
        if only_namespaces {
            advice.push(format!(
                "--isolation=landlock-only is no way out here: it needs Landlock ABI {} \
                 (this kernel: {})",
                crate::degraded::MIN_ABI,
                f.landlock_abi
            ));
        }
        Verdict::Nothing
    };
    if !f.cgroup_delegated {
        missing.push(Missing::Cgroup);
        advice.push(
            "cgroups: no cgroup is delegated to this container, so limits.memory/pids/cpu \
             cannot be enforced per sandbox; bound the container instead (podman/docker run \
             --memory 2g --pids-limit 512 --cpus 2; Kubernetes resources.limits) and set \
             [limits] best_effort = true in the profile"
                .to_string(),
        );
    }
    Diagnosis {
        missing,
        verdict,
        advice,
    }
}

/// The runtime flags that give `sandbox run` what it needs, for the runtime
/// we are in (all of them when we cannot tell).
fn runtime_flags(runtime: Runtime, seccomp: bool, proc: bool) -> Vec<String> {
    let mut out = Vec::new();
    let podman = || {
        let mut s = String::from("fix (podman): podman run");
        if seccomp {
            let _ = write!(s, " --security-opt seccomp={PROFILE}");
        }
        if proc {
            s.push_str(" --security-opt unmask=/proc/*");
        }
        s + " IMAGE CMD"
    };
    let docker = || {
        let mut s = String::from("fix (docker): docker run");
        if seccomp {
            let _ = write!(s, " --security-opt seccomp={PROFILE}");
        }
        if proc {
            s.push_str(" --security-opt systempaths=unconfined");
        }
        s + " IMAGE CMD (on AppArmor hosts docker-default also refuses mount(2): \
               load a profile that allows it)"
    };
    let kubernetes = || {
        let mut s = String::from("fix (kubernetes): securityContext:");
        if seccomp {
            s.push_str(
                " seccompProfile: {type: Localhost, localhostProfile: airlock/seccomp-airlock.json} \
                 (copy the profile to /var/lib/kubelet/seccomp/airlock/ on every node)",
            );
        }
        if proc {
            s.push_str(" procMount: Unmasked (needs hostUsers: false)");
        }
        s + "; see docs/KUBERNETES.md"
    };
    match runtime {
        Runtime::Podman => out.push(podman()),
        Runtime::Docker => out.push(docker()),
        Runtime::Kubernetes => out.push(kubernetes()),
        Runtime::None | Runtime::Other => {
            out.push(podman());
            out.push(docker());
            out.push(kubernetes());
        }
    }
    out
}

fn errno_name(errno: i32) -> String {
    match errno {
        0 => "an unrecognised error".to_string(),
        libc::EPERM => "EPERM".to_string(),
        libc::EACCES => "EACCES".to_string(),
        libc::ENOSYS => "ENOSYS".to_string(),
        libc::EINVAL => "EINVAL".to_string(),
        libc::ENOSPC => "ENOSPC".to_string(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".to_string(),
        e => format!("errno {e}"),
    }
}

/// Gathers the facts by probing this process's environment.
pub fn gather() -> Facts {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let landlock_abi = crate::landlock::kernel_abi();
    let landlock_errno = if landlock_abi < 1 {
        landlock_version_errno()
    } else {
        0
    };
    Facts {
        runtime: runtime(),
        namespaces: probe_namespaces(),
        userns_sysctl_off: std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .is_ok_and(|v| v.trim() == "0"),
        landlock_abi,
        landlock_errno,
        seccomp: probe_in_child(Probe::Seccomp),
        no_new_privs: probe_in_child(Probe::NoNewPrivs),
        filtered: field("Seccomp:").as_deref() == Some("2"),
        cgroup_delegated: crate::cgroup::host_support()
            .iter()
            .any(|s| s.result.is_ok()),
    }
}

fn runtime() -> Runtime {
    let exists = |p: &str| std::path::Path::new(p).exists();
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        Runtime::Kubernetes
    } else if exists("/run/.containerenv") {
        Runtime::Podman
    } else if exists("/.dockerenv") {
        Runtime::Docker
    } else if std::env::var_os("container").is_some() {
        Runtime::Other
    } else {
        Runtime::None
    }
}

fn landlock_version_errno() -> i32 {
    // SAFETY: NULL attr, size 0, the VERSION flag: reads and writes no memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1 as libc::c_uint,
        )
    };
    if rc < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    }
}

/// The errnos a probe child can report in its exit code; others are 0.
const ERRNOS: [i32; 6] = [
    libc::EPERM,
    libc::EACCES,
    libc::ENOSYS,
    libc::EINVAL,
    libc::ENOSPC,
    libc::EOPNOTSUPP,
];

/// Exit code of a probe child: `step * 8 + k`, where `k` is 1 + the index
/// of `errno` in [`ERRNOS`], or 7 for any other errno.
fn encode(step: i32, errno: i32) -> i32 {
    let k = ERRNOS.iter().position(|&e| e == errno).map_or(7, |i| i + 1);
    step * 8 + k as i32
}

/// The inverse of [`encode`]: `(step, errno)`, errno 0 when unrecognised.
fn decode(code: i32) -> (i32, i32) {
    let k = (code % 8) as usize;
    (
        code / 8,
        if (1..=6).contains(&k) {
            ERRNOS[k - 1]
        } else {
            0
        },
    )
}

/// Forks; the child tries the namespace steps `sandbox run` takes (user
/// namespace, then mount/PID/net, a private mount, a fresh procfs in the
/// new PID namespace) and reports the first refusal in its exit code.
fn probe_namespaces() -> Result<(), (NsStep, i32)> {
    match fork_and_wait(namespace_child) {
        0 => Ok(()),
        code => {
            let (step, errno) = decode(code);
            Err((NsStep::from_code(step).unwrap_or(NsStep::Fork), errno))
        }
    }
}

/// Runs in the forked child: only async-signal-safe calls.
fn namespace_child() -> i32 {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: plain syscalls with constant arguments and static C strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER) != 0 {
            return encode(NsStep::UserNs as i32, errno());
        }
        let others = libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWCGROUP;
        if libc::unshare(others) != 0 {
            return encode(NsStep::OtherNs as i32, errno());
        }
        let name = b"airlock";
        if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
            return encode(NsStep::Hostname as i32, errno());
        }
        let none = std::ptr::null::<libc::c_char>();
        if libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return encode(NsStep::Mount as i32, errno());
        }
        match libc::fork() {
            -1 => encode(NsStep::Fork as i32, errno()),
            0 => {
                // PID 1 of the new PID namespace; this mount namespace is
                // ours alone, so covering /proc here touches nothing else.
                let rc = libc::mount(
                    c"proc".as_ptr(),
                    c"/proc".as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                );
                libc::_exit(if rc == 0 {
                    0
                } else {
                    encode(NsStep::Proc as i32, errno())
                })
            }
            pid => {
                let mut status = 0;
                if libc::waitpid(pid, &mut status, 0) != pid || !libc::WIFEXITED(status) {
                    return encode(NsStep::Fork as i32, libc::ECHILD);
                }
                libc::WEXITSTATUS(status)
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Probe {
    Seccomp,
    NoNewPrivs,
}

/// Runs `probe` in a forked child: `Err(errno)` when the kernel refused.
fn probe_in_child(probe: Probe) -> Result<(), i32> {
    let code = fork_and_wait(match probe {
        Probe::Seccomp => seccomp_child,
        Probe::NoNewPrivs => nnp_child,
    });
    if code == 0 {
        Ok(())
    } else {
        Err(decode(code).1)
    }
}

fn nnp_child() -> i32 {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return encode(
            1,
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        );
    }
    0
}

fn seccomp_child() -> i32 {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // One instruction: allow everything. Installing it is the whole test.
    let mut allow = [libc::sock_filter {
        code: 0x06, // BPF_RET | BPF_K
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: allow.as_mut_ptr(),
    };
    // SAFETY: `prog` points at a live one-instruction program for the
    // duration of the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return encode(1, errno());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            return encode(1, errno());
        }
    }
    0
}

/// Forks, runs `child` there (exit code = its result), waits for it.
/// Returns the child's exit code, or a code meaning "could not tell".
fn fork_and_wait(child: fn() -> i32) -> i32 {
    // SAFETY: `sandbox doctor` is single-threaded when it probes; the child
    // only makes async-signal-safe syscalls and leaves with _exit.
    unsafe {
        match libc::fork() {
            -1 => encode(
                NsStep::Fork as i32,
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ),
            0 => libc::_exit(child()),
            pid => {
                let mut status = 0;
                if libc::waitpid(pid, &mut status, 0) != pid || !libc::WIFEXITED(status) {
                    return encode(NsStep::Fork as i32, libc::ECHILD);
                }
                libc::WEXITSTATUS(status)
            }
        }
    }
}

/// Prints the container section of `sandbox doctor`; quiet when nothing is
/// missing outside a container.
pub fn print_report() {
    let facts = gather();
    let d = diagnose(&facts);
    if facts.runtime == Runtime::None && d.missing.is_empty() {
        return;
    }
    let runtime = match facts.runtime {
        Runtime::None => "none detected",
        Runtime::Podman => "podman",
        Runtime::Docker => "docker",
        Runtime::Kubernetes => "kubernetes",
        Runtime::Other => "a container runtime",
    };
    println!("\ncontainer: {runtime}");
    for line in &d.advice {
        println!("  {line}");
    }
    let verdict = match d.verdict {
        Verdict::Full => "full isolation is available here",
        Verdict::LandlockOnly => {
            "full isolation is not available here; --isolation=landlock-only is"
        }
        Verdict::Nothing => "no isolation mode can start here until the flags above are applied",
    };
    println!("  verdict: {verdict}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Facts {
        Facts {
            runtime: Runtime::Podman,
            namespaces: Ok(()),
            userns_sysctl_off: false,
            landlock_abi: 6,
            landlock_errno: 0,
            seccomp: Ok(()),
            no_new_privs: Ok(()),
            filtered: true,
            cgroup_delegated: true,
        }
    }

    #[test]
    fn diagnosis_table() {
        use NsStep::*;
        let eperm = libc::EPERM;
        // (case, facts, verdict, substrings the advice must contain)
        type Row = (&'static str, Facts, Verdict, &'static [&'static str]);
        let rows: Vec<Row> = vec![
            ("all there", healthy(), Verdict::Full, &[]),
            (
                "seccomp refuses userns, new kernel: profile or landlock-only",
                Facts {
                    namespaces: Err((UserNs, eperm)),
                    ..healthy()
                },
                Verdict::LandlockOnly,
                &[
                    "EPERM",
                    "seccomp=deploy/seccomp-airlock.json",
                    "--isolation=landlock-only",
                ],
            ),
            (
                "seccomp refuses userns, old kernel: no degraded mode",
                Facts {
                    namespaces: Err((UserNs, eperm)),
                    landlock_abi: 4,
                    ..healthy()
                },
                Verdict::Nothing,
                &[
                    "seccomp=deploy/seccomp-airlock.json",
                    "needs Landlock ABI 6",
                ],
            ),
            (
                "docker: docker flags only",
                Facts {
                    runtime: Runtime::Docker,
                    namespaces: Err((OtherNs, eperm)),
                    ..healthy()
                },
                Verdict::LandlockOnly,
                &["docker run --security-opt seccomp=deploy/seccomp-airlock.json"],
            ),
            (
                "kubernetes: Localhost profile",
                Facts {
                    runtime: Runtime::Kubernetes,
                    namespaces: Err((UserNs, eperm)),
                    ..healthy()
                },
                Verdict::LandlockOnly,
                &["seccompProfile: {type: Localhost"],
            ),
            (
                "seccomp refuses sethostname (podman's default)",
                Facts {
                    namespaces: Err((Hostname, eperm)),
                    ..healthy()
                },
                Verdict::LandlockOnly,
                &[
                    "sethostname",
                    "podman run --security-opt seccomp=deploy/seccomp-airlock.json",
                ],
            ),
            (
                "masked /proc: unmask",
                Facts {
                    namespaces: Err((Proc, eperm)),
                    ..healthy()
                },
                Verdict::LandlockOnly,
                &["masks parts of /proc", "unmask=/proc/*"],
            ),
            (
                "sysctl off: only the host can fix it",
                Facts {
                    namespaces: Err((UserNs, libc::ENOSPC)),
                    userns_sysctl_off: true,
                    ..healthy()
                },
                Verdict::LandlockOnly,
                &["user.max_user_namespaces=10000"],
            ),
            (
                "landlock refused by seccomp",
                Facts {
                    landlock_abi: 0,
                    landlock_errno: eperm,
                    ..healthy()
                },
                Verdict::Nothing,
                &[
                    "landlock_create_ruleset failed with EPERM",
                    "seccomp=deploy/",
                ],
            ),
            (
                "landlock missing in the kernel, no filter",
                Facts {
                    runtime: Runtime::None,
                    landlock_abi: 0,
                    landlock_errno: libc::EOPNOTSUPP,
                    filtered: false,
                    ..healthy()
                },
                Verdict::Nothing,
                &["Linux 5.13+"],
            ),
            (
                "seccomp refused",
                Facts {
                    seccomp: Err(libc::EINVAL),
                    ..healthy()
                },
                Verdict::Nothing,
                &["CONFIG_SECCOMP_FILTER"],
            ),
            (
                "no_new_privs refused",
                Facts {
                    no_new_privs: Err(eperm),
                    ..healthy()
                },
                Verdict::Nothing,
                &["PR_SET_NO_NEW_PRIVS"],
            ),
            (
                "cgroup not delegated is advice, not a blocker",
                Facts {
                    cgroup_delegated: false,
                    ..healthy()
                },
                Verdict::Full,
                &["--pids-limit", "best_effort"],
            ),
        ];
        for (case, facts, verdict, needles) in rows {
            let d = diagnose(&facts);
            assert_eq!(d.verdict, verdict, "{case}: {d:?}");
            let text = d.advice.join("\n");
            for n in needles {
                assert!(text.contains(n), "{case}: advice lacks {n:?}:\n{text}");
            }
            assert!(
                !text.contains("unconfined\n") && !text.contains("--privileged"),
                "{case}"
            );
        }
    }

    #[test]
    fn probe_exit_codes_round_trip_and_fit_a_byte() {
        for step in 1..=6 {
            for errno in ERRNOS {
                let code = encode(step, errno);
                assert!((1..=255).contains(&code));
                assert_eq!(decode(code), (step, errno));
            }
            assert_eq!(decode(encode(step, libc::ECHILD)), (step, 0));
        }
    }

    #[test]
    fn docker_advice_never_says_podman() {
        let d = diagnose(&Facts {
            runtime: Runtime::Docker,
            namespaces: Err((NsStep::UserNs, libc::EPERM)),
            ..healthy()
        });
        assert!(!d.advice.join("\n").contains("podman run"));
    }

    /// The shipped profile allows exactly the syscalls `sandbox run` adds to
    /// the default list, and none of the ones the default list refuses.
    #[test]
    fn shipped_seccomp_profile_allows_what_sandbox_needs_and_no_more() {
        let text = include_str!("../../deploy/seccomp-airlock.json");
        let profile: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        let rules = profile["syscalls"].as_array().expect("syscalls");
        let allowed_unconditionally = |name: &str| {
            rules.iter().any(|r| {
                r["action"] == "SCMP_ACT_ALLOW"
                    && r.get("args")
                        .is_none_or(|a| a.as_array().is_none_or(|a| a.is_empty()))
                    && r["includes"].as_object().is_none_or(|i| i.is_empty())
                    && r["names"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|n| n == name))
            })
        };
        for needed in [
            "clone",
            "unshare",
            "mount",
            "umount2",
            "pivot_root",
            "mount_setattr",
            "sethostname",
            "landlock_create_ruleset",
            "landlock_add_rule",
            "landlock_restrict_self",
            "seccomp",
            "prctl",
        ] {
            assert!(allowed_unconditionally(needed), "{needed} must be allowed");
            // An ERRNO rule for the same syscall would win over the allow.
            for r in rules.iter().filter(|r| r["action"] != "SCMP_ACT_ALLOW") {
                let names = r["names"].as_array().expect("names");
                assert!(
                    !names.iter().any(|n| n == needed),
                    "{needed} refused by {r}"
                );
            }
        }
        for refused in [
            "setns",
            "open_tree",
            "move_mount",
            "fsopen",
            "fsmount",
            "bpf",
            "kexec_load",
            "init_module",
            "userfaultfd",
            "clone3",
        ] {
            assert!(
                !allowed_unconditionally(refused),
                "{refused} must stay refused"
            );
        }
    }
}
