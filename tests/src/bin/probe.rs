//! `probe`: the syscall prober the end-to-end tests run inside the sandbox.
//! The code is the supervisor's (`sandbox __probe`, used by `sandbox
//! selftest`), included by path so both binaries run exactly the same
//! probes; see `supervisor/src/probes.rs` for the probe names and output.

#[path = "../../../supervisor/src/probes.rs"]
mod probes;

fn main() -> std::process::ExitCode {
    probes::main(std::env::args().skip(1).collect())
}
