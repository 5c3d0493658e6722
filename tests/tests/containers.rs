//! The image as a platform team runs it: built locally with Podman (FROM
//! scratch, no registry), a command run through the `sandbox run --`
//! entrypoint, the runtime's default seccomp profile refused with a
//! `sandbox doctor` that names the fix, and `sandbox selftest` inside.
//!
//! Guarded: without podman, runc or a static busybox, or when podman cannot
//! start a container on this machine, each test prints `SKIPPED: <reason>`
//! and returns. Once a container starts, every assertion is real.
//!
//! This VM mounts cgroups hybrid, which crun refuses: `--runtime runc`, and
//! explicit rlimits (podman's defaults exceed what runc may set here).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const TAG: &str = "localhost/airlock-test:dev";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

fn text(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds the image once per test binary: `Ok(())`, or the reason to skip.
/// A failing build with podman present is a test failure, not a skip.
fn image() -> Result<(), String> {
    static IMAGE: OnceLock<Result<(), String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            for tool in ["podman", "runc"] {
                if !on_path(tool) {
                    return Err(format!(
                        "{tool} is not installed (apt-get install podman runc)"
                    ));
                }
            }
            if !Path::new("/bin/busybox").is_file() {
                return Err("/bin/busybox is missing (apt-get install busybox-static)".into());
            }
            if !nix_is_root() {
                return Err("rootful podman is what this test drives; run it as root".into());
            }
            // Not cargo test's own CARGO_* variables: they would make the
            // nested build see a different environment and rebuild.
            let mut build = Command::new(repo().join("scripts/image"));
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
                    build.env_remove(&*k);
                }
            }
            let out = build.arg(TAG).output().expect("run scripts/image");
            assert!(out.status.success(), "scripts/image failed\n{}", text(&out));
            // Can this machine start a container at all? (Not our code yet.)
            let trial = podman(&["--entrypoint", "/bin/true"], &[]);
            if !trial.status.success() {
                return Err(format!(
                    "podman cannot start a container here: {}",
                    String::from_utf8_lossy(&trial.stderr).trim()
                ));
            }
            Ok(())
        })
        .clone()
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `podman run --rm --runtime runc` with this VM's rlimits, then `opts`,
/// the image, and `args` (for the entrypoint).
fn podman(opts: &[&str], args: &[&str]) -> Output {
    Command::new("podman")
        .args(["run", "--rm", "--runtime", "runc"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args(opts)
        .arg(TAG)
        .args(args)
        .output()
        .expect("run podman")
}

fn profile_opt() -> String {
    format!(
        "seccomp={}",
        repo().join("deploy/seccomp-airlock.json").display()
    )
}

/// The flags `sandbox doctor` prints for podman: the shipped seccomp
/// profile, and /proc unmasked so a fresh procfs may be mounted.
fn shipped_flags() -> Vec<String> {
    vec![
        "--security-opt".into(),
        profile_opt(),
        "--security-opt".into(),
        "unmask=/proc/*".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

macro_rules! skip_unless_image {
    () => {
        if let Err(reason) = image() {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}

#[test]
fn the_entrypoint_runs_the_command_inside_a_sandbox_with_the_shipped_profile() {
    skip_unless_image!();
    let flags = shipped_flags();
    let out = podman(&strs(&flags), &["sh", "-c", "echo hello; hostname; id -u"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // "airlock" is the sandbox's own UTS namespace, 65534 the agent's uid:
    // the command ran inside `sandbox run`, not beside it.
    assert_eq!(lines, ["hello", "airlock", "65534"], "{}", text(&out));
}

#[test]
fn the_runtime_default_profile_fails_closed_and_doctor_names_the_fix() {
    skip_unless_image!();
    let out = podman(&[], &["sh", "-c", "echo hello"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hello"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sandbox: "),
        "{}",
        text(&out)
    );

    let doctor = podman(&["--entrypoint", "sandbox"], &["doctor"]);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(1), "{}", text(&doctor));
    assert!(report.contains("container: podman"), "{report}");
    assert!(
        report.contains("podman run --security-opt seccomp=deploy/seccomp-airlock.json"),
        "{report}"
    );

    // With the profile alone, the next refusal is the masked /proc.
    let doctor = podman(
        &["--security-opt", &profile_opt(), "--entrypoint", "sandbox"],
        &["doctor"],
    );
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(1), "{}", text(&doctor));
    assert!(report.contains("unmask=/proc/*"), "{report}");

    let mut flags = shipped_flags();
    flags.extend(["--entrypoint".into(), "sandbox".into()]);
    let doctor = podman(&strs(&flags), &["doctor"]);
    assert!(doctor.status.success(), "{}", text(&doctor));
    assert!(
        String::from_utf8_lossy(&doctor.stdout).contains("full isolation is available here"),
        "{}",
        text(&doctor)
    );
}

#[test]
fn an_unprivileged_container_user_without_capabilities_gets_a_sandbox() {
    skip_unless_image!();
    // What docs/KUBERNETES.md asks for: non-root, every capability
    // dropped, no privilege escalation.
    let mut flags = shipped_flags();
    flags.extend(
        [
            "--user",
            "1000:1000",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--tmpfs",
            "/work:mode=1777",
            "--env",
            "HOME=/tmp",
            "--entrypoint",
            "sandbox",
        ]
        .map(String::from),
    );
    let out = podman(
        &strs(&flags),
        &[
            "run",
            "--audit-log",
            "stderr",
            "--",
            "sh",
            "-c",
            "echo hello; hostname; id -u",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["hello", "airlock", "1000"],
        "{}",
        text(&out)
    );
}

/// As the container's root (the entrypoint's usual case), the agent writes
/// the image's /work; a volume at /work owned by a non-root user runs the
/// agent as that user (files keep their owner); a root-owned volume, which
/// a container cannot idmap, is refused with the cause and the fix.
#[test]
fn root_in_the_container_gets_a_writable_workspace_or_a_clear_refusal() {
    skip_unless_image!();
    let flags = shipped_flags();
    let out = podman(
        &strs(&flags),
        &["sh", "-c", "echo v1 > f && echo v2 >> f && cat f && id -u"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["v1", "v2", "65534"],
        "{}",
        text(&out)
    );

    let vol = std::env::temp_dir().join(format!("airlock-vol-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&vol);
    std::fs::create_dir(&vol).expect("mkdir volume");
    std::os::unix::fs::chown(&vol, Some(1000), Some(1000)).expect("chown volume");
    let mut with_vol = flags.clone();
    with_vol.extend(["-v".into(), format!("{}:/work", vol.display())]);
    let out = podman(&strs(&with_vol), &["sh", "-c", "touch made && id -u"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1000",
        "{}",
        text(&out)
    );
    let made = std::fs::metadata(vol.join("made")).expect("made on the volume");
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&made),
            std::os::unix::fs::MetadataExt::gid(&made)
        ),
        (1000, 1000)
    );

    std::os::unix::fs::chown(&vol, Some(0), Some(0)).expect("chown volume");
    let out = podman(&strs(&with_vol), &["sh", "-c", "touch x"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/work belongs to root and cannot be mounted idmapped here")
            && stderr.contains("CAP_SYS_ADMIN")
            && stderr.contains("Fix:"),
        "{}",
        text(&out)
    );
    assert!(!vol.join("x").exists());
    let _ = std::fs::remove_dir_all(&vol);
}

/// As the container's root, selftest insists on enforced cgroup limits,
/// which a container without a delegated cgroup cannot give (it fails
/// closed, exit 125). As an unprivileged user, as in Kubernetes, the limit
/// rows are best effort: every probe passes except the two that only a
/// cgroup enforces (the pids limit and the memory limit), and those are
/// reported as failures, not hidden.
#[test]
fn selftest_inside_the_container_fails_only_the_cgroup_rows() {
    skip_unless_image!();
    let mut flags = shipped_flags();
    flags.extend(
        [
            "--user",
            "1000:1000",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--env",
            "HOME=/tmp",
            "--entrypoint",
            "sandbox",
        ]
        .map(String::from),
    );
    let out = podman(&strs(&flags), &["selftest"]);
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", text(&out));
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "selftest ran\n{}",
        text(&out)
    );
    let rows: Vec<Vec<&str>> = report
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.last().is_some_and(|r| *r == "pass" || *r == "FAIL"))
        .collect();
    assert!(rows.len() > 40, "the whole battery ran\n{report}");
    for row in rows.iter().filter(|w| w.last() == Some(&"FAIL")) {
        let (area, probe) = (row[0], row[1]);
        assert!(
            area == "resources" && (probe == "fork-bomb" || probe == "mem-hog"),
            "only cgroup-enforced rows may fail in a container: {row:?}\n{report}"
        );
    }
}

/// The pod of `deploy/kubernetes/job.yaml`, run with Podman: the sidecar
/// container (`egress-proxy serve`, the only one with a network) and the
/// agent container (`sandbox run --egress-socket`, no network at all)
/// share a volume for the socket. The agent reaches an allowed upstream on
/// this host through the sidecar, is refused elsewhere, and the sidecar's
/// audit log records both.
#[test]
fn sidecar_and_agent_containers_share_the_socket_like_the_pod() {
    skip_unless_image!();
    let up = common::net::Upstream::start();
    let shared = common::TempDir::new("/tmp", "airlock-pod");
    common::set_mode(shared.path(), 0o777);
    common::write_file(
        &shared.join("policy.toml"),
        &format!(
            "[network]\nallow = [\"upstream.example.com\"]\nallow_cidr = [\"127.0.0.0/8\"]\nports = [{}]\n",
            up.port
        ),
        0o644,
    );
    let volume = format!("{}:/shared", shared.display());
    let name = format!("airlock-sidecar-{}", common::random_token());
    let sidecar = Command::new("podman")
        .args(["run", "-d", "--rm", "--runtime", "runc", "--name", &name])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args([
            "--network",
            "host",
            "-v",
            &volume,
            "--entrypoint",
            "egress-proxy",
        ])
        // The statically linked proxy resolves names like any other: from
        // the container's /etc/hosts here.
        .args(["--add-host", "upstream.example.com:127.0.0.1"])
        .arg(TAG)
        .args([
            "serve",
            "--listen",
            "unix:/shared/egress.sock",
            "--policy",
            "/shared/policy.toml",
            "--audit-log",
            "/shared/sidecar.jsonl",
            "--socket-mode",
            "666",
        ])
        .output()
        .expect("start the sidecar container");
    assert!(sidecar.status.success(), "{}", text(&sidecar));
    struct Stop(String);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("podman").args(["rm", "-f", &self.0]).output();
        }
    }
    let _stop = Stop(name);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !shared.join("egress.sock").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sidecar never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut flags = shipped_flags();
    flags.extend(
        [
            "--network",
            "none",
            "-v",
            &volume,
            "--entrypoint",
            "sandbox",
        ]
        .map(String::from),
    );
    // busybox wget honours http_proxy; the sandbox sets it, and NO_PROXY
    // (which names 127.0.0.1) is dropped so the request goes through it.
    let script = format!(
        "unset NO_PROXY no_proxy; wget -q -O - http://127.0.0.1:{p}/hello; \
         wget -q -O - http://upstream.example.com:{p}/hello; \
         wget -q -O - http://127.0.0.1:22/ 2>&1 | head -1; true",
        p = up.port
    );
    let out = podman(
        &strs(&flags),
        &[
            "run",
            "--audit-log",
            "stderr",
            "--egress-socket",
            "/shared/egress.sock",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("hello from upstream").count(),
        2,
        "by address and by name\n{}",
        text(&out)
    );
    let log = std::fs::read_to_string(shared.join("sidecar.jsonl")).unwrap_or_default();
    assert!(log.contains("\"action\":\"http.request\""), "{log}");
    assert!(log.contains("\"reason\":\"port-not-allowed\""), "{log}");
}
