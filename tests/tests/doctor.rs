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
