//! Decisions as pure functions of a destination and the policy: no sockets,
//! no clocks. The proxy asks twice: once about the name and port the client
//! wrote (before any DNS lookup, so a denied name is never resolved), and
//! once about every address the name resolved to (the SSRF guard).

use std::net::IpAddr;

use crate::ipclass::{classify, AddrClass};
use crate::name::{Host, NameError};
use crate::policy::{HostRule, NetworkPolicy};

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the connection may go ahead.
    pub allow: bool,
    /// The rule that decided, e.g. `allow:*.example.com`, `deny:evil.example`,
    /// `default-deny`, `cidr:127.0.0.0/8`, `address-class:loopback`.
    pub rule: String,
    /// A stable machine-readable reason (sent as `X-Airlock-Deny`).
    pub reason: &'static str,
}

impl Decision {
    fn allow(rule: String) -> Self {
        Self {
            allow: true,
            rule,
            reason: "allowed",
        }
    }

    fn deny(rule: impl Into<String>, reason: &'static str) -> Self {
        Self {
            allow: false,
            rule: rule.into(),
            reason,
        }
    }

    /// The decision for a host that failed normalization.
    pub fn bad_name(_err: &NameError) -> Self {
        Self::deny("name-syntax", "bad-name")
    }
}

/// May the client reach `host:port`? Decided before resolving anything.
pub fn decide_target(policy: &NetworkPolicy, host: &Host, port: u16) -> Decision {
    let port_ok = policy.default_ports().contains(&port);
    match host {
        Host::Ip(ip) => match policy.allow_cidr.iter().find(|c| c.contains(*ip)) {
            Some(cidr) if port_ok => Decision::allow(format!("cidr:{cidr}")),
            Some(_) => Decision::deny("ports", "port-not-allowed"),
            None => Decision::deny("ip-literal", "ip-literal"),
        },
        Host::Name(name) => {
            if let Some(d) = policy.deny.iter().find(|d| d.0.matches(name)) {
                return Decision::deny(format!("deny:{}", d.0), "denied-by-rule");
            }
            let mut name_matched = false;
            for rule in policy.allow.iter().filter(|r| r.matches(name)) {
                name_matched = true;
                let ok = match rule.port {
                    Some(p) => p == port,
                    None => port_ok,
                };
                if ok {
                    return Decision::allow(format!("allow:{rule}"));
                }
            }
            if name_matched {
                Decision::deny("ports", "port-not-allowed")
            } else {
                Decision::deny("default-deny", "not-allowlisted")
            }
        }
    }
}

/// In report mode, a name-level denial (not on the allowlist, denied, wrong
/// port, IP literal) becomes an allow whose reason says what enforcing
/// would have done; everything else is unchanged. Address checks (the SSRF
/// guard) run afterwards as usual.
pub fn in_report_mode(policy: &NetworkPolicy, d: Decision) -> Decision {
    if !policy.report_only || d.allow {
        return d;
    }
    let reason = match d.reason {
        "not-allowlisted" => "report:not-allowlisted",
        "denied-by-rule" => "report:denied-by-rule",
        "port-not-allowed" => "report:port-not-allowed",
        "ip-literal" => "report:ip-literal",
        _ => return d,
    };
    Decision {
        allow: true,
        rule: d.rule,
        reason,
    }
}

/// May the proxy dial `ip`, which an allowed name resolved to? Only public
/// addresses, unless a CIDR in the policy names the address.
pub fn decide_address(policy: &NetworkPolicy, ip: IpAddr) -> Decision {
    if let Some(cidr) = policy.allow_cidr.iter().find(|c| c.contains(ip)) {
        return Decision::allow(format!("cidr:{cidr}"));
    }
    match classify(ip) {
        AddrClass::Public => Decision::allow("public-address".to_string()),
        class => Decision::deny(format!("address-class:{}", class.name()), "address-class"),
    }
}

/// The verdict on one HTTP request the proxy can see (plain HTTP, or
/// inside an intercepted tunnel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestDecision {
    /// Allowed or not, by which rule, and why.
    pub decision: Decision,
    /// The HTTP status of a refusal: 403 for policy, 400 for a path whose
    /// meaning is ambiguous.
    pub status: u16,
    /// The path to forward: in normal form when the host has rules (the
    /// form the rules were matched on), else exactly as the client sent it.
    pub path: String,
}

/// The method/path rules that apply to `host` (none for IP literals).
pub fn rules_for<'p>(policy: &'p NetworkPolicy, host: &Host) -> Vec<&'p HostRule> {
    match host {
        Host::Name(name) => policy
            .rules
            .iter()
            .filter(|r| r.host.matches(name))
            .collect(),
        Host::Ip(_) => Vec::new(),
    }
}

/// May `method path` go to `host:port`? The destination is decided as by
/// [`decide_target`] (in report mode, as [`in_report_mode`] says); then,
/// if the host has `[[network.rules]]`, the path is put in normal form
/// ([`crate::reqpath::normalize`]; ambiguous forms get 400) and must be
/// admitted by one of them. `policy explain --url` and the proxy both ask
/// this function, so they cannot disagree.
pub fn decide_request(
    policy: &NetworkPolicy,
    host: &Host,
    port: u16,
    method: &str,
    raw_path: &str,
) -> RequestDecision {
    let target = in_report_mode(policy, decide_target(policy, host, port));
    let refuse = |decision: Decision, status: u16| RequestDecision {
        decision,
        status,
        path: raw_path.to_string(),
    };
    if !target.allow {
        return refuse(target, 403);
    }
    let rules = rules_for(policy, host);
    if rules.is_empty() {
        return RequestDecision {
            decision: target,
            status: 200,
            path: raw_path.to_string(),
        };
    }
    let path = match crate::reqpath::normalize(raw_path) {
        Ok(p) => p,
        Err(e) => return refuse(Decision::deny("path-syntax", e.reason()), 400),
    };
    if !rules.iter().any(|r| r.admits(method, &path)) {
        return refuse(
            Decision::deny(format!("rules:{host}"), "method-or-path-not-allowed"),
            403,
        );
    }
    RequestDecision {
        decision: target,
        status: 200,
        path,
    }
}

/// Headers that frameworks read as the request's real method (Express's
/// method-override, Google and Microsoft APIs, Symfony, Rails middleware).
pub const METHOD_OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The methods a request asks for besides its own: the values of
/// [`METHOD_OVERRIDE_HEADERS`] and of a `_method` query parameter.
pub fn method_overrides<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    query: Option<&'a str>,
) -> Vec<String> {
    let mut out: Vec<String> = headers
        .filter(|(name, _)| {
            METHOD_OVERRIDE_HEADERS
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
        })
        .map(|(_, v)| String::from_utf8_lossy(v).trim().to_string())
        .collect();
    for kv in query.unwrap_or("").split('&') {
        if let Some((k, v)) = kv.split_once('=') {
            if k.eq_ignore_ascii_case("_method") || k.eq_ignore_ascii_case("%5fmethod") {
                out.push(v.to_string());
            }
        }
    }
    out
}

/// Under method/path rules, a request that asks for another method
/// through an override (see [`method_overrides`]) needs a rule admitting
/// that method too: a `GET`-only rule does not let `GET` with
/// `X-HTTP-Method-Override: DELETE` through. `path` is the normalised
/// path [`decide_request`] returned.
pub fn decide_overrides(
    policy: &NetworkPolicy,
    host: &Host,
    path: &str,
    overrides: &[String],
) -> Option<Decision> {
    let rules = rules_for(policy, host);
    if rules.is_empty() {
        return None;
    }
    overrides
        .iter()
        .find(|m| !rules.iter().any(|r| r.admits(m, path)))
        .map(|_| Decision::deny(format!("rules:{host}"), "method-override-not-allowed"))
}

/// How a tunnel (CONNECT or SOCKS5) to an allowed host is carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carriage {
    /// Bytes are relayed unseen.
    Opaque,
    /// TLS is terminated with the session CA and every request inside is
    /// decided by [`decide_request`].
    Intercept,
    /// Refused: the host needs every request seen and this tunnel cannot
    /// show them.
    Refuse(Decision),
}

/// How the proxy must carry a tunnel to `host` (already allowed by
/// [`decide_target`]). A host with method/path rules is never reached
/// through an opaque tunnel: CONNECT is intercepted, or refused when the
/// proxy has no CA; SOCKS5 (whose client may speak anything, TLS with its
/// own trust or plain text) is refused. A credential alone needs
/// interception only to be applied, so without it the tunnel stays
/// opaque and carries no secret.
pub fn decide_tunnel(
    policy: &NetworkPolicy,
    host: &Host,
    has_credential: bool,
    can_intercept: bool,
    socks: bool,
) -> Carriage {
    let has_rules = !rules_for(policy, host).is_empty();
    if has_rules && socks {
        return Carriage::Refuse(Decision::deny(
            format!("rules:{host}"),
            "rules-need-inspection",
        ));
    }
    if has_rules && !can_intercept {
        return Carriage::Refuse(Decision::deny(
            format!("rules:{host}"),
            "rules-need-interception",
        ));
    }
    if (has_rules || has_credential) && can_intercept && !socks {
        return Carriage::Intercept;
    }
    Carriage::Opaque
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::parse_host;

    fn policy(toml: &str) -> NetworkPolicy {
        NetworkPolicy::from_toml(toml).expect("test policy")
    }

    fn decide(p: &NetworkPolicy, host: &str, port: u16) -> (bool, String) {
        match parse_host(host) {
            Ok(h) => {
                let d = decide_target(p, &h, port);
                (d.allow, d.rule)
            }
            Err(e) => {
                let d = Decision::bad_name(&e);
                (d.allow, d.rule)
            }
        }
    }

    #[test]
    fn names_are_decided_by_the_table() {
        let p = policy(
            r#"[network]
            allow = ["api.example.com", "*.example.org", "git.example.net:8443"]
            deny = ["evil.example.org"]
            "#,
        );
        let cases: &[(&str, u16, bool, &str)] = &[
            ("api.example.com", 443, true, "allow:api.example.com"),
            ("API.EXAMPLE.COM.", 443, true, "allow:api.example.com"),
            ("api.example.com", 80, true, "allow:api.example.com"),
            ("api.example.com", 22, false, "ports"),
            ("www.example.com", 443, false, "default-deny"),
            ("example.org", 443, false, "default-deny"),
            ("a.example.org", 443, true, "allow:*.example.org"),
            ("badexample.org", 443, false, "default-deny"),
            ("evil.example.org", 443, false, "deny:evil.example.org"),
            ("EVIL.example.org.", 443, false, "deny:evil.example.org"),
            ("Evil.Example.Org", 80, false, "deny:evil.example.org"),
            ("git.example.net", 8443, true, "allow:git.example.net:8443"),
            ("git.example.net", 443, false, "ports"),
            ("127.0.0.1", 443, false, "ip-literal"),
            ("2130706433", 443, false, "ip-literal"),
            ("[::1]", 443, false, "ip-literal"),
            ("[::ffff:127.0.0.1]", 443, false, "ip-literal"),
            ("user@api.example.com", 443, false, "name-syntax"),
            ("api.example.com%2e", 443, false, "name-syntax"),
        ];
        for (host, port, allow, rule) in cases {
            assert_eq!(
                decide(&p, host, *port),
                (*allow, rule.to_string()),
                "{host}:{port}"
            );
        }
    }

    #[test]
    fn ip_literals_need_an_explicit_cidr() {
        let p = policy(
            r#"[network]
            allow_cidr = ["127.0.0.0/8"]
            ports = [80, 8080]
            "#,
        );
        assert_eq!(
            decide(&p, "127.0.0.1", 8080),
            (true, "cidr:127.0.0.0/8".into())
        );
        assert_eq!(decide(&p, "0x7f.1", 80), (true, "cidr:127.0.0.0/8".into()));
        assert_eq!(
            decide(&p, "[::ffff:127.0.0.1]", 80),
            (true, "cidr:127.0.0.0/8".into())
        );
        assert_eq!(decide(&p, "127.0.0.1", 443), (false, "ports".into()));
        assert_eq!(decide(&p, "10.0.0.1", 80), (false, "ip-literal".into()));
        assert_eq!(decide(&p, "[::1]", 80), (false, "ip-literal".into()));
    }

    #[test]
    fn report_mode_lets_name_denials_through_and_says_so() {
        let mut p = policy("[network]\nallow = [\"api.example.com\"]\n");
        let deny = decide_target(&p, &Host::Name("evil.example.com".into()), 443);
        assert_eq!(
            in_report_mode(&p, deny.clone()),
            deny,
            "enforcing by default"
        );
        p.report_only = true;
        let d = in_report_mode(&p, deny);
        assert!(d.allow);
        assert_eq!(
            (d.rule.as_str(), d.reason),
            ("default-deny", "report:not-allowlisted")
        );
        let bad = Decision::bad_name(&crate::name::NameError::Empty);
        assert!(
            !in_report_mode(&p, bad).allow,
            "malformed names stay refused"
        );
    }

    const RULES: &str = r#"[network]
        allow = ["rules.example.com", "*.open.example.com", "free.example.com"]
        allow_cidr = ["127.0.0.0/8"]
        [[network.rules]]
        host = "rules.example.com"
        methods = ["GET"]
        paths = ["/v1/*", "/health"]
        [[network.rules]]
        host = "*.open.example.com"
        paths = ["/pub/*"]
        "#;

    #[test]
    fn requests_are_judged_by_method_and_normalised_path() {
        let p = policy(RULES);
        // (host, method, path, status, rule or forwarded path)
        let cases: &[(&str, &str, &str, u16, &str)] = &[
            (
                "rules.example.com",
                "GET",
                "/v1/messages",
                200,
                "/v1/messages",
            ),
            ("rules.example.com", "GET", "/v1/%7euser", 200, "/v1/~user"),
            ("rules.example.com", "GET", "/v1/./x", 200, "/v1/x"),
            ("rules.example.com", "GET", "/health", 200, "/health"),
            (
                "rules.example.com",
                "DELETE",
                "/v1/x",
                403,
                "rules:rules.example.com",
            ),
            (
                "rules.example.com",
                "GET",
                "/admin/secret.txt",
                403,
                "rules:rules.example.com",
            ),
            (
                "rules.example.com",
                "GET",
                "/v1/../admin/secret.txt",
                403,
                "rules:rules.example.com",
            ),
            (
                "rules.example.com",
                "GET",
                "/v1/%2e%2e/admin/secret.txt",
                403,
                "rules:rules.example.com",
            ),
            (
                "rules.example.com",
                "GET",
                "/v1/..%2fadmin/secret.txt",
                400,
                "path-syntax",
            ),
            (
                "rules.example.com",
                "GET",
                "/v1/..%5cadmin",
                400,
                "path-syntax",
            ),
            ("rules.example.com", "GET", "/v1/x%00", 400, "path-syntax"),
            ("rules.example.com", "GET", "/v1/%zz", 400, "path-syntax"),
            (
                "rules.example.com",
                "GET",
                "/v1/..;/admin",
                400,
                "path-syntax",
            ),
            ("rules.example.com", "GET", "/health/../v1/x", 200, "/v1/x"),
            ("a.open.example.com", "POST", "/pub/x", 200, "/pub/x"),
            (
                "a.open.example.com",
                "POST",
                "/pub/../priv",
                403,
                "rules:a.open.example.com",
            ),
            // No rules: forwarded as sent, whatever it holds.
            (
                "free.example.com",
                "DELETE",
                "/a/../b%2f",
                200,
                "/a/../b%2f",
            ),
            ("evil.example.com", "GET", "/v1/x", 403, "default-deny"),
            ("127.0.0.1", "GET", "/anything", 200, "/anything"),
        ];
        for (host, method, path, status, want) in cases {
            let h = parse_host(host).expect("host");
            let v = decide_request(&p, &h, 443, method, path);
            let got = if v.decision.allow {
                (200, v.path.clone())
            } else {
                (v.status, v.decision.rule.clone())
            };
            assert_eq!(got, (*status, want.to_string()), "{method} {host}{path}");
        }
    }

    #[test]
    fn method_overrides_need_a_rule_for_the_overriding_method() {
        let p = policy(RULES);
        let h = |s: &str| parse_host(s).expect("host");
        fn over<'a>(hdrs: &'a [(&'a str, &'a str)], q: Option<&'a str>) -> Vec<String> {
            method_overrides(hdrs.iter().map(|(k, v)| (*k, v.as_bytes())), q)
        }
        assert_eq!(
            over(
                &[("X-HTTP-Method-Override", "DELETE"), ("accept", "x")],
                Some("a=1&_method=PUT")
            ),
            vec!["DELETE".to_string(), "PUT".to_string()]
        );
        // (host, headers, query, admitted)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>, bool);
        let cases: &[Case] = &[
            ("rules.example.com", &[], None, true),
            (
                "rules.example.com",
                &[("x-http-method-override", "DELETE")],
                None,
                false,
            ),
            (
                "rules.example.com",
                &[("X-HTTP-Method", "delete")],
                None,
                false,
            ),
            (
                "rules.example.com",
                &[("x-method-override", "GET")],
                None,
                true,
            ),
            ("rules.example.com", &[], Some("_method=DELETE"), false),
            ("rules.example.com", &[], Some("x=_method"), true),
            (
                "free.example.com",
                &[("x-http-method-override", "DELETE")],
                None,
                true,
            ),
        ];
        for (host, hdrs, q, ok) in cases {
            let o = over(hdrs, *q);
            let d = decide_overrides(&p, &h(host), "/v1/x", &o);
            assert_eq!(d.is_none(), *ok, "{host} {hdrs:?} {q:?}");
        }
    }

    #[test]
    fn hosts_with_rules_are_never_tunnelled_opaquely() {
        let p = policy(RULES);
        let h = |s: &str| parse_host(s).expect("host");
        let refused = |c: Carriage| match c {
            Carriage::Refuse(d) => d.reason,
            other => panic!("{other:?}"),
        };
        // (host, credential, can intercept, socks) -> carriage
        assert_eq!(
            decide_tunnel(&p, &h("rules.example.com"), false, true, false),
            Carriage::Intercept
        );
        assert_eq!(
            refused(decide_tunnel(
                &p,
                &h("rules.example.com"),
                false,
                false,
                false
            )),
            "rules-need-interception"
        );
        assert_eq!(
            refused(decide_tunnel(&p, &h("rules.example.com"), true, true, true)),
            "rules-need-inspection"
        );
        assert_eq!(
            refused(decide_tunnel(
                &p,
                &h("x.open.example.com"),
                false,
                true,
                true
            )),
            "rules-need-inspection"
        );
        assert_eq!(
            decide_tunnel(&p, &h("free.example.com"), true, true, false),
            Carriage::Intercept
        );
        assert_eq!(
            decide_tunnel(&p, &h("free.example.com"), true, false, false),
            Carriage::Opaque
        );
        assert_eq!(
            decide_tunnel(&p, &h("free.example.com"), true, true, true),
            Carriage::Opaque,
            "SOCKS5 to a credential host carries no secret"
        );
        // allow_cidr: an IP literal has no name, so no rules: allowing a
        // CIDR allows everything served in it (README says so).
        assert_eq!(
            decide_tunnel(&p, &h("127.0.0.1"), false, true, false),
            Carriage::Opaque
        );
    }

    #[test]
    fn resolved_addresses_must_be_public_unless_a_cidr_allows_them() {
        let none = NetworkPolicy::default();
        let lo = policy("[network]\nallow_cidr = [\"127.0.0.0/8\"]\n");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(decide_address(&none, ip("93.184.215.14")).allow);
        assert_eq!(
            decide_address(&none, ip("127.0.0.1")).rule,
            "address-class:loopback"
        );
        assert_eq!(
            decide_address(&none, ip("169.254.169.254")).rule,
            "address-class:metadata"
        );
        assert_eq!(
            decide_address(&none, ip("::ffff:10.0.0.1")).rule,
            "address-class:private"
        );
        assert!(decide_address(&lo, ip("127.0.0.1")).allow);
        assert!(!decide_address(&lo, ip("10.0.0.1")).allow);
    }
}
