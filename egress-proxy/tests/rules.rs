//! A proxy without a CA (the library used on its own, no credentials and
//! no interception configured) must still never tunnel a host with
//! method/path rules opaquely: CONNECT gets 403 and SOCKS5 reply 2, both
//! before any lookup. And a request cut off halfway still leaves its audit
//! line. Real sockets, a real proxy, a real audit file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use egress_proxy::{AuditLog, Limits, NetworkPolicy, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// A bound against hangs only.
const HANG_GUARD: Duration = Duration::from_secs(20);

const POLICY: &str = r#"[network]
allow = ["rules.example.com"]
[[network.rules]]
host = "rules.example.com"
methods = ["GET"]
paths = ["/v1/*"]
"#;

struct Running {
    socket: PathBuf,
    audit: PathBuf,
    _stop: watch::Sender<bool>,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start() -> Running {
    let dir =
        std::env::temp_dir().join(format!("airlock-rules-{}", egress_proxy::new_session_id()));
    std::fs::create_dir(&dir).expect("temp dir");
    let socket = dir.join("egress.sock");
    let audit = dir.join("audit.jsonl");
    let listener = UnixListener::bind(&socket).expect("bind");
    let policy = NetworkPolicy::from_toml(POLICY).expect("policy");
    let log = AuditLog::open(&audit, "rules-test").expect("audit");
    let proxy = Proxy::new(policy, Limits::default(), log);
    let (tx, rx) = watch::channel(false);
    tokio::spawn(Arc::clone(&proxy).serve(listener, Vec::new(), rx, Duration::from_millis(100)));
    Running {
        socket,
        audit,
        _stop: tx,
        dir,
    }
}

async fn exchange(socket: &PathBuf, bytes: &[u8], want: usize) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = vec![0u8; want];
    tokio::time::timeout(HANG_GUARD, s.read_exact(&mut out))
        .await
        .expect("an answer in time")
        .expect("read");
    out
}

#[tokio::test]
async fn connect_to_a_host_with_rules_without_a_ca_is_refused() {
    let p = start();
    let answer = exchange(
        &p.socket,
        b"CONNECT rules.example.com:443 HTTP/1.1\r\nHost: rules.example.com:443\r\n\r\n",
        120,
    )
    .await;
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(text.starts_with("http/1.1 403"), "{text}");
    assert!(
        text.contains("x-airlock-deny: rules-need-interception"),
        "{text}"
    );
}

/// Waits (bounded) until the audit file holds `needle`; returns it.
async fn audit_with(p: &Running, needle: &str) -> String {
    let mut log = String::new();
    for _ in 0..500 {
        log = std::fs::read_to_string(&p.audit).unwrap_or_default();
        if log.contains(needle) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log
}

#[tokio::test]
async fn a_request_head_cut_off_halfway_leaves_a_line() {
    let p = start();
    let mut s = UnixStream::connect(&p.socket).await.expect("connect");
    s.write_all(b"GET http://rules.example.com/v1/x HTTP/1.1\r\nHost: rul")
        .await
        .expect("write");
    s.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(HANG_GUARD, s.read_to_end(&mut rest)).await;
    let log = audit_with(&p, "incomplete-request").await;
    assert!(log.contains("incomplete-request"), "{log}");
}

#[tokio::test]
async fn socks5_to_a_host_with_rules_is_refused_with_reply_2() {
    let p = start();
    let mut req = vec![5, 1, 0, 5, 1, 0, 3, 17];
    req.extend_from_slice(b"rules.example.com");
    req.extend_from_slice(&443u16.to_be_bytes());
    let answer = exchange(&p.socket, &req, 4).await;
    assert_eq!(answer, vec![5, 0, 5, 2], "method reply, then 'not allowed'");
    let log = audit_with(&p, "rules-need-inspection").await;
    assert!(log.contains("rules-need-inspection"), "{log}");
}
