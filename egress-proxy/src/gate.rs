//! The one path from "the sandbox asked for host:port" to a connected
//! upstream socket, shared by HTTP, CONNECT and SOCKS5: normalize, decide
//! (before any DNS), resolve, check addresses, dial.

use tokio::net::TcpStream;

use crate::audit::Event;
use crate::decide::{decide_target, in_report_mode, Decision};
use crate::name::parse_host;
use crate::proxy::Proxy;
use crate::resolve::{dial, DialError};

/// Why a destination was not reached.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The policy said no.
    Policy(Decision),
    /// Allowed, but it could not be reached.
    Unreachable {
        /// Machine-readable reason: `dns-failure`, `connect-failed`, `timeout`.
        reason: &'static str,
        /// Human-readable detail.
        detail: String,
    },
}

impl Refusal {
    /// HTTP status for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Policy(_) => 403,
            Refusal::Unreachable { reason, .. } if *reason == "timeout" => 504,
            Refusal::Unreachable { .. } => 502,
        }
    }

    /// The `X-Airlock-Deny` / `X-Airlock-Error` value.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Policy(d) => d.reason,
            Refusal::Unreachable { reason, .. } => reason,
        }
    }

    /// One line for the response body.
    pub fn message(&self, target: &str) -> String {
        match self {
            Refusal::Policy(d) => format!(
                "airlock: {target} denied by rule {} ({})",
                d.rule,
                explain(d.reason)
            ),
            Refusal::Unreachable { detail, .. } => {
                format!("airlock: {target} is allowed but unreachable: {detail}")
            }
        }
    }

    /// SOCKS5 reply code (RFC 1928 section 6).
    pub fn socks_reply(&self) -> u8 {
        match self {
            Refusal::Policy(_) => 0x02,
            Refusal::Unreachable { reason, .. } if *reason == "connect-failed" => 0x05,
            Refusal::Unreachable { .. } => 0x04,
        }
    }
}

fn explain(reason: &str) -> &'static str {
    match reason {
        "not-allowlisted" => "the host is not in the allowlist",
        "denied-by-rule" => "the host is explicitly denied",
        "port-not-allowed" => "the port is not allowed for this host",
        "ip-literal" => "IP addresses are refused unless a CIDR allows them",
        "address-class" => "the name resolves to a non-public address",
        "bad-name" => "the host name is malformed",
        "host-mismatch" => "the Host header does not match the request target",
        "upgrade-refused" => "only WebSocket upgrades are allowed",
        "not-a-proxy-request" => "expected an absolute-form proxy request",
        "credential-leak" => "the request carries a credential bound to other hosts",
        "sni-mismatch" => "the TLS server name is not the CONNECT host",
        "method-or-path-not-allowed" => "no rule for this host allows this method and path",
        "connection-limit" => "too many connections from this sandbox",
        "rules-need-interception" => {
            "the host has method/path rules and this proxy has no CA to inspect its requests"
        }
        "rules-need-inspection" => "the host has method/path rules, which SOCKS5 cannot show",
        "method-override-not-allowed" => "no rule for this host allows the overriding method",
        "bad-port" => "the port is not a number from 1 to 65535",
        r if r.starts_with("path-") => {
            "the path is ambiguous (encoded '/' or '\\', NUL, a bad or double escape, '..;')"
        }
        _ => "denied",
    }
}

/// Decides on `raw_host:port` and, if allowed, connects. Fills in the
/// event's host, port, address and decision.
pub async fn open(
    proxy: &Proxy,
    raw_host: &str,
    port: u16,
    event: &mut Event,
) -> Result<TcpStream, Refusal> {
    event.host = raw_host.to_string();
    event.port = port;
    // A name is a way out before any connection: its DNS query leaves.
    // No secret or placeholder may be spelled in it, whatever the policy
    // says (report mode included), dots removed so a split one is whole.
    if let Some(c) = proxy
        .interception
        .as_ref()
        .and_then(|i| i.credentials.leaked_in_name(raw_host))
    {
        let name = c.spec.name.clone();
        let d = Decision {
            allow: false,
            rule: format!("credential:{name}"),
            reason: "credential-leak",
        };
        event.host = "[redacted]".into();
        event.credential = Some(name);
        event.decision = Some(d.clone());
        return Err(Refusal::Policy(d));
    }
    let host = match parse_host(raw_host) {
        Ok(h) => h,
        Err(e) => {
            let d = Decision::bad_name(&e);
            event.decision = Some(d.clone());
            event.error = Some(e.to_string());
            return Err(Refusal::Policy(d));
        }
    };
    event.host = host.to_string();
    let decision = in_report_mode(&proxy.policy, decide_target(&proxy.policy, &host, port));
    event.decision = Some(decision.clone());
    if !decision.allow {
        return Err(Refusal::Policy(decision));
    }
    match dial(&proxy.policy, &proxy.limits, &host, port).await {
        Ok((stream, addr)) => {
            event.ip = Some(addr.ip());
            Ok(stream)
        }
        Err(DialError::Denied(d, addr)) => {
            event.ip = Some(addr.ip());
            event.decision = Some(d.clone());
            Err(Refusal::Policy(d))
        }
        Err(e) => {
            let (reason, detail) = match e {
                DialError::Dns(m) => ("dns-failure", format!("cannot resolve: {m}")),
                DialError::Connect(addr, err) => {
                    event.ip = Some(addr.ip());
                    ("connect-failed", format!("connect to {addr}: {err}"))
                }
                DialError::Timeout => ("timeout", "timed out".to_string()),
                DialError::Denied(..) => unreachable!("handled above"),
            };
            event.error = Some(detail.clone());
            Err(Refusal::Unreachable { reason, detail })
        }
    }
}
