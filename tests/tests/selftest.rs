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

/// An ordinary user without a delegated cgroup: the probes of the limits
/// this host cannot enforce for them (fork bomb, memory hog) do not apply.
/// They are listed as skipped with the reason, not failed, and the run
/// passes; as root they run and pass (above).
#[test]
fn selftest_skips_cgroup_probes_that_do_not_apply_here() {
    use std::os::unix::process::CommandExt;
    const USER: u32 = 1000;
    if skip_unless_root("selftest_skips_cgroup_probes_that_do_not_apply_here") {
        return;
    }
    let bin_dir = TempDir::new("/tmp", "airlock-bin");
    set_mode(bin_dir.path(), 0o755);
    let sandbox = bin_dir.join("sandbox");
    install_executable(&sandbox_bin(), &sandbox);
    let home = TempDir::new("/tmp", "airlock-home-user");
    chown(home.path(), USER, USER);
    let run = |json: bool| {
        let mut cmd = Command::new(&sandbox);
        cmd.arg("selftest")
            .current_dir(home.path())
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .uid(USER)
            .gid(USER);
        if json {
            cmd.arg("--json");
        }
        run_to_end(cmd)
    };
    let out = run(true);
    out.assert_code(0, "skipped probes do not fail the run");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(report["failed"], 0, "{out}");
    let results = report["results"].as_array().expect("results");
    for probe in ["fork-bomb", "mem-hog"] {
        let row = results
            .iter()
            .find(|r| r["probe"] == probe)
            .unwrap_or_else(|| panic!("{probe} is listed\n{out}"));
        assert!(row["pass"].is_null(), "{row}");
        assert!(
            row["skipped"]
                .as_str()
                .is_some_and(|why| why.contains("cannot be enforced")),
            "{row}"
        );
    }
    assert_eq!(report["skipped"], 2, "{out}");
    let out = run(false);
    out.assert_code(0, "the table run passes too");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("fork-bomb") && l.contains("skipped (")),
        "{out}"
    );
    assert!(!out.stdout.contains("FAIL"), "{out}");
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

/// Probes that no switch can expose, because something outside airlock's
/// layers refuses them as well, or because turning their layer off would
/// harm the host. Each names why; every other probe must fail in at least
/// one weakened run below.
const GUARDED_BEYOND_AIRLOCK: &[(&str, &str)] = &[
    (
        "write-file=/proc/self/exe",
        "the kernel refuses writes to a running executable (ETXTBSY)",
    ),
    (
        "write-file=/proc/sysrq-trigger",
        "only where the kernel has no magic SysRq (elsewhere the read-only re-bind is exposed)",
    ),
    (
        "open-by-handle-at",
        "needs CAP_DAC_READ_SEARCH in the initial user namespace",
    ),
    (
        "mknod=",
        "device nodes cannot be made in a non-initial user namespace",
    ),
    (
        "userfaultfd",
        "also refused by the host's vm.unprivileged_userfaultfd = 0, where it is",
    ),
    (
        "list-dir=/run/airlock",
        "the view is built from scratch; no switch adds host sockets there (the planted \
         host socket is probed by read-file=.../host.sock, which `view` exposes)",
    ),
    (
        "dns=",
        "telling needs a resolver the sandbox could reach once its network namespace and \
         seccomp are off; the weakened runs have none (the host's must never be queried)",
    ),
    (
        "daemon=",
        "the PID namespace and the cgroup kill both end it; without both it would outlive \
         the test on the host",
    ),
    ("setsid SIGTERM-ignoring daemon after exit", "as daemon="),
    (
        "syscall-beyond-known",
        "kernels up to 6.18 lack that call and answer ENOSYS as the filter does; the \
         filter's own tests (seccomp/program.rs) show the answer is the filter's",
    ),
];

/// The weakened runs: single layers, and the combinations that expose
/// probes guarded twice by airlock itself (a mount needs seccomp, the
/// capabilities and Landlock all off; a TCP connect to the host needs the
/// network namespace and Landlock off).
const WEAKENINGS: &[&str] = &[
    "seccomp",
    "landlock",
    "rlimits",
    "cgroup",
    "caps",
    "mounts",
    "readonly",
    "env",
    "dumpable",
    "view",
    "ssrf",
    "allowlist",
    "netns",
    "tmpfs",
    "seccomp,caps,landlock",
    "seccomp,caps,dumpable,landlock",
    "netns,landlock",
    "netns,seccomp",
    "view,landlock",
];

/// `sandbox selftest --json` with `weaken`, in a network namespace of this
/// test's own (only `lo`, no route, no resolver): weakened network layers
/// can reach nothing but the test's bait.
fn selftest_isolated(weaken: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--net",
        "sh",
        "-c",
        "ip link set lo up && exec \"$0\" selftest --json",
    ])
    .arg(sandbox_bin())
    .stdin(Stdio::null());
    if let Some(layer) = weaken {
        cmd.env("AIRLOCK_TEST_WEAKEN", layer);
    }
    let out = run_to_end(cmd);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("weakened {weaken:?}: no JSON report ({e}): {out}"))
}

/// Probe names without the run's random token (16 hex digits) and ports.
fn probe_key(probe: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() == 16 {
            out.push('T');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in probe.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    // Ports: ":digits" at the end.
    match out.rsplit_once(':') {
        Some((head, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => {
            head.to_owned()
        }
        _ => out,
    }
}

/// No probe passes vacuously: each one fails when the layers it checks are
/// turned off, except the few that something beyond airlock also refuses
/// (listed above, with the reason).
#[test]
fn every_probe_fails_when_its_layers_are_off() {
    if skip_unless_root("every_probe_fails_when_its_layers_are_off") {
        return;
    }
    let results = |report: &serde_json::Value| -> Vec<(String, bool, String)> {
        report["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                (
                    probe_key(r["probe"].as_str().unwrap_or_default()),
                    r["pass"] == true,
                    r["observed"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let base = results(&selftest_isolated(None));
    let failing: Vec<_> = base.iter().filter(|(_, pass, _)| !pass).collect();
    assert!(
        failing.is_empty(),
        "the full sandbox fails probes: {failing:?}"
    );
    let mut exposed: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for weaken in WEAKENINGS {
        for (probe, pass, _) in results(&selftest_isolated(Some(weaken))) {
            if !pass {
                exposed.entry(probe).or_default().push(weaken);
            }
        }
    }
    let vacuous: Vec<&(String, bool, String)> = base
        .iter()
        .filter(|(probe, _, _)| !exposed.contains_key(probe))
        .filter(|(probe, _, _)| {
            !GUARDED_BEYOND_AIRLOCK
                .iter()
                .any(|(prefix, _)| probe.starts_with(prefix))
        })
        .collect();
    assert!(
        vacuous.is_empty(),
        "probes that pass with every layer off (add a switch, or a reason to \
         GUARDED_BEYOND_AIRLOCK): {vacuous:#?}\nexposed: {exposed:#?}"
    );
}
