//! End-to-end isolation tests: run real programs (sh, cat, env, unshare,
//! python3) and the `probe` helper under `sandbox run`, and assert what a
//! user would see. Each test is named after the attack it stops.
//!
//! The tests need a built `sandbox` (`cargo build --workspace`, done by
//! scripts/test) and are meant to run as root, which is how the agent ends
//! up as uid 65534; a few root-only tests print a note and pass otherwise.
//! Every test uses its own workspace, temp dirs and process markers, so
//! they run in parallel.

mod common;

use common::*;
use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Prints why a root-only test is skipped; returns true when it should be.
fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("note: {test} needs root (it checks uid handling); skipped");
    true
}

/// `uid=U/U/U gid=G/G/G` as printed by `probe whoami`.
fn whoami_line(uid: u32, gid: u32) -> String {
    format!("uid={uid}/{uid}/{uid} gid={gid}/{gid}/{gid}")
}

// ===========================================================================
// Filesystem: the agent sees and changes only what it was granted.
// ===========================================================================

/// An agent that tries to plant or tamper with files outside its workspace
/// (a host temp dir, /usr, /etc) fails, and the host files are unchanged.
#[test]
fn writes_outside_the_workspace_are_refused() {
    let sb = Sandbox::new();
    // World-writable on purpose: only the sandbox stands between the agent
    // and these files, not ordinary permissions.
    let outside_var = TempDir::new("/var/tmp", "airlock-outside");
    let outside_tmp = TempDir::new("/tmp", "airlock-outside");
    for dir in [&outside_var, &outside_tmp] {
        set_mode(dir.path(), 0o777);
        write_file(&dir.join("existing.txt"), "original", 0o666);
    }
    let token = random_token();
    let usr_file = format!("/usr/airlock-x-{token}");
    let etc_file = format!("/etc/airlock-x-{token}");
    let names: Vec<String> = [&outside_var, &outside_tmp]
        .iter()
        .flat_map(|dir| {
            [
                format!("write-file={}", dir.join("existing.txt").display()),
                format!("write-file={}", dir.join("new.txt").display()),
            ]
        })
        .chain([
            format!("write-file={usr_file}"),
            format!("write-file={etc_file}"),
        ])
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();

    let report = sb.probe(&names);
    // Remove anything that did get through before asserting, so a failure
    // does not litter the host.
    let usr_written = Path::new(&usr_file).exists();
    let etc_written = Path::new(&etc_file).exists();
    let _ = std::fs::remove_file(&usr_file);
    let _ = std::fs::remove_file(&etc_file);

    report.expect_refused(&names);
    for dir in [&outside_var, &outside_tmp] {
        let content = std::fs::read_to_string(dir.join("existing.txt")).expect("read host file");
        assert_eq!(
            content,
            "original",
            "host file in {} was modified",
            dir.display()
        );
        assert!(
            !dir.join("new.txt").exists(),
            "agent created a file in {}",
            dir.display()
        );
    }
    assert!(!usr_written, "agent created {usr_file} on the host");
    assert!(!etc_written, "agent created {etc_file} on the host");
}

/// The agent's work is not lost: a file written in the workspace appears on
/// the host at the same path with the same contents.
#[test]
fn writes_inside_the_workspace_reach_the_host() {
    let sb = Sandbox::new();
    let target = sb.workspace.join("result.txt");
    let name = format!("write-file={}", target.display());
    sb.probe(&[&name]).expect(&[(&name, "ok")]);
    let content = std::fs::read_to_string(&target).expect("file written inside is on the host");
    assert_eq!(content, "x");

    // Real programs too: a shell redirect from the workspace cwd.
    let out = sb.sh("echo from-sh > from-sh.txt && cat from-sh.txt");
    out.assert_code(0, "writing a relative path in the workspace should work");
    let content = std::fs::read_to_string(sb.workspace.join("from-sh.txt")).expect("from-sh.txt");
    assert_eq!(content, "from-sh\n");
}

/// Without `--workspace`, the directory `sandbox` was started in is the
/// workspace: writable inside, and the agent starts there.
#[test]
fn workspace_defaults_to_the_current_directory() {
    let sb = Sandbox::new();
    let out = run_to_end(sb.bare_command(&[], &["/bin/sh", "-c", "pwd; echo hi > default-ws.txt"]));
    out.assert_code(0, "the default workspace should be writable");
    assert_eq!(
        out.stdout.trim(),
        sb.ws(),
        "agent should start in the workspace\n{out}"
    );
    let content =
        std::fs::read_to_string(sb.workspace.join("default-ws.txt")).expect("file on host");
    assert_eq!(content, "hi\n");
}

/// A secret planted outside the granted paths (in /var/tmp and in the
/// host's /tmp) cannot be read, listed or copied by the agent.
#[test]
fn planted_canary_outside_granted_paths_is_unreadable() {
    let sb = Sandbox::new();
    let canary = format!("canary-{}", random_token());
    let var_dir = TempDir::new("/var/tmp", "airlock-canary");
    let tmp_dir = TempDir::new("/tmp", "airlock-canary");
    for dir in [&var_dir, &tmp_dir] {
        // World-readable: permissions alone would let 65534 read it.
        write_file(&dir.join("secret.txt"), &canary, 0o644);
    }
    let var_secret = var_dir.join("secret.txt").display().to_string();
    let tmp_secret = tmp_dir.join("secret.txt").display().to_string();

    let r1 = format!("read-file={var_secret}");
    let r2 = format!("read-file={tmp_secret}");
    sb.probe(&[&r1, &r2]).expect_refused(&[&r1, &r2]);

    let script = format!(
        "cat {var_secret} {tmp_secret}; ls -A {} {} /var/tmp; cp {var_secret} stolen.txt; true",
        var_dir.display(),
        tmp_dir.display()
    );
    let out = sb.sh(&script);
    assert!(
        !out.stdout.contains(&canary),
        "canary leaked to stdout\n{out}"
    );
    assert!(
        !out.stdout.contains("secret.txt"),
        "the canary's directory is listable inside\n{out}"
    );
    assert!(
        !sb.workspace.join("stolen.txt").exists(),
        "canary copied into the workspace\n{out}"
    );
}

/// The user's real home (SSH keys, cloud credentials) is invisible: inside,
/// $HOME is the same path but an empty directory.
#[test]
fn host_home_contents_are_invisible() {
    let sb = Sandbox::new();
    let home = TempDir::new("/var/tmp", "airlock-home");
    let canary = format!("canary-{}", random_token());
    for (dir, file) in [(".ssh", "id_rsa"), (".aws", "credentials")] {
        std::fs::create_dir(home.join(dir)).expect("create canary dir");
        set_mode(&home.join(dir), 0o755);
        write_file(&home.join(dir).join(file), &canary, 0o644);
    }
    let ssh = format!("read-file={}", home.join(".ssh/id_rsa").display());
    let aws = format!("read-file={}", home.join(".aws/credentials").display());
    let mut probe = sb.command(&[&sb.probe.display().to_string(), &ssh, &aws]);
    probe.env("HOME", home.path());
    ProbeReport::parse(run_to_end(probe), &[&ssh, &aws]).expect_refused(&[&ssh, &aws]);

    let mut listing = sb.command(&[
        "/bin/sh",
        "-c",
        "echo \"home=$HOME\"; ls -A \"$HOME\"; echo end-of-listing; cat \"$HOME\"/.ssh/id_rsa",
    ]);
    listing.env("HOME", home.path());
    let out = run_to_end(listing);
    let expected_prefix = format!("home={}\nend-of-listing\n", home.display());
    assert!(
        out.stdout.starts_with(&expected_prefix),
        "$HOME inside should be the host's $HOME path and empty\n{out}"
    );
    assert!(!out.stdout.contains(&canary), "home canary leaked\n{out}");
}

/// Password hashes in /etc/shadow (and its siblings) are masked: reading
/// them inside yields nothing.
#[test]
fn host_password_hashes_are_unreadable() {
    let sb = Sandbox::new();
    let out = sb.sh("cat /etc/shadow /etc/gshadow 2>/dev/null; echo end");
    assert_eq!(
        out.stdout, "end\n",
        "/etc/shadow content visible inside\n{out}"
    );
}

/// The agent cannot create device nodes that would give raw access to
/// hardware or kernel memory.
#[test]
fn device_node_creation_is_refused() {
    let sb = Sandbox::new();
    let name = format!("mknod={}", sb.workspace.join("null").display());
    sb.probe(&[&name]).expect_refused(&[&name]);
    assert!(
        !sb.workspace.join("null").exists(),
        "device node created in the workspace"
    );
}

// ===========================================================================
// Processes and environment: nothing of the host's leaks in.
// ===========================================================================

/// The agent cannot see (and so cannot signal, trace or read) host
/// processes: /proc lists a handful of sandbox PIDs, none of them a host
/// process the test started, and PID 1 is not the host's init.
#[test]
fn host_processes_are_invisible_in_proc() {
    let sb = Sandbox::new();
    let marker = sleep_marker(4245);
    let _reaper = MarkerReaper(marker.clone());
    let host_sleep =
        HostChild(spawn(Command::new("sleep").arg(&marker)).expect("start host sleep"));
    let host_pid = host_sleep.0.id().to_string();
    let host_init = std::fs::read("/proc/1/cmdline").expect("read host /proc/1/cmdline");
    let host_init = String::from_utf8_lossy(&host_init).replace('\0', " ");

    let out = sb.sh("cd /proc || exit 1
         for p in [0-9]*; do echo \"pid $p\"; done
         for p in [0-9]*; do echo \"cmd $p $(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\"; done");
    out.assert_code(0, "listing /proc inside should work");
    let pids: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("pid "))
        .collect();
    assert!(!pids.is_empty(), "no PIDs visible at all\n{out}");
    assert!(
        pids.len() <= 10,
        "{} PIDs visible inside; expected a handful\n{out}",
        pids.len()
    );
    assert!(
        !pids.contains(&host_pid.as_str()),
        "host pid {host_pid} visible inside\n{out}"
    );
    assert!(
        !out.stdout.contains(&marker),
        "host process command line visible\n{out}"
    );
    let inside_init = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("cmd 1 "))
        .unwrap_or("");
    assert_ne!(
        inside_init.trim(),
        host_init.trim(),
        "PID 1 inside is the host's init\n{out}"
    );
    assert!(
        !out.stdout.contains(host_init.trim()),
        "host init's command line visible inside\n{out}"
    );
}

/// A secret in the environment of whoever runs `sandbox` (a token, cloud
/// keys) is not visible to the agent, neither in its own environment nor in
/// any /proc/*/environ it can read.
#[test]
fn host_env_secret_does_not_leak() {
    let sb = Sandbox::new();
    let canary = format!("canary-{}", random_token());
    let aws_canary = format!("canary-{}", random_token());
    let mut cmd = sb.command(&[
        "/bin/sh",
        "-c",
        "env; echo ---; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f 2>/dev/null; done",
    ]);
    cmd.env("AIRLOCK_TEST_SECRET", &canary)
        .env("AWS_SECRET_ACCESS_KEY", &aws_canary);
    let out = run_to_end(cmd);
    out.assert_code(0, "env should run");
    assert!(
        out.stdout.contains("PATH="),
        "env printed nothing useful\n{out}"
    );
    assert!(
        !out.stdout.contains(&canary),
        "AIRLOCK_TEST_SECRET leaked\n{out}"
    );
    assert!(
        !out.stdout.contains(&aws_canary),
        "AWS_SECRET_ACCESS_KEY leaked\n{out}"
    );
}

/// Only the documented allowlist reaches the agent (anything else from the
/// host might be a secret), and PATH is a standard system PATH rather than
/// the host's (which could point at attacker-chosen directories).
#[test]
fn environment_is_reduced_to_the_allowlist() {
    const ALLOWED: [&str; 19] = [
        "PATH",
        "HOME",
        "TERM",
        "LANG",
        "TZ",
        "USER",
        "LOGNAME",
        "SHELL",
        "TMPDIR",
        "PWD",
        "AIRLOCK_SESSION_ID",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ];
    const SYSTEM_PATH_DIRS: [&str; 6] = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ];
    let sb = Sandbox::new();
    let path_canary = format!("/tmp/airlock-path-canary-{}", random_token());
    let host_path = std::env::var("PATH").unwrap_or_default();
    let mut cmd = sb.command(&["/usr/bin/env"]);
    cmd.env("PATH", format!("{path_canary}:{host_path}"))
        .env("AIRLOCK_UNLISTED", "should-not-pass");
    let out = run_to_end(cmd);
    out.assert_code(0, "env should run");
    let extra: Vec<String> = env_names(&out.stdout)
        .into_iter()
        .filter(|name| !ALLOWED.contains(&name.as_str()) && !name.starts_with("LC_"))
        .collect();
    assert!(
        extra.is_empty(),
        "variables outside the allowlist reached the agent: {extra:?}\n{out}"
    );
    let path = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("PATH="))
        .unwrap_or_else(|| panic!("no PATH inside\n{out}"));
    let odd: Vec<&str> = path
        .split(':')
        .filter(|d| !SYSTEM_PATH_DIRS.contains(d))
        .collect();
    assert!(
        odd.is_empty(),
        "PATH inside has non-system entries {odd:?}\n{out}"
    );
}

/// What the user explicitly grants does pass: `--env NAME=VALUE` sets a
/// value and `--env NAME` passes the host's value through.
#[test]
fn explicit_env_is_passed() {
    let sb = Sandbox::new();
    let given = format!("given-{}", random_token());
    let from_host = format!("host-{}", random_token());
    let given_opt = format!("AIRLOCK_GIVEN={given}");
    let mut cmd = sb.command_with(
        &["--env", &given_opt, "--env", "AIRLOCK_FROM_HOST"],
        &["/usr/bin/env"],
    );
    cmd.env("AIRLOCK_FROM_HOST", &from_host);
    let out = run_to_end(cmd);
    out.assert_code(0, "env should run");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.contains(&given_opt.as_str()),
        "--env NAME=VALUE did not pass\n{out}"
    );
    let passed = format!("AIRLOCK_FROM_HOST={from_host}");
    assert!(
        lines.contains(&passed.as_str()),
        "--env NAME did not pass the host value\n{out}"
    );
}

/// `--env` with a name no shell could export (`BAD NAME=1`) is refused
/// before anything runs (exit 125, naming the flag), not passed along
/// silently where a tool might read it differently.
#[test]
fn env_flag_with_an_invalid_name_is_refused() {
    let sb = Sandbox::new();
    for bad in ["BAD NAME=1", "1X=1", "=1", "A-B"] {
        let out = sb.run_with(&["--env", bad], &["/usr/bin/env"]);
        out.assert_code(125, "an invalid --env name is refused");
        assert!(
            out.stderr.contains("is not a variable name") && out.stdout.is_empty(),
            "{bad}\n{out}"
        );
    }
}

// ===========================================================================
// Privileges.
// ===========================================================================

/// The agent holds no capabilities in any set (so no CAP_SYS_ADMIN tricks
/// inside its namespaces), cannot gain any through exec (no_new_privs), and
/// runs under a seccomp filter.
#[test]
fn capabilities_are_dropped_and_no_new_privs_is_set() {
    let sb = Sandbox::new();
    let report = sb.probe(&["caps"]);
    assert_deprivileged(report.get("caps"), &report.output);
}

/// The command starts as from a fresh shell: no signal blocked and none
/// ignored, although the supervisor blocks the ones it forwards, Rust
/// ignores SIGPIPE, and the agent blocks everything until its execve.
#[test]
fn the_command_starts_with_no_signal_blocked_or_ignored() {
    let sb = Sandbox::new();
    let out = sb.run(&["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"]);
    out.assert_code(0, "grep should run");
    for field in ["SigBlk:", "SigIgn:"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in {out}"));
        assert!(
            line.trim_end().ends_with("0000000000000000"),
            "{line}\n{out}"
        );
    }
}

/// Started by root, the agent is not root: it runs as nobody (65534).
#[test]
fn running_as_root_drops_the_agent_to_nobody() {
    if skip_unless_root("running_as_root_drops_the_agent_to_nobody") {
        return;
    }
    let sb = Sandbox::new();
    sb.probe(&["whoami"])
        .expect(&[("whoami", &whoami_line(NOBODY, NOBODY))]);
    let out = sb.run(&["id", "-u"]);
    out.assert_code(0, "id should run");
    assert_eq!(out.stdout.trim(), NOBODY.to_string(), "{out}");
}

/// `--uid/--gid` choose the agent's identity.
#[test]
fn requested_uid_and_gid_are_used() {
    if skip_unless_root("requested_uid_and_gid_are_used") {
        return;
    }
    let sb = Sandbox::new();
    sb.probe_with(&["--uid", "4321", "--gid", "4322"], &["whoami"])
        .expect(&[("whoami", &whoami_line(4321, 4322))]);
}

/// A setuid-root binary in the workspace does not make the agent root.
#[test]
fn setuid_root_binary_does_not_raise_privileges() {
    if skip_unless_root("setuid_root_binary_does_not_raise_privileges") {
        return;
    }
    let sb = Sandbox::new();
    let suid = install_probe(sb.workspace.path(), "probe-suid");
    chown(&suid, 0, 0);
    set_mode(&suid, 0o4755);
    let mode = std::fs::metadata(&suid)
        .expect("stat probe-suid")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755, "test setup: setuid bit not set");

    let out = sb.run(&[&suid.display().to_string(), "whoami"]);
    out.assert_code(
        0,
        "the setuid binary should still run, just without privilege",
    );
    let want = format!("whoami: {}", whoami_line(agent_uid(), agent_gid()));
    assert_eq!(out.stdout.trim(), want, "setuid raised privileges\n{out}");
}

// ===========================================================================
// Seccomp: kernel interfaces used for escapes and privilege escalation.
// ===========================================================================

/// A nested user namespace would hand the agent a full capability set to
/// attack the kernel with: `unshare -U` fails, as do the raw syscalls.
#[test]
fn nested_user_namespace_is_refused() {
    let sb = Sandbox::new();
    let out = sb.run(&["unshare", "-U", "true"]);
    out.assert_code(1, "`unshare -U true` should fail inside the sandbox");
    assert!(out.stderr.contains("unshare failed"), "{out}");
    sb.probe(&["unshare-user", "clone-newuser"]).expect(&[
        ("unshare-user", "errno=EPERM"),
        ("clone-newuser", "errno=EPERM"),
    ]);
}

/// Creating or joining other namespaces (network, mount, PID) is refused.
#[test]
fn namespace_escape_syscalls_are_refused() {
    let sb = Sandbox::new();
    let report = sb.probe(&[
        "unshare-net",
        "unshare-mount",
        "clone-newpid",
        "clone-newnet",
        "setns",
    ]);
    report.expect(&[
        ("unshare-net", "errno=EPERM"),
        ("unshare-mount", "errno=EPERM"),
        ("clone-newpid", "errno=EPERM"),
        ("clone-newnet", "errno=EPERM"),
    ]);
    report.expect_refused(&["setns"]);
}

/// The agent cannot rearrange its filesystem view: mount, unmount (to
/// reveal what lies beneath), pivot_root, chroot and the new mount API.
#[test]
fn mount_is_refused() {
    let sb = Sandbox::new();
    sb.probe(&[
        "mount-tmpfs",
        "umount-root",
        "pivot-root",
        "chroot",
        "fsopen",
        "open-tree",
    ])
    .expect(&[
        ("mount-tmpfs", "errno=EPERM"),
        ("umount-root", "errno=EPERM"),
        ("pivot-root", "errno=EPERM"),
        ("chroot", "errno=EPERM"),
        ("fsopen", "errno=EPERM"),
        ("open-tree", "errno=EPERM"),
    ]);
}

/// The agent cannot trace or read the memory of other processes, including
/// the sandbox's own init.
#[test]
fn ptrace_attach_to_init_is_refused() {
    let sb = Sandbox::new();
    let report = sb.probe(&[
        "ptrace-attach-1",
        "ptrace-traceme",
        "process-vm-readv-1",
        "proc-1-mem",
    ]);
    report.expect(&[
        ("ptrace-attach-1", "errno=EPERM"),
        ("ptrace-traceme", "errno=EPERM"),
        ("process-vm-readv-1", "errno=EPERM"),
    ]);
    report.expect_refused(&["proc-1-mem"]);
}

/// The kernel keyring is not namespaced: keys would be shared with the
/// host user. keyctl, add_key and request_key are refused.
#[test]
fn keyctl_is_refused() {
    let sb = Sandbox::new();
    sb.probe(&["keyctl", "add-key", "request-key"]).expect(&[
        ("keyctl", "errno=EPERM"),
        ("add-key", "errno=EPERM"),
        ("request-key", "errno=EPERM"),
    ]);
}

/// eBPF (a frequent privilege-escalation vector) is refused.
#[test]
fn bpf_is_refused() {
    let sb = Sandbox::new();
    sb.probe(&["bpf"]).expect(&[("bpf", "errno=EPERM")]);
}

/// perf_event_open (side channels, kernel bugs) is refused.
#[test]
fn perf_event_open_is_refused() {
    let sb = Sandbox::new();
    sb.probe(&["perf-event-open"])
        .expect(&[("perf-event-open", "errno=EPERM")]);
}

/// userfaultfd, used to win kernel race conditions, is refused.
#[test]
fn userfaultfd_is_refused() {
    let sb = Sandbox::new();
    sb.probe(&["userfaultfd"])
        .expect(&[("userfaultfd", "errno=EPERM")]);
}

/// io_uring performs syscalls that seccomp never sees; it is refused.
#[test]
fn io_uring_setup_is_refused() {
    let sb = Sandbox::new();
    sb.probe(&["io-uring-setup"])
        .expect(&[("io-uring-setup", "errno=EPERM")]);
}

/// Loading kernels or kernel modules is refused.
#[test]
fn kernel_module_and_kexec_calls_are_refused() {
    let sb = Sandbox::new();
    sb.probe(&["kexec-load", "init-module", "finit-module", "delete-module"])
        .expect(&[
            ("kexec-load", "errno=EPERM"),
            ("init-module", "errno=EPERM"),
            ("finit-module", "errno=EPERM"),
            ("delete-module", "errno=EPERM"),
        ]);
}

/// open_by_handle_at opens files by inode handle, bypassing the mount view
/// (the "shocker" container escape); it is refused.
#[test]
fn open_by_handle_at_is_refused() {
    let sb = Sandbox::new();
    sb.probe(&["open-by-handle-at"])
        .expect(&[("open-by-handle-at", "errno=EPERM")]);
}

/// READ_IMPLIES_EXEC would make every readable mapping executable; setting
/// it is refused while querying the persona still works.
#[test]
fn personality_read_implies_exec_is_refused() {
    let sb = Sandbox::new();
    sb.probe(&["personality-read-implies-exec", "personality-query"])
        .expect(&[
            ("personality-read-implies-exec", "errno=EPERM"),
            ("personality-query", "ok"),
        ]);
}

/// Runs a terminal-injection probe with a pty as stdin, as an interactive
/// user would, and asserts it is refused and nothing reached the terminal.
fn assert_terminal_injection_refused(probe_name: &str) {
    let sb = Sandbox::new();
    let mut pty = Pty::open();
    let mut cmd = sb.command(&[&sb.probe.display().to_string(), probe_name]);
    cmd.stdin(pty.slave_stdio());
    let report = ProbeReport::parse(run_to_end(cmd), &[probe_name]);
    report.expect(&[(probe_name, "errno=EPERM")]);
    let echoed = pty.drain_master();
    assert!(
        !echoed.contains(&b'x'),
        "input was injected into the terminal: {:?}\n{}",
        String::from_utf8_lossy(&echoed),
        report.output
    );
}

/// TIOCSTI would type commands into the user's shell once the agent exits
/// (CVE-2017-5226); it is refused and nothing is typed.
#[test]
fn tiocsti_is_refused() {
    assert_terminal_injection_refused("tiocsti");
}

/// The kernel reads only the low 32 bits of the ioctl request, so TIOCSTI
/// with high bits set must be refused as well.
#[test]
fn tiocsti_with_high_bits_is_refused() {
    assert_terminal_injection_refused("tiocsti-high-bits");
}

/// TIOCLINUX can paste into a virtual console; it is refused.
#[test]
fn tioclinux_is_refused() {
    assert_terminal_injection_refused("tioclinux");
}

/// Raw packet sockets (sniffing, spoofing, historic kernel bugs) are refused.
#[test]
fn packet_socket_is_refused() {
    let sb = Sandbox::new();
    sb.probe(&["socket-packet"])
        .expect(&[("socket-packet", "errno=EPERM")]);
}

/// Netlink sockets (routing, and a large kernel attack surface) are refused.
#[test]
fn netlink_socket_is_refused() {
    let sb = Sandbox::new();
    sb.probe(&["socket-netlink"])
        .expect(&[("socket-netlink", "errno=EPERM")]);
}

/// vsock would reach the hypervisor host directly, around the network
/// namespace; it is refused.
#[test]
fn vsock_socket_is_refused() {
    let sb = Sandbox::new();
    sb.probe(&["socket-vsock"])
        .expect(&[("socket-vsock", "errno=EPERM")]);
}

/// Ordinary programs keep working: unix, IPv4 and IPv6 sockets can be made.
#[test]
fn ordinary_sockets_are_allowed() {
    let sb = Sandbox::new();
    sb.probe(&["socket-unix", "socket-inet", "socket-inet6"])
        .expect(&[
            ("socket-unix", "ok"),
            ("socket-inet", "ok"),
            ("socket-inet6", "ok"),
        ]);
}

/// x32 syscall numbers would slip past a filter written for x86_64 numbers;
/// they are refused.
#[test]
fn x32_syscall_is_refused() {
    let sb = Sandbox::new();
    sb.probe(&["x32-getpid"])
        .expect(&[("x32-getpid", "errno=EPERM")]);
}

/// A syscall through the i386 ABI (`int 0x80`) kills the process with
/// SIGSYS instead of running unfiltered.
#[test]
fn foreign_arch_syscall_kills() {
    let sb = Sandbox::new();
    sb.probe(&["int80-getpid"])
        .expect(&[("int80-getpid", "killed-by-signal=31")]);
}

/// clone3 hides its flags from seccomp behind a pointer; it reports ENOSYS
/// so libc falls back to clone, whose flags are checked.
#[test]
fn clone3_reports_enosys() {
    let sb = Sandbox::new();
    sb.probe(&["clone3"]).expect(&[("clone3", "errno=ENOSYS")]);
}

// ===========================================================================
// Network: only the egress proxy ports, and only inside the namespace.
// ===========================================================================

/// A service listening on the host's loopback (a database, a cloud metadata
/// proxy, a dev server) cannot be reached, and never sees a connection.
#[test]
fn tcp_connect_to_host_loopback_fails() {
    let sb = Sandbox::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind host listener");
    let port = listener.local_addr().expect("local_addr").port();
    let name = format!("tcp-connect=127.0.0.1:{port}");
    sb.probe(&[&name]).expect_refused(&[&name]);
    listener.set_nonblocking(true).expect("nonblocking");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("host listener got a connection from {peer}"),
        Err(e) => panic!("accept on host listener: {e}"),
    }
}

/// A UDP datagram sent to the host's loopback never arrives: UDP sockets
/// cannot even be created.
#[test]
fn udp_to_host_loopback_does_not_arrive() {
    let sb = Sandbox::new();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind host UDP socket");
    let port = socket.local_addr().expect("local_addr").port();
    let name = format!("udp-send=127.0.0.1:{port}");
    let report = sb.probe(&[&name]);
    report.expect(&[(name.as_str(), "errno=EPERM")]);
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    let mut buf = [0u8; 64];
    if let Ok((n, peer)) = socket.recv_from(&mut buf) {
        panic!(
            "host received {:?} from {peer}\n{}",
            String::from_utf8_lossy(&buf[..n]),
            report.output
        );
    }
}

/// Abstract unix sockets ignore the filesystem view (X11, D-Bus, and
/// container runtimes listen on them); one bound on the host is unreachable.
#[test]
fn host_abstract_unix_socket_is_unreachable() {
    let sb = Sandbox::new();
    let abstract_name = format!("airlock-test-{}", random_token());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
        .expect("abstract address");
    let listener = UnixListener::bind_addr(&addr).expect("bind abstract socket on host");
    let name = format!("abstract-connect={abstract_name}");
    sb.probe(&[&name]).expect_refused(&[&name]);
    listener.set_nonblocking(true).expect("nonblocking");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok(_) => panic!("host abstract socket got a connection from inside the sandbox"),
        Err(e) => panic!("accept on abstract socket: {e}"),
    }
}

/// Direct TCP connections are refused by Landlock (EACCES) on every port
/// except the egress proxy's 3128/1080, so traffic cannot bypass the proxy.
#[test]
fn tcp_connect_outside_proxy_ports_is_refused_by_landlock() {
    let sb = Sandbox::new();
    let report = sb.probe(&[
        "tcp-connect=127.0.0.1:8080",
        "tcp-connect=127.0.0.1:22",
        "tcp-connect=127.0.0.1:3128",
        "tcp-connect=127.0.0.1:1080",
    ]);
    report.expect(&[
        ("tcp-connect=127.0.0.1:8080", "errno=EACCES"),
        ("tcp-connect=127.0.0.1:22", "errno=EACCES"),
    ]);
    // The proxy ports pass Landlock and reach init's relay.
    report.expect(&[
        ("tcp-connect=127.0.0.1:3128", "ok"),
        ("tcp-connect=127.0.0.1:1080", "ok"),
    ]);
}

/// The agent cannot open a listening TCP port (a backdoor, or a relay for
/// another sandbox): binding is refused.
#[test]
fn listening_on_a_tcp_port_is_refused() {
    let sb = Sandbox::new();
    let script = "import socket, sys\n\
                  s = socket.socket()\n\
                  try:\n    s.bind(('127.0.0.1', 8080))\n\
                  except OSError as e:\n    print('errno', e.errno); sys.exit(1)\n\
                  print('bound')\n";
    let out = sb.run(&["/usr/bin/python3", "-c", script]);
    assert_eq!(
        out.stdout.trim(),
        "errno 13",
        "TCP bind should fail with EACCES\n{out}"
    );
    out.assert_code(1, "python should report the failed bind");
}

/// The network namespace has only the loopback interface: no route to the
/// host's networks at all.
#[test]
fn only_the_loopback_interface_exists() {
    let sb = Sandbox::new();
    let out = sb.run(&["cat", "/proc/net/dev"]);
    out.assert_code(0, "/proc/net/dev should be readable");
    let interfaces: Vec<&str> = out
        .stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .collect();
    assert_eq!(interfaces, ["lo"], "{out}");
}

// ===========================================================================
// Lifecycle: nothing outlives the sandbox; exit codes and signals behave.
// ===========================================================================

/// A background job and a double-forked `setsid` daemon started by the
/// agent are gone by the time `sandbox` exits.
#[test]
fn background_and_daemonized_processes_die_with_the_agent() {
    let sb = Sandbox::new();
    let bg = sleep_marker(4242);
    let daemon = sleep_marker(4242);
    let _reap_bg = MarkerReaper(bg.clone());
    let _reap_daemon = MarkerReaper(daemon.clone());
    let pid_file = sb.workspace.join("daemon.pid").display().to_string();
    let script = format!(
        "sleep {bg} </dev/null >/dev/null 2>&1 &
         (setsid sh -c 'sleep {daemon} </dev/null >/dev/null 2>&1 & echo $! > {pid_file}' \
             </dev/null >/dev/null 2>&1 &)
         i=0
         while [ ! -s {pid_file} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
         [ -d /proc/$(cat {pid_file}) ] && echo daemon-running
         exit 0"
    );
    let out = sb.sh(&script);
    out.assert_code(0, "the agent script should exit 0");
    assert!(
        out.stdout.contains("daemon-running"),
        "test setup: daemon did not start\n{out}"
    );
    let left: Vec<_> = host_processes_with(&bg)
        .into_iter()
        .chain(host_processes_with(&daemon))
        .collect();
    assert!(
        left.is_empty(),
        "processes outlived the sandbox: {left:?}\n{out}"
    );
}

/// If the supervisor is SIGKILLed (OOM killer, `kill -9`), the agent does
/// not live on unsupervised: it is gone within a few seconds.
#[test]
fn sigkill_of_the_supervisor_kills_the_sandbox() {
    let sb = Sandbox::new();
    let marker = sleep_marker(4243);
    let _reaper = MarkerReaper(marker.clone());
    let script = format!("echo ready; exec sleep {marker}");
    let mut running = Streaming::spawn(sb.command(&["/bin/sh", "-c", &script]));
    running.wait_for_line("ready", RUN_DEADLINE);
    running.signal(libc::SIGKILL);
    let _ = running.child.wait();
    // A bound on cleanup, not a performance assertion.
    let left = wait_until_gone(&marker, Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "agent survived SIGKILL of the supervisor: {left:?}"
    );
}

/// The session directory (the new root's mount point, the egress socket
/// and CA bundle that init binds into the sandbox) is removed as soon as
/// the agent has started: nothing is left on the host should the
/// supervisor die, and the bound socket still carries the agent's
/// connections.
#[test]
fn the_session_directory_is_gone_while_the_agent_runs() {
    let sb = Sandbox::new();
    // The supervisor makes its session directory in XDG_RUNTIME_DIR when
    // that is on tmpfs: a private one, so no other session shows up in it.
    let runtime = TempDir::new("/dev/shm", "airlock-xdg");
    // As root, init (as the agent's uid) reaches the new root through it.
    set_mode(runtime.path(), 0o755);
    let sessions = || -> Vec<String> {
        std::fs::read_dir(runtime.path())
            .expect("list XDG_RUNTIME_DIR")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let script = "echo started; sleep 4; python3 -c \"import socket; \
        s = socket.socket(socket.AF_UNIX); s.connect('/run/airlock/egress.sock'); \
        print('connected')\"";
    let mut cmd = sb.command(&["/bin/sh", "-c", script]);
    cmd.env("XDG_RUNTIME_DIR", runtime.path());
    let mut running = Streaming::spawn(cmd);
    running.wait_for_line("started", RUN_DEADLINE);
    // Bounded by the agent's sleep: once it ends, the directory goes anyway.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut left = sessions();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = sessions();
    }
    let still_running = running.child.try_wait().expect("try_wait").is_none();
    let out = running.finish();
    assert!(
        still_running && left.is_empty(),
        "the session directory outlived the agent's start: {left:?}\n{out}"
    );
    out.assert_code(0, "the agent should connect through the bound socket");
    assert!(out.stdout.contains("connected"), "{out}");
}

/// As root, a workspace below a directory only root may enter (root's
/// 0700 home) works: init opens the bind sources before it takes the
/// agent's ids, which could not reach it.
#[test]
fn as_root_a_workspace_below_a_root_only_directory_works() {
    if !is_root() {
        return;
    }
    let private = TempDir::new("/tmp", "airlock-private");
    set_mode(private.path(), 0o700);
    let ws = private.join("project");
    std::fs::create_dir(&ws).expect("workspace");
    write_file(&ws.join("in.txt"), "from the host\n", 0o644);
    chown(&ws, agent_uid(), agent_gid());
    let sb = Sandbox::new();
    let ws_arg = ws.display().to_string();
    let out = run_to_end(sb.bare_command(
        &["--workspace", &ws_arg],
        &["/bin/sh", "-c", "cat in.txt && echo written > out.txt"],
    ));
    out.assert_code(0, "a workspace below a 0700 directory");
    assert!(out.stdout.contains("from the host"), "{out}");
    let written = std::fs::read_to_string(ws.join("out.txt")).unwrap_or_default();
    assert_eq!(written, "written\n", "{out}");
}

/// The agent's exit status is passed through.
#[test]
fn agent_exit_status_is_returned() {
    let sb = Sandbox::new();
    sb.sh("exit 3")
        .assert_code(3, "`exit 3` should make sandbox exit 3");
    sb.sh("exit 0")
        .assert_code(0, "`exit 0` should make sandbox exit 0");
}

/// An agent killed by signal N makes `sandbox` exit 128+N, like a shell.
#[test]
fn agent_killed_by_signal_exits_128_plus_signal() {
    let sb = Sandbox::new();
    sb.sh("kill -TERM $$")
        .assert_code(128 + libc::SIGTERM, "SIGTERM death should exit 143");
}

/// A command that does not exist inside the sandbox exits 127.
#[test]
fn missing_command_exits_127() {
    let sb = Sandbox::new();
    let missing = format!("airlock-no-such-command-{}", random_token());
    sb.run(&[&missing])
        .assert_code(127, "a missing command should exit 127");
    sb.run(&["/nonexistent/airlock-cmd"])
        .assert_code(127, "a missing absolute path should exit 127");
}

/// A file that exists but is not executable exits 126.
#[test]
fn non_executable_file_exits_126() {
    let sb = Sandbox::new();
    let script = sb.workspace.join("not-executable.sh");
    write_file(&script, "#!/bin/sh\necho ran\n", 0o644);
    let out = sb.run(&[&script.display().to_string()]);
    out.assert_code(126, "a non-executable file should exit 126");
    assert!(!out.stdout.contains("ran"), "{out}");
}

/// Bad usage is a supervisor error (125) and runs nothing.
#[test]
fn invalid_options_exit_125_without_running_the_command() {
    let sb = Sandbox::new();
    let ran = sb.workspace.join("ran");
    let touch = format!("echo ran > {}", ran.display());

    let out = sb.run_with(&["--uid", "notanumber"], &["/bin/sh", "-c", &touch]);
    out.assert_code(125, "`--uid notanumber` should be rejected with 125");
    assert!(!ran.exists(), "the command ran despite a bad --uid\n{out}");

    let missing = format!("/nonexistent-airlock-{}", random_token());
    let out = run_to_end(sb.bare_command(&["--workspace", &missing], &["/bin/sh", "-c", &touch]));
    out.assert_code(125, "a missing --workspace should be rejected with 125");
    assert!(
        !ran.exists(),
        "the command ran despite a missing workspace\n{out}"
    );
}

/// Sends `signal` to a running `sandbox` whose agent traps it, and asserts
/// the agent's handler ran and decided the exit status.
fn assert_signal_forwarded(signal: libc::c_int, trap_name: &str, exit_code: i32) {
    let sb = Sandbox::new();
    let script = format!(
        "trap 'echo got-{trap_name}; exit {exit_code}' {trap_name}; \
         echo ready; while :; do sleep 0.1; done"
    );
    let mut running = Streaming::spawn(sb.command(&["/bin/sh", "-c", &script]));
    running.wait_for_line("ready", RUN_DEADLINE);
    running.signal(signal);
    let out = running.finish();
    assert!(
        out.stdout.contains(&format!("got-{trap_name}")),
        "the agent never saw SIG{trap_name}\n{out}"
    );
    out.assert_code(exit_code, "the agent's trap should set the exit status");
}

/// Ctrl-C style termination reaches the agent so it can clean up: SIGTERM
/// to `sandbox` runs the agent's TERM handler.
#[test]
fn sigterm_is_forwarded_to_the_agent() {
    assert_signal_forwarded(libc::SIGTERM, "TERM", 7);
}

/// SIGINT and SIGHUP to `sandbox` reach the agent as well.
#[test]
fn sigint_and_sighup_are_forwarded_to_the_agent() {
    assert_signal_forwarded(libc::SIGINT, "INT", 8);
    assert_signal_forwarded(libc::SIGHUP, "HUP", 9);
}

/// A runaway agent is stopped by `--timeout`: exit 124 and nothing left.
#[test]
fn timeout_kills_the_agent_and_exits_124() {
    let sb = Sandbox::new();
    let marker = sleep_marker(4244);
    let _reaper = MarkerReaper(marker.clone());
    let started = Instant::now();
    let out = sb.run_with(&["--timeout", "1"], &["sleep", &marker]);
    out.assert_code(124, "--timeout should end the run with 124");
    let left = host_processes_with(&marker);
    assert!(
        left.is_empty(),
        "sleep survived the timeout: {left:?}\n{out}"
    );
    assert!(
        started.elapsed() < RUN_DEADLINE,
        "the timeout did not stop the sleep\n{out}"
    );
}

// ===========================================================================
// Unprivileged mode.
// ===========================================================================

/// An ordinary user (uid 1000) gets the same isolation without root: the
/// agent keeps that uid, holds no capabilities, can write its workspace
/// but not /etc, and cannot create a user namespace.
#[test]
fn unprivileged_user_gets_the_same_isolation() {
    const USER: u32 = 1000;
    if skip_unless_root("unprivileged_user_gets_the_same_isolation") {
        return;
    }
    // The cargo target dir may not be traversable by uid 1000.
    let bin_dir = TempDir::new("/tmp", "airlock-bin");
    let sandbox = bin_dir.join("sandbox");
    install_executable(&sandbox_bin(), &sandbox);
    let workspace = TempDir::new("/tmp", "airlock-ws-user");
    let probe = install_probe(workspace.path(), "probe");
    chown(workspace.path(), USER, USER);
    let home = TempDir::new("/tmp", "airlock-home-user");
    chown(home.path(), USER, USER);

    let run = |argv: &[&str]| {
        let mut cmd = Command::new(&sandbox);
        cmd.arg("run")
            .arg("--workspace")
            .arg(workspace.path())
            .arg("--")
            .args(argv)
            .current_dir(workspace.path())
            .env("HOME", home.path())
            .env("USER", "airlock-test")
            .stdin(Stdio::null())
            .uid(USER)
            .gid(USER);
        run_to_end(cmd)
    };

    let out = run(&["id", "-u"]);
    out.assert_code(0, "sandbox should run for an unprivileged user");
    assert_eq!(out.stdout.trim(), USER.to_string(), "{out}");

    let target = workspace.join("user-wrote.txt");
    let write_ws = format!("write-file={}", target.display());
    let write_etc = format!("write-file=/etc/airlock-x-{}", random_token());
    let probe = probe.display().to_string();
    let names = ["caps", "whoami", write_ws.as_str(), write_etc.as_str()];
    let mut argv = vec![probe.as_str()];
    argv.extend_from_slice(&names);
    let report = ProbeReport::parse(run(&argv), &names);
    assert_deprivileged(report.get("caps"), &report.output);
    report.expect(&[("whoami", &whoami_line(USER, USER)), (&write_ws, "ok")]);
    report.expect_refused(&[&write_etc]);
    let meta = std::fs::metadata(&target).expect("workspace write visible on host");
    assert_eq!(
        meta.uid(),
        USER,
        "file written inside should belong to the user"
    );

    let out = run(&["unshare", "-U", "true"]);
    out.assert_code(
        1,
        "`unshare -U true` should fail for an unprivileged agent too",
    );
}
