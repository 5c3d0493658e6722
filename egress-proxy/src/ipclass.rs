//! What kind of address an IP is, for the SSRF guard. Only `Public`
//! addresses may be dialled unless a CIDR in the policy allows the address
//! explicitly. Classification happens after `to_canonical()`, so an
//! IPv4-mapped IPv6 address is judged as the IPv4 address it is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The class of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// Globally routable unicast.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// RFC 1918, IPv6 ULA fc00::/7, deprecated site-local fec0::/10.
    Private,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// Cloud instance metadata: 169.254.169.254, fd00:ec2::254,
    /// 100.100.100.200.
    Metadata,
    /// Carrier-grade NAT, 100.64.0.0/10.
    Cgnat,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32,
    /// 3fff::/20.
    Documentation,
    /// 198.18.0.0/15, 2001:2::/48.
    Benchmarking,
    /// 240.0.0.0/4, 192.0.0.0/24, 192.88.99.0/24, 100::/64, 2001::/23 and
    /// everything outside 2000::/3.
    Reserved,
    /// IPv6 that carries an IPv4 address: NAT64 (64:ff9b::/96,
    /// 64:ff9b:1::/48), 6to4 (2002::/16), Teredo (2001::/32),
    /// IPv4-compatible (::/96).
    Ipv4Embedded,
}

impl AddrClass {
    /// A short lowercase name, used in rule ids and deny reasons.
    pub fn name(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Loopback => "loopback",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link-local",
            AddrClass::Metadata => "metadata",
            AddrClass::Cgnat => "cgnat",
            AddrClass::Multicast => "multicast",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Documentation => "documentation",
            AddrClass::Benchmarking => "benchmarking",
            AddrClass::Reserved => "reserved",
            AddrClass::Ipv4Embedded => "ipv4-embedded-ipv6",
        }
    }
}

/// Classifies `ip` (after `to_canonical()`).
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: &str, prefix: u32) -> bool {
    let Ok(net) = net.parse::<Ipv6Addr>() else {
        return false;
    };
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    u128::from(ip) & mask == u128::from(net) & mask
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    // Most specific first: metadata addresses sit inside link-local and CGNAT.
    const TABLE: &[([u8; 4], u32, AddrClass)] = &[
        ([169, 254, 169, 254], 32, AddrClass::Metadata),
        ([100, 100, 100, 200], 32, AddrClass::Metadata),
        ([255, 255, 255, 255], 32, AddrClass::Broadcast),
        ([0, 0, 0, 0], 8, AddrClass::Unspecified),
        ([127, 0, 0, 0], 8, AddrClass::Loopback),
        ([10, 0, 0, 0], 8, AddrClass::Private),
        ([172, 16, 0, 0], 12, AddrClass::Private),
        ([192, 168, 0, 0], 16, AddrClass::Private),
        ([169, 254, 0, 0], 16, AddrClass::LinkLocal),
        ([100, 64, 0, 0], 10, AddrClass::Cgnat),
        ([192, 0, 2, 0], 24, AddrClass::Documentation),
        ([198, 51, 100, 0], 24, AddrClass::Documentation),
        ([203, 0, 113, 0], 24, AddrClass::Documentation),
        ([198, 18, 0, 0], 15, AddrClass::Benchmarking),
        ([192, 0, 0, 0], 24, AddrClass::Reserved),
        ([192, 88, 99, 0], 24, AddrClass::Reserved),
        ([224, 0, 0, 0], 4, AddrClass::Multicast),
        ([240, 0, 0, 0], 4, AddrClass::Reserved),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
        .unwrap_or(AddrClass::Public)
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    const TABLE: &[(&str, u32, AddrClass)] = &[
        ("::", 128, AddrClass::Unspecified),
        ("::1", 128, AddrClass::Loopback),
        ("fd00:ec2::254", 128, AddrClass::Metadata),
        ("::", 96, AddrClass::Ipv4Embedded),
        ("64:ff9b::", 96, AddrClass::Ipv4Embedded),
        ("64:ff9b:1::", 48, AddrClass::Ipv4Embedded),
        ("2002::", 16, AddrClass::Ipv4Embedded),
        ("2001::", 32, AddrClass::Ipv4Embedded),
        ("2001:2::", 48, AddrClass::Benchmarking),
        ("2001:db8::", 32, AddrClass::Documentation),
        ("3fff::", 20, AddrClass::Documentation),
        ("2001::", 23, AddrClass::Reserved),
        ("100::", 64, AddrClass::Reserved),
        ("fc00::", 7, AddrClass::Private),
        ("fec0::", 10, AddrClass::Private),
        ("fe80::", 10, AddrClass::LinkLocal),
        ("ff00::", 8, AddrClass::Multicast),
        ("2000::", 3, AddrClass::Public),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, net, *prefix))
        .map(|(_, _, class)| *class)
        .unwrap_or(AddrClass::Reserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_classified() {
        let cases: &[(&str, AddrClass)] = &[
            ("93.184.215.14", AddrClass::Public),
            ("8.8.8.8", AddrClass::Public),
            ("127.0.0.1", AddrClass::Loopback),
            ("127.255.255.254", AddrClass::Loopback),
            ("0.0.0.0", AddrClass::Unspecified),
            ("0.1.2.3", AddrClass::Unspecified),
            ("10.1.2.3", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("172.32.0.1", AddrClass::Public),
            ("192.168.1.1", AddrClass::Private),
            ("169.254.169.254", AddrClass::Metadata),
            ("169.254.1.1", AddrClass::LinkLocal),
            ("100.100.100.200", AddrClass::Metadata),
            ("100.64.0.1", AddrClass::Cgnat),
            ("100.127.255.255", AddrClass::Cgnat),
            ("100.128.0.1", AddrClass::Public),
            ("224.0.0.1", AddrClass::Multicast),
            ("255.255.255.255", AddrClass::Broadcast),
            ("240.0.0.1", AddrClass::Reserved),
            ("192.0.0.8", AddrClass::Reserved),
            ("192.0.2.1", AddrClass::Documentation),
            ("198.51.100.1", AddrClass::Documentation),
            ("203.0.113.1", AddrClass::Documentation),
            ("198.18.0.1", AddrClass::Benchmarking),
            ("198.19.255.1", AddrClass::Benchmarking),
            ("::", AddrClass::Unspecified),
            ("::1", AddrClass::Loopback),
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("::ffff:169.254.169.254", AddrClass::Metadata),
            ("::ffff:10.0.0.1", AddrClass::Private),
            ("::ffff:8.8.8.8", AddrClass::Public),
            ("::127.0.0.1", AddrClass::Ipv4Embedded),
            ("64:ff9b::7f00:1", AddrClass::Ipv4Embedded),
            ("64:ff9b:1::a00:1", AddrClass::Ipv4Embedded),
            ("2002:7f00:1::", AddrClass::Ipv4Embedded),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                AddrClass::Ipv4Embedded,
            ),
            ("fd00:ec2::254", AddrClass::Metadata),
            ("fd12:3456::1", AddrClass::Private),
            ("fc00::1", AddrClass::Private),
            ("fec0::1", AddrClass::Private),
            ("fe80::1", AddrClass::LinkLocal),
            ("ff02::1", AddrClass::Multicast),
            ("2001:db8::1", AddrClass::Documentation),
            ("3fff::1", AddrClass::Documentation),
            ("2001:2::1", AddrClass::Benchmarking),
            ("2001:10::1", AddrClass::Reserved),
            ("100::1", AddrClass::Reserved),
            ("4000::1", AddrClass::Reserved),
            ("2606:4700::1111", AddrClass::Public),
            ("2a00:1450:4001::1", AddrClass::Public),
        ];
        for (ip, want) in cases {
            let addr: IpAddr = ip.parse().expect("test literal");
            assert_eq!(classify(addr), *want, "{ip}");
        }
    }
}
