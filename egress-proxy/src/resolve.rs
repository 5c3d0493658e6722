//! From an allowed name to a connected socket: resolve, check every address
//! with [`decide_address`] and against the proxy host's own addresses
//! (`local.rs`), and dial only addresses that passed. The socket
//! is connected to exactly the address that was checked, so a DNS answer
//! that changes between check and use (rebinding) gains nothing.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::decide::{decide_address, Decision};
use crate::limits::Limits;
use crate::name::Host;
use crate::policy::NetworkPolicy;

/// Why no connection was made.
#[derive(Debug)]
pub enum DialError {
    /// Every address the name resolved to is forbidden.
    Denied(Decision, SocketAddr),
    /// The name did not resolve.
    Dns(String),
    /// Allowed addresses exist, but none accepted a connection.
    Connect(SocketAddr, std::io::Error),
    /// Resolution or connection took too long.
    Timeout,
}

/// Resolves `host`, checks every address, and connects to the first allowed
/// one that answers. Returns the stream and the address it is connected to.
pub async fn dial(
    policy: &NetworkPolicy,
    limits: &Limits,
    host: &Host,
    port: u16,
) -> Result<(TcpStream, SocketAddr), DialError> {
    let candidates: Vec<SocketAddr> = match host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Name(name) => {
            let lookup = tokio::net::lookup_host((name.as_str(), port));
            match tokio::time::timeout(limits.resolve_timeout, lookup).await {
                Err(_) => return Err(DialError::Timeout),
                Ok(Err(e)) => return Err(DialError::Dns(e.to_string())),
                Ok(Ok(addrs)) => addrs.collect(),
            }
        }
    };
    let mut first_denial = None;
    let mut allowed = Vec::new();
    let locals = crate::local::LocalAddrs::global().current();
    for addr in candidates {
        let mut d = decide_address(policy, addr.ip());
        if d.allow {
            // The proxy host's own addresses (public class or not) lead to
            // its own services: refused unless a CIDR names them.
            let local = locals.contains(&addr.ip().to_canonical());
            if let Some(refused) = crate::local::decide_local(policy, addr.ip(), local) {
                d = refused;
            }
        }
        if d.allow {
            allowed.push(addr);
        } else if first_denial.is_none() {
            first_denial = Some((d, addr));
        }
    }
    if allowed.is_empty() {
        return Err(match first_denial {
            Some((d, addr)) => DialError::Denied(d, addr),
            None => DialError::Dns("no addresses".to_string()),
        });
    }
    let mut last_err = None;
    for addr in allowed {
        match tokio::time::timeout(limits.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => last_err = Some(DialError::Timeout),
            Ok(Err(e)) => last_err = Some(DialError::Connect(addr, e)),
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
        }
    }
    Err(last_err.unwrap_or(DialError::Timeout))
}
