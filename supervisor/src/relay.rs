//! The relay to a sidecar proxy: TCP on `127.0.0.1:3128` (HTTP proxy) and
//! `127.0.0.1:1080` (SOCKS5), listening inside the sandbox's network
//! namespace, each connection spliced to a new connection on the sidecar's
//! Unix socket. The proxy tells the protocols apart by their first byte, so
//! both ports lead to the same socket.
//!
//! Init binds the ports and hands them to the supervisor (`handoff.rs`),
//! which runs this relay on a thread of its own: the connections to the
//! sidecar are then made with the supervisor's ids, which the sidecar's
//! socket was made for (a root-owned `0660` socket is out of reach of the
//! agent's unprivileged ids, and init has those). A connection the sidecar
//! refuses is answered, not dropped: `503` on the HTTP port, a SOCKS5
//! general failure on the other, and the supervisor says why.
//!
//! One epoll loop, no threads: bytes move socket → pipe → socket with
//! `splice(2)`, never through user space, and a connection costs two pipes
//! rather than a thread.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::socket::{
    accept4, connect, setsockopt, shutdown, socket, sockopt, AddressFamily, Shutdown, SockFlag,
    SockType, UnixAddr,
};

use crate::error::SetupError;

/// Pipe size asked for per direction; the kernel may give less.
const PIPE_SIZE: i32 = 256 << 10;
/// Listener tokens are `LISTENER_BASE + index`; connection tokens are
/// `slot << 1 | side`.
const LISTENER_BASE: u64 = 1 << 60;

/// Called when a client could not be connected to the target: the index
/// of its listener, the client, and why.
pub type OnUnreachable = Box<dyn FnMut(usize, OwnedFd, Errno) + Send>;

/// Listening sockets and live connections.
pub struct Relay {
    listeners: Vec<TcpListener>,
    target: PathBuf,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    max_conns: usize,
    unreachable: Option<OnUnreachable>,
}

struct Half {
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
    capacity: usize,
    buffered: usize,
    eof: bool,
    shut: bool,
}

struct Conn {
    client: OwnedFd,
    upstream: OwnedFd,
    /// client → upstream.
    up: Half,
    /// upstream → client.
    down: Half,
}

impl Relay {
    /// Binds the relay ports on the sandbox's loopback. Call after `lo` is up
    /// and before the agent starts, so the agent can neither race us to the
    /// ports nor find them closed.
    pub fn bind(ports: &[u16], target: &Path, max_conns: usize) -> Result<Self, SetupError> {
        let mut listeners = Vec::new();
        for port in ports {
            let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, *port);
            let l = TcpListener::bind(addr)
                .map_err(|e| SetupError::io("network", format!("relay listen on {addr}"), e))?;
            l.set_nonblocking(true)
                .map_err(|e| SetupError::io("network", "relay nonblocking", e))?;
            listeners.push(l);
        }
        Ok(Self::from_listeners(listeners, target, max_conns))
    }

    /// A relay over sockets bound elsewhere (init's, handed over).
    pub fn from_listeners(listeners: Vec<TcpListener>, target: &Path, max_conns: usize) -> Self {
        Self {
            listeners,
            target: target.to_path_buf(),
            conns: Vec::new(),
            free: Vec::new(),
            max_conns,
            unreachable: None,
        }
    }

    /// What to do with a client whose connection to the target failed
    /// (instead of dropping it).
    pub fn on_unreachable(mut self, f: OnUnreachable) -> Self {
        self.unreachable = Some(f);
        self
    }

    /// Relays until `stop` becomes readable or hangs up.
    pub fn run_until(mut self, stop: BorrowedFd<'_>) {
        const STOP: u64 = u64::MAX;
        let Ok(epoll) = Epoll::new(nix::sys::epoll::EpollCreateFlags::EPOLL_CLOEXEC) else {
            return;
        };
        if epoll
            .add(stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP))
            .is_err()
            || self.register(&epoll).is_err()
        {
            return;
        }
        let mut events = [EpollEvent::empty(); 64];
        loop {
            let n = match epoll.wait(&mut events, nix::sys::epoll::EpollTimeout::NONE) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            for ev in &events[..n] {
                if ev.data() == STOP {
                    return;
                }
                self.on_event(&epoll, ev.data());
            }
        }
    }

    /// A relay with nothing to relay (the session proxy took the ports).
    pub fn none() -> Self {
        Self {
            listeners: Vec::new(),
            target: PathBuf::new(),
            conns: Vec::new(),
            free: Vec::new(),
            max_conns: 0,
            unreachable: None,
        }
    }

    /// The listening sockets.
    pub fn listeners(&self) -> &[TcpListener] {
        &self.listeners
    }

    /// Adds the listeners to `epoll`.
    pub fn register(&self, epoll: &Epoll) -> Result<(), SetupError> {
        for (i, l) in self.listeners.iter().enumerate() {
            epoll
                .add(
                    l,
                    EpollEvent::new(EpollFlags::EPOLLIN, LISTENER_BASE + i as u64),
                )
                .map_err(|e| SetupError::io("network", "relay epoll", e))?;
        }
        Ok(())
    }

    /// Handles readiness of the fd behind `token`.
    pub fn on_event(&mut self, epoll: &Epoll, token: u64) {
        if token >= LISTENER_BASE {
            self.accept_all(epoll, (token - LISTENER_BASE) as usize);
            return;
        }
        let slot = (token >> 1) as usize;
        let finished = match self.conns.get_mut(slot).and_then(Option::as_mut) {
            Some(conn) => conn.pump().unwrap_or(true),
            None => false,
        };
        if finished {
            if let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) {
                let _ = epoll.delete(&conn.client);
                let _ = epoll.delete(&conn.upstream);
                self.free.push(slot);
            }
        }
    }

    fn live(&self) -> usize {
        self.conns.len() - self.free.len()
    }

    fn accept_all(&mut self, epoll: &Epoll, index: usize) {
        let Some(listener) = self.listeners.get(index) else {
            return;
        };
        let fd = listener.as_raw_fd();
        loop {
            let client = match accept4(fd, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(raw) => unsafe { OwnedFd::from_raw_fd(raw) },
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(_) => return,
            };
            if self.live() >= self.max_conns {
                continue; // dropped: the client sees a reset
            }
            let _ = setsockopt(&client, sockopt::TcpNoDelay, &true);
            let conn = match Conn::open(client, &self.target) {
                Ok(c) => c,
                Err((client, e)) => {
                    if let Some(f) = self.unreachable.as_mut() {
                        f(index, client, e);
                    }
                    continue;
                }
            };
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let flags = EpollFlags::EPOLLIN
                | EpollFlags::EPOLLOUT
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLET;
            let ok = epoll
                .add(&conn.client, EpollEvent::new(flags, (slot as u64) << 1))
                .and_then(|()| {
                    epoll.add(
                        &conn.upstream,
                        EpollEvent::new(flags, ((slot as u64) << 1) | 1),
                    )
                });
            if ok.is_err() {
                let _ = epoll.delete(&conn.client);
                self.free.push(slot);
                continue;
            }
            self.conns[slot] = Some(conn);
        }
    }
}

impl Conn {
    fn open(client: OwnedFd, target: &Path) -> Result<Self, (OwnedFd, Errno)> {
        let upstream = match socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        ) {
            Ok(s) => s,
            Err(e) => return Err((client, e)),
        };
        let addr = match UnixAddr::new(target) {
            Ok(a) => a,
            Err(e) => return Err((client, e)),
        };
        // A Unix stream connect completes at once, or fails with EAGAIN when
        // the proxy's backlog is full: then the client is refused.
        if let Err(e) = connect(upstream.as_raw_fd(), &addr) {
            return Err((client, e));
        }
        match (Half::new(), Half::new()) {
            (Some(up), Some(down)) => Ok(Self {
                client,
                upstream,
                up,
                down,
            }),
            _ => Err((client, Errno::EMFILE)),
        }
    }

    /// Moves whatever can move; `Ok(true)` once both directions are closed.
    fn pump(&mut self) -> Result<bool, Errno> {
        loop {
            let a = self.up.step(&self.client, &self.upstream)?;
            let b = self.down.step(&self.upstream, &self.client)?;
            if !a && !b {
                return Ok(self.up.shut && self.down.shut);
            }
        }
    }
}

impl Half {
    fn new() -> Option<Self> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).ok()?;
        let capacity = fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE))
            .or_else(|_| fcntl(&w, FcntlArg::F_GETPIPE_SZ))
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(64 << 10);
        Some(Self {
            pipe_r: r,
            pipe_w: w,
            capacity,
            buffered: 0,
            eof: false,
            shut: false,
        })
    }

    /// One round of `from → pipe → to`; returns whether anything moved.
    fn step(&mut self, from: &OwnedFd, to: &OwnedFd) -> Result<bool, Errno> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        let mut progress = false;
        if self.buffered > 0 {
            match splice(
                self.pipe_r.as_fd(),
                None,
                to.as_fd(),
                None,
                self.buffered,
                flags,
            ) {
                Ok(n) => {
                    self.buffered -= n;
                    progress = n > 0;
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        if !self.eof && self.buffered < self.capacity {
            let room = self.capacity - self.buffered;
            match splice(from.as_fd(), None, self.pipe_w.as_fd(), None, room, flags) {
                Ok(0) => {
                    self.eof = true;
                    progress = true;
                }
                Ok(n) => {
                    self.buffered += n;
                    progress = true;
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        if self.eof && self.buffered == 0 && !self.shut {
            let _ = shutdown(to.as_raw_fd(), Shutdown::Write);
            self.shut = true;
            progress = true;
        }
        Ok(progress)
    }
}
