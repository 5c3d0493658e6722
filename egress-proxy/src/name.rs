//! Destination names as the sandbox wrote them, normalized before any
//! decision: lowercase, one trailing dot stripped, IDNA A-labels, and every
//! spelling of an IP literal recognised as one (dotted, decimal, octal, hex,
//! short IPv4 as `inet_aton(3)` reads them; bracketed IPv6).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A normalized destination host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name in lowercase A-label form, without a trailing dot.
    Name(String),
    /// An IP literal, in whichever form it was written.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a host could not be normalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty host.
    #[error("the host is empty")]
    Empty,
    /// `user@host`: userinfo is never part of a host.
    #[error("the host contains userinfo ('@')")]
    Userinfo,
    /// A character outside letters, digits, hyphen and dot.
    #[error("the host contains the character {0:?}")]
    BadCharacter(char),
    /// A bracketed IPv6 literal that does not parse.
    #[error("'{0}' is not a valid IPv6 literal")]
    BadIpv6(String),
    /// An IPv6 zone id (`%eth0`) names an interface of the proxy's host.
    #[error("IPv6 zone ids are refused")]
    ZoneId,
    /// A numeric last label that is not a valid IPv4 address.
    #[error("'{0}' looks like an IPv4 address but is not a valid one")]
    BadIpv4(String),
    /// IDNA processing failed.
    #[error("'{0}' is not a valid internationalized domain name")]
    Idna(String),
    /// An empty label, a label over 63 bytes, a leading or trailing hyphen,
    /// or a name over 253 bytes.
    #[error("'{0}' is not a valid DNS name")]
    BadLabel(String),
}

/// Normalizes a host exactly as written by a client (CONNECT authority,
/// absolute-form URI host, Host header, or SOCKS5 domain).
pub fn parse_host(raw: &str) -> Result<Host, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw.contains('@') {
        return Err(NameError::Userinfo);
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| NameError::BadIpv6(raw.to_string()))?;
        if inner.contains('%') {
            return Err(NameError::ZoneId);
        }
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| NameError::BadIpv6(raw.to_string()));
    }
    for c in raw.chars() {
        if c.is_ascii() && !(c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(NameError::BadCharacter(c));
        }
    }
    let lower = raw.to_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    let ascii = if trimmed.is_ascii() {
        trimmed.to_string()
    } else {
        idna::domain_to_ascii_strict(trimmed).map_err(|_| NameError::Idna(raw.to_string()))?
    };
    // The WHATWG URL rule: a host whose last label is numeric is an IPv4
    // address (in any of inet_aton's spellings), or invalid; never a name.
    let last = ascii.rsplit('.').next().unwrap_or("");
    if looks_numeric(last) {
        return parse_ipv4_any(&ascii)
            .map(|ip| Host::Ip(IpAddr::V4(ip)))
            .ok_or_else(|| NameError::BadIpv4(raw.to_string()));
    }
    check_labels(&ascii).map_err(|()| NameError::BadLabel(raw.to_string()))?;
    Ok(Host::Name(ascii))
}

fn looks_numeric(label: &str) -> bool {
    if label.is_empty() {
        return false;
    }
    if let Some(hex) = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        return hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    label.chars().all(|c| c.is_ascii_digit())
}

fn check_labels(name: &str) -> Result<(), ()> {
    if name.is_empty() || name.len() > 253 {
        return Err(());
    }
    for label in name.split('.') {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(());
        }
    }
    Ok(())
}

/// Parses IPv4 as `inet_aton(3)` does: one to four parts, each decimal,
/// octal (leading `0`) or hex (`0x`), the last part filling the remaining
/// bytes. `2130706433`, `0x7f.1`, `017700000001` and `127.1` are all
/// 127.0.0.1.
pub fn parse_ipv4_any(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for p in &parts {
        values.push(parse_ipv4_part(p)?);
    }
    let (last, init) = values.split_last()?;
    let mut addr: u64 = 0;
    for (i, v) in init.iter().enumerate() {
        if *v > 255 {
            return None;
        }
        addr |= v << (24 - 8 * i);
    }
    let room_bits = 32 - 8 * init.len() as u32;
    if room_bits < 64 && *last >= (1u64 << room_bits) {
        return None;
    }
    addr |= last;
    u32::try_from(addr).ok().map(Ipv4Addr::from)
}

fn parse_ipv4_part(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        // "0x" alone is zero, as inet_aton reads it.
        return (radix == 16).then_some(0);
    }
    let v = u64::from_str_radix(digits, radix).ok()?;
    (v <= u32::MAX as u64).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Host {
        Host::Name(s.to_string())
    }
    fn v4(a: u8, b: u8, c: u8, d: u8) -> Host {
        Host::Ip(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
    }

    #[test]
    fn names_are_normalized() {
        let cases: &[(&str, Host)] = &[
            ("example.com", name("example.com")),
            ("EXAMPLE.com", name("example.com")),
            ("Api.Example.COM.", name("api.example.com")),
            ("bücher.example", name("xn--bcher-kva.example")),
            ("xn--bcher-kva.example", name("xn--bcher-kva.example")),
            ("a-b.example.com", name("a-b.example.com")),
            ("1.2.3.4.nip.example", name("1.2.3.4.nip.example")),
        ];
        for (input, want) in cases {
            assert_eq!(parse_host(input).as_ref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn every_ipv4_spelling_is_an_ip_literal() {
        let cases: &[(&str, Host)] = &[
            ("127.0.0.1", v4(127, 0, 0, 1)),
            ("127.1", v4(127, 0, 0, 1)),
            ("127.0.1", v4(127, 0, 0, 1)),
            ("2130706433", v4(127, 0, 0, 1)),
            ("0x7f000001", v4(127, 0, 0, 1)),
            ("0x7f.1", v4(127, 0, 0, 1)),
            ("017700000001", v4(127, 0, 0, 1)),
            ("0177.0.0.01", v4(127, 0, 0, 1)),
            ("0X7F.0.0.1", v4(127, 0, 0, 1)),
            ("169.254.169.254.", v4(169, 254, 169, 254)),
            ("0", v4(0, 0, 0, 0)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_host(input).as_ref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn ipv6_literals_parse_and_zone_ids_are_refused() {
        assert_eq!(
            parse_host("[::1]"),
            Ok(Host::Ip("::1".parse().expect("literal")))
        );
        assert_eq!(
            parse_host("[::ffff:127.0.0.1]"),
            Ok(Host::Ip("::ffff:127.0.0.1".parse().expect("literal")))
        );
        assert_eq!(parse_host("[fe80::1%eth0]"), Err(NameError::ZoneId));
        assert_eq!(parse_host("[fe80::1%25eth0]"), Err(NameError::ZoneId));
        assert!(matches!(parse_host("[::1"), Err(NameError::BadIpv6(_))));
        assert!(matches!(
            parse_host("::1"),
            Err(NameError::BadCharacter(':'))
        ));
    }

    #[test]
    fn malformed_hosts_are_refused() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("user@example.com", NameError::Userinfo),
            ("example.com%00", NameError::BadCharacter('%')),
            ("exa%6dple.com", NameError::BadCharacter('%')),
            ("example.com\\evil.com", NameError::BadCharacter('\\')),
            ("under_score.example.com", NameError::BadCharacter('_')),
            ("example.com:443", NameError::BadCharacter(':')),
            ("exa mple.com", NameError::BadCharacter(' ')),
            ("example.com/path", NameError::BadCharacter('/')),
            (
                "a..example.com",
                NameError::BadLabel("a..example.com".into()),
            ),
            (
                "-a.example.com",
                NameError::BadLabel("-a.example.com".into()),
            ),
            ("example.com..", NameError::BadLabel("example.com..".into())),
            ("256.0.0.1", NameError::BadIpv4("256.0.0.1".into())),
            ("1.2.3.4.5", NameError::BadIpv4("1.2.3.4.5".into())),
            ("08.0.0.1", NameError::BadIpv4("08.0.0.1".into())),
            ("4294967296", NameError::BadIpv4("4294967296".into())),
        ];
        for (input, want) in cases {
            assert_eq!(parse_host(input).as_ref(), Err(want), "{input:?}");
        }
    }
}
