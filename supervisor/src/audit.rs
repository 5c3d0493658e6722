//! The supervisor's part of the audit trail: where it goes (plan), and the
//! events only the supervisor can write: `session.start` (who ran what,
//! under which policy, on which kernel), `isolation.failure` (a layer could
//! not be applied), `session.end` (how it ended) and the seal. The session
//! proxy writes its network events into the same chain.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use egress_proxy::audit::{rfc3339, AuditLog, Format, Options, SinkSpec};
use egress_proxy::seal::SigningKey;
use serde_json::json;

use crate::error::SetupError;
use crate::plan::{Host, SandboxPlan};
use crate::run::Outcome;

/// The audit part of the command line.
#[derive(Debug, Clone, Default)]
pub struct AuditRequest {
    /// `--audit-log SINK`: a file, `stdout`, `stderr`, `unix:PATH`,
    /// `unixgram:PATH`.
    pub sink: Option<String>,
    /// `--audit-format ecs|ocsf`.
    pub format: Option<String>,
    /// `--audit-sign-key FILE`.
    pub sign_key: Option<PathBuf>,
    /// `--audit-best-effort`.
    pub best_effort: bool,
    /// `--audit-fsync-interval`.
    pub fsync_interval: Option<Duration>,
}

/// Where and how the session is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPlan {
    /// The sink.
    pub sink: SinkSpec,
    /// The line format.
    pub format: Format,
    /// The key that seals the chain at the end, if any.
    pub sign_key: Option<PathBuf>,
    /// Keep running if the sink fails.
    pub best_effort: bool,
    /// How often the file is flushed to disk besides session end.
    pub fsync_interval: Duration,
}

/// How often the file is flushed to disk besides session end, by default.
const FSYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Plans the audit sink from the flags.
pub fn plan(req: &AuditRequest, host: &Host) -> Result<AuditPlan, SetupError> {
    let sink = match &req.sink {
        Some(s) => SinkSpec::parse(s),
        None => SinkSpec::File(default_audit_log(
            host.euid,
            host.home.as_deref(),
            std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .as_deref(),
        )),
    };
    let format = match req.format.as_deref() {
        None | Some("ecs") => Format::Ecs,
        Some("ocsf") => Format::Ocsf,
        Some(other) => {
            return Err(SetupError::new(
                "audit",
                format!("--audit-format {other}: expected ecs or ocsf"),
            ))
        }
    };
    Ok(AuditPlan {
        sink,
        format,
        sign_key: req.sign_key.clone(),
        best_effort: req.best_effort,
        fsync_interval: req.fsync_interval.unwrap_or(FSYNC_INTERVAL),
    })
}

/// Where audit events go unless `--audit-log` says otherwise: one
/// append-only file per user, every line tagged with its session.
pub fn default_audit_log(euid: u32, home: Option<&Path>, xdg_state: Option<&Path>) -> PathBuf {
    if euid == 0 {
        return PathBuf::from("/var/log/airlock/audit.jsonl");
    }
    let base = match (xdg_state, home) {
        (Some(s), _) if s.is_absolute() => s.to_path_buf(),
        (_, Some(h)) if h.is_absolute() => h.join(".local/state"),
        _ => std::env::temp_dir(),
    };
    base.join("airlock/audit.jsonl")
}

/// An open session log and the key that will seal it.
pub struct SessionAudit {
    /// The log, shared with the session proxy.
    pub log: Arc<AuditLog>,
    key: Option<SigningKey>,
    started: SystemTime,
    /// `session.start` is written (it is written once).
    start_recorded: AtomicBool,
}

/// Opens the sink (fails closed) and loads the signing key.
pub fn open(plan: &SandboxPlan) -> Result<SessionAudit, SetupError> {
    let a = &plan.audit;
    let key = match &a.sign_key {
        Some(p) => Some(
            SigningKey::from_pem_file(p)
                .map_err(|e| SetupError::new("audit", format!("--audit-sign-key {e}")))?,
        ),
        None => None,
    };
    let options = Options {
        format: a.format,
        best_effort: a.best_effort,
        fsync_interval: Some(a.fsync_interval),
        policy_hash: Some(plan.policy_hash.clone()),
    };
    let log = AuditLog::open_with(&a.sink, &plan.session_id, options).map_err(|e| {
        SetupError::io(
            "audit",
            format!(
                "open the audit sink {:?} (fix the path or permissions, or pass --audit-log)",
                a.sink
            ),
            e,
        )
    })?;
    Ok(SessionAudit {
        log: Arc::new(log),
        key,
        started: SystemTime::now(),
        start_recorded: AtomicBool::new(false),
    })
}

impl SessionAudit {
    /// Replaces the log (so the proxy's secrets redactions apply to the
    /// supervisor's lines too). Only valid before any line is written.
    pub fn set_redactions(&mut self, redactions: Vec<(String, String)>) {
        if redactions.is_empty() {
            return;
        }
        if let Some(log) = Arc::get_mut(&mut self.log) {
            let taken = std::mem::replace(log, AuditLog::discard(""));
            *log = taken.with_redactions(redactions);
        }
    }

    /// `session.start`: who, what, where, under which policy. Written once:
    /// later calls do nothing.
    pub fn start(&self, plan: &SandboxPlan) {
        if self.start_recorded.swap(true, Ordering::Relaxed) {
            return;
        }
        let uts = nix::sys::utsname::uname().ok();
        let text = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let args: Vec<String> = plan
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let sources: Vec<_> = plan
            .policy_sources
            .iter()
            .map(|s| json!({ "path": s.label, "sha256": s.sha256, "role": s.role }))
            .collect();
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        let proxy = match &plan.egress.proxy {
            crate::egress::ProxyPlacement::Session { .. } => "session",
            crate::egress::ProxyPlacement::External => "sidecar",
        };
        self.log.record_value(json!({
            "event": {
                "kind": "event",
                "category": ["process", "session"],
                "type": ["start"],
                "action": "session.start",
                "outcome": "success",
            },
            "user": { "id": nix::unistd::getuid().as_raw().to_string(), "name": user },
            "process": {
                "command_line": args.join(" "),
                "args": args,
                "working_directory": plan.cwd.display().to_string(),
            },
            "host": {
                "hostname": text(|u| u.nodename()),
                "os": { "kernel": text(|u| u.release()), "type": "linux" },
                "architecture": text(|u| u.machine()),
            },
            "airlock": {
                "session": { "nonce": self.log.nonce() },
                "agent": { "uid": plan.identity.outer_uid, "gid": plan.identity.outer_gid },
                "workspace": plan.workspace.display().to_string(),
                "policy": { "sources": sources },
                "landlock": { "abi": crate::landlock::kernel_abi() },
                "isolation": plan.isolation.name(),
                "egress": {
                    "proxy": proxy,
                    "socket": plan.egress.host_socket.display().to_string(),
                    "control": plan.egress.sidecar_control.as_ref().map(|p| p.display().to_string()),
                },
            },
        }));
    }

    /// `isolation.failure`: a layer could not be applied; nothing ran.
    pub fn isolation_failure(&self, err: &SetupError) {
        self.log.record_value(json!({
            "event": {
                "kind": "alert",
                "category": ["process"],
                "type": ["error"],
                "action": "isolation.failure",
                "outcome": "failure",
            },
            "error": { "message": err.message, "type": err.layer },
            "airlock": { "layer": err.layer },
        }));
    }

    /// `workspace.tamper_reverted`: the agent changed code the host runs
    /// (a git config or hook, an rc file, `.envrc`...) and it was
    /// quarantined (or could not be). Names the path, never the contents.
    pub fn tamper(&self, finding: &crate::surface::Finding) {
        let (outcome, moved, error) = match &finding.outcome {
            Ok(to) => ("success", Some(to.display().to_string()), None),
            Err(e) => ("failure", None, Some(e.clone())),
        };
        self.log.record_value(json!({
            "event": {
                "kind": "alert",
                "category": ["file"],
                "type": ["change"],
                "action": "workspace.tamper_reverted",
                "outcome": outcome,
                "reason": finding.what,
            },
            "file": { "path": finding.path.display().to_string() },
            "airlock": { "quarantined_as": moved },
            "error": { "message": error },
        }));
    }

    /// `proxy.error`: the egress proxy failed (a sidecar died, say).
    pub fn proxy_error(&self, message: &str) {
        self.log.record_value(json!({
            "event": {
                "kind": "alert",
                "category": ["network"],
                "type": ["error"],
                "action": "proxy.error",
                "outcome": "failure",
            },
            "error": { "message": message },
        }));
    }

    /// `session.end`, then the seal if a key was given, then a flush.
    pub fn end(&self, outcome: Result<Outcome, &SetupError>, usage: Option<&crate::cgroup::Usage>) {
        let duration = self.started.elapsed().unwrap_or_default();
        let (code, outcome_text, timed_out) = match outcome {
            Ok(Outcome::Exited(c)) => (c, if c == 0 { "success" } else { "failure" }, false),
            Ok(Outcome::TimedOut) => (crate::run::TIMED_OUT, "failure", true),
            Ok(Outcome::Killed) => (crate::run::KILLED, "failure", false),
            Err(_) => (crate::init::SETUP_FAILED, "failure", false),
        };
        let signal = (code > 128 && code < 128 + 65).then(|| code - 128);
        self.log.record_value(json!({
            "event": {
                "kind": "event",
                "category": ["process", "session"],
                "type": ["end"],
                "action": "session.end",
                "outcome": outcome_text,
                "start": rfc3339(self.started),
                "end": rfc3339(SystemTime::now()),
                "duration": duration.as_nanos() as u64,
            },
            "process": { "exit_code": code },
            "airlock": {
                "exit": { "code": code, "signal": signal, "timed_out": timed_out },
                "resources": {
                    "cpu_usec": usage.and_then(|u| u.cpu_usec),
                    "peak_memory_bytes": usage.and_then(|u| u.peak_memory_bytes),
                    "limit_hit": usage.and_then(|u| u.limit_hit),
                },
            },
        }));
        if let Some(key) = &self.key {
            self.log.seal(key);
        }
        self.log.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{build, RunRequest};
    use crate::policy::Policy;

    /// A full session records its start between init's two go-aheads, and
    /// the error path records it again in case the failure came first: the
    /// log must still hold one `session.start`.
    #[test]
    fn session_start_is_written_once() {
        let dir = std::env::temp_dir().join(format!("airlock-audit-once-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("audit.jsonl");
        let host = Host {
            euid: 1000,
            egid: 1000,
            home: None,
            cwd: dir.clone(),
            vars: Vec::new(),
            session_id: "0123456789abcdef0123456789abcdef".into(),
        };
        let req = RunRequest {
            workspace: Some(dir.clone()),
            argv: vec!["true".into()],
            audit: AuditRequest {
                sink: Some(log.display().to_string()),
                ..AuditRequest::default()
            },
            ..RunRequest::default()
        };
        let plan = build(&Policy::embedded_default(), &req, &host).expect("plan");
        let audit = open(&plan).expect("open");
        audit.start(&plan);
        audit.start(&plan);
        audit.end(Ok(Outcome::Exited(0)), None);
        let text = std::fs::read_to_string(&log).expect("log");
        let _ = std::fs::remove_dir_all(&dir);
        let actions: Vec<_> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["event"]["action"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(actions, ["session.start", "session.end"], "{text}");
    }
}
