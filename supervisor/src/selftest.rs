//! `sandbox selftest`: the escape battery, run from inside a real sandbox on
//! this host. `sandbox` copies itself into a scratch workspace and runs
//! `sandbox run -- ./airlock-probe __probe NAME...` (the prober in
//! `probes.rs`), then compares each observed outcome with the expected one.
//! Users run it on their hosts and container platforms before trusting
//! them; CI runs it too.
//!
//! No probe can pass vacuously: debug builds honour
//! `AIRLOCK_TEST_WEAKEN=seccomp|landlock|rlimits|cgroup`, which turns that
//! layer off, and the tests assert that the battery then fails.

use std::net::{TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde_json::json;

/// Debug builds only: is `layer` turned off by `AIRLOCK_TEST_WEAKEN`
/// (comma-separated)? Always false in release builds.
pub fn weakened(layer: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        std::env::var("AIRLOCK_TEST_WEAKEN").is_ok_and(|v| v.split(',').any(|l| l == layer))
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = layer;
        false
    }
}

/// What an outcome must look like.
#[derive(Debug, Clone)]
enum Expect {
    /// Any errno, or killed by seccomp.
    Refused,
    /// Exactly this errno (`errno=NAME` or `errno=NAME after=N`).
    Errno(&'static str),
    /// Exactly this text.
    Text(String),
    /// `errno=NAME after=N` with N at most the bound.
    ErrnoWithin(&'static str, u64),
    /// Killed by this signal.
    Signal(i32),
    /// Capabilities all zero, NoNewPrivs set, seccomp filtering.
    Deprivileged,
}

impl Expect {
    fn describe(&self) -> String {
        match self {
            Expect::Refused => "refused".into(),
            Expect::Errno(e) => e.to_string(),
            Expect::Text(t) => t.clone(),
            Expect::ErrnoWithin(e, n) => format!("{e} within {n}"),
            Expect::Signal(s) => format!("killed-by-signal={s}"),
            Expect::Deprivileged => "no caps, nnp, seccomp".into(),
        }
    }

    fn matches(&self, observed: &str) -> bool {
        let errno = observed.strip_prefix("errno=").map(|r| {
            let mut it = r.split(' ');
            (
                it.next().unwrap_or(""),
                it.next()
                    .and_then(|a| a.strip_prefix("after="))
                    .and_then(|n| n.parse::<u64>().ok()),
            )
        });
        match self {
            Expect::Refused => errno.is_some() || observed.starts_with("killed-by-signal="),
            Expect::Errno(want) => errno.is_some_and(|(e, _)| e == *want),
            Expect::Text(t) => observed == t,
            Expect::ErrnoWithin(want, max) => {
                errno.is_some_and(|(e, n)| e == *want && n.is_some_and(|n| n <= *max))
            }
            Expect::Signal(s) => observed == format!("killed-by-signal={s}"),
            Expect::Deprivileged => {
                let zero = |f: &str| {
                    observed
                        .split_whitespace()
                        .skip_while(|w| *w != f)
                        .nth(1)
                        .is_some_and(|v| v.chars().all(|c| c == '0'))
                };
                ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"]
                    .iter()
                    .all(|f| zero(f))
                    && observed.contains("NoNewPrivs: 1")
                    && observed.contains("Seccomp: 2")
            }
        }
    }
}

/// One row of the battery.
struct Check {
    area: &'static str,
    probe: String,
    expect: Expect,
}

fn check(area: &'static str, probe: impl Into<String>, expect: Expect) -> Check {
    Check {
        area,
        probe: probe.into(),
        expect,
    }
}

/// One result.
struct Row {
    area: &'static str,
    probe: String,
    expected: String,
    observed: String,
    pass: bool,
    /// Why the probe does not apply on this host (it was not run, and
    /// neither passes nor fails).
    skipped: Option<String>,
}

/// The resource probes that test a cgroup limit, by the limit.
const CGROUP_PROBES: &[(&str, &str)] = &[("fork-bomb", "pids"), ("mem-hog", "memory")];

/// Why each cgroup limit cannot be enforced for this user here (the
/// probes that test it do not apply); empty where every one can.
fn unenforceable_limits() -> Vec<(&'static str, String)> {
    crate::cgroup::host_support()
        .into_iter()
        .filter_map(|s| s.result.err().map(|why| (s.limit, why)))
        .collect()
}

/// The reason `probe` does not apply here, if it tests such a limit.
fn skip_reason(probe: &str, unenforceable: &[(&'static str, String)]) -> Option<String> {
    let (_, limit) = CGROUP_PROBES.iter().find(|(p, _)| *p == probe)?;
    let (_, why) = unenforceable.iter().find(|(l, _)| l == limit)?;
    Some(format!(
        "limits.{limit} cannot be enforced for this user here: {why}"
    ))
}

/// Host-side things the battery points at: a canary file and a pathname
/// socket outside every grant, a TCP and UDP port and an abstract socket on
/// the host's loopback. Removed on drop.
struct Bait {
    dir: PathBuf,
    _tcp: TcpListener,
    tcp_port: u16,
    _udp: UdpSocket,
    udp_port: u16,
    _abstract: UnixListener,
    abstract_name: String,
    _path_socket: UnixListener,
}

impl Bait {
    fn plant(token: &str) -> Result<Self, String> {
        let dir = PathBuf::from(format!("/var/tmp/airlock-selftest-{token}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        std::fs::write(dir.join("canary"), token).map_err(|e| format!("canary: {e}"))?;
        let tcp = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("tcp: {e}"))?;
        let udp = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("udp: {e}"))?;
        let abstract_name = format!("airlock-selftest-{token}");
        let addr = SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .map_err(|e| format!("abstract: {e}"))?;
        let abstract_socket =
            UnixListener::bind_addr(&addr).map_err(|e| format!("abstract: {e}"))?;
        let path_socket =
            UnixListener::bind(dir.join("host.sock")).map_err(|e| format!("socket: {e}"))?;
        Ok(Self {
            tcp_port: tcp.local_addr().map(|a| a.port()).unwrap_or(0),
            udp_port: udp.local_addr().map(|a| a.port()).unwrap_or(0),
            dir,
            _tcp: tcp,
            _udp: udp,
            _abstract: abstract_socket,
            abstract_name,
            _path_socket: path_socket,
        })
    }
}

impl Drop for Bait {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The environment variable planted in the supervisor's environment; it
/// must not reach the agent.
const ENV_CANARY: &str = "AIRLOCK_SELFTEST_CANARY";

/// The battery. Where the layer that must refuse answers with its own
/// errno, the expectation is that errno, not "any refusal": a read-only
/// bind answers EROFS, the view's absence ENOENT, seccomp EPERM, Landlock
/// EACCES. So a probe fails when its layer is off even if another layer
/// (file permissions, a host sysctl) still refuses it; the weakened runs
/// of tests/tests/selftest.rs rely on that.
fn battery(ws: &Path, bait: &Bait, marker: &str, tty: bool) -> Vec<Check> {
    use Expect::*;
    let w = |rel: &str| format!("write-file={}", ws.join(rel).display());
    // Landlock refuses TCP connects itself from ABI 4 on; before that the
    // network namespace does (nothing listens there).
    let landlock_tcp = if crate::landlock::kernel_abi() >= 4 {
        Errno("EACCES")
    } else {
        Refused
    };
    let mut b = vec![
        // Filesystem: read-only binds, the view, Landlock.
        check(
            "filesystem",
            "write-file=/etc/airlock-selftest",
            Errno("EROFS"),
        ),
        check(
            "filesystem",
            "write-file=/usr/airlock-selftest",
            Errno("EROFS"),
        ),
        check(
            "filesystem",
            format!("read-file={}", bait.dir.join("canary").display()),
            Errno("ENOENT"),
        ),
        check("filesystem", w(".git/hooks/pre-commit"), Errno("EROFS")),
        check("filesystem", w(".git/config"), Errno("EROFS")),
        check("filesystem", w(".bashrc"), Errno("EROFS")),
        check("filesystem", w(".envrc"), Errno("EROFS")),
        check("filesystem", w(".vscode/tasks.json"), Errno("EROFS")),
        check("filesystem", "write-file=/proc/self/exe", Refused),
        // PID 1 is not dumpable: its /proc entries are root's, and hidden.
        check("filesystem", "write-file=/proc/1/exe", Errno("ENOENT")),
        check(
            "filesystem",
            "read-file=/proc/1/root/etc/hostname",
            Errno("ENOENT"),
        ),
        check(
            "filesystem",
            "write-file=/proc/sys/kernel/hostname",
            Errno("EROFS"),
        ),
        // Re-bound read-only; absent where the kernel has no magic SysRq.
        check(
            "filesystem",
            "write-file=/proc/sysrq-trigger",
            if Path::new("/proc/sysrq-trigger").exists() {
                Errno("EROFS")
            } else {
                Errno("ENOENT")
            },
        ),
        check(
            "filesystem",
            "write-file=/sys/kernel/uevent_helper",
            Errno("ENOENT"),
        ),
        check("filesystem", "mount-tmpfs", Errno("EPERM")),
        check("filesystem", "fsopen", Errno("EPERM")),
        check("filesystem", "open-tree", Errno("EPERM")),
        check("filesystem", "open-tree-attr", Errno("EPERM")),
        check("filesystem", "mount-setattr", Errno("EPERM")),
        check("filesystem", "move-mount", Errno("EPERM")),
        check("filesystem", "fsconfig", Errno("EPERM")),
        check("filesystem", "fsmount", Errno("EPERM")),
        check("filesystem", "fspick", Errno("EPERM")),
        check("filesystem", "statmount", Errno("EPERM")),
        check("filesystem", "listmount", Errno("EPERM")),
        check("filesystem", "quotactl-fd", Errno("EPERM")),
        check("filesystem", "open-by-handle-at", Refused),
        check("filesystem", "mknod=/tmp/airlock-selftest-node", Refused),
        // Privilege.
        check("privilege", "caps", Deprivileged),
        check("privilege", "unshare-user", Errno("EPERM")),
        check("privilege", "clone-newuser", Errno("EPERM")),
        check("privilege", "clone3", Errno("ENOSYS")),
        check("privilege", "setns", Refused),
        // Kernel surface: seccomp answers EPERM.
        check("kernel", "bpf", Errno("EPERM")),
        check("kernel", "perf-event-open", Errno("EPERM")),
        check("kernel", "userfaultfd", Errno("EPERM")),
        check("kernel", "io-uring-setup", Errno("EPERM")),
        check("kernel", "keyctl", Errno("EPERM")),
        check("kernel", "add-key", Errno("EPERM")),
        check("kernel", "init-module", Errno("EPERM")),
        check("kernel", "kexec-load", Errno("EPERM")),
        check("kernel", "memfd-secret", Errno("EPERM")),
        // A call newer than the filter's table: as if the kernel lacked it.
        check("kernel", "syscall-beyond-known", Errno("ENOSYS")),
        check("kernel", "personality-read-implies-exec", Errno("EPERM")),
        check("kernel", "x32-getpid", Errno("EPERM")),
        check("kernel", "int80-getpid", Refused),
        // Processes.
        check("processes", "ptrace-attach-1", Errno("EPERM")),
        check("processes", "process-vm-readv-1", Errno("EPERM")),
        check("processes", "proc-1-mem", Errno("ENOENT")),
        check("processes", "signal-init", Refused),
        check(
            "processes",
            format!("getenv={ENV_CANARY}"),
            Text("absent".into()),
        ),
        // Network.
        check("network", "socket-packet", Errno("EPERM")),
        check("network", "socket-vsock", Errno("EPERM")),
        check(
            "network",
            format!("tcp-connect=127.0.0.1:{}", bait.tcp_port),
            landlock_tcp.clone(),
        ),
        // Through the egress proxy: the SSRF guard and the allowlist. The
        // selftest profile allows only `localhost` (which resolves to
        // loopback, so the address check must refuse it: rebinding).
        check(
            "network",
            "proxy-connect=169.254.169.254:80",
            Text("http=403 deny=ip-literal".into()),
        ),
        check(
            "network",
            "proxy-connect=[fd00:ec2::254]:80",
            Text("http=403 deny=ip-literal".into()),
        ),
        check(
            "network",
            "proxy-connect=10.0.0.1:443",
            Text("http=403 deny=ip-literal".into()),
        ),
        check(
            "network",
            "proxy-connect=2130706433:443",
            Text("http=403 deny=ip-literal".into()),
        ),
        check(
            "network",
            "proxy-connect=0x7f.1:443",
            Text("http=403 deny=ip-literal".into()),
        ),
        check(
            "network",
            "proxy-connect=[::ffff:127.0.0.1]:443",
            Text("http=403 deny=ip-literal".into()),
        ),
        check(
            "network",
            "proxy-connect=localhost:443",
            Text("http=403 deny=address-class".into()),
        ),
        check(
            "network",
            "proxy-connect=localhost:22",
            Text("http=403 deny=port-not-allowed".into()),
        ),
        check(
            "network",
            "proxy-connect=unlisted.example.com:443",
            Text("http=403 deny=not-allowlisted".into()),
        ),
        check("network", "dns=unlisted.example.com", Text("failed".into())),
        check(
            "network",
            "list-dir=/run/airlock",
            Text("egress.sock".into()),
        ),
        check(
            "network",
            format!("tcp-connect=[::1]:{}", bait.tcp_port),
            landlock_tcp,
        ),
        check(
            "network",
            format!("udp-send=127.0.0.1:{}", bait.udp_port),
            Errno("EPERM"),
        ),
        // The host's abstract sockets live in its network namespace.
        check(
            "network",
            format!("abstract-connect={}", bait.abstract_name),
            Errno("ECONNREFUSED"),
        ),
        check(
            "network",
            format!("read-file={}", bait.dir.join("host.sock").display()),
            Errno("ENOENT"),
        ),
        // Resources.
        check("resources", "fork-bomb", ErrnoWithin("EAGAIN", 64)),
        check("resources", "fd-exhaust", ErrnoWithin("EMFILE", 128)),
        check("resources", "tmp-fill", Errno("ENOSPC")),
        check("resources", "core-limit", Text("0/0".into())),
        check("resources", "mount-cgroup", Errno("EPERM")),
        // Lifecycle: checked on the host after the run.
        check("lifecycle", format!("daemon={marker}"), Text("ok".into())),
    ];
    if tty {
        for p in ["tiocsti", "tiocsti-high-bits", "tioclinux"] {
            b.push(check("kernel", p, Refused));
        }
    }
    b
}

/// Runs the battery; prints the table (or JSON); exit 1 on any failure.
pub fn main(json_out: bool) -> ExitCode {
    match run(json_out) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sandbox: selftest: {e}");
            ExitCode::from(125)
        }
    }
}

fn run(json_out: bool) -> Result<bool, String> {
    let token: String = egress_proxy::new_session_id().chars().take(16).collect();
    let root = nix::unistd::geteuid().is_root();
    let scratch = std::env::temp_dir().join(format!("airlock-selftest-{token}"));
    let ws = scratch.join("ws");
    std::fs::create_dir_all(&ws).map_err(|e| format!("create {}: {e}", ws.display()))?;
    let _cleanup = RemoveDir(scratch.clone());
    let _ = std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o755));
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let prober = ws.join("airlock-probe");
    std::fs::copy(&exe, &prober).map_err(|e| format!("copy {}: {e}", exe.display()))?;
    let _ = std::fs::set_permissions(&prober, std::fs::Permissions::from_mode(0o755));
    // A repository's hooks and config, an rc file, direnv's and an
    // editor's: the workspace files an agent would rewrite to run code
    // outside the sandbox later (read-only while they exist; what the
    // agent creates is quarantined after the run, see `surface.rs`). The
    // workspace stays owned by whoever runs the selftest: as root, the
    // agent writes it through an idmapped mount.
    std::fs::create_dir_all(ws.join(".git/hooks"))
        .and_then(|()| std::fs::write(ws.join(".git/config"), "[core]\n"))
        .and_then(|()| std::fs::write(ws.join(".bashrc"), ""))
        .and_then(|()| std::fs::write(ws.join(".envrc"), ""))
        .and_then(|()| std::fs::create_dir_all(ws.join(".vscode")))
        .and_then(|()| std::fs::write(ws.join(".vscode/tasks.json"), "{}"))
        .map_err(|e| format!("create {}/.git: {e}", ws.display()))?;
    let profile = scratch.join("selftest.toml");
    // As an ordinary user the cgroup limits may not be enforceable: run
    // anyway, and let the resource rows say so.
    std::fs::write(
        &profile,
        format!(
            "[network]\nallow = [\"localhost\"]\n\
             [limits]\npids = 48\nmemory = \"256M\"\nnofile = 96\ntmp_size = \"16M\"\n\
             timeout = \"120s\"\nbest_effort = {}\n",
            !root
        ),
    )
    .map_err(|e| format!("write profile: {e}"))?;
    let bait = Bait::plant(&token)?;
    let marker = format!(
        "4259.{}",
        &token
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
    );
    let marker = if marker.ends_with('.') {
        format!("{marker}1")
    } else {
        marker
    };
    // SAFETY: isatty only inspects fd 0.
    let tty = unsafe { libc::isatty(0) } == 1;
    let mut checks = battery(&ws, &bait, &marker, tty);
    if Path::new("/etc/shadow").is_file() {
        // Host secrets under a readable tree are masked: even their size
        // is gone (an empty file stands in).
        checks.push(check(
            "filesystem",
            "file-size=/etc/shadow",
            Expect::Text("size=0".into()),
        ));
    }

    let sandbox_run = |names: &[&str]| -> Result<(Option<i32>, String), String> {
        let out = Command::new(&exe)
            .arg("run")
            .arg("--workspace")
            .arg(&ws)
            .arg("--profile")
            .arg(&profile)
            .arg("--audit-log")
            .arg(scratch.join("audit.jsonl"))
            .arg("--")
            .arg(&prober)
            .arg("__probe")
            .args(names)
            .env(ENV_CANARY, &token)
            .current_dir(&ws)
            .stdin(if tty { Stdio::inherit() } else { Stdio::null() })
            .output()
            .map_err(|e| format!("start sandbox run: {e}"))?;
        if out.status.code() == Some(125) {
            return Err(format!(
                "the sandbox could not start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into(),
        ))
    };
    // Probes of a limit this host cannot enforce for this user (an
    // ordinary user without a delegated cgroup) do not apply: they are
    // reported as skipped, with the reason, and not run.
    let unenforceable = unenforceable_limits();
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c.probe.as_str())
        .filter(|p| skip_reason(p, &unenforceable).is_none())
        .collect();
    let (_, text) = sandbox_run(&names)?;
    let mut rows: Vec<Row> = checks
        .iter()
        .map(|c| {
            let skipped = skip_reason(&c.probe, &unenforceable);
            let observed = match &skipped {
                Some(_) => "(not run)",
                None => text
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{}: ", c.probe)))
                    .unwrap_or("(no result)"),
            }
            .to_string();
            Row {
                area: c.area,
                probe: c.probe.clone(),
                expected: c.expect.describe(),
                pass: skipped.is_none() && c.expect.matches(&observed),
                observed,
                skipped,
            }
        })
        .collect();
    // The daemon must be gone now that the sandbox has exited.
    let survivors = processes_with(&marker);
    rows.push(Row {
        area: "lifecycle",
        probe: "setsid SIGTERM-ignoring daemon after exit".into(),
        expected: "gone".into(),
        observed: if survivors.is_empty() {
            "gone".into()
        } else {
            format!("alive: pids {survivors:?}")
        },
        pass: survivors.is_empty(),
        skipped: None,
    });
    for pid in survivors {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    // The memory hog runs alone: on cgroup v2 the OOM kill takes the whole
    // sandbox (memory.oom.group), on v1 only the hog.
    let skipped = skip_reason("mem-hog", &unenforceable);
    let observed = if skipped.is_some() {
        "(not run)".to_string()
    } else {
        let (code, text) = sandbox_run(&["mem-hog"])?;
        text.lines()
            .find_map(|l| l.strip_prefix("mem-hog: "))
            .map(String::from)
            .unwrap_or_else(|| match code {
                Some(137) => "killed-by-signal=9".into(),
                other => format!("sandbox exited {other:?}"),
            })
    };
    rows.push(Row {
        area: "resources",
        probe: "mem-hog".into(),
        expected: Expect::Signal(9).describe(),
        pass: skipped.is_none() && Expect::Signal(9).matches(&observed),
        observed,
        skipped,
    });

    let skipped = rows.iter().filter(|r| r.skipped.is_some()).count();
    let failed = rows
        .iter()
        .filter(|r| !r.pass && r.skipped.is_none())
        .count();
    let passed = rows.len() - failed - skipped;
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let abi = crate::landlock::kernel_abi();
    if json_out {
        let results: Vec<_> = rows
            .iter()
            .map(|r| match &r.skipped {
                // Neither passed nor failed: `pass` is null.
                Some(why) => json!({"area": r.area, "probe": r.probe, "expected": r.expected,
                       "observed": r.observed, "pass": null, "skipped": why}),
                None => json!({"area": r.area, "probe": r.probe, "expected": r.expected,
                       "observed": r.observed, "pass": r.pass}),
            })
            .collect();
        let report = json!({
            "kernel": kernel,
            "landlock_abi": abi,
            "passed": passed,
            "failed": failed,
            "skipped": skipped,
            "results": results,
        });
        println!("{report:#}");
    } else {
        println!(
            "{:<10} {:<52} {:<22} {:<30} result",
            "area", "probe", "expected", "observed"
        );
        for r in &rows {
            println!(
                "{:<10} {:<52} {:<22} {:<30} {}",
                r.area,
                r.probe,
                r.expected,
                r.observed,
                match (&r.skipped, r.pass) {
                    (Some(why), _) => format!("skipped ({why})"),
                    (None, true) => "pass".to_string(),
                    (None, false) => "FAIL".to_string(),
                }
            );
        }
        println!(
            "\nLinux {kernel}, Landlock ABI {abi}: {passed} passed, {failed} failed, \
             {skipped} skipped"
        );
    }
    Ok(failed == 0)
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Host pids whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_match_only_their_outcome() {
        assert!(Expect::Refused.matches("errno=EPERM"));
        assert!(Expect::Refused.matches("killed-by-signal=31"));
        assert!(!Expect::Refused.matches("ok"));
        assert!(Expect::Errno("ENOSYS").matches("errno=ENOSYS"));
        assert!(!Expect::Errno("ENOSYS").matches("errno=EPERM"));
        assert!(Expect::ErrnoWithin("EMFILE", 128).matches("errno=EMFILE after=93"));
        assert!(!Expect::ErrnoWithin("EMFILE", 128).matches("errno=EMFILE after=1021"));
        assert!(!Expect::ErrnoWithin("EAGAIN", 64).matches("no-limit-within=1024"));
        assert!(Expect::Signal(9).matches("killed-by-signal=9"));
        assert!(!Expect::Signal(9).matches("ok"));
    }

    #[test]
    fn deprivileged_means_every_capability_set_empty() {
        let good = "CapInh: 0000000000000000 CapPrm: 0000000000000000 CapEff: 0000000000000000 \
                    CapBnd: 0000000000000000 CapAmb: 0000000000000000 NoNewPrivs: 1 Seccomp: 2";
        assert!(Expect::Deprivileged.matches(good));
        let bnd = good.replace("CapBnd: 0000000000000000", "CapBnd: 000001ffffffffff");
        assert!(!Expect::Deprivileged.matches(&bnd));
        assert!(!Expect::Deprivileged.matches(&good.replace("NoNewPrivs: 1", "NoNewPrivs: 0")));
    }
}
