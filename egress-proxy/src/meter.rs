//! Byte counting and activity tracking around a stream, for the audit log
//! (bytes up/down) and the idle timeout (last activity on either side).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Milliseconds since the first call in this process: a cheap monotonic
/// clock that fits an atomic.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Counters of one proxied connection.
#[derive(Debug)]
pub struct Meter {
    /// Bytes the sandbox sent (read from the client side).
    pub up: AtomicU64,
    /// Bytes the sandbox received (written to the client side).
    pub down: AtomicU64,
    /// [`now_ms`] at the last read or write on either side.
    pub last_activity: AtomicU64,
}

impl Meter {
    /// A fresh meter, active now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            last_activity: AtomicU64::new(now_ms()),
        })
    }

    /// Milliseconds since the last activity.
    pub fn idle_ms(&self) -> u64 {
        now_ms().saturating_sub(self.last_activity.load(Ordering::Relaxed))
    }

    /// (up, down) so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }

    /// Marks activity now.
    pub fn touch(&self) {
        self.last_activity.store(now_ms(), Ordering::Relaxed);
    }
}

/// Which side of the proxy a stream is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The sandbox: reads are bytes up, writes are bytes down.
    Client,
    /// The destination: only activity is recorded.
    Upstream,
}

/// A stream whose traffic is recorded in a [`Meter`].
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
    side: Side,
}

impl<S> Metered<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, meter: Arc<Meter>, side: Side) -> Self {
        Self { inner, meter, side }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the stream (its traffic from now on is not counted here).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            if self.side == Side::Client {
                self.meter.up.fetch_add(n, Ordering::Relaxed);
            }
            self.meter.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            if n > 0 {
                if self.side == Side::Client {
                    self.meter.down.fetch_add(n as u64, Ordering::Relaxed);
                }
                self.meter.touch();
            }
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
