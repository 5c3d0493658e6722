//! The audit trail: one JSON object per line for every session, connection,
//! request, denial and credential use, with Elastic ECS field names
//! (`@timestamp`, `event.*`, `destination.*`, `source.*`, `rule.id`,
//! `http.*`, `url.*`) and our own `airlock.*` — or OCSF objects with
//! `--audit-format ocsf` (see `ocsf.rs`).
//!
//! Integrity: every line carries `airlock.seq` (1, 2, ... per session) and
//! `airlock.prev_hash`, the SHA-256 of the previous line of its session
//! exactly as written; the first line chains to a random session nonce that
//! `session.start` records. `verify.rs` checks the chain; `seal` signs its
//! head. Each line is written with one `write(2)` as soon as its event
//! ends, so a killed agent cannot make a line go missing, and secrets are
//! scrubbed from every line before it is hashed and written.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::decide::Decision;

/// Where the events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// Append to a file (created 0600, parents 0700).
    File(PathBuf),
    /// Standard output, for container log collectors.
    Stdout,
    /// Standard error.
    Stderr,
    /// A Unix stream socket of a local shipper (Vector, Fluent Bit).
    UnixStream(PathBuf),
    /// A Unix datagram socket; one event per datagram.
    UnixDatagram(PathBuf),
    /// Nowhere (benchmarks only).
    Discard,
}

impl SinkSpec {
    /// `stdout`, `stderr`, `unix:PATH`, `unixgram:PATH`, or a file path.
    pub fn parse(s: &str) -> Self {
        match s {
            "stdout" | "-" => SinkSpec::Stdout,
            "stderr" => SinkSpec::Stderr,
            _ => {
                if let Some(p) = s.strip_prefix("unix:") {
                    SinkSpec::UnixStream(PathBuf::from(p))
                } else if let Some(p) = s.strip_prefix("unixgram:") {
                    SinkSpec::UnixDatagram(PathBuf::from(p))
                } else {
                    SinkSpec::File(PathBuf::from(s))
                }
            }
        }
    }
}

/// The line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Elastic Common Schema names (the default).
    #[default]
    Ecs,
    /// OCSF 1.3 objects (HTTP Activity 4002, Network Activity 4001, Process
    /// Activity 1007 for sessions).
    Ocsf,
}

/// How the log behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Line format.
    pub format: Format,
    /// Keep going (and say so) when the sink fails, instead of refusing new
    /// connections.
    pub best_effort: bool,
    /// Flush the file to disk at least this often (and at session end).
    pub fsync_interval: Option<Duration>,
    /// The effective policy's hash, carried by every event.
    pub policy_hash: Option<String>,
}

#[derive(Debug)]
enum Sink {
    File(File),
    Stdout,
    Stderr,
    Stream(UnixStream),
    Datagram(UnixDatagram),
    Discard,
}

#[derive(Debug)]
struct Chain {
    sink: Sink,
    seq: u64,
    prev: String,
    last_sync: Instant,
}

/// An audit log for one session (or one sidecar run).
#[derive(Debug)]
pub struct AuditLog {
    chain: Mutex<Chain>,
    session_id: String,
    nonce: String,
    options: Options,
    redactions: Vec<(String, String)>,
    redact_matcher: crate::scrub::Matcher,
    failed: AtomicBool,
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn open_sink(spec: &SinkSpec) -> io::Result<Sink> {
    Ok(match spec {
        SinkSpec::File(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)?;
            }
            Sink::File(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(path)?,
            )
        }
        SinkSpec::Stdout => Sink::Stdout,
        SinkSpec::Stderr => Sink::Stderr,
        SinkSpec::UnixStream(p) => Sink::Stream(UnixStream::connect(p)?),
        SinkSpec::UnixDatagram(p) => {
            let d = UnixDatagram::unbound()?;
            d.connect(p)?;
            Sink::Datagram(d)
        }
        SinkSpec::Discard => Sink::Discard,
    })
}

impl AuditLog {
    /// Opens `spec` for session `session_id` with a fresh random nonce.
    pub fn open_with(spec: &SinkSpec, session_id: &str, options: Options) -> io::Result<Self> {
        let sink = open_sink(spec)?;
        let nonce = crate::new_session_id() + &crate::new_session_id();
        Ok(Self {
            chain: Mutex::new(Chain {
                sink,
                seq: 0,
                prev: nonce.clone(),
                last_sync: Instant::now(),
            }),
            session_id: session_id.to_string(),
            nonce,
            options,
            redactions: Vec::new(),
            redact_matcher: Default::default(),
            failed: AtomicBool::new(false),
        })
    }

    /// Appends to `path` (created 0600, parents 0700), ECS format.
    pub fn open(path: &Path, session_id: &str) -> io::Result<Self> {
        Self::open_with(
            &SinkSpec::File(path.to_path_buf()),
            session_id,
            Options::default(),
        )
    }

    /// Writes to standard output (for container log collectors).
    pub fn stdout(session_id: &str) -> Self {
        Self::open_with(&SinkSpec::Stdout, session_id, Options::default())
            .unwrap_or_else(|_| Self::discard(session_id))
    }

    /// Drops every event (benchmarks only).
    pub fn discard(session_id: &str) -> Self {
        Self {
            chain: Mutex::new(Chain {
                sink: Sink::Discard,
                seq: 0,
                prev: String::new(),
                last_sync: Instant::now(),
            }),
            session_id: session_id.to_string(),
            nonce: String::new(),
            options: Options::default(),
            redactions: Vec::new(),
            redact_matcher: Default::default(),
            failed: AtomicBool::new(false),
        }
    }

    /// Scrubs each `(needle, replacement)` from every line before it is
    /// hashed and written: secrets and placeholders never reach the log,
    /// wherever they turn up (a path, an error message an upstream echoed).
    pub fn with_redactions(mut self, redactions: Vec<(String, String)>) -> Self {
        self.redactions = redactions
            .into_iter()
            .filter(|(n, _)| !n.is_empty())
            .collect();
        self.redact_matcher =
            crate::scrub::Matcher::new(self.redactions.iter().map(|(n, _)| n.as_bytes().to_vec()));
        self
    }

    /// The session every event is tagged with.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The nonce the chain starts from (recorded in `session.start`).
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// False once the sink has failed (unless best-effort): the proxy then
    /// refuses new connections.
    pub fn healthy(&self) -> bool {
        self.options.best_effort || !self.failed.load(Ordering::Relaxed)
    }

    /// Writes a connection or request event.
    pub fn record(&self, event: &Event) {
        self.record_value(event.to_json(&self.session_id));
    }

    /// Writes one ECS-shaped event (converted to OCSF if so configured),
    /// adding the timestamp, session, policy hash, sequence number and
    /// chain hash. Returns the hash of the written line.
    pub fn record_value(&self, mut v: Value) -> Option<String> {
        if v.get("@timestamp").is_none() {
            v["@timestamp"] = json!(rfc3339(SystemTime::now()));
        }
        v["airlock"]["session"]["id"] = json!(self.session_id);
        if let Some(h) = &self.options.policy_hash {
            v["airlock"]["policy"]["hash"] = json!(h);
        }
        let Ok(mut chain) = self.chain.lock() else {
            return None;
        };
        if matches!(chain.sink, Sink::Discard) {
            return None;
        }
        chain.seq += 1;
        v["airlock"]["seq"] = json!(chain.seq);
        v["airlock"]["prev_hash"] = json!(chain.prev);
        let mut out = match self.options.format {
            Format::Ecs => v,
            Format::Ocsf => crate::ocsf::from_ecs(&v),
        };
        if !self.redactions.is_empty() {
            // Field by field: a secret or placeholder in any common
            // encoding or case never reaches the log.
            crate::scrub::redact_json(&mut out, &self.redactions, &self.redact_matcher);
        }
        let mut line = out.to_string();
        let hash = sha256_hex(line.as_bytes());
        chain.prev = hash.clone();
        line.push('\n');
        let result = match &mut chain.sink {
            Sink::File(f) => f.write_all(line.as_bytes()),
            Sink::Stdout => io::stdout().lock().write_all(line.as_bytes()),
            Sink::Stderr => io::stderr().lock().write_all(line.as_bytes()),
            Sink::Stream(s) => s.write_all(line.as_bytes()),
            Sink::Datagram(d) => d.send(line.as_bytes()).map(drop),
            Sink::Discard => Ok(()),
        };
        if let Err(e) = result {
            if !self.failed.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "airlock: the audit sink failed ({e}); {}",
                    if self.options.best_effort {
                        "continuing (best-effort)"
                    } else {
                        "new connections are refused"
                    }
                );
            }
        }
        if let (Some(every), Sink::File(f)) = (self.options.fsync_interval, &chain.sink) {
            if chain.last_sync.elapsed() >= every {
                let _ = f.sync_data();
                chain.last_sync = Instant::now();
            }
        }
        Some(hash)
    }

    /// Signs the chain head with `key` (Ed25519) and writes the seal line:
    /// after it, no line of the session can change unnoticed.
    pub fn seal(&self, key: &crate::seal::SigningKey) {
        let head = self
            .chain
            .lock()
            .map(|c| c.prev.clone())
            .unwrap_or_default();
        let sig = key.0.sign(head.as_bytes());
        let hex: String = sig.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.record_value(json!({
            "event": { "kind": "event", "category": ["configuration"], "type": ["info"], "action": "audit.sealed" },
            "airlock": { "chain": { "head": head, "signature": hex, "algorithm": "ed25519" } },
        }));
    }

    /// Flushes the file to disk (at session end).
    pub fn sync(&self) {
        if let Ok(chain) = self.chain.lock() {
            if let Sink::File(f) = &chain.sink {
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
    /// Which sandbox's socket it came in on, when a sidecar serves several
    /// (set by the proxy from the socket, never by the client).
    pub sandbox: Option<Arc<SandboxTag>>,
}

/// The identity of one per-sandbox socket of a shared sidecar: the
/// proxy-chosen socket id, the session id the supervisor gave when it asked
/// for the socket, and that supervisor's `SO_PEERCRED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxTag {
    /// Proxy-chosen id; the socket is `session-<id>.sock`.
    pub socket_id: String,
    /// The supervisor's session id (`sandbox run`'s `session.id`), so the
    /// proxy's events join the supervisor's own audit trail.
    pub session: String,
    /// The supervisor that opened the socket, from the control connection.
    pub opener: Peer,
}

impl SandboxTag {
    fn to_json(&self) -> Value {
        let mut opener = json!({
            "user": { "id": self.opener.uid.to_string() },
        });
        if let Some(pid) = self.opener.pid {
            opener["pid"] = json!(pid);
        }
        json!({
            "session": { "id": self.session },
            "socket": { "id": self.socket_id },
            "opener": opener,
        })
    }
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
            sandbox: None,
        }
    }

    /// The ECS object (without chain fields, which the log adds).
    pub fn to_json(&self, session: &str) -> Value {
        let allowed = self.decision.as_ref().is_some_and(|d| d.allow);
        let outcome = if !allowed || self.error.is_some() {
            "failure"
        } else {
            "success"
        };
        // The action says what happened; `event.type` says allowed/denied.
        let action = match self.action {
            "credential_used" => "credential.used",
            "credential_leak_blocked" => "credential_leak_blocked",
            _ if !allowed => "network.denied",
            "http_request" => "http.request",
            _ => "network.connection",
        };
        let mut event = json!({
            "kind": if allowed { "event" } else { "alert" },
            "category": ["network"],
            "type": [if allowed { "allowed" } else { "denied" }, "connection"],
            "action": action,
            "outcome": outcome,
            "duration": self.duration.as_nanos() as u64,
            "start": rfc3339(self.started),
        });
        if self.method.is_some() {
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
        if let Some(t) = &self.sandbox {
            airlock.insert("sandbox".into(), t.to_json());
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
                    // `?TOKEN`: a bare component is a value, not a name.
                    None => "REDACTED".to_string(),
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
                Some("token=REDACTED&REDACTED&b=REDACTED".to_string())
            )
        );
        assert_eq!(
            split_redacted("/v1/x?sk-live-TOKEN"),
            ("/v1/x".to_string(), Some("REDACTED".to_string()))
        );
        assert_eq!(
            split_redacted("/v1/x?a==b&&=c"),
            (
                "/v1/x".to_string(),
                Some("a=REDACTED&=REDACTED".to_string())
            )
        );
        assert_eq!(split_redacted("/plain"), ("/plain".to_string(), None));
    }
}
