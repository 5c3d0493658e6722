//! The proxy host's own addresses. A name the policy allows may resolve to
//! an address of one of the proxy host's interfaces (a node or pod IP, of
//! public class): dialling it reaches services bound to `0.0.0.0` on the
//! proxy host itself, which the sandbox must never see. Such addresses are
//! refused like private ones unless `allow_cidr` names them, whatever the
//! mode (report mode admits names, never these addresses).
//!
//! The set is read with `getifaddrs(3)` (both families) when a check needs
//! it and kept for [`MAX_AGE`], so an address added to an interface is
//! refused within that time without a netlink watcher.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::decide::Decision;
use crate::policy::NetworkPolicy;

/// How long a reading of the interfaces' addresses is used.
pub const MAX_AGE: Duration = Duration::from_millis(250);

/// Addresses of the proxy host's interfaces, re-read when stale.
#[derive(Debug, Default)]
pub struct LocalAddrs {
    cache: Mutex<Option<(Instant, Arc<HashSet<IpAddr>>)>>,
}

impl LocalAddrs {
    /// The process-wide set.
    pub fn global() -> &'static LocalAddrs {
        static G: OnceLock<LocalAddrs> = OnceLock::new();
        G.get_or_init(LocalAddrs::default)
    }

    /// The current set (re-read if older than [`MAX_AGE`]).
    pub fn current(&self) -> Arc<HashSet<IpAddr>> {
        let Ok(mut slot) = self.cache.lock() else {
            return Arc::new(read());
        };
        if let Some((at, set)) = slot.as_ref() {
            if at.elapsed() < MAX_AGE {
                return set.clone();
            }
        }
        let set = Arc::new(read());
        *slot = Some((Instant::now(), set.clone()));
        set
    }

    /// Whether `ip` is assigned to one of the proxy host's interfaces.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.current().contains(&ip.to_canonical())
    }
}

/// Every address on every interface, both families. A failed read yields
/// what could be read (possibly nothing): the class checks still apply.
fn read() -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            if let Some(v4) = sa.as_sockaddr_in() {
                out.insert(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                out.insert(IpAddr::V6(v6.ip()).to_canonical());
            }
        }
    }
    out
}

/// May the proxy dial `ip`, given whether it is one of the proxy host's own
/// addresses? Only if it is not, or a CIDR in the policy names it. Pure:
/// the caller looks `local` up.
pub fn decide_local(policy: &NetworkPolicy, ip: IpAddr, local: bool) -> Option<Decision> {
    if !local || policy.allow_cidr.iter().any(|c| c.contains(ip)) {
        return None;
    }
    Some(Decision {
        allow: false,
        rule: "address-class:proxy-host".into(),
        reason: "address-class",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> NetworkPolicy {
        NetworkPolicy::from_toml(toml).expect("test policy")
    }

    #[test]
    fn the_proxy_hosts_own_addresses_are_refused_unless_a_cidr_names_them() {
        let none = policy("");
        let named = policy("[network]\nallow_cidr = [\"11.22.33.44/32\", \"2a00:1::/64\"]\n");
        let mut report = policy("");
        report.report_only = true;
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let cases: &[(&NetworkPolicy, &str, bool, bool)] = &[
            // (policy, address, is local, refused)
            (&none, "11.22.33.44", true, true),
            (&none, "11.22.33.44", false, false),
            (&none, "2a00:1::44", true, true),
            (&named, "11.22.33.44", true, false),
            (&named, "2a00:1::44", true, false),
            (&named, "11.22.33.45", true, true),
            (&report, "11.22.33.44", true, true),
        ];
        for (p, a, local, refused) in cases {
            let d = decide_local(p, ip(a), *local);
            assert_eq!(d.is_some(), *refused, "{a} local={local}");
            if let Some(d) = d {
                assert_eq!(d.rule, "address-class:proxy-host");
                assert!(!d.allow);
            }
        }
    }

    #[test]
    fn loopback_is_among_the_hosts_addresses() {
        assert!(LocalAddrs::global().contains("127.0.0.1".parse().expect("ip")));
    }
}
