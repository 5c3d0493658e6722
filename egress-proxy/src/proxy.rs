//! The listener: accepts sandbox connections on the Unix socket, tags each
//! with the peer's credentials (`SO_PEERCRED`), bounds how many run at once,
//! sniffs the first byte (0x05: SOCKS5, anything else: HTTP) and hands the
//! connection to its protocol.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixListener, UnixStream};

use crate::client::Client;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::audit::{AuditLog, Event, Peer, SandboxTag};
use crate::ca::SessionCa;
use crate::decide::{decide_tunnel, Carriage};
use crate::limits::Limits;
use crate::meter::{Meter, Metered, Side};
use crate::metrics::Metrics;
use crate::name::Host;
use crate::policy::NetworkPolicy;
use crate::secrets::Credentials;
use crate::{http, socks};

/// One proxy: a policy, its limits and its audit log.
#[derive(Debug)]
pub struct Proxy {
    /// What may be reached.
    pub policy: NetworkPolicy,
    /// Bounds per connection and in total.
    pub limits: Limits,
    /// Where every decision is recorded (shared with the supervisor, which
    /// writes the session's start and end into the same chain).
    pub audit: Arc<AuditLog>,
    /// TLS interception for hosts with credentials or rules, if any.
    pub interception: Option<Interception>,
    /// Counters for operators (`egress-proxy serve --metrics`).
    pub metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
}

/// What the proxy needs to intercept TLS and apply credentials.
#[derive(Debug)]
pub struct Interception {
    /// The session's credentials, secrets loaded.
    pub credentials: Credentials,
    /// The session CA that signs leaves for intercepted hosts.
    pub ca: Arc<SessionCa>,
    /// Client config for the proxy's own TLS to upstreams.
    pub upstream_tls: Arc<rustls::ClientConfig>,
}

/// What a protocol handler knows about its connection.
#[derive(Debug)]
pub struct ConnCtx {
    /// The proxy.
    pub proxy: Arc<Proxy>,
    /// Who connected.
    pub peer: Peer,
    /// Bytes and activity of the client connection.
    pub meter: Arc<Meter>,
    /// Flips to true when the session ends.
    pub shutdown: watch::Receiver<bool>,
    /// The per-sandbox socket it came in on, if a sidecar serves several.
    pub sandbox: Option<Arc<SandboxTag>>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for ConnCtx {
    fn drop(&mut self) {
        let (up, down) = self.meter.bytes();
        self.proxy.metrics.add_bytes(up, down);
    }
}

impl ConnCtx {
    /// A new event for this connection.
    pub fn event(&self, action: &'static str, protocol: &'static str) -> Event {
        let mut event = Event::new(action, protocol, self.peer);
        event.sandbox = self.sandbox.clone();
        event
    }

    /// Records a finished event.
    pub fn finish(&self, event: Event) {
        self.proxy.metrics.observe(&event);
        self.proxy.audit.record(&event);
    }
}

impl Proxy {
    /// A proxy for `policy`.
    pub fn new(policy: NetworkPolicy, limits: Limits, audit: AuditLog) -> Arc<Self> {
        Self::with_interception(policy, limits, Arc::new(audit), None)
    }

    /// A proxy that also intercepts TLS for hosts with credentials or rules.
    pub fn with_interception(
        policy: NetworkPolicy,
        limits: Limits,
        audit: Arc<AuditLog>,
        interception: Option<Interception>,
    ) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        Arc::new(Self {
            policy,
            limits,
            audit,
            interception,
            metrics: Arc::new(Metrics::default()),
            slots,
        })
    }

    /// How a tunnel to `host` is carried (see [`decide_tunnel`]): CONNECTs
    /// to hosts with credentials or rules are intercepted; a host with
    /// rules is never tunnelled opaquely.
    pub fn carriage(&self, host: &Host, socks: bool) -> Carriage {
        let has_credential = match host {
            Host::Name(name) => self
                .interception
                .as_ref()
                .is_some_and(|i| i.credentials.any_bound_to(name)),
            Host::Ip(_) => false,
        };
        decide_tunnel(
            &self.policy,
            host,
            has_credential,
            self.interception.is_some(),
            socks,
        )
    }

    /// Accepts connections until `shutdown` turns true, then waits up to
    /// `grace` for open connections to finish (they are told to stop).
    /// `tcp` are listening sockets inside a sandbox's network namespace,
    /// each with the identity of the sandbox it belongs to (TCP carries no
    /// peer credentials).
    pub async fn serve(
        self: Arc<Self>,
        listener: UnixListener,
        tcp: Vec<(TcpListener, Peer)>,
        shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        for (l, peer) in tcp {
            let me = self.clone();
            let shutdown = shutdown.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        accepted = l.accept() => match accepted {
                            Ok((stream, _)) => {
                                let _ = stream.set_nodelay(true);
                                me.clone().admit(Client::Tcp(stream), peer, shutdown.clone(), None)
                            }
                            Err(e) => {
                                tracing_lite(&format!("accept: {e}"));
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        },
                        _ = crate::until_ended(&mut stop) => break,
                    }
                }
            });
        }
        self.clone()
            .accept_until(listener, shutdown.clone(), shutdown, None)
            .await;
        self.drain(grace).await;
        // Flushing to disk is the owner's job, once, after its own last
        // line (the supervisor's session.end, the sidecar's shutdown).
    }

    /// Connections open now.
    pub fn active_connections(&self) -> usize {
        self.limits
            .max_connections
            .saturating_sub(self.slots.available_permits())
    }

    /// Waits up to `grace` for every open connection (on any socket) to
    /// finish; true when they all did.
    pub async fn drain(&self, grace: Duration) -> bool {
        let all = self.limits.max_connections as u32;
        tokio::time::timeout(grace, self.slots.clone().acquire_many_owned(all))
            .await
            .is_ok()
    }

    /// Accepts connections on `listener` until `stop` turns true, tagging
    /// each with `sandbox` (a per-sandbox socket of a shared sidecar) in
    /// every event it produces. Accepted connections run until they end or
    /// `cut` turns true, which may be later than `stop` (a sidecar drains
    /// its tunnels on SIGTERM before it cuts them).
    pub async fn accept_until(
        self: Arc<Self>,
        listener: UnixListener,
        stop: watch::Receiver<bool>,
        cut: watch::Receiver<bool>,
        sandbox: Option<Arc<SandboxTag>>,
    ) {
        let mut ended = stop;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let peer = peer_of(&stream);
                        self.clone().admit(Client::Unix(stream), peer, cut.clone(), sandbox.clone())
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing_lite(&format!("accept: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = crate::until_ended(&mut ended) => break,
            }
        }
    }

    fn admit(
        self: Arc<Self>,
        stream: Client,
        peer: Peer,
        shutdown: watch::Receiver<bool>,
        sandbox: Option<Arc<SandboxTag>>,
    ) {
        if !self.audit.healthy() {
            // No record, no traffic: a failed audit sink closes the door.
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nx-airlock-deny: audit-unavailable\r\n\
                          content-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            });
            return;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            let mut event = Event::new("connection", "unknown", peer);
            event.sandbox = sandbox;
            event.error = Some(format!(
                "connection limit ({}) reached",
                self.limits.max_connections
            ));
            event.decision = Some(crate::decide::Decision {
                allow: false,
                rule: "limits:max_connections".into(),
                reason: "connection-limit",
            });
            self.metrics.observe(&event);
            self.audit.record(&event);
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nx-airlock-deny: connection-limit\r\n\
                          content-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            });
            return;
        };
        self.metrics.connection_accepted();
        let ctx = Arc::new(ConnCtx {
            proxy: self,
            peer,
            meter: Meter::new(),
            shutdown,
            sandbox,
            _slot: slot,
        });
        tokio::spawn(async move {
            let header_timeout = ctx.proxy.limits.header_timeout;
            let first = tokio::time::timeout(header_timeout, first_byte(&stream)).await;
            let stream = Metered::new(stream, ctx.meter.clone(), Side::Client);
            match first {
                Ok(Some(b)) if sniff(b) == Sniffed::Socks5 => socks::serve(stream, ctx).await,
                Ok(Some(_)) => http::serve(stream, ctx).await,
                // Closed before a byte: nothing was attempted.
                Ok(None) => {}
                Err(_) => {
                    let mut event = ctx.event("connection", "unknown");
                    event.error = Some("no request within the header timeout".into());
                    ctx.finish(event);
                }
            }
        });
    }
}

/// Which protocol a connection speaks, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// SOCKS version 5 greeting.
    Socks5,
    /// Anything else is handed to the HTTP/1.1 parser, which refuses what
    /// is not HTTP (400 and an audit line).
    Http,
}

/// The protocol for a connection whose first byte is `first`: 0x05 is the
/// SOCKS5 version byte, which no HTTP method starts with.
pub fn sniff(first: u8) -> Sniffed {
    if first == 0x05 {
        Sniffed::Socks5
    } else {
        Sniffed::Http
    }
}

/// Peeks at the first byte without consuming it.
async fn first_byte(stream: &Client) -> Option<u8> {
    loop {
        stream.ready(tokio::io::Interest::READABLE).await.ok()?;
        let mut b = [0u8; 1];
        let res = stream.try_io(tokio::io::Interest::READABLE, || {
            // SAFETY: recv into a valid 1-byte buffer on a socket we own.
            let n =
                unsafe { libc::recv(stream.as_raw_fd(), b.as_mut_ptr().cast(), 1, libc::MSG_PEEK) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match res {
            Ok(1) => return Some(b[0]),
            Ok(_) => return None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
}

fn peer_of(stream: &UnixStream) -> Peer {
    match stream.peer_cred() {
        Ok(c) => Peer {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        },
        Err(_) => Peer::default(),
    }
}

/// Proxy-internal diagnostics go to stderr (never secrets, never the log).
fn tracing_lite(msg: &str) {
    eprintln!("egress-proxy: {msg}");
}
