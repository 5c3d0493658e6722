//! `sandbox selftest`: the escape battery passes on this host, reports in
//! JSON with the kernel and Landlock ABI, and fails loudly when any layer
//! is turned off (debug builds' `AIRLOCK_TEST_WEAKEN`), so no probe passes
//! vacuously.

mod common;

use common::*;
use std::process::{Command, Stdio};

fn selftest(weaken: Option<&str>, json: bool) -> RunOutput {
    let mut cmd = Command::new(sandbox_bin());
    cmd.arg("selftest").stdin(Stdio::null());
    if json {
        cmd.arg("--json");
    }
    if let Some(layer) = weaken {
        cmd.env("AIRLOCK_TEST_WEAKEN", layer);
    }
    run_to_end(cmd)
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("note: {test} needs root (cgroup limits); skipped");
    true
}

/// Every probe of the battery gets the expected refusal on this host.
#[test]
fn selftest_passes_on_this_host_and_reports_json() {
    if skip_unless_root("selftest_passes_on_this_host_and_reports_json") {
        return;
    }
    let out = selftest(None, false);
    out.assert_code(0, "the battery passes");
    assert!(out.stdout.contains(" 0 failed"), "{out}");
    let out = selftest(None, true);
    out.assert_code(0, "the battery passes (JSON)");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert!(
        report["kernel"].as_str().is_some_and(|k| !k.is_empty()),
        "{out}"
    );
    assert!(report["landlock_abi"].as_i64().is_some(), "{out}");
    assert_eq!(report["failed"], 0, "{out}");
    let results = report["results"].as_array().expect("results");
    assert!(results.len() >= 50, "{out}");
    assert!(results.iter().all(|r| r["pass"] == true), "{out}");
}

/// Turning a layer off makes the probes that guard it fail: the battery
/// detects a weakened sandbox instead of passing vacuously.
#[test]
fn selftest_detects_each_weakened_layer() {
    if skip_unless_root("selftest_detects_each_weakened_layer") {
        return;
    }
    let cases: &[(&str, &[&str])] = &[
        (
            "seccomp",
            &[
                "caps",
                "clone3",
                "keyctl",
                "personality-read-implies-exec",
                "int80-getpid",
            ],
        ),
        ("landlock", &["signal-init"]),
        ("rlimits", &["fd-exhaust", "core-limit"]),
        ("cgroup", &["fork-bomb", "mem-hog"]),
        ("caps", &["caps"]),
        ("mounts", &["file-size=/etc/shadow"]),
    ];
    for (layer, probes) in cases {
        let out = selftest(Some(layer), true);
        out.assert_code(1, &format!("weakened {layer}: the battery must fail"));
        let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        let failed: Vec<&str> = report["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter(|r| r["pass"] == false)
            .filter_map(|r| r["probe"].as_str())
            .collect();
        for p in *probes {
            assert!(
                failed.contains(p),
                "weakened {layer}: {p} should fail; failed: {failed:?}"
            );
        }
    }
}
