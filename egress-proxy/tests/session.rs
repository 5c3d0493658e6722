//! The session proxy starts idle: its socket listens, but no thread serves
//! it until the owner sees a connection waiting and starts it. Real
//! sockets, a real proxy, a real audit file.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use egress_proxy::{AuditLog, Limits, NetworkPolicy, Proxy, SessionProxy};

/// How long a read waits for an answer that must not come.
const SILENCE: Duration = Duration::from_millis(300);
/// A bound against hangs only.
const HANG_GUARD: Duration = Duration::from_secs(20);

const DENIED: &[u8] =
    b"GET http://denied.example.com/ HTTP/1.1\r\nHost: denied.example.com\r\n\r\n";

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An idle session proxy that allows nothing, its socket and audit file.
fn idle() -> (SessionProxy, PathBuf, PathBuf, Dir) {
    let dir = std::env::temp_dir().join(format!(
        "airlock-session-{}",
        egress_proxy::new_session_id()
    ));
    std::fs::create_dir(&dir).expect("temp dir");
    let socket = dir.join("egress.sock");
    let audit = dir.join("audit.jsonl");
    let listener = UnixListener::bind(&socket).expect("bind");
    let proxy = Proxy::new(
        NetworkPolicy::from_toml("").expect("empty policy"),
        Limits::default(),
        AuditLog::open(&audit, "session-test").expect("audit"),
    );
    let session = SessionProxy::idle(listener, Vec::new(), proxy).expect("idle");
    (session, socket, audit, Dir(dir))
}

fn read_answer(client: &mut UnixStream, wait: Duration) -> std::io::Result<String> {
    client.set_read_timeout(Some(wait))?;
    let mut buf = [0u8; 4096];
    let n = client.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn an_idle_proxy_answers_once_started() {
    let (mut session, socket, audit, _dir) = idle();
    assert_eq!(session.idle_fds().len(), 1, "the socket to watch");
    let mut client = UnixStream::connect(&socket).expect("connect (the kernel queues it)");
    client.write_all(DENIED).expect("write");
    let err = read_answer(&mut client, SILENCE).expect_err("nobody serves an idle proxy");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );

    session.run_now().expect("start");
    assert!(
        session.idle_fds().is_empty(),
        "nothing to watch once running"
    );
    let answer = read_answer(&mut client, HANG_GUARD).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("x-airlock-deny"), "{answer}");
    drop(client);
    session.stop();
    let log = std::fs::read_to_string(&audit).expect("audit file");
    assert!(log.contains("denied.example.com"), "{log}");
}

#[test]
fn stopping_an_idle_proxy_refuses_what_waits() {
    let (session, socket, audit, _dir) = idle();
    let mut client = UnixStream::connect(&socket).expect("connect");
    client.write_all(DENIED).expect("write");
    session.stop();
    match read_answer(&mut client, HANG_GUARD) {
        Ok(answer) => assert!(answer.is_empty(), "closed without an answer: {answer}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    let log = std::fs::read_to_string(&audit).unwrap_or_default();
    assert!(
        !log.contains("denied.example.com"),
        "nothing was served: {log}"
    );
}
