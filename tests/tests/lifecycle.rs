//! Escalation as `timeout -k` does it: a command that ignores SIGINT and
//! SIGTERM cannot keep the sandbox alive against its caller. The first
//! SIGINT/SIGTERM is forwarded; a second one within 5 s, or the sandbox
//! still running `--kill-after` later, kills every process of the sandbox
//! (exit 137).

mod common;

use common::*;
use std::time::Duration;

/// An agent that ignores SIGINT and SIGTERM and has a daemon of its own
/// doing the same; it would run on for 15 s and print `finished`.
fn stubborn_agent(marker: &str) -> String {
    format!(
        "(trap '' INT TERM; exec sleep {marker}) & \
         trap '' INT TERM; echo ready; sleep 15; echo finished"
    )
}

/// INT, INT, TERM (the report's sequence): the second signal kills the
/// whole sandbox, daemon included, instead of waiting for the command.
#[test]
fn a_command_ignoring_int_and_term_is_killed_by_a_second_signal() {
    let sb = Sandbox::new();
    let marker = sleep_marker(4255);
    let _reaper = MarkerReaper(marker.clone());
    let mut running = Streaming::spawn(sb.command(&["/bin/sh", "-c", &stubborn_agent(&marker)]));
    running.wait_for_line("ready", RUN_DEADLINE);
    running.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        matches!(running.child.try_wait(), Ok(None)),
        "the first SIGINT is only forwarded"
    );
    running.signal(libc::SIGINT);
    // (The third may find the supervisor gone already.)
    // SAFETY: kill(2) on our own child, which may have exited (then ESRCH).
    unsafe { libc::kill(running.pid(), libc::SIGTERM) };
    let out = running.finish();
    out.assert_code(137, "the second signal kills the sandbox (128 + SIGKILL)");
    assert!(!out.stdout.contains("finished"), "{out}");
    assert!(out.stderr.contains("killed the whole sandbox"), "{out}");
    let left = wait_until_gone(&marker, Duration::from_secs(5));
    assert!(left.is_empty(), "survivors {left:?}");
}

/// `--kill-after 1s`: one SIGTERM, ignored; a second later the whole
/// sandbox is killed.
#[test]
fn kill_after_kills_a_command_that_ignores_sigterm() {
    let sb = Sandbox::new();
    let marker = sleep_marker(4256);
    let _reaper = MarkerReaper(marker.clone());
    let mut running = Streaming::spawn(sb.command_with(
        &["--kill-after", "1s"],
        &["/bin/sh", "-c", &stubborn_agent(&marker)],
    ));
    running.wait_for_line("ready", RUN_DEADLINE);
    running.signal(libc::SIGTERM);
    let out = running.finish();
    out.assert_code(137, "--kill-after kills the sandbox (128 + SIGKILL)");
    assert!(!out.stdout.contains("finished"), "{out}");
    assert!(out.stderr.contains("--kill-after"), "{out}");
    let left = wait_until_gone(&marker, Duration::from_secs(5));
    assert!(left.is_empty(), "survivors {left:?}");
}

/// Without a signal, `--kill-after` does nothing: the command runs to its
/// end and its status is the sandbox's.
#[test]
fn kill_after_alone_does_not_limit_the_run() {
    let sb = Sandbox::new();
    let out = sb.run_with(
        &["--kill-after", "1s"],
        &["/bin/sh", "-c", "sleep 1.5; echo finished; exit 3"],
    );
    out.assert_code(3, "the command's own status");
    assert!(out.stdout.contains("finished"), "{out}");
}
