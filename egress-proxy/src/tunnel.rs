//! Byte pipes between the sandbox and a destination (CONNECT, SOCKS5,
//! WebSocket), bounded by the idle timeout, the connection lifetime and the
//! session's end.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::limits::Limits;
use crate::meter::{Meter, Metered, Side};

/// Copy buffer per direction: large enough for loopback and LAN speeds.
const BUFFER: usize = 128 << 10;

/// Copies both ways until either side closes or a bound is hit. Returns why
/// it ended early, if it did. `client` is already metered by the caller;
/// `upstream` is wrapped here so its traffic counts as activity.
pub async fn run<C, U>(
    client: &mut C,
    upstream: U,
    meter: Arc<Meter>,
    limits: &Limits,
    mut shutdown: watch::Receiver<bool>,
) -> Option<String>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut upstream = Metered::new(upstream, meter.clone(), Side::Upstream);
    let copy = async {
        tokio::io::copy_bidirectional_with_sizes(client, &mut upstream, BUFFER, BUFFER)
            .await
            .err()
            .map(|e| e.to_string())
    };
    bounded(copy, &meter, limits, &mut shutdown).await
}

/// Runs `work` (which returns why it failed, if it did) until it finishes
/// or a bound ends it first: no traffic on `meter` for the idle timeout,
/// the connection lifetime, or the session's end. Returns the reason it
/// ended early, if it did. Every kind of connection is bounded this way.
pub async fn bounded(
    work: impl std::future::Future<Output = Option<String>>,
    meter: &Meter,
    limits: &Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<String> {
    tokio::select! {
        r = work => r,
        _ = idle(meter, limits.idle_timeout) => Some("idle timeout".to_string()),
        _ = tokio::time::sleep(limits.max_lifetime) => Some("connection lifetime exceeded".to_string()),
        _ = crate::until_ended(shutdown) => Some("session ended".to_string()),
    }
}

/// Resolves once `meter` has seen no traffic for `limit`.
pub async fn idle(meter: &Meter, limit: Duration) {
    let limit_ms = limit.as_millis() as u64;
    loop {
        let idle = meter.idle_ms();
        if idle >= limit_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(limit_ms - idle)).await;
    }
}
