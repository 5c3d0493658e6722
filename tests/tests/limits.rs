//! End-to-end resource limits: `[limits]` memory, pids and cpu through the
//! session's cgroup (v1 and v2 paths, as this host offers them), rlimits,
//! tmpfs inodes, fail-closed behaviour, and teardown that leaves nothing.
//!
//! The cgroup tests need root (or a delegated cgroup); as another user they
//! print a note and pass.

mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("note: {test} needs root (it creates cgroups); skipped");
    true
}

/// Writes `[limits]` with `body` to a profile file; returns the dir (kept
/// alive by the caller) and the path.
fn limits_profile(body: &str) -> (TempDir, String) {
    let dir = TempDir::new("/tmp", "airlock-limits");
    let p = dir.join("limits.toml");
    write_file(&p, &format!("[limits]\n{body}\n"), 0o644);
    set_mode(dir.path(), 0o755);
    let p = p.display().to_string();
    (dir, p)
}

/// The session cgroup directories a host process is in (those named
/// `airlock-*`), read from `/proc/PID/cgroup` and `/proc/self/mounts`.
fn session_cgroups(pid: i32) -> Vec<PathBuf> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut out = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap_or(""), parts.next());
        let Some(path) = path.filter(|p| p.contains("airlock-")) else {
            continue;
        };
        for m in mounts.lines() {
            let f: Vec<&str> = m.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let matches = if ctrls.is_empty() {
                f[2] == "cgroup2"
            } else {
                f[2] == "cgroup" && ctrls.split(',').all(|c| f[3].split(',').any(|o| o == c))
            };
            if matches {
                out.push(PathBuf::from(f[1]).join(path.trim_start_matches('/')));
            }
        }
    }
    out
}

/// A fork bomb hits `pids` inside the sandbox; the host and `sandbox` stay
/// responsive, and the run ends normally.
#[test]
fn fork_bomb_is_stopped_by_the_pids_limit() {
    if skip_unless_root("fork_bomb_is_stopped_by_the_pids_limit") {
        return;
    }
    let sb = Sandbox::new();
    let (_d, p) = limits_profile("pids = 16\ntimeout = \"20s\"");
    let out = sb.run_with(
        &["--profile", &p],
        &[
            "/bin/sh",
            "-c",
            "n=0; for i in $(seq 1 64); do sleep 3 2>/dev/null & n=$((n+1)); done 2>&1; \
             echo started=$(jobs -p | wc -l); kill $(jobs -p) 2>/dev/null; exit 0",
        ],
    );
    // dash gives up with 2 at the first refused fork; what matters is that
    // the run ended by itself with the agent's status, not a setup error.
    assert!(matches!(out.code(), Some(0) | Some(2)), "{out}");
    assert!(
        out.stdout.contains("fork") || out.stderr.contains("fork"),
        "forks beyond the limit should fail\n{out}"
    );
}

/// A memory hog is OOM-killed inside its group: the agent dies with
/// SIGKILL (137), the supervisor reports it, and the host is untouched.
#[test]
fn memory_hog_is_oom_killed_inside_the_group() {
    if skip_unless_root("memory_hog_is_oom_killed_inside_the_group") {
        return;
    }
    let sb = Sandbox::new();
    let (_d, p) = limits_profile("memory = \"64M\"");
    let out = sb.run_with(
        &["--profile", &p],
        &[
            "python3",
            "-c",
            "b = bytearray(256 << 20)\nprint('survived')",
        ],
    );
    out.assert_code(137, "the hog is killed by the OOM killer (SIGKILL)");
    assert!(!out.stdout.contains("survived"), "{out}");
    // The session-end audit event says which limit was hit, and what the
    // session used.
    let log = std::fs::read_to_string(sb.audit_log()).expect("audit log");
    let end: serde_json::Value = log
        .lines()
        .rfind(|l| l.contains("\"action\":\"session.end\""))
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("a session.end event");
    let resources = &end["airlock"]["resources"];
    assert_eq!(resources["limit_hit"], "memory", "{end}");
    assert!(
        resources["peak_memory_bytes"].as_u64().unwrap_or(0) > 32 << 20,
        "{end}"
    );
    // Under the limit the same program runs.
    let out = sb.run_with(
        &["--profile", &p],
        &["python3", "-c", "b = bytearray(8 << 20)\nprint('fine')"],
    );
    out.assert_code(0, "an allocation under the limit works");
}

/// `cpu = 0.25`: a busy loop gets at most about a quarter of a CPU per
/// second of wall time. Only an upper bound is checked: a busy host can
/// only lower the share, so the check cannot flake on load.
#[test]
fn cpu_limit_caps_the_agent_at_its_share() {
    if skip_unless_root("cpu_limit_caps_the_agent_at_its_share") {
        return;
    }
    let sb = Sandbox::new();
    let (_d, p) = limits_profile("cpu = 0.25");
    let out = sb.run_with(
        &["--profile", &p],
        &[
            "python3",
            "-c",
            "import time\nw = time.time()\nc = time.process_time()\n\
             while time.time() - w < 1.5: pass\n\
             print(round((time.process_time() - c) / (time.time() - w), 2))",
        ],
    );
    out.assert_code(0, "busy loop");
    let share: f64 = out.stdout.trim().parse().expect("a number");
    assert!(
        share < 0.45,
        "cpu share {share} above the 0.25 limit\n{out}"
    );
}

/// The agent cannot reach its own cgroup: its cgroup namespace starts at
/// the session's cgroup, no cgroup filesystem is mounted inside and it
/// cannot mount one; on the host the session's files belong to root and
/// are not writable by the agent's uid. The directories are removed at
/// the end.
#[test]
fn agent_cannot_write_its_own_cgroup_files() {
    if skip_unless_root("agent_cannot_write_its_own_cgroup_files") {
        return;
    }
    let sb = Sandbox::new();
    let (_d, p) = limits_profile("memory = \"256M\"\npids = 64");
    let marker = sleep_marker(4250);
    let _reaper = MarkerReaper(marker.clone());
    let script = format!(
        "cat /proc/self/cgroup; ls /sys/fs/cgroup 2>&1; \
         mount -t cgroup2 none /tmp 2>&1 && echo MOUNTED; \
         echo ready; exec sleep {marker}"
    );
    let mut running =
        Streaming::spawn(sb.command_with(&["--profile", &p], &["/bin/sh", "-c", &script]));
    running.wait_for_line("ready", RUN_DEADLINE);
    let mut pids = Vec::new();
    for _ in 0..100 {
        pids = host_processes_with(&marker);
        pids.retain(|(_, cmd)| cmd.starts_with("sleep "));
        if !pids.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pids.len(), 1, "{pids:?}");
    let dirs = session_cgroups(pids[0].0);
    assert!(
        dirs.iter()
            .any(|d| d.to_string_lossy().contains("/memory/")
                || d.to_string_lossy().contains("unified")),
        "the agent is in a session cgroup: {dirs:?}"
    );
    for dir in &dirs {
        for entry in std::fs::read_dir(dir).expect("cgroup dir").flatten() {
            let meta = entry.metadata().expect("stat");
            assert_eq!(meta.uid(), 0, "{} not root's", entry.path().display());
            assert_eq!(
                meta.permissions().mode() & 0o022,
                0,
                "{} writable by others",
                entry.path().display()
            );
        }
    }
    running.signal(libc::SIGTERM);
    let out = running.finish();
    for line in out.stdout.lines().take_while(|l| *l != "ready") {
        if line.contains("::")
            || line.contains(':') && line.chars().next().is_some_and(|c| c.is_ascii_digit())
        {
            assert!(
                line.ends_with(":/"),
                "cgroup path visible inside: {line}\n{out}"
            );
        }
    }
    assert!(!out.stdout.contains("MOUNTED"), "{out}");
    assert!(
        out.stdout.contains("No such file"),
        "no cgroupfs inside\n{out}"
    );
    for dir in &dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// As an ordinary user without a delegated cgroup a memory limit cannot be
/// enforced: the run is refused with the limit and the fix named; with
/// `best_effort = true` it runs and warns. Runs without limits are as ever.
#[test]
fn unenforceable_limit_fails_closed_unless_best_effort() {
    const USER: u32 = 1000;
    if skip_unless_root("unenforceable_limit_fails_closed_unless_best_effort") {
        return;
    }
    let bin_dir = TempDir::new("/tmp", "airlock-bin");
    set_mode(bin_dir.path(), 0o755);
    let sandbox = bin_dir.join("sandbox");
    install_executable(&sandbox_bin(), &sandbox);
    let workspace = TempDir::new("/tmp", "airlock-ws-user");
    chown(workspace.path(), USER, USER);
    let home = TempDir::new("/tmp", "airlock-home-user");
    chown(home.path(), USER, USER);
    let (_d, strict) = limits_profile("memory = \"256M\"");
    let (_e, lax) = limits_profile("memory = \"256M\"\nbest_effort = true");
    let run = |opts: &[&str]| {
        let mut cmd = Command::new(&sandbox);
        cmd.arg("run")
            .arg("--workspace")
            .arg(workspace.path())
            .args(opts)
            .args(["--", "echo", "ran"])
            .current_dir(workspace.path())
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .uid(USER)
            .gid(USER);
        run_to_end(cmd)
    };
    let out = run(&["--profile", &strict]);
    out.assert_code(125, "an unenforceable limit stops the run");
    assert!(
        out.stderr.contains("cgroup: cannot enforce limits.memory")
            && out.stderr.contains("best_effort"),
        "{out}"
    );
    let out = run(&["--profile", &lax]);
    out.assert_code(0, "best_effort runs anyway");
    assert!(out.stdout.contains("ran"), "{out}");
    assert!(out.stderr.contains("not enforced"), "a warning\n{out}");
    // The default policy's own ceilings (pids, memory) cannot be enforced
    // for this user either: one warning line names them, the run goes on.
    let out = run(&[]);
    out.assert_code(0, "the default's ceilings do not stop ordinary users");
    assert!(out.stdout.contains("ran"), "{out}");
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warnings.len(), 1, "one warning, once\n{out}");
    assert!(
        warnings[0].contains("default ceilings")
            && warnings[0].contains("limits.pids")
            && warnings[0].contains("limits.memory")
            && warnings[0].contains("not enforced"),
        "{out}"
    );
}

/// Freeze-then-kill (the v1 path) and cgroup.kill (v2) both leave nothing:
/// a SIGTERM-ignoring process, a stopped one and a setsid daemon are all
/// gone after the agent exits and after `--timeout`.
#[test]
fn nothing_survives_exit_or_timeout_on_either_cgroup_path() {
    if skip_unless_root("nothing_survives_exit_or_timeout_on_either_cgroup_path") {
        return;
    }
    let sb = Sandbox::new();
    let (_d, p) = limits_profile("pids = 64");
    for path in ["v1", "auto"] {
        for timeout in [false, true] {
            let m = sleep_marker(4251);
            let _reaper = MarkerReaper(m.clone());
            let script = format!(
                "(trap '' TERM; exec sleep {m}) & \
                 sleep {m} & kill -STOP $! ; \
                 (setsid sh -c 'sleep {m} </dev/null >/dev/null 2>&1 &' &) ; \
                 sleep 0.3; {}",
                if timeout { "sleep 60" } else { "exit 0" }
            );
            let mut cmd = sb.command_with(
                &["--profile", &p, "--timeout", "2"],
                &["/bin/sh", "-c", &script],
            );
            cmd.env("AIRLOCK_TEST_CGROUP", path);
            let out = run_to_end(cmd);
            out.assert_code(if timeout { 124 } else { 0 }, "run");
            let left = wait_until_gone(&m, Duration::from_secs(2));
            assert!(
                left.is_empty(),
                "{path} timeout={timeout}: survivors {left:?}\n{out}"
            );
        }
    }
}

/// Core dumps are off for good (hard limit 0), `nofile` caps descriptors at
/// EMFILE, `fsize` caps file size at EFBIG, and /tmp has an inode limit.
#[test]
fn rlimits_and_tmpfs_inodes_bound_the_agent() {
    let sb = Sandbox::new();
    let (_d, p) = limits_profile("nofile = 64\nfsize = \"1M\"");
    let out = sb.run_with(
        &["--profile", &p],
        &[
            "/bin/sh",
            "-c",
            "echo core=$(ulimit -c)/$(ulimit -Hc) nofile=$(ulimit -n)/$(ulimit -Hn); \
             ulimit -Hc unlimited 2>/dev/null && echo RAISED; \
             dd if=/dev/zero of=/tmp/f bs=1M count=2 2>&1 | head -1; \
             df -i /tmp | tail -1",
        ],
    );
    out.assert_code(0, "rlimits");
    assert!(out.stdout.contains("core=0/0 nofile=64/64"), "{out}");
    assert!(!out.stdout.contains("RAISED"), "{out}");
    assert!(
        (out.stdout.contains("File too large") || out.stderr.contains("File size limit")),
        "{out}"
    );
    // 1 GiB of /tmp at one inode per 16 KiB.
    assert!(
        out.stdout
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("65536"),
        "{out}"
    );
    let out = sb.run_with(
        &["--profile", &p],
        &[
            "python3",
            "-c",
            "import os\nfds = []\ntry:\n    while True: fds.append(os.open('/dev/null', os.O_RDONLY))\n\
             except OSError as e: print('errno', e.errno, len(fds))",
        ],
    );
    assert!(out.stdout.starts_with("errno 24 "), "EMFILE\n{out}");
}

/// The session-end event's `limit_hit`, from the last session in `log`.
fn last_limit_hit(log: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(log).expect("audit log");
    let end: serde_json::Value = text
        .lines()
        .rfind(|l| l.contains("\"action\":\"session.end\""))
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("a session.end event");
    end["airlock"]["resources"]["limit_hit"].clone()
}

/// A fork bomb under the default policy (no profile asks for a limit)
/// stops at the default's ceiling of 4096 processes: pid_max is shared
/// with the host (32768 on this one), and the host can still start
/// processes afterwards. The bomb is bounded at 6000, so without the
/// ceiling the test fails without exhausting the host.
#[test]
fn fork_bomb_under_the_default_policy_stops_at_its_ceiling() {
    if skip_unless_root("fork_bomb_under_the_default_policy_stops_at_its_ceiling") {
        return;
    }
    let sb = Sandbox::new();
    let report = sb.probe(&["fork-bomb=6000"]);
    let got = report.get("fork-bomb=6000");
    let forked = got
        .strip_prefix("errno=EAGAIN after=")
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("the bomb was not stopped: {got}\n{}", report.output));
    assert!(forked <= 4096, "{got}");
    assert_eq!(last_limit_hit(&sb.audit_log()), "pids");
    let host = Command::new("/bin/true")
        .status()
        .expect("the host can start a process");
    assert!(host.success());
}

/// A memory hog under the default policy is OOM-killed at the default's
/// share of RAM (half), inside its own group; the host is untouched. The
/// debug build's `AIRLOCK_TEST_RAM` stands in for the machine's RAM so
/// the hog needs 1 GiB, not half of the CI machine.
#[test]
fn memory_hog_under_the_default_policy_is_killed_at_half_the_ram() {
    let show = Command::new(sandbox_bin())
        .args(["policy", "show", "--json"])
        .env("AIRLOCK_TEST_RAM", "512M")
        .output()
        .expect("policy show");
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("JSON");
    let limits = &shown["policy"]["limits"];
    assert_eq!(limits["memory"], "256M", "{shown}");
    assert_eq!(limits["pids"], 4096, "{shown}");
    if skip_unless_root("memory_hog_under_the_default_policy_is_killed_at_half_the_ram") {
        return;
    }
    let sb = Sandbox::new();
    let mut cmd = sb.command(&["python3", "-c", "b = bytearray(1 << 30)\nprint('survived')"]);
    cmd.env("AIRLOCK_TEST_RAM", "512M");
    let out = run_to_end(cmd);
    out.assert_code(137, "the hog is killed by the OOM killer (SIGKILL)");
    assert!(!out.stdout.contains("survived"), "{out}");
    assert_eq!(last_limit_hit(&sb.audit_log()), "memory", "{out}");
    let host = Command::new("/bin/true")
        .status()
        .expect("the host can start a process");
    assert!(host.success());
}

/// The `airlock-*` groups beside the session groups in `dirs` (in the
/// same parents).
fn sibling_session_groups(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for parent in dirs.iter().filter_map(|d| d.parent()) {
        for e in std::fs::read_dir(parent).expect("cgroup parent").flatten() {
            if e.file_name().to_string_lossy().starts_with("airlock-") && !out.contains(&e.path()) {
                out.push(e.path());
            }
        }
    }
    out
}

/// A supervisor SIGKILLed during start-up or mid-session cannot tear
/// down, and the kernel never removes an empty cgroup: its session group
/// stays behind. The next run removes every group whose supervisor is
/// gone, and leaves the group of a session that is still running alone.
#[test]
fn groups_left_by_a_killed_supervisor_are_removed_by_the_next_run() {
    if skip_unless_root("groups_left_by_a_killed_supervisor_are_removed_by_the_next_run") {
        return;
    }
    let sb = Sandbox::new();
    // Kills during start-up, as in the report (2-40 ms in).
    let mut killed_at_start = Vec::new();
    for delay in [2u64, 5, 10, 20, 40] {
        let mut child = sb
            .command(&["/bin/sleep", "5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sandbox");
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        killed_at_start.push(child.id());
    }
    // Two sessions running: one whose supervisor is then killed, one that
    // goes on.
    let start = |marker: &str| {
        let mut s = Streaming::spawn(sb.command(&[
            "/bin/sh",
            "-c",
            &format!("echo ready; exec sleep {marker}"),
        ]));
        s.wait_for_line("ready", RUN_DEADLINE);
        let mut pids = Vec::new();
        for _ in 0..100 {
            pids = host_processes_with(marker);
            pids.retain(|(_, cmd)| cmd.starts_with("sleep "));
            if !pids.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(pids.len(), 1, "{pids:?}");
        (s, session_cgroups(pids[0].0))
    };
    let (killed_marker, live_marker) = (sleep_marker(4253), sleep_marker(4254));
    let _reapers = (
        MarkerReaper(killed_marker.clone()),
        MarkerReaper(live_marker.clone()),
    );
    let (mut killed, killed_dirs) = start(&killed_marker);
    let (live, live_dirs) = start(&live_marker);
    assert!(!killed_dirs.is_empty() && !live_dirs.is_empty());
    killed.signal(libc::SIGKILL);
    let _ = killed.child.wait();
    let left = wait_until_gone(&killed_marker, Duration::from_secs(10));
    assert!(left.is_empty(), "the sandbox died with its supervisor");
    // Its groups are left behind now, empty: the kernel never removes
    // them. (A run of a test beside this one may sweep them first.)
    // The groups of these killed supervisors (named after their pid; other
    // sessions on this host are not this test's to judge).
    let mut stale: Vec<PathBuf> = sibling_session_groups(&killed_dirs)
        .into_iter()
        .filter(|d| {
            let name = d.to_string_lossy();
            killed_at_start
                .iter()
                .any(|pid| name.ends_with(&format!("-{pid}")))
        })
        .collect();
    stale.extend(killed_dirs.iter().cloned());
    // The next run sweeps them.
    sb.run(&["true"]).assert_code(0, "the next run");
    for d in &stale {
        assert!(!d.exists(), "{} survived the next run", d.display());
    }
    for d in &live_dirs {
        assert!(d.exists(), "a live session's {} was removed", d.display());
    }
    drop(live);
    let _ = wait_until_gone(&live_marker, Duration::from_secs(10));
}
