//! Operator metrics: counters fed by the same events the audit log records
//! (so a metric can never disagree with the trail), rendered as Prometheus
//! text, and a tiny HTTP endpoint (`/metrics`, `/ready`) for
//! `egress-proxy serve --metrics ADDR`.
//!
//! No metrics crate: a handful of atomics and one mutex-guarded map for the
//! labelled counters are all this needs, and the text format is
//! <https://prometheus.io/docs/instrumenting/exposition_formats/>.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::audit::Event;

/// Upper bounds (seconds) of the request latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Errors that end a connection on the proxy's own terms, not the
/// upstream's: not counted as upstream errors.
const OWN_ENDINGS: &[&str] = &[
    "session ended",
    "idle timeout",
    "connection lifetime exceeded",
];

/// Every counter the proxy exports.
#[derive(Debug, Default)]
pub struct Metrics {
    connections: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    upstream_errors: AtomicU64,
    leaks_blocked: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    labelled: Mutex<Labelled>,
    ready: AtomicBool,
    draining: AtomicBool,
}

#[derive(Debug, Default)]
struct Labelled {
    /// (protocol, decision) -> count.
    requests: BTreeMap<(&'static str, &'static str), u64>,
    /// rule -> count.
    denials: BTreeMap<String, u64>,
    /// credential name -> count.
    credentials: BTreeMap<String, u64>,
}

impl Metrics {
    /// Counts an accepted connection.
    pub fn connection_accepted(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a finished connection's bytes (from its meter).
    pub fn add_bytes(&self, up: u64, down: u64) {
        self.bytes_up.fetch_add(up, Ordering::Relaxed);
        self.bytes_down.fetch_add(down, Ordering::Relaxed);
    }

    /// Marks the proxy ready (listening, audit sink open) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Marks the proxy as draining (SIGTERM received): no longer ready.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.ready.store(false, Ordering::Relaxed);
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }

    /// Counts one finished audit event.
    pub fn observe(&self, event: &Event) {
        match event.action {
            "credential_used" => {
                if let Ok(mut l) = self.labelled.lock() {
                    let name = event.credential.clone().unwrap_or_default();
                    *l.credentials.entry(name).or_default() += 1;
                }
                return;
            }
            "credential_leak_blocked" => {
                self.leaks_blocked.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {}
        }
        let Some(decision) = &event.decision else {
            return;
        };
        if let Ok(mut l) = self.labelled.lock() {
            let verdict = if decision.allow { "allow" } else { "deny" };
            *l.requests.entry((event.protocol, verdict)).or_default() += 1;
            if !decision.allow {
                *l.denials.entry(decision.rule.clone()).or_default() += 1;
            }
        }
        if decision.allow {
            if let Some(e) = &event.error {
                if !OWN_ENDINGS.contains(&e.as_str()) {
                    self.upstream_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Latency: how long an allowed plain or intercepted HTTP request
        // took to be answered (tunnels last as long as the client wants).
        if event.action == "http_request" && decision.allow {
            self.observe_latency(event.duration);
        }
    }

    fn observe_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition. `active` is the number of open
    /// connections right now.
    pub fn render(&self, active: usize) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(
            &mut out,
            "airlock_egress_connections_total",
            "counter",
            "Connections accepted from sandboxes.",
            &[("", load(&self.connections) as f64)],
        );
        metric(
            &mut out,
            "airlock_egress_connections_active",
            "gauge",
            "Connections open now.",
            &[("", active as f64)],
        );
        metric(
            &mut out,
            "airlock_egress_bytes_total",
            "counter",
            "Bytes through finished connections, by direction (up: from the sandbox).",
            &[
                ("direction=\"up\"", load(&self.bytes_up) as f64),
                ("direction=\"down\"", load(&self.bytes_down) as f64),
            ],
        );
        metric(
            &mut out,
            "airlock_egress_upstream_errors_total",
            "counter",
            "Allowed connections or requests that failed upstream (DNS, connect, TLS, HTTP).",
            &[("", load(&self.upstream_errors) as f64)],
        );
        metric(
            &mut out,
            "airlock_egress_credential_leaks_blocked_total",
            "counter",
            "Requests blocked for carrying a secret or placeholder to a host it is not bound to.",
            &[("", load(&self.leaks_blocked) as f64)],
        );
        if let Ok(l) = self.labelled.lock() {
            let rows: Vec<(String, f64)> = l
                .requests
                .iter()
                .map(|((p, d), n)| (format!("protocol=\"{p}\",decision=\"{d}\""), *n as f64))
                .collect();
            metric_owned(
                &mut out,
                "airlock_egress_requests_total",
                "counter",
                "Decided connections and requests, by protocol and decision.",
                &rows,
            );
            let rows: Vec<(String, f64)> = l
                .denials
                .iter()
                .map(|(r, n)| (format!("rule=\"{}\"", escape(r)), *n as f64))
                .collect();
            metric_owned(
                &mut out,
                "airlock_egress_denials_total",
                "counter",
                "Denied connections and requests, by the rule that decided.",
                &rows,
            );
            let rows: Vec<(String, f64)> = l
                .credentials
                .iter()
                .map(|(c, n)| (format!("credential=\"{}\"", escape(c)), *n as f64))
                .collect();
            metric_owned(
                &mut out,
                "airlock_egress_credential_uses_total",
                "counter",
                "Credentials applied to requests, by credential name.",
                &rows,
            );
        }
        let name = "airlock_egress_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer an allowed HTTP request (plain or intercepted)."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                load(&self.latency_buckets[i])
            );
        }
        let count = load(&self.latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            load(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        metric(
            &mut out,
            "airlock_egress_ready",
            "gauge",
            "1 when the proxy accepts new connections (0 while starting or draining).",
            &[("", if self.is_ready() { 1.0 } else { 0.0 })],
        );
        out
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, rows: &[(&str, f64)]) {
    let rows: Vec<(String, f64)> = rows.iter().map(|(l, v)| (l.to_string(), *v)).collect();
    metric_owned(out, name, kind, help, &rows);
}

fn metric_owned(out: &mut String, name: &str, kind: &str, help: &str, rows: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in rows {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Label values: backslash, quote and newline escaped, as the format asks.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` (Prometheus text), `GET /ready` (200 when ready,
/// 503 otherwise) and `GET /healthz` (200 while the process runs) until
/// `shutdown` turns true. One request per connection; anything else is 404.
pub async fn serve_http(
    listener: TcpListener,
    metrics: std::sync::Arc<Metrics>,
    active: impl Fn() -> usize + Send + Sync + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    let active = std::sync::Arc::new(active);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = crate::until_ended(&mut shutdown) => break,
        };
        let Ok((mut stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        let active = active.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut len = 0;
            // Read the request head (bounded in size and time).
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let path = head
                .lines()
                .next()
                .and_then(|l| {
                    let mut parts = l.split(' ');
                    (parts.next() == Some("GET")).then(|| parts.next())?
                })
                .unwrap_or("");
            let (status, ctype, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics.render(active()),
                ),
                "/ready" if metrics.is_ready() => ("200 OK", "text/plain", "ready\n".into()),
                "/ready" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready\n".into(),
                ),
                "/healthz" => ("200 OK", "text/plain", "ok\n".into()),
                _ => ("404 Not Found", "text/plain", "not found\n".into()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Peer;
    use crate::decide::Decision;

    fn event(action: &'static str, allow: bool, rule: &str, ms: u64) -> Event {
        let mut e = Event::new(action, "http", Peer::default());
        e.decision = Some(Decision {
            allow,
            rule: rule.into(),
            reason: if allow { "allowed" } else { "denied" },
        });
        e.duration = Duration::from_millis(ms);
        e
    }

    #[test]
    fn denials_are_counted_by_rule_and_latency_by_bucket() {
        let m = Metrics::default();
        m.observe(&event("http_request", true, "allow:a.example", 20));
        m.observe(&event("http_request", false, "default-deny", 1));
        m.observe(&event("http_request", false, "default-deny", 1));
        let mut used = Event::new("credential_used", "https", Peer::default());
        used.credential = Some("gh".into());
        m.observe(&used);
        let text = m.render(3);
        for line in [
            "airlock_egress_denials_total{rule=\"default-deny\"} 2",
            "airlock_egress_requests_total{protocol=\"http\",decision=\"allow\"} 1",
            "airlock_egress_credential_uses_total{credential=\"gh\"} 1",
            "airlock_egress_request_duration_seconds_bucket{le=\"0.01\"} 0",
            "airlock_egress_request_duration_seconds_bucket{le=\"0.025\"} 1",
            "airlock_egress_request_duration_seconds_count 1",
            "airlock_egress_connections_active 3",
            "airlock_egress_ready 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn proxy_endings_are_not_upstream_errors() {
        let m = Metrics::default();
        let mut e = event("connection", true, "allow:a.example", 5);
        e.error = Some("session ended".into());
        m.observe(&e);
        e.error = Some("connect: refused".into());
        m.observe(&e);
        assert!(m
            .render(0)
            .lines()
            .any(|l| l == "airlock_egress_upstream_errors_total 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
