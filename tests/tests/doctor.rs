//! `sandbox doctor`: an operator on a host that can sandbox is told so,
//! after a real trial sandbox, with the kernel facts that matter.

mod common;

use common::sandbox_bin;
use std::process::Command;

/// On this host every layer applies, so doctor reports each check and the
/// trial sandbox as ok and exits 0.
#[test]
fn doctor_reports_a_working_host() {
    let out = Command::new(sandbox_bin())
        .arg("doctor")
        .output()
        .expect("run sandbox doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "doctor failed:\n{text}");
    for line in ["landlock", "seccomp", "user namespaces", "sandbox run"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(line)),
            "no ok line for {line}:\n{text}"
        );
    }
    assert!(text.contains("sandbox run works on this host"), "{text}");
}

/// An ordinary user without a delegated cgroup: the limits doctor cannot
/// enforce here are marked `no`, never `ok`, and the report still says
/// that `sandbox run` works.
#[test]
fn doctor_never_marks_an_unenforceable_limit_ok() {
    use std::os::unix::process::CommandExt;
    const USER: u32 = 1000;
    if !common::is_root() {
        eprintln!("note: needs root to run doctor as another user; skipped");
        return;
    }
    let bin_dir = common::TempDir::new("/tmp", "airlock-bin");
    common::set_mode(bin_dir.path(), 0o755);
    let sandbox = bin_dir.join("sandbox");
    common::install_executable(&sandbox_bin(), &sandbox);
    let home = common::TempDir::new("/tmp", "airlock-home-user");
    common::chown(home.path(), USER, USER);
    let out = Command::new(&sandbox)
        .arg("doctor")
        .current_dir(home.path())
        .env("HOME", home.path())
        .uid(USER)
        .gid(USER)
        .output()
        .expect("run sandbox doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    let limits: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|w| w.starts_with("limits."))
        })
        .collect();
    assert_eq!(limits.len(), 3, "{text}");
    for line in limits {
        if line.contains("cannot be enforced") {
            assert!(line.starts_with("no "), "a negative result says ok: {line}");
        } else {
            assert!(line.starts_with("ok "), "{line}");
        }
    }
    assert!(text.contains("sandbox run works on this host"), "{text}");
}
