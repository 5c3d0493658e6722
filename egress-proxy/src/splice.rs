//! Tunnels on raw sockets: toward the upstream, `splice(2)` moves bytes
//! socket → pipe → socket inside the kernel; toward the sandbox, a large
//! user-space buffer (see [`copy`] for why). Used for CONNECT and SOCKS5
//! tunnels between the sandbox's Unix socket and the upstream TCP socket;
//! anything else (TLS interception, WebSocket) uses `tunnel.rs`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::sys::socket::{shutdown, Shutdown};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::client::Client;
use tokio::sync::watch;

use crate::limits::Limits;
use crate::meter::Meter;

/// Pipe size asked for per direction; the kernel may grant less.
const PIPE_SIZE: i32 = 1 << 20;

#[derive(Clone, Copy)]
enum Sock<'a> {
    Client(&'a Client),
    Tcp(&'a TcpStream),
}

impl Sock<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Client(s) => s.as_fd(),
            Sock::Tcp(s) => s.as_fd(),
        }
    }

    async fn ready(&self, interest: Interest) -> io::Result<()> {
        match self {
            Sock::Client(s) => s.ready(interest).await,
            Sock::Tcp(s) => s.ready(interest).await.map(drop),
        }
    }

    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Sock::Client(s) => s.try_io(interest, f),
            Sock::Tcp(s) => s.try_io(interest, f),
        }
    }
}

/// One direction: `src` → pipe → `dst` until `src` ends, then half-close
/// `dst`. Adds the bytes moved to `counter` and marks activity on `meter`.
async fn pump(src: Sock<'_>, dst: Sock<'_>, meter: &Meter, upward: bool) -> io::Result<()> {
    let (pipe_r, pipe_w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let size = fcntl(&pipe_w, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE))
        .or_else(|_| fcntl(&pipe_w, FcntlArg::F_GETPIPE_SZ))
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(64 << 10);
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut buffered = 0usize;
    let mut eof = false;
    loop {
        if buffered > 0 {
            let moved = dst.try_io(Interest::WRITABLE, || {
                splice(pipe_r.as_fd(), None, dst.fd(), None, buffered, flags)
                    .map_err(io::Error::from)
            });
            match moved {
                Ok(n) => {
                    buffered -= n;
                    let counter = if upward { &meter.up } else { &meter.down };
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    meter.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dst.ready(Interest::WRITABLE).await?;
                }
                Err(e) => return Err(e),
            }
            continue;
        }
        if eof {
            let _ = shutdown(dst_raw(dst), Shutdown::Write);
            return Ok(());
        }
        let got = src.try_io(Interest::READABLE, || {
            splice(src.fd(), None, pipe_w.as_fd(), None, size, flags).map_err(io::Error::from)
        });
        match got {
            Ok(0) => eof = true,
            Ok(n) => buffered += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                src.ready(Interest::READABLE).await?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One direction with a user-space buffer: `src` → buffer → `dst`. Used
/// toward the sandbox's Unix socket, which has no zero-copy receive path:
/// spliced pages would arrive as one small buffer each, and the reader on
/// the other side (init's relay) would pay per buffer.
async fn copy(src: Sock<'_>, dst: Sock<'_>, meter: &Meter, upward: bool) -> io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = loop {
            let r = src.try_io(Interest::READABLE, || {
                nix::unistd::read(src.fd(), &mut buf).map_err(io::Error::from)
            });
            match r {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    src.ready(Interest::READABLE).await?
                }
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            let _ = shutdown(dst_raw(dst), Shutdown::Write);
            return Ok(());
        }
        let mut off = 0;
        while off < n {
            let w = dst.try_io(Interest::WRITABLE, || {
                nix::unistd::write(dst.fd(), &buf[off..n]).map_err(io::Error::from)
            });
            match w {
                Ok(k) => {
                    off += k;
                    let counter = if upward { &meter.up } else { &meter.down };
                    counter.fetch_add(k as u64, Ordering::Relaxed);
                    meter.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dst.ready(Interest::WRITABLE).await?
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn dst_raw(s: Sock<'_>) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    match s {
        Sock::Client(c) => c.as_raw_fd(),
        Sock::Tcp(t) => t.as_raw_fd(),
    }
}

/// Relays `client` ⇄ `upstream` with splice until both directions end or a
/// bound is hit; `prefix` (bytes the client already sent) goes upstream
/// first. Returns why it ended early, if it did.
pub async fn run(
    client: Client,
    prefix: &[u8],
    mut upstream: TcpStream,
    meter: Arc<Meter>,
    limits: &Limits,
    mut shutdown: watch::Receiver<bool>,
) -> Option<String> {
    if !prefix.is_empty() {
        use tokio::io::AsyncWriteExt;
        if let Err(e) = upstream.write_all(prefix).await {
            return Some(e.to_string());
        }
        meter.up.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    }
    let c = Sock::Client(&client);
    let u = Sock::Tcp(&upstream);
    let both = async {
        let down = async {
            match &client {
                // TCP takes spliced pages whole; a Unix socket would get
                // one small buffer per page (see `copy`).
                Client::Tcp(_) => pump(u, c, &meter, false).await,
                Client::Unix(_) => copy(u, c, &meter, false).await,
            }
        };
        let (a, b) = tokio::join!(pump(c, u, &meter, true), down);
        a.and(b).err().map(|e| e.to_string())
    };
    crate::tunnel::bounded(both, &meter, limits, &mut shutdown).await
}
