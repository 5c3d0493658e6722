//! Which signals the supervisor and init take over and forward.

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
