//! `sandbox doctor`: what this host supports, and whether `sandbox run`
//! works here (it tries a real sandbox, the only honest answer).

use std::process::{Command, ExitCode, Stdio};

use crate::landlock;

/// One line of the report.
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    /// A negative answer that does not stop `sandbox run` (a limit this
    /// host cannot enforce): marked `no`, never `ok`.
    limited: bool,
}

/// The mark a line starts with: a negative result never reads `ok`.
fn mark(c: &Check) -> &'static str {
    match (c.ok, c.limited) {
        (true, false) => "ok  ",
        (true, true) => "no  ",
        (false, _) => "FAIL",
    }
}

/// Prints the report; exits 0 when `sandbox run` works on this host.
pub fn main() -> ExitCode {
    let mut checks = vec![kernel(), user_namespaces(), landlock_abi(), seccomp()];
    checks.extend(cgroups());
    checks.push(idmapped_mounts());
    let trial = trial_run();
    let works = trial.ok;
    checks.push(trial);
    for c in &checks {
        println!("{} {:<18} {}", mark(c), c.name, c.detail);
    }
    crate::container::print_report();
    if works {
        println!("\nsandbox run works on this host.");
        ExitCode::SUCCESS
    } else {
        println!("\nsandbox run will refuse to start on this host; fix the FAIL lines above.");
        ExitCode::from(1)
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn kernel() -> Check {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    Check {
        limited: false,
        name: "kernel",
        ok: true,
        detail: format!("Linux {release}"),
    }
}

fn user_namespaces() -> Check {
    let max = read("/proc/sys/user/max_user_namespaces").unwrap_or_else(|| "?".into());
    let debian_knob = read("/proc/sys/kernel/unprivileged_userns_clone");
    let apparmor = read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    let mut ok = max != "0";
    let mut detail = format!("max_user_namespaces={max}");
    if let Some(v) = debian_knob {
        ok &= v == "1" || nix::unistd::geteuid().is_root();
        detail.push_str(&format!(", unprivileged_userns_clone={v}"));
    }
    if let Some(v) = apparmor {
        detail.push_str(&format!(", apparmor_restrict_unprivileged_userns={v}"));
    }
    if !ok {
        detail.push_str(
            " (fix: sysctl -w user.max_user_namespaces=10000 kernel.unprivileged_userns_clone=1)",
        );
    }
    Check {
        limited: false,
        name: "user namespaces",
        ok,
        detail,
    }
}

fn landlock_abi() -> Check {
    let abi = landlock::kernel_abi();
    let features = match abi {
        ..=0 => "none (needs Linux 5.13+ with landlock in the lsm= boot list)",
        1..=3 => "filesystem rules only: no TCP rules, no scoping",
        4 | 5 => "filesystem and TCP rules; no abstract-socket/signal scoping (ABI 6)",
        _ => "filesystem, TCP, abstract-socket and signal scoping",
    };
    Check {
        limited: false,
        name: "landlock",
        ok: abi >= 1,
        detail: format!("ABI {abi}: {features}"),
    }
}

fn seccomp() -> Check {
    let actions = read("/proc/sys/kernel/seccomp/actions_avail");
    let ok = actions
        .as_deref()
        .is_some_and(|a| a.contains("errno") && a.contains("kill_process"));
    Check {
        limited: false,
        name: "seccomp",
        ok,
        detail: match actions {
            Some(a) => format!("filter actions: {a}"),
            None => "no seccomp filter support (CONFIG_SECCOMP_FILTER)".into(),
        },
    }
}

fn cgroups() -> Vec<Check> {
    let mounts = read("/proc/self/mounts").unwrap_or_default();
    let v2_root = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/cgroup") && l.contains("cgroup2"));
    let v2_any = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup2"));
    let v1 = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup"));
    let detail = match (v2_root, v2_any, v1) {
        (true, _, _) => "cgroup v2 (unified)",
        (false, true, true) => "hybrid: cgroup v1 controllers with a v2 hierarchy",
        (false, false, true) => "cgroup v1 only",
        _ => "no cgroup filesystem mounted",
    };
    let mut checks = vec![Check {
        limited: false,
        name: "cgroups",
        ok: true,
        detail: detail.to_string(),
    }];
    checks.extend(limit_support());
    checks
}

/// One line per cgroup limit: enforceable here (and through which cgroup
/// version), or why not. Not a failure: runs without these limits work,
/// and a profile that asks for one fails closed (or warns, best_effort).
fn limit_support() -> Vec<Check> {
    crate::cgroup::host_support()
        .into_iter()
        .map(|s| Check {
            name: match s.limit {
                "memory" => "limits.memory",
                "pids" => "limits.pids",
                _ => "limits.cpu",
            },
            ok: true,
            limited: s.result.is_err(),
            detail: match s.result {
                Ok(crate::cgroup::Version::V2) => "enforced (cgroup v2)".to_string(),
                Ok(crate::cgroup::Version::V1) => "enforced (cgroup v1)".to_string(),
                Err(why) => format!(
                    "cannot be enforced here: {why} (a ceiling of the default policy is \
                     skipped with a warning; a profile asking for it fails unless [limits] \
                     best_effort = true)"
                ),
            },
        })
        .collect()
}

/// As root, whether the trees a workspace usually lives on (the current
/// directory, the temp dir) can be idmapped onto the agent: tried for
/// real, not guessed from the filesystem type.
fn idmapped_mounts() -> Check {
    if !nix::unistd::geteuid().is_root() {
        return Check {
            name: "idmapped mounts",
            ok: true,
            limited: false,
            detail: "not needed: as an ordinary user the agent runs as you".into(),
        };
    }
    let mut ok = true;
    let mut parts = Vec::new();
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    for path in [cwd, std::env::temp_dir()] {
        let fs = crate::idmap::supported(&path);
        let step = crate::mounts::MountStep::IdmappedBind {
            source: path.clone(),
            target: path.clone(),
            map: crate::idmap::IdMap {
                owner_uid: 0,
                owner_gid: 0,
                agent_uid: crate::plan::DEFAULT_UNPRIVILEGED_ID,
                agent_gid: crate::plan::DEFAULT_UNPRIVILEGED_ID,
            },
            dir: true,
        };
        match crate::idmap::Detached::prepare(std::slice::from_ref(&step)) {
            Ok(_) => parts.push(format!(
                "{} ({}): supported",
                path.display(),
                fs.unwrap_or("?")
            )),
            Err(e) => {
                ok = false;
                parts.push(format!(
                    "{}: NOT supported ({}); a root-owned workspace there is refused, one owned \
                     by another user runs the agent as that user",
                    path.display(),
                    fs.err().unwrap_or(e.message)
                ));
            }
        }
    }
    // A filesystem that cannot be idmapped limits where a root-owned
    // workspace can be, but `sandbox run` still works elsewhere.
    Check {
        name: "idmapped mounts",
        ok: true,
        limited: !ok,
        detail: parts.join("; "),
    }
}

fn trial_run() -> Check {
    let exe = std::env::current_exe();
    let dir = std::env::temp_dir().join(format!("airlock-doctor-{}", std::process::id()));
    let result = exe.map_err(|e| e.to_string()).and_then(|exe| {
        // Created as whoever runs doctor (root: a root-owned tree), so the
        // trial also proves the idmapping; where there is none (a
        // container: the line above says so), the agent's uid owns it.
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        if nix::unistd::geteuid().is_root() && crate::idmap::supported(&dir).is_err() {
            let id = crate::plan::DEFAULT_UNPRIVILEGED_ID;
            let _ = std::os::unix::fs::chown(&dir, Some(id), Some(id));
        }
        Command::new(exe)
            .args(["run", "--workspace"])
            .arg(&dir)
            .args(["--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| e.to_string())
    });
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(out) if out.status.success() => Check {
            limited: false,
            name: "sandbox run",
            ok: true,
            detail: "a trial sandbox ran `true` with every layer applied".into(),
        },
        Ok(out) => Check {
            limited: false,
            name: "sandbox run",
            ok: false,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        },
        Err(e) => Check {
            limited: false,
            name: "sandbox run",
            ok: false,
            detail: format!("could not start a trial: {e}"),
        },
    }
}
