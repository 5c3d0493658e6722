//! A proxy for one `sandbox run` session, on its own thread with its own
//! runtime, so the supervisor's main thread stays a plain process that
//! forks and waits. The thread starts when the first connection waits.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use crate::audit::Peer;
use crate::proxy::Proxy;

/// Records that the proxy could not serve (the sandbox then has no way
/// out: the relay's connections fail), and says so on stderr.
fn proxy_error(proxy: &Proxy, message: &str) {
    eprintln!("airlock: egress proxy: {message}");
    proxy.audit.record_value(serde_json::json!({
        "event": { "kind": "alert", "category": ["network"], "type": ["error"], "action": "proxy.error", "outcome": "failure" },
        "error": { "message": message },
    }));
}

/// A session proxy. It starts idle: the sockets are bound and listening
/// (the kernel queues connections), but no thread or runtime exists until
/// the owner sees a connection waiting ([`SessionProxy::idle_fds`]) and
/// calls [`SessionProxy::run_now`]. A session that never connects out
/// (most short commands) never pays for them. Stop it with
/// [`SessionProxy::stop`].
#[derive(Debug)]
pub struct SessionProxy {
    shutdown: watch::Sender<bool>,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Listening; nothing has connected yet.
    Idle(Box<Idle>),
    /// Serving on its thread.
    Running(JoinHandle<()>),
    /// Stopped (or never needed).
    Done,
}

/// What the proxy's thread takes when it starts.
#[derive(Debug)]
struct Idle {
    listener: StdUnixListener,
    tcp: Vec<(std::net::TcpListener, Peer)>,
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
}

impl SessionProxy {
    /// Holds `listener` (already bound, so the socket exists before the
    /// sandbox starts) without a thread; see [`SessionProxy::idle_fds`].
    /// `tcp` are listening sockets bound inside the sandbox's network
    /// namespace (by init), served directly with the agent's identity.
    pub fn idle(
        listener: StdUnixListener,
        tcp: Vec<(std::net::TcpListener, Peer)>,
        proxy: Arc<Proxy>,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        for (l, _) in &tcp {
            l.set_nonblocking(true)?;
        }
        let (tx, rx) = watch::channel(false);
        Ok(Self {
            shutdown: tx,
            state: State::Idle(Box::new(Idle {
                listener,
                tcp,
                proxy,
                shutdown: rx,
            })),
        })
    }

    /// While idle, the listening sockets: poll them for reading, and call
    /// [`SessionProxy::run_now`] when one is ready. Empty once running.
    pub fn idle_fds(&self) -> Vec<BorrowedFd<'_>> {
        match &self.state {
            State::Idle(idle) => std::iter::once(idle.listener.as_fd())
                .chain(idle.tcp.iter().map(|(l, _)| l.as_fd()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Starts serving (on a new thread with its own runtime) if idle. If
    /// the thread cannot start, the failure is recorded and the sockets
    /// are closed, so the sandbox's connections are refused rather than
    /// left waiting: there is no way out without the proxy.
    pub fn run_now(&mut self) -> std::io::Result<()> {
        let State::Idle(idle) = std::mem::replace(&mut self.state, State::Done) else {
            return Ok(());
        };
        let proxy = idle.proxy.clone();
        match spawn(*idle) {
            Ok(thread) => {
                self.state = State::Running(thread);
                Ok(())
            }
            Err(e) => {
                proxy_error(&proxy, &format!("cannot start the proxy thread: {e}"));
                Err(e)
            }
        }
    }

    /// Tells every connection the session ended without waiting: the
    /// proxy winds down while the caller does other teardown work.
    /// [`SessionProxy::stop`] (or dropping it) then waits for the end.
    /// An idle proxy just closes its sockets: a connection still queued is
    /// refused, and nothing it sent leaves.
    pub fn begin_stop(&mut self) {
        if matches!(self.state, State::Idle(_)) {
            self.state = State::Done;
        }
        let _ = self.shutdown.send(true);
    }

    /// Tells every connection the session ended, waits for their audit
    /// lines (at most a couple of seconds), and stops.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.begin_stop();
        if let State::Running(t) = std::mem::replace(&mut self.state, State::Done) {
            let _ = t.join();
        }
    }
}

impl Drop for SessionProxy {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The proxy's thread: one current-thread runtime serving every socket
/// until the shutdown signal.
fn spawn(idle: Idle) -> std::io::Result<JoinHandle<()>> {
    let Idle {
        listener,
        tcp,
        proxy,
        shutdown,
    } = idle;
    std::thread::Builder::new()
        .name("egress-proxy".into())
        .spawn(move || {
            // One thread serves one session: cheap to start (no worker
            // pool on the sandbox's startup path) and plenty for one
            // agent; DNS lookups still run on tokio's blocking pool.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .thread_name("egress-proxy")
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    proxy_error(&proxy, &format!("cannot start the proxy runtime: {e}"));
                    return;
                }
            };
            runtime.block_on(async move {
                let tcp: Vec<_> = tcp
                    .into_iter()
                    .filter_map(|(l, p)| tokio::net::TcpListener::from_std(l).ok().map(|l| (l, p)))
                    .collect();
                match tokio::net::UnixListener::from_std(listener) {
                    Ok(l) => proxy.serve(l, tcp, shutdown, Duration::from_secs(2)).await,
                    Err(e) => proxy_error(&proxy, &format!("cannot listen: {e}")),
                }
            });
            runtime.shutdown_timeout(Duration::from_millis(100));
        })
}
