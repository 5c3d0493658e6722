//! The network policy as data: domain patterns, denied patterns, allowed
//! CIDRs and ports, parsed from the profile's `[network]` table or the
//! command line. Every pattern is validated when it is loaded, so a bad one
//! names its file, line and column (through `toml`'s spans) or its flag.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use crate::name::{parse_host, Host};

/// Ports allowed when an entry names none.
pub const DEFAULT_PORTS: &[u16] = &[80, 443];

/// A domain pattern: `example.com` (exactly that name) or `*.example.com`
/// (its subdomains only, never the apex), optionally with `:PORT` on exact
/// names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRule {
    /// The pattern as normalized (for rule ids and `policy show`).
    pub pattern: String,
    matcher: Matcher,
    /// The one port this entry allows, if it names one.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Exact(String),
    Subdomains(String),
}

/// Why a pattern or CIDR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// `*`, `*.com`, `a.*.com`, `*example.com`...
    #[error("'{0}' is too broad or malformed: use 'example.com' or '*.example.com' (a wildcard needs at least two labels after '*.')")]
    Wildcard(String),
    /// `https://example.com`, `example.com/path`.
    #[error("'{0}' must be a bare host name, without scheme, path or userinfo")]
    NotAHost(String),
    /// A port that does not parse, or a port on a wildcard or deny entry.
    #[error("'{0}': {1}")]
    Port(String, &'static str),
    /// The name itself is invalid.
    #[error("'{0}': {1}")]
    Name(String, String),
    /// An IP address in a domain list.
    #[error("'{0}' is an IP address: allow addresses with allow_cidr (--allow-cidr)")]
    Address(String),
    /// A CIDR that does not parse.
    #[error("'{0}' is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8)")]
    Cidr(String),
}

impl DomainRule {
    /// Parses and validates a pattern.
    pub fn parse(raw: &str) -> Result<Self, PatternError> {
        let s = raw.trim();
        if s.contains("://") || s.contains('/') || s.contains('@') || s.contains('?') {
            return Err(PatternError::NotAHost(raw.to_string()));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or(PatternError::Port(raw.to_string(), "not a port (1-65535)"))?;
                (h, Some(port))
            }
            None => (s, None),
        };
        if let Some(suffix) = host.strip_prefix("*.") {
            if port.is_some() {
                return Err(PatternError::Port(
                    raw.to_string(),
                    "ports go on exact names only; list the ports in 'ports'",
                ));
            }
            let name = normalized_name(raw, suffix)?;
            if name.split('.').count() < 2 {
                return Err(PatternError::Wildcard(raw.to_string()));
            }
            return Ok(Self {
                pattern: format!("*.{name}"),
                matcher: Matcher::Subdomains(name),
                port: None,
            });
        }
        if host.contains('*') {
            return Err(PatternError::Wildcard(raw.to_string()));
        }
        let name = normalized_name(raw, host)?;
        let pattern = match port {
            Some(p) => format!("{name}:{p}"),
            None => name.clone(),
        };
        Ok(Self {
            pattern,
            matcher: Matcher::Exact(name),
            port,
        })
    }

    /// Does this pattern cover `name` (already normalized)?
    pub fn matches(&self, name: &str) -> bool {
        match &self.matcher {
            Matcher::Exact(n) => name == n,
            Matcher::Subdomains(s) => name
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

fn normalized_name(raw: &str, host: &str) -> Result<String, PatternError> {
    if host.contains('*') {
        return Err(PatternError::Wildcard(raw.to_string()));
    }
    match parse_host(host) {
        Ok(Host::Name(n)) => Ok(n),
        Ok(Host::Ip(_)) => Err(PatternError::Address(raw.to_string())),
        Err(e) => Err(PatternError::Name(raw.to_string(), e.to_string())),
    }
}

impl TryFrom<String> for DomainRule {
    type Error = PatternError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl fmt::Display for DomainRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// A denied pattern: like [`DomainRule`], but always for every port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyRule(pub DomainRule);

impl DenyRule {
    /// Parses a deny pattern; ports are refused (a deny covers all ports).
    pub fn parse(raw: &str) -> Result<Self, PatternError> {
        let rule = DomainRule::parse(raw)?;
        if rule.port.is_some() {
            return Err(PatternError::Port(
                raw.to_string(),
                "a deny entry covers every port; drop the port",
            ));
        }
        Ok(Self(rule))
    }
}

impl TryFrom<String> for DenyRule {
    type Error = PatternError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

/// An address range the policy allows explicitly (loopback, private...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a single address.
    pub fn parse(raw: &str) -> Result<Self, PatternError> {
        let err = || PatternError::Cidr(raw.to_string());
        let (addr, prefix) = match raw.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| err())?)),
            None => (raw.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(err());
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(prefix)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(prefix)).into()),
        };
        Ok(Self { addr, prefix })
    }

    /// Does the range contain `ip` (compared after `to_canonical()`)?
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl TryFrom<String> for Cidr {
    type Error = PatternError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The `[network]` table of a profile, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Allowed domain patterns.
    pub allow: Vec<DomainRule>,
    /// Denied domain patterns; a deny always wins.
    pub deny: Vec<DenyRule>,
    /// Address ranges that may be dialled although they are not public
    /// (and that IP literals must fall in to be allowed at all).
    pub allow_cidr: Vec<Cidr>,
    /// Ports for entries that name none (default 80 and 443).
    pub ports: Option<Vec<u16>>,
    /// Method and path rules for hosts the proxy intercepts.
    pub rules: Vec<HostRule>,
    /// Report mode (`--network-mode report`): names the allowlist would
    /// refuse go through (the SSRF guard, rules and the leak guard still
    /// apply) and are logged as `report:<reason>`, to learn a profile.
    pub report_only: bool,
}

/// Which requests an intercepted host accepts: requests matching no rule
/// of a host that has rules are denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// The host (exact name or `*.` pattern).
    pub host: DomainRule,
    /// Allowed methods, uppercase; empty means any.
    pub methods: Vec<String>,
    /// Allowed path prefixes (`/v1/` or an exact `/v1/messages`; a trailing
    /// `*` is a prefix); empty means any.
    pub paths: Vec<String>,
}

impl HostRule {
    /// Does this rule admit `method` and `path` (without the query)?
    pub fn admits(&self, method: &str, path: &str) -> bool {
        let method_ok =
            self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method));
        let path_ok = self.paths.is_empty()
            || self.paths.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == p,
            });
        method_ok && path_ok
    }
}

impl NetworkPolicy {
    /// The ports an entry without `:PORT` allows.
    pub fn default_ports(&self) -> &[u16] {
        self.ports.as_deref().unwrap_or(DEFAULT_PORTS)
    }

    /// Reads the `[network]` table of a TOML policy file; other tables are
    /// left to their own readers.
    pub fn from_file(path: &Path) -> Result<Self, PolicyFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyFileError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::from_toml(&text).map_err(|message| PolicyFileError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses the `[network]` table out of a whole policy document. Errors
    /// read `LINE:COLUMN: what`.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        crate::config::ProxyPolicy::from_toml(text).map(|p| p.network)
    }
}

/// A policy file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// Unreadable.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Invalid.
    #[error("{path}:{message}")]
    Parse {
        /// The file.
        path: String,
        /// `LINE:COLUMN: what`.
        message: String,
    },
}

/// `LINE:COL: message` for a byte offset into `text` (1-based).
pub fn at(text: &str, offset: Option<usize>, what: &str) -> String {
    match offset {
        Some(offset) => {
            let before = &text[..offset.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{line}:{col}: {what}")
        }
        None => what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_subdomains_only() {
        let rule = DomainRule::parse("*.example.com").expect("valid");
        for (name, want) in [
            ("api.example.com", true),
            ("a.b.example.com", true),
            ("example.com", false),
            ("badexample.com", false),
            ("example.com.evil.org", false),
            ("xexample.com", false),
        ] {
            assert_eq!(rule.matches(name), want, "{name}");
        }
        let exact = DomainRule::parse("Example.COM.").expect("valid");
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("api.example.com"));
    }

    #[test]
    fn broad_or_malformed_patterns_are_refused() {
        for bad in [
            "*",
            "*.com",
            "*.",
            "**.example.com",
            "*example.com",
            "api.*.example.com",
            "https://example.com",
            "example.com/path",
            "user@example.com",
            "example.com:0",
            "example.com:99999",
            "*.example.com:443",
            "127.0.0.1",
            "[::1]",
            "exa_mple.com",
            "",
        ] {
            assert!(DomainRule::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            DomainRule::parse("api.example.com:8443")
                .expect("valid")
                .port,
            Some(8443)
        );
        assert!(DenyRule::parse("evil.example.com:443").is_err());
    }

    #[test]
    fn cidrs_contain_canonical_addresses() {
        let lo = Cidr::parse("127.0.0.0/8").expect("valid");
        assert!(lo.contains("127.9.9.9".parse().expect("ip")));
        assert!(lo.contains("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!lo.contains("128.0.0.1".parse().expect("ip")));
        let host = Cidr::parse("10.1.2.3").expect("valid");
        assert_eq!(host.prefix, 32);
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com/8").is_err());
        let v6 = Cidr::parse("fd00::/8").expect("valid");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        assert!(!v6.contains("10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn bad_patterns_in_a_file_name_line_and_column() {
        let text = "[network]\nallow = [\"api.example.com\",\n  \"*.com\"]\n";
        let err = NetworkPolicy::from_toml(text).unwrap_err();
        assert!(err.starts_with("3:3:"), "{err}");
        assert!(err.contains("too broad"), "{err}");
        let err = NetworkPolicy::from_toml("[network]\nalow = []\n").unwrap_err();
        assert!(err.starts_with("2:1:"), "{err}");
    }
}
