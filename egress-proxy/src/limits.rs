//! Bounds that keep one sandbox (or a slowloris client) from pinning the
//! proxy.

use std::time::Duration;

/// Per-proxy limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent client connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Largest request head (request line plus headers), in bytes.
    pub max_header_bytes: usize,
    /// Time allowed to send a request head, or a SOCKS5 handshake.
    pub header_timeout: Duration,
    /// A connection with no bytes in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// No connection lives longer than this.
    pub max_lifetime: Duration,
    /// Time allowed for DNS resolution.
    pub resolve_timeout: Duration,
    /// Time allowed to connect to the destination.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_header_bytes: 64 << 10,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(3600),
            resolve_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
        }
    }
}
