//! Which signals the supervisor and init take over and forward.

use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

/// Signals forwarded from the caller to the agent.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The forwarded signals plus SIGCHLD: blocked in the supervisor and init
/// and read from a signalfd, never delivered asynchronously.
pub fn supervised() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// A second SIGINT or SIGTERM this soon after the first kills the whole
/// sandbox instead of being forwarded: the way out of a command that
/// ignores them (as a second Ctrl-C ends most programs).
pub const SECOND_SIGNAL_GRACE: Duration = Duration::from_secs(5);

/// What the supervisor does with a signal from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pass it on to the sandbox.
    Forward,
    /// Kill every process of the sandbox (SIGKILL through the cgroup).
    KillSandbox,
}

/// Escalation as `timeout -k` does it: the first SIGINT or SIGTERM is
/// forwarded; a second one within [`SECOND_SIGNAL_GRACE`], or the
/// sandbox still running `kill_after` after the first, kills it all.
#[derive(Debug, Clone, Default)]
pub struct Escalation {
    /// `--kill-after`.
    pub kill_after: Option<Duration>,
    /// When the first SIGINT/SIGTERM (of the current round) arrived.
    first: Option<Instant>,
}

impl Escalation {
    /// Escalation with `--kill-after` (none: only a second signal kills).
    pub fn new(kill_after: Option<Duration>) -> Self {
        Self {
            kill_after,
            first: None,
        }
    }

    /// Decides what to do with `signal`, arriving at `now`.
    pub fn on_signal(&mut self, signal: Signal, now: Instant) -> Action {
        if !matches!(signal, Signal::SIGINT | Signal::SIGTERM) {
            return Action::Forward;
        }
        match self.first {
            Some(t) if now.saturating_duration_since(t) <= SECOND_SIGNAL_GRACE => {
                Action::KillSandbox
            }
            // The first of a round: with --kill-after, the clock it starts
            // keeps running (a later signal does not restart it).
            Some(_) if self.kill_after.is_some() => Action::Forward,
            _ => {
                self.first = Some(now);
                Action::Forward
            }
        }
    }

    /// When the sandbox is killed if it is still running (`--kill-after`
    /// after the first SIGINT/SIGTERM).
    pub fn deadline(&self) -> Option<Instant> {
        Some(self.first? + self.kill_after?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalation_follows_timeout_k() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        use Action::{Forward as F, KillSandbox as K};
        use Signal::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGWINCH};
        // (kill_after, signals at seconds, answers, deadline after the last)
        type Row = (
            Option<u64>,
            &'static [(Signal, u64)],
            &'static [Action],
            Option<u64>,
        );
        let rows: &[Row] = &[
            (None, &[(SIGINT, 0)], &[F], None),
            (None, &[(SIGINT, 0), (SIGINT, 1)], &[F, K], None),
            (None, &[(SIGINT, 0), (SIGTERM, 5)], &[F, K], None),
            (None, &[(SIGTERM, 0), (SIGINT, 3)], &[F, K], None),
            // Too late for a second: a new first.
            (
                None,
                &[(SIGINT, 0), (SIGINT, 6), (SIGINT, 7)],
                &[F, F, K],
                None,
            ),
            // Other signals neither count nor escalate.
            (
                None,
                &[(SIGWINCH, 0), (SIGUSR1, 1), (SIGHUP, 2)],
                &[F, F, F],
                None,
            ),
            (None, &[(SIGINT, 0), (SIGWINCH, 1)], &[F, F], None),
            // --kill-after: the first starts the clock, which keeps running.
            (Some(30), &[(SIGTERM, 0)], &[F], Some(30)),
            (Some(30), &[(SIGTERM, 0), (SIGTERM, 10)], &[F, F], Some(30)),
            (Some(30), &[(SIGTERM, 0), (SIGTERM, 2)], &[F, K], Some(30)),
            (Some(2), &[(SIGUSR1, 0)], &[F], None),
        ];
        for (kill_after, signals, want, deadline) in rows {
            let mut e = Escalation::new(kill_after.map(s));
            let got: Vec<Action> = signals
                .iter()
                .map(|(sig, at)| e.on_signal(*sig, t0 + s(*at)))
                .collect();
            assert_eq!(&got[..], *want, "{kill_after:?} {signals:?}");
            assert_eq!(e.deadline(), deadline.map(|d| t0 + s(d)), "{signals:?}");
        }
    }
}
