//! One shared sidecar, one socket per sandbox: the control socket.
//!
//! `egress-proxy serve --control unix:DIR/control.sock` listens for
//! supervisors. A supervisor (`sandbox run --egress-control PATH`) connects
//! and sends one line, `OPEN <session-id>`; the proxy creates
//! `DIR/session-<id>.sock` (its own random id, never a client-chosen name),
//! answers `OK session-<id>.sock` (a name relative to the control socket's
//! directory, so the two containers may mount the shared volume at
//! different paths), and serves that socket for as long as the control
//! connection stays open. Closing it (the supervisor exits, or dies: the
//! kernel closes its descriptors) removes the socket and ends its
//! connections.
//!
//! Attribution: every event from a per-sandbox socket carries
//! `airlock.sandbox` = the supervisor's session id (joins its own audit
//! trail), the socket id, and the opener's `SO_PEERCRED`; plus, as on any
//! socket, the connecting process's `SO_PEERCRED` in `source.*`. The agent
//! only ever sees its own session socket (bind-mounted alone), never the
//! control socket, so it cannot open sockets in another session's name.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::audit::{Peer, SandboxTag};
use crate::proxy::Proxy;

/// Longest accepted request line (bytes).
const MAX_LINE: usize = 256;

/// The prefix of every per-sandbox socket's file name.
pub const SOCKET_PREFIX: &str = "session-";

/// Whether `id` is acceptable as a supervisor session id: 1 to 128
/// characters of `[A-Za-z0-9._-]` (it is logged, never used as a path).
pub fn valid_session_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses one request line: `OPEN <session-id>`.
pub fn parse_request(line: &str) -> Result<&str, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    match line.split_once(' ') {
        Some(("OPEN", id)) if valid_session_id(id) => Ok(id),
        Some(("OPEN", _)) => Err("session id: expected 1-128 characters of [A-Za-z0-9._-]".into()),
        _ => Err("expected 'OPEN <session-id>'".into()),
    }
}

/// The control server's settings.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where per-sandbox sockets are created (the control socket's
    /// directory).
    pub dir: PathBuf,
    /// Their permissions.
    pub mode: u32,
}

/// Serves the control socket until `stop` turns true. Per-sandbox sockets
/// stop accepting at `stop` too; their connections end at `cut`.
pub async fn serve(
    listener: UnixListener,
    proxy: Arc<Proxy>,
    config: ControlConfig,
    stop: watch::Receiver<bool>,
    cut: watch::Receiver<bool>,
) {
    let mut ended = stop.clone();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tasks.spawn(session(stream, proxy.clone(), config.clone(), stop.clone(), cut.clone()));
                }
                Err(e) => {
                    eprintln!("egress-proxy: control accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = crate::until_ended(&mut ended) => break,
        }
    }
    drop(listener);
    // Each session task removes its socket once `stop` is seen.
    while tasks.join_next().await.is_some() {}
}

/// One control connection: open a socket, serve it while the connection
/// lasts, then remove it.
async fn session(
    stream: UnixStream,
    proxy: Arc<Proxy>,
    config: ControlConfig,
    mut stop: watch::Receiver<bool>,
    cut: watch::Receiver<bool>,
) {
    let opener = match stream.peer_cred() {
        Ok(c) => Peer {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        },
        Err(_) => Peer::default(),
    };
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        (&mut reader).take(MAX_LINE as u64).read_line(&mut line),
    )
    .await;
    let mut stream = reader.into_inner();
    let session_id = match read {
        Ok(Ok(_)) => match parse_request(&line) {
            Ok(id) => id.to_string(),
            Err(e) => {
                let _ = stream.write_all(format!("ERR {e}\n").as_bytes()).await;
                return;
            }
        },
        _ => {
            let _ = stream
                .write_all(b"ERR expected 'OPEN <session-id>'\n")
                .await;
            return;
        }
    };
    let socket_id = crate::new_session_id()[..16].to_string();
    let name = format!("{SOCKET_PREFIX}{socket_id}.sock");
    let path = config.dir.join(&name);
    let listener = match bind(&path, config.mode) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("egress-proxy: {}: {e}", path.display());
            let _ = stream
                .write_all(format!("ERR cannot create {name}: {e}\n").as_bytes())
                .await;
            return;
        }
    };
    let tag = Arc::new(SandboxTag {
        socket_id,
        session: session_id,
        opener,
    });
    record(&proxy, "egress.sandbox.open", &tag);
    if stream
        .write_all(format!("OK {name}\n").as_bytes())
        .await
        .is_err()
    {
        let _ = std::fs::remove_file(&path);
        record(&proxy, "egress.sandbox.close", &tag);
        return;
    }
    // This session's own stop: the control connection closing, or the
    // whole proxy stopping. Its connections end at its own close or `cut`.
    let (own_tx, own_rx) = watch::channel(false);
    let (own_cut_tx, own_cut_rx) = watch::channel(false);
    let accept = tokio::spawn(proxy.clone().accept_until(
        listener,
        own_rx,
        own_cut_rx,
        Some(tag.clone()),
    ));
    let mut global_cut = cut.clone();
    let closed_by_client = tokio::select! {
        _ = wait_eof(&mut stream) => true,
        _ = crate::until_ended(&mut stop) => false,
    };
    let _ = own_tx.send(true);
    let _ = accept.await;
    let _ = std::fs::remove_file(&path);
    record(&proxy, "egress.sandbox.close", &tag);
    if closed_by_client {
        // The sandbox is gone: whatever it left open ends now.
        let _ = own_cut_tx.send(true);
    } else {
        // The proxy is draining: connections end when it cuts them.
        crate::until_ended(&mut global_cut).await;
        let _ = own_cut_tx.send(true);
    }
}

async fn wait_eof(stream: &mut UnixStream) {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

fn bind(path: &Path, mode: u32) -> io::Result<UnixListener> {
    // A stale socket of the same name would mean a random-id collision or
    // an attack on the directory: refuse rather than replace.
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

fn record(proxy: &Proxy, action: &str, tag: &SandboxTag) {
    let kind = if action.ends_with("open") {
        "start"
    } else {
        "end"
    };
    let mut opener = json!({ "user": { "id": tag.opener.uid.to_string() } });
    if let Some(pid) = tag.opener.pid {
        opener["pid"] = json!(pid);
    }
    proxy.audit.record_value(json!({
        "event": { "kind": "event", "category": ["network"], "type": [kind], "action": action, "outcome": "success" },
        "airlock": { "sandbox": {
            "session": { "id": tag.session },
            "socket": { "id": tag.socket_id },
            "opener": opener,
        } },
    }));
}

/// A per-sandbox socket held open for a supervisor; dropping it closes the
/// control connection, and the proxy removes the socket.
#[derive(Debug)]
pub struct SandboxSocket {
    /// The socket to bind-mount into the sandbox.
    pub path: PathBuf,
    _control: StdUnixStream,
}

impl SandboxSocket {
    /// Whether the sidecar is still there: its end of the control
    /// connection has not closed (it closes when the sidecar dies).
    pub fn sidecar_alive(&self) -> bool {
        use std::os::fd::AsFd;
        let mut fds = [nix::poll::PollFd::new(
            self._control.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(0) => true,
            Ok(_) => {
                // Readable: EOF (gone) unless it actually sent something.
                let mut b = [0u8; 1];
                matches!(
                    nix::sys::socket::recv(
                        std::os::fd::AsRawFd::as_raw_fd(&self._control),
                        &mut b,
                        nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                    ),
                    Ok(n) if n > 0
                )
            }
            Err(_) => false,
        }
    }
}

/// Asks the sidecar behind `control` for a socket in `session`'s name
/// (blocking; the supervisor is single-threaded).
pub fn open(control: &Path, session: &str) -> io::Result<SandboxSocket> {
    if !valid_session_id(session) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "session id: expected 1-128 characters of [A-Za-z0-9._-]",
        ));
    }
    let mut stream = StdUnixStream::connect(control)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("OPEN {session}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE as u64)).read_line(&mut line)?;
    stream.set_read_timeout(None)?;
    let line = line.trim_end();
    let Some(name) = line.strip_prefix("OK ") else {
        let why = line.strip_prefix("ERR ").unwrap_or(line);
        return Err(io::Error::other(format!("the sidecar refused: {why}")));
    };
    if !name.starts_with(SOCKET_PREFIX)
        || name.contains('/')
        || !name.ends_with(".sock")
        || name.contains("..")
    {
        return Err(io::Error::other(format!(
            "the sidecar answered an unexpected socket name {name:?}"
        )));
    }
    let dir = control.parent().unwrap_or(Path::new("."));
    Ok(SandboxSocket {
        path: dir.join(name),
        _control: stream,
    })
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_a_plain_session_id() {
        for (line, ok) in [
            ("OPEN 0123abcd\n", true),
            ("OPEN a.b_c-d\r\n", true),
            ("OPEN ../../etc\n", false),
            ("OPEN \n", false),
            ("OPEN a b\n", false),
            ("open abc\n", false),
            ("CLOSE abc\n", false),
        ] {
            assert_eq!(parse_request(line).is_ok(), ok, "{line:?}");
        }
        assert!(!valid_session_id(&"a".repeat(129)));
    }
}
