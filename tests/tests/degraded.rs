//! `sandbox run --isolation=landlock-only`: no namespaces, so the host's
//! filesystem and network are right there; Landlock, seccomp and dropped
//! capabilities must still stop every applicable escape, the only way out
//! must be the egress socket, and the session must say it was degraded.

mod common;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixListener;

use common::{run_to_end, Sandbox, TempDir};
use serde_json::Value;

/// The kernel's Landlock ABI (0: none), as the supervisor reads it.
fn landlock_abi() -> i64 {
    // SAFETY: with a NULL attr, size 0 and the VERSION flag the syscall
    // only returns the ABI version.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    }
}

const DEGRADED: &str = "--isolation=landlock-only";

#[test]
fn landlock_only_refuses_to_run_without_landlock_scoping_or_runs_degraded() {
    let sb = landlock_only_sandbox();
    let out = sb.run_with(&[DEGRADED], &["true"]);
    if landlock_abi() < 6 {
        out.assert_code(125, "too old a Landlock: nothing runs");
        assert!(out.stderr.contains("landlock"), "{out}");
        eprintln!(
            "SKIPPED: the degraded-mode probes need Landlock ABI 6; this kernel has {}",
            landlock_abi()
        );
        return;
    }
    out.assert_code(0, "the degraded mode runs");
    // One line names what this mode leaves open, on every run.
    let warned: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("landlock-only has no namespaces"))
        .collect();
    assert_eq!(warned.len(), 1, "{out}");
    for lost in ["processes", "mount table", "Unix sockets"] {
        assert!(warned[0].contains(lost), "{out}");
    }
    let start: Value = sb
        .audit_events()
        .into_iter()
        .find(|e| e["event"]["action"] == "session.start")
        .expect("session.start");
    assert_eq!(start["airlock"]["isolation"], "landlock-only", "{start}");
}

#[test]
fn landlock_only_is_never_chosen_by_itself() {
    let sb = landlock_only_sandbox();
    let out = sb.run_with(&["--isolation=auto"], &["true"]);
    out.assert_code(125, "an unknown isolation mode is refused");
    if common::is_root() || landlock_abi() >= 1 {
        let ok = sb.run(&["true"]);
        if ok.code() == Some(0) {
            let start = sb
                .audit_events()
                .into_iter()
                .rfind(|e| e["event"]["action"] == "session.start")
                .expect("session.start");
            assert_eq!(start["airlock"]["isolation"], "full");
        }
    }
}

#[test]
fn landlock_only_still_stops_the_applicable_escapes() {
    if landlock_abi() < 6 {
        eprintln!(
            "SKIPPED: needs Landlock ABI 6 (this kernel: {})",
            landlock_abi()
        );
        return;
    }
    let sb = landlock_only_sandbox();
    // A readable directory with one denied file in it: Landlock cannot deny
    // beneath a grant, so the degraded plan must carve it out.
    let data = TempDir::new("/tmp", "airlock-dg-data");
    common::set_mode(data.path(), 0o755);
    common::write_file(&data.join("public.txt"), "public\n", 0o644);
    common::write_file(&data.join("secret.txt"), "secret\n", 0o644);
    let profile = sb.audit.join("profile.toml");
    common::write_file(
        &profile,
        &format!(
            "[filesystem]\nread = [\"{d}\"]\ndeny = [\"{d}/secret.txt\"]\n",
            d = data.display()
        ),
        0o644,
    );
    // Host services the agent must not reach even without a network
    // namespace: a TCP listener and an abstract Unix socket.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp listener");
    let port = tcp.local_addr().expect("addr").port();
    let abstract_name = format!("airlock-dg-{}", common::random_token());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
        .expect("abstract addr");
    let _abs = UnixListener::bind_addr(&addr).expect("abstract listener");
    let outside = TempDir::new("/tmp", "airlock-dg-outside");
    common::set_mode(outside.path(), 0o777);

    let read_secret = format!("read-file={}/secret.txt", data.display());
    let read_public = format!("read-file={}/public.txt", data.display());
    let write_outside = format!("write-file={}/x", outside.display());
    let write_ws = format!("write-file={}/ok.txt", sb.ws());
    let tcp_probe = format!("tcp-connect=127.0.0.1:{port}");
    let abs_probe = format!("abstract-connect={abstract_name}");
    let names = [
        read_secret.as_str(),
        read_public.as_str(),
        write_outside.as_str(),
        write_ws.as_str(),
        tcp_probe.as_str(),
        "udp-send=127.0.0.1:53",
        abs_probe.as_str(),
        "socket-packet",
        "socket-netlink",
        "unshare-user",
        "clone-newuser",
        "keyctl",
        "bpf",
        "io-uring-setup",
        "open-by-handle-at",
        "personality-read-implies-exec",
    ];
    let profile_arg = profile.display().to_string();
    let report = sb.probe_with(&[DEGRADED, "--profile", &profile_arg], &names);
    report.expect(&[(read_public.as_str(), "ok"), (write_ws.as_str(), "ok")]);
    // TCP is refused by Landlock (EACCES), not by a closed port.
    report.expect(&[(tcp_probe.as_str(), "errno=EACCES")]);
    report.expect_refused(&[
        read_secret.as_str(),
        write_outside.as_str(),
        "udp-send=127.0.0.1:53",
        abs_probe.as_str(),
        "socket-packet",
        "socket-netlink",
        "unshare-user",
        "clone-newuser",
        "keyctl",
        "bpf",
        "io-uring-setup",
        "open-by-handle-at",
        "personality-read-implies-exec",
    ]);
    assert!(!outside.join("x").exists());

    // No capabilities, no_new_privs.
    let caps = sb.run_with(
        &[DEGRADED],
        &[
            "/bin/sh",
            "-c",
            "grep -E '^(Cap|NoNewPrivs)' /proc/self/status",
        ],
    );
    caps.assert_code(0, "reads its own status");
    for line in caps.stdout.lines() {
        if line.starts_with("Cap") {
            assert!(line.ends_with("0000000000000000"), "{line}\n{caps}");
        }
    }
    assert!(caps.stdout.contains("NoNewPrivs:\t1"), "{caps}");
}

#[test]
fn landlock_only_reaches_allowed_hosts_through_the_egress_socket_only() {
    if landlock_abi() < 6 {
        eprintln!(
            "SKIPPED: needs Landlock ABI 6 (this kernel: {})",
            landlock_abi()
        );
        return;
    }
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let up = common::net::Upstream::start();
    let sb = landlock_only_sandbox();
    let port = up.port.to_string();
    let script = format!(
        "curl -sS --max-time 10 http://127.0.0.1:{port}/hello; \
         curl -sS --max-time 10 --noproxy '*' http://127.0.0.1:{port}/direct >/dev/null 2>&1 || echo direct-refused; \
         echo \"socket=$AIRLOCK_EGRESS_SOCKET\""
    );
    let out = run_to_end(sb.command_with(
        &[
            DEGRADED,
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-port",
            &port,
        ],
        &["/bin/sh", "-c", &script],
    ));
    out.assert_code(0, "the script runs");
    assert!(out.stdout.contains("hello from upstream"), "{out}");
    assert!(out.stdout.contains("direct-refused"), "{out}");
    assert!(out.stdout.contains("socket=/"), "{out}");
    assert!(
        !up.requests().iter().any(|r| r.contains("/direct")),
        "the direct connection reached the upstream"
    );
    let allowed = sb
        .network_events()
        .iter()
        .filter(|e| e["airlock"]["decision"] == "allow")
        .count();
    assert!(allowed >= 1, "the proxy recorded the request");
}

/// A workspace the agent's uid owns: landlock-only has no mount namespace
/// to idmap a root-owned one in (see the refusal below).
fn landlock_only_sandbox() -> Sandbox {
    let sb = Sandbox::new();
    common::chown(
        sb.workspace.path(),
        common::agent_uid(),
        common::agent_gid(),
    );
    sb
}

/// As root, landlock-only cannot give the agent a root-owned workspace:
/// it refuses, naming the cause and the fix, instead of running unable to
/// write.
#[test]
fn landlock_only_refuses_a_workspace_the_agent_could_not_write() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let sb = Sandbox::new();
    let out = sb.run_with(&["--isolation=landlock-only"], &["/bin/true"]);
    out.assert_code(125, "refused");
    assert!(
        out.stderr.contains("has no mount namespace")
            && out.stderr.contains("could not write it. Fix:"),
        "{out}"
    );
}
