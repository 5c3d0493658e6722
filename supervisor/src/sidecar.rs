//! `sandbox run --egress-control PATH`: a socket of its own from a shared
//! `egress-proxy serve --control` sidecar (protocol in the proxy's
//! `control.rs`). The plan already names `SESSION_DIR/egress.sock` as the
//! socket to mount; here, at run time, the supervisor asks the sidecar for
//! a socket in this session's name and points that name at it. The control
//! connection stays open for the whole session: when the supervisor exits
//! (or dies), the sidecar removes the socket.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use egress_proxy::control::{self, SandboxSocket};
use egress_proxy::AuditLog;
use nix::errno::Errno;

use crate::error::SetupError;
use crate::plan::SandboxPlan;

/// Opens this session's socket on the sidecar, if the plan uses one.
/// Fails closed: no socket, no run.
pub fn open(plan: &SandboxPlan) -> Result<Option<SandboxSocket>, SetupError> {
    let Some(control) = &plan.egress.sidecar_control else {
        return Ok(None);
    };
    let socket = control::open(control, &plan.session_id).map_err(|e| {
        SetupError::new(
            "network",
            format!(
                "--egress-control {}: {e}; is `egress-proxy serve --control unix:{}` running \
                 and is its socket writable by this user?",
                control.display(),
                control.display()
            ),
        )
    })?;
    let link = &plan.egress.host_socket;
    std::os::unix::fs::symlink(&socket.path, link).map_err(|e| {
        SetupError::io(
            "network",
            format!("link {} to {}", link.display(), socket.path.display()),
            e,
        )
    })?;
    Ok(Some(socket))
}

/// The relay from the sandbox's proxy ports to the sidecar, on a thread of
/// the supervisor (see `relay.rs` for why not in init). Dropping it stops
/// the thread.
pub struct RelayThread {
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RelayThread {
    fn drop(&mut self) {
        // Closing the write end hangs up the read end the thread watches.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts relaying `ports` (init's listening sockets: HTTP first, then
/// SOCKS5) to the sidecar's socket `target`. A connection the sidecar
/// refuses gets an answer the agent can read, and the reason goes to the
/// supervisor's stderr and the session's audit log (once per distinct
/// reason, so a retrying client cannot flood either).
pub fn relay(
    ports: Vec<std::net::TcpListener>,
    target: PathBuf,
    audit: Arc<AuditLog>,
) -> Result<RelayThread, SetupError> {
    let (stop_r, stop_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SetupError::io("network", "pipe for the sidecar relay", e))?;
    let shown = target.display().to_string();
    let mut last: Option<Errno> = None;
    let answering = Arc::new(AtomicUsize::new(0));
    let unreachable = move |index: usize, client: OwnedFd, e: Errno| {
        let why = format!(
            "cannot connect to the egress sidecar's socket {shown}: {} ({e:?}); \
             is `egress-proxy serve --listen unix:{shown}` running?",
            e.desc()
        );
        if last != Some(e) {
            last = Some(e);
            eprintln!("sandbox: egress: {why}");
            audit.record_value(serde_json::json!({
                "event": {
                    "kind": "alert",
                    "category": ["network"],
                    "type": ["error"],
                    "action": "proxy.error",
                    "outcome": "failure",
                },
                "error": { "message": why },
            }));
        }
        answer_unreachable(index, client, why, &answering);
    };
    let capacity = relay_capacity();
    let relay = crate::relay::Relay::from_listeners(ports, &target, capacity)
        .on_unreachable(Box::new(unreachable));
    let thread = std::thread::Builder::new()
        .name("sidecar-relay".into())
        .spawn(move || relay.run_until(stop_r.as_fd()))
        .map_err(|e| SetupError::io("network", "start the sidecar relay", e))?;
    Ok(RelayThread {
        stop: Some(stop_w),
        thread: Some(thread),
    })
}

/// How many relayed connections fit in our descriptor limit: each costs
/// six (two sockets, two pipes).
fn relay_capacity() -> usize {
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    (hard.min(1 << 16) as usize).saturating_sub(64) / 6
}

/// At most this many refused clients are being answered at once; beyond,
/// they are dropped (the reason is logged already).
const MAX_ANSWERING: usize = 16;

/// Answers a client the sidecar could not take, on a short-lived thread:
/// `503` with `X-Airlock-Error: sidecar-unreachable` on the HTTP port
/// (after reading its request head, so closing does not reset the answer
/// away), a SOCKS5 general failure on the SOCKS port.
fn answer_unreachable(index: usize, client: OwnedFd, why: String, answering: &Arc<AtomicUsize>) {
    if answering.fetch_add(1, Ordering::Relaxed) >= MAX_ANSWERING {
        answering.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let counter = answering.clone();
    let spawned = std::thread::Builder::new()
        .name("sidecar-refusal".into())
        .spawn(move || {
            let mut s = std::net::TcpStream::from(client);
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
            if index == 0 {
                let _ = read_head(&mut s);
                let body = format!("airlock: {why}\n");
                let _ = write!(
                    s,
                    "HTTP/1.1 503 Service Unavailable\r\nX-Airlock-Error: sidecar-unreachable\r\n\
                     Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            } else {
                let mut greeting = [0u8; 257];
                if s.read(&mut greeting).is_ok_and(|n| n >= 2) && greeting[0] == 5 {
                    let _ = s.write_all(&[5, 0]);
                    let mut request = [0u8; 262];
                    let _ = s.read(&mut request);
                    let _ = s.write_all(&[5, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
                }
            }
            let _ = s.shutdown(std::net::Shutdown::Write);
            // Let the client read the answer before we close (closing with
            // unread input would reset it away), within bounds: a client
            // that trickles bytes does not hold the thread.
            let until = std::time::Instant::now() + Duration::from_secs(5);
            let mut sink = [0u8; 4096];
            let mut drained = 0usize;
            while std::time::Instant::now() < until && drained < 1 << 20 {
                match s.read(&mut sink) {
                    Ok(n) if n > 0 => drained += n,
                    _ => break,
                }
            }
            counter.fetch_sub(1, Ordering::Relaxed);
        });
    if spawned.is_err() {
        // The thread never ran (the client went with the closure; the
        // reason is logged): count it back.
        answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads until the end of an HTTP request head (or 16 KiB, or a timeout).
fn read_head(s: &mut std::net::TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(())
}
