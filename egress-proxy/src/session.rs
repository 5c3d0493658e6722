//! A proxy for one `sandbox run` session, on its own thread with its own
//! runtime, so the supervisor's main thread stays a plain
//! single-threaded process that forks and waits.

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

/// A running session proxy; stop it with [`SessionProxy::stop`].
#[derive(Debug)]
pub struct SessionProxy {
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl SessionProxy {
    /// Serves `listener` (already bound, so the socket exists before the
    /// sandbox starts) on a new thread.
    /// `tcp` are listening sockets bound inside the sandbox's network
    /// namespace (by init), served directly with the agent's identity.
    pub fn start(
        listener: StdUnixListener,
        tcp: Vec<(std::net::TcpListener, Peer)>,
        proxy: Arc<Proxy>,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        for (l, _) in &tcp {
            l.set_nonblocking(true)?;
        }
        let (tx, rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
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
                        .filter_map(|(l, p)| {
                            tokio::net::TcpListener::from_std(l).ok().map(|l| (l, p))
                        })
                        .collect();
                    match tokio::net::UnixListener::from_std(listener) {
                        Ok(l) => proxy.serve(l, tcp, rx, Duration::from_secs(2)).await,
                        Err(e) => proxy_error(&proxy, &format!("cannot listen: {e}")),
                    }
                });
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(Self {
            shutdown: tx,
            thread: Some(thread),
        })
    }

    /// Tells every connection the session ended without waiting: the
    /// proxy winds down while the caller does other teardown work.
    /// [`SessionProxy::stop`] (or dropping it) then waits for the end.
    pub fn begin_stop(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Tells every connection the session ended, waits for their audit
    /// lines (at most a couple of seconds), and stops.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SessionProxy {
    fn drop(&mut self) {
        self.stop_now();
    }
}
