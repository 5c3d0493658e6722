//! The proxy's bounds against clients that try to pin it: slow request
//! heads (slowloris), slow SOCKS5 handshakes, idle tunnels, and too many
//! connections. Real sockets, a real proxy; the limits are shrunk so the
//! tests are quick, and every wait has a generous hang guard.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use egress_proxy::{AuditLog, Limits, NetworkPolicy, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::watch;

/// A bound against hangs only; the limits under test are far shorter.
const HANG_GUARD: Duration = Duration::from_secs(20);

struct Running {
    socket: PathBuf,
    _stop: watch::Sender<bool>,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(policy: &str, limits: Limits) -> Running {
    let dir =
        std::env::temp_dir().join(format!("airlock-limits-{}", egress_proxy::new_session_id()));
    std::fs::create_dir(&dir).expect("temp dir");
    let socket = dir.join("egress.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let policy = NetworkPolicy::from_toml(policy).expect("policy");
    let proxy = Proxy::new(policy, limits, AuditLog::discard("test"));
    let (tx, rx) = watch::channel(false);
    tokio::spawn(Arc::clone(&proxy).serve(listener, Vec::new(), rx, Duration::from_millis(100)));
    Running {
        socket,
        _stop: tx,
        dir,
    }
}

/// Reads until EOF (or error); returns what arrived.
async fn read_to_close(s: &mut UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(HANG_GUARD, s.read_to_end(&mut out))
        .await
        .expect("the proxy should close the connection");
    out
}

#[tokio::test]
async fn slowloris_request_head_is_cut_off() {
    let p = start(
        "",
        Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let mut s = UnixStream::connect(&p.socket).await.expect("connect");
    s.write_all(b"GET http://api.example.com/ HTTP/1.1\r\nHost: api.ex")
        .await
        .expect("write");
    let answer = read_to_close(&mut s).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn slow_socks_handshake_is_cut_off() {
    let p = start(
        "",
        Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let mut s = UnixStream::connect(&p.socket).await.expect("connect");
    s.write_all(&[5]).await.expect("write");
    assert!(read_to_close(&mut s).await.is_empty());
}

#[tokio::test]
async fn silent_client_is_cut_off_before_its_first_byte() {
    let p = start(
        "",
        Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let mut s = UnixStream::connect(&p.socket).await.expect("connect");
    assert!(read_to_close(&mut s).await.is_empty());
}

#[tokio::test]
async fn idle_tunnel_is_closed() {
    let upstream = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let port = upstream.local_addr().expect("addr").port();
    // Accept and then say nothing.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = upstream.accept().await {
            held.push(s);
        }
    });
    let p = start(
        &format!("[network]\nallow_cidr = [\"127.0.0.0/8\"]\nports = [{port}]\n"),
        Limits {
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let mut s = UnixStream::connect(&p.socket).await.expect("connect");
    s.write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let answer = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_a_reason() {
    let p = start(
        "",
        Limits {
            max_connections: 2,
            ..Limits::default()
        },
    );
    let _a = UnixStream::connect(&p.socket).await.expect("connect");
    let _b = UnixStream::connect(&p.socket).await.expect("connect");
    // Give the proxy time to admit the first two (a hang guard, not a
    // measurement: admission order is what matters).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = UnixStream::connect(&p.socket).await.expect("connect");
    let answer = String::from_utf8_lossy(&read_to_close(&mut c).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("x-airlock-deny: connection-limit"),
        "{answer}"
    );
}
