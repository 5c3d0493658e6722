//! The sandbox's end of a proxied connection: the egress Unix socket (a
//! sidecar, or the relay), or a TCP connection accepted on the session's own
//! listening sockets, which init bound inside the sandbox's network
//! namespace and handed to the proxy (no relay hop).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A client connection.
#[derive(Debug)]
pub enum Client {
    /// From the egress Unix socket.
    Unix(UnixStream),
    /// From a listening socket inside the sandbox.
    Tcp(TcpStream),
}

impl Client {
    /// Waits for readiness.
    pub async fn ready(&self, interest: Interest) -> io::Result<()> {
        match self {
            Client::Unix(s) => s.ready(interest).await.map(drop),
            Client::Tcp(s) => s.ready(interest).await.map(drop),
        }
    }

    /// Runs `f` if the socket is ready, clearing readiness on WouldBlock.
    pub fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            Client::Unix(s) => s.try_io(interest, f),
            Client::Tcp(s) => s.try_io(interest, f),
        }
    }
}

impl AsRawFd for Client {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Client::Unix(s) => s.as_raw_fd(),
            Client::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Client::Unix(s) => s.as_fd(),
            Client::Tcp(s) => s.as_fd(),
        }
    }
}

impl AsyncRead for Client {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Client::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Client {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Client::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Client::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Unix(s) => Pin::new(s).poll_flush(cx),
            Client::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Client::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
