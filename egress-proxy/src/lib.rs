//! airlock's egress proxy: the sandbox's only way out.
//!
//! The sandbox reaches it through one Unix socket. On that socket it speaks
//! HTTP/1.1 (absolute-form forward proxy and `CONNECT`) and SOCKS5, sniffed
//! from the first byte. Every destination is decided by [`decide`] before
//! any DNS lookup, every resolved address is checked again (the SSRF guard),
//! and every connection and plain-HTTP request is written to the audit log.
//!
//! `sandbox run` starts one [`SessionProxy`] per session; `egress-proxy
//! serve` runs the same code as a long-lived sidecar.

pub mod audit;
pub mod ca;
pub mod client;
pub mod config;
pub mod control;
pub mod credentials;
pub mod decide;
pub mod gate;
pub mod http;
pub mod inspect;
pub mod intercept;
pub mod ipclass;
pub mod limits;
pub mod local;
pub mod meter;
pub mod metrics;
pub mod name;
pub mod ocsf;
pub mod policy;
pub mod proxy;
pub mod reqpath;
pub mod resolve;
pub mod scrub;
pub mod seal;
pub mod secrets;
pub mod session;
pub mod socks;
pub mod splice;
pub mod tls;
pub mod tunnel;
pub mod verify;

#[cfg(test)]
mod properties;

pub use audit::AuditLog;
pub use limits::Limits;
pub use policy::NetworkPolicy;
pub use proxy::Proxy;
pub use session::SessionProxy;

/// Resolves once `shutdown` turns true (or its sender is gone). The
/// borrow `wait_for` returns is dropped here, so callers stay `Send`.
pub async fn until_ended(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|ended| *ended).await;
}

/// A random 128-bit session id in hex, from the kernel's CSPRNG.
pub fn new_session_id() -> String {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most len bytes into the valid buffer.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            use std::io::Read;
            if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
                let _ = f.read_exact(&mut buf[filled..]);
            }
            break;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
