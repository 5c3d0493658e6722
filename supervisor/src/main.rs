//! `sandbox`: the airlock supervisor.
//!
//! Exit codes follow `timeout(1)` and `env(1)`: the agent's own status
//! (128+N when killed by signal N), 124 timed out, 125 the sandbox could not
//! be set up (or bad usage), 126 the command cannot be executed, 127 the
//! command was not found.

mod agent;
mod audit;
mod audit_cmd;
mod caps;
mod cgroup;
mod cli;
mod container;
mod degraded;
mod doctor;
mod egress;
mod error;
mod handoff;
mod idmap;
mod init;
mod landlock;
mod mounts;
mod namespaces;
mod network;
mod plan;
mod policy;
mod prefault;
mod probes;
mod procfs;
mod profile;
mod relay;
mod rlimits;
mod run;
mod seccomp;
mod selftest;
mod session;
mod sidecar;
mod signals;
mod spawn;
mod surface;

use std::process::ExitCode;

use crate::cli::{Command, RunArgs};

/// Exit code for errors of `sandbox` itself.
const SUPERVISOR_ERROR: u8 = 125;

fn main() -> ExitCode {
    prefault::hot_code();
    let command = match cli::parse() {
        Ok(command) => command,
        Err(e) => {
            let code = if e.use_stderr() { SUPERVISOR_ERROR } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match command {
        Command::Run(args) => run_command(*args),
        Command::Doctor => doctor::main(),
        Command::Policy(cmd) => ExitCode::from(profile::command(*cmd)),
        Command::Audit(cmd) => ExitCode::from(audit_cmd::main(cmd)),
        Command::Selftest { json } => selftest::main(json),
        Command::Probe { names } => probes::main(names),
    }
}

fn run_command(args: RunArgs) -> ExitCode {
    let report_mode = match args.network_mode.as_str() {
        "enforce" => false,
        "report" => true,
        other => {
            eprintln!("sandbox: --network-mode {other}: expected enforce or report");
            return ExitCode::from(SUPERVISOR_ERROR);
        }
    };
    let selection = profile::Selection {
        profiles: args.profile,
        managed: args.managed,
        cli: profile::merge::CliLayer {
            allow: args.allow.clone(),
            deny: args.deny.clone(),
            allow_cidr: args.allow_cidr.clone(),
            allow_port: args.allow_port.clone(),
            env: args.env.clone(),
            timeout: args.timeout,
            report: report_mode,
        },
        workspace: args.workspace.clone(),
    };
    let mut policy = match profile::effective(&selection) {
        Ok(eff) => profile::to_policy(&eff, &profile::path_vars(args.workspace.as_deref())),
        Err(errors) => {
            for e in errors {
                eprintln!("sandbox: {e}");
            }
            return ExitCode::from(SUPERVISOR_ERROR);
        }
    };
    if report_mode {
        // Report mode is part of the effective policy: it changes the hash.
        policy.network.report_only = true;
        policy.hash = egress_proxy::audit::sha256_hex(format!("{}+report", policy.hash).as_bytes());
    }
    let isolation = args.isolation.clone();
    let kill_after = args.kill_after;
    let request = plan::RunRequest {
        workspace: args.workspace,
        env: args.env,
        uid: args.uid,
        gid: args.gid,
        timeout: args.timeout,
        argv: args.command,
        network: egress::NetworkRequest {
            allow: args.allow,
            deny: args.deny,
            allow_cidr: args.allow_cidr,
            allow_port: args.allow_port,
            egress_socket: args.egress_socket,
            egress_control: args.egress_control,
            upstream_ca: args.upstream_ca,
        },
        audit: audit::AuditRequest {
            sink: args.audit_log,
            format: args.audit_format,
            sign_key: args.audit_sign_key,
            best_effort: args.audit_best_effort,
            fsync_interval: args.audit_fsync_interval,
        },
    };
    let result = plan::Host::current()
        .and_then(|host| plan::build(&policy, &request, &host))
        .and_then(|mut plan| {
            plan.isolation = degraded::Isolation::parse(&isolation)?;
            plan.kill_after = kill_after;
            Ok(plan)
        })
        .and_then(|plan| run::run(&plan).map(|outcome| (plan, outcome)));
    match result {
        Ok((plan, outcome)) => {
            if outcome == run::Outcome::TimedOut {
                if let Some(t) = plan.timeout {
                    eprintln!("sandbox: timed out after {t:?}; the whole sandbox was killed");
                }
            }
            ExitCode::from(outcome.code().clamp(0, 255) as u8)
        }
        Err(e) => {
            eprintln!("sandbox: {e}");
            ExitCode::from(SUPERVISOR_ERROR)
        }
    }
}
