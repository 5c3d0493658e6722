//! The audit log, first version: one JSON object per line for every
//! connection and every plain-HTTP request, with field names from Elastic
//! ECS (`@timestamp`, `event.*`, `destination.*`, `source.*`, `rule.id`,
//! `http.*`, `url.*`) and our own `airlock.*`. Each line is written with
//! one `write(2)` on an `O_APPEND` file as soon as the event ends, so a
//! killed agent cannot make a line go missing.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::decide::Decision;

/// Where events go.
#[derive(Debug)]
pub struct AuditLog {
    sink: Mutex<Sink>,
    session_id: String,
    redactions: Vec<(String, String)>,
}

#[derive(Debug)]
enum Sink {
    File(File),
    Stdout,
    Discard,
}

impl AuditLog {
    /// Appends to `path` (created 0600, parents 0700).
    pub fn open(path: &Path, session_id: &str) -> io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self::with(Sink::File(file), session_id))
    }

    /// Writes to standard output (for container log collectors).
    pub fn stdout(session_id: &str) -> Self {
        Self::with(Sink::Stdout, session_id)
    }

    /// Drops every event (benchmarks only).
    pub fn discard(session_id: &str) -> Self {
        Self::with(Sink::Discard, session_id)
    }

    fn with(sink: Sink, session_id: &str) -> Self {
        Self {
            sink: Mutex::new(sink),
            session_id: session_id.to_string(),
            redactions: Vec::new(),
        }
    }

    /// Scrubs each `(needle, replacement)` from every line before it is
    /// written: secrets and placeholders never reach the log, wherever they
    /// turn up (a path, an error message an upstream echoed).
    pub fn with_redactions(mut self, redactions: Vec<(String, String)>) -> Self {
        self.redactions = redactions
            .into_iter()
            .filter(|(n, _)| !n.is_empty())
            .collect();
        self
    }

    /// The session every event is tagged with.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Writes one event as one line.
    pub fn record(&self, event: &Event) {
        let mut line = event.to_json(&self.session_id).to_string();
        for (needle, replacement) in &self.redactions {
            if line.contains(needle.as_str()) {
                line = line.replace(needle.as_str(), replacement);
            }
        }
        line.push('\n');
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        let _ = match &mut *sink {
            Sink::File(f) => f.write_all(line.as_bytes()),
            Sink::Stdout => io::stdout().lock().write_all(line.as_bytes()),
            Sink::Discard => Ok(()),
        };
    }

    /// Flushes the file to disk (at session end).
    pub fn sync(&self) {
        if let Ok(sink) = self.sink.lock() {
            if let Sink::File(f) = &*sink {
                let _ = f.sync_data();
            }
        }
    }
}

/// Who connected, from `SO_PEERCRED` (the kernel's word, not the client's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peer {
    /// Process id (in the proxy's PID namespace).
    pub pid: Option<i32>,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// One connection or request, filled in as it goes.
#[derive(Debug, Clone)]
pub struct Event {
    /// `connection` or `http_request`.
    pub action: &'static str,
    /// `http`, `connect` or `socks5`.
    pub protocol: &'static str,
    /// The client.
    pub peer: Peer,
    /// The destination host, normalized when it could be.
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// The address dialled.
    pub ip: Option<IpAddr>,
    /// The decision, once made.
    pub decision: Option<Decision>,
    /// Why the connection failed or ended early, if it did.
    pub error: Option<String>,
    /// Bytes from the sandbox.
    pub bytes_up: u64,
    /// Bytes to the sandbox.
    pub bytes_down: u64,
    /// How long it took.
    pub duration: Duration,
    /// HTTP method (plain HTTP only).
    pub method: Option<String>,
    /// Request path and query, query values redacted.
    pub path: Option<String>,
    /// HTTP status answered.
    pub status: Option<u16>,
    /// The credential involved (its name, never its value).
    pub credential: Option<String>,
    /// When it started.
    pub started: SystemTime,
}

impl Event {
    /// A new event starting now.
    pub fn new(action: &'static str, protocol: &'static str, peer: Peer) -> Self {
        Self {
            action,
            protocol,
            peer,
            host: String::new(),
            port: 0,
            ip: None,
            decision: None,
            error: None,
            bytes_up: 0,
            bytes_down: 0,
            duration: Duration::ZERO,
            method: None,
            path: None,
            status: None,
            credential: None,
            started: SystemTime::now(),
        }
    }

    /// The JSON line, tagged with `session`.
    pub fn to_json(&self, session: &str) -> Value {
        let allowed = self.decision.as_ref().is_some_and(|d| d.allow);
        let outcome = if !allowed || self.error.is_some() {
            "failure"
        } else {
            "success"
        };
        let mut event = json!({
            "kind": "event",
            "category": ["network"],
            "type": [if allowed { "allowed" } else { "denied" }, "connection"],
            "action": self.action,
            "outcome": outcome,
            "duration": self.duration.as_nanos() as u64,
            "start": rfc3339(self.started),
        });
        if self.action == "http_request" {
            event["category"] = json!(["network", "web"]);
        }
        let mut airlock = Map::new();
        airlock.insert("session".into(), json!({ "id": session }));
        airlock.insert("protocol".into(), json!(self.protocol));
        if let Some(d) = &self.decision {
            airlock.insert(
                "decision".into(),
                json!(if d.allow { "allow" } else { "deny" }),
            );
            airlock.insert("reason".into(), json!(d.reason));
        }
        if let Some(e) = &self.error {
            airlock.insert("error".into(), json!(e));
        }
        if let Some(c) = &self.credential {
            airlock.insert("credential".into(), json!({ "name": c }));
        }
        let mut source = json!({
            "user": { "id": self.peer.uid.to_string() },
            "group": { "id": self.peer.gid.to_string() },
            "bytes": self.bytes_up,
        });
        if let Some(pid) = self.peer.pid {
            source["process"] = json!({ "pid": pid });
        }
        let mut destination = json!({ "port": self.port, "bytes": self.bytes_down });
        if !self.host.is_empty() {
            destination["domain"] = json!(self.host);
        }
        if let Some(ip) = self.ip {
            destination["ip"] = json!(ip.to_string());
        }
        let mut out = json!({
            "@timestamp": rfc3339(SystemTime::now()),
            "event": event,
            "airlock": airlock,
            "source": source,
            "destination": destination,
        });
        if let Some(d) = &self.decision {
            out["rule"] = json!({ "id": d.rule });
        }
        if let Some(m) = &self.method {
            out["http"] = json!({ "request": { "method": m } });
            if let Some(s) = self.status {
                out["http"]["response"] = json!({ "status_code": s });
            }
        }
        if let Some(p) = &self.path {
            let (path, query) = split_redacted(p);
            out["url"] = json!({ "path": path });
            if let Some(q) = query {
                out["url"]["query"] = json!(q);
            }
        }
        out
    }
}

/// Splits `path?query` and replaces every query value with `REDACTED`
/// (query strings routinely carry tokens).
pub fn split_redacted(path_and_query: &str) -> (String, Option<String>) {
    match path_and_query.split_once('?') {
        None => (path_and_query.to_string(), None),
        Some((path, query)) => {
            let redacted: Vec<String> = query
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}=REDACTED"),
                    None => kv.to_string(),
                })
                .collect();
            (path.to_string(), Some(redacted.join("&")))
        }
    }
}

/// `2026-11-23T17:05:09.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_446_309_123);
        assert_eq!(rfc3339(t), "2026-11-23T15:05:09.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn query_values_are_redacted() {
        assert_eq!(
            split_redacted("/v1/x?token=s3cret&flag&b=2"),
            (
                "/v1/x".to_string(),
                Some("token=REDACTED&flag&b=REDACTED".to_string())
            )
        );
        assert_eq!(split_redacted("/plain"), ("/plain".to_string(), None));
    }
}
