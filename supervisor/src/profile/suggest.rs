//! `sandbox policy suggest AUDIT.jsonl`: turns the destinations an agent
//! was denied into a `[network] allow` list a security team can review.
//! Names denied only for not being allowlisted are suggested (never those a
//! deny rule or the SSRF guard refused); subdomains of one parent are
//! grouped as `*.parent`; `*` and IP literals are never emitted, and no
//! wildcard is suggested over what looks like a public suffix.

use std::collections::BTreeMap;

use egress_proxy::name::{parse_host, Host};
use egress_proxy::policy::{DomainRule, DEFAULT_PORTS};
use serde_json::Value;

/// What the log says, per `(name, port)`: how many denials.
pub type Denials = BTreeMap<(String, u16), usize>;

/// Reads the denials worth suggesting from JSON lines; malformed lines are
/// counted and skipped.
pub fn read(text: &str) -> (Denials, usize) {
    let mut out = Denials::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            bad += 1;
            continue;
        };
        let decision = v.pointer("/airlock/decision").and_then(Value::as_str);
        let reason = v.pointer("/airlock/reason").and_then(Value::as_str);
        // Enforced denials, and what report mode let through.
        let denied = decision == Some("deny")
            && matches!(reason, Some("not-allowlisted" | "port-not-allowed"));
        let reported = matches!(
            reason,
            Some("report:not-allowlisted" | "report:port-not-allowed")
        );
        if !denied && !reported {
            continue;
        }
        let (Some(domain), Some(port)) = (
            v.pointer("/destination/domain").and_then(Value::as_str),
            v.pointer("/destination/port").and_then(Value::as_u64),
        ) else {
            continue;
        };
        let Ok(Host::Name(name)) = parse_host(domain) else {
            continue;
        };
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        *out.entry((name, port)).or_default() += 1;
    }
    (out, bad)
}

/// `co.uk`, `com.au`: a parent under which unrelated parties register names.
fn looks_like_public_suffix(parent: &str) -> bool {
    let labels: Vec<&str> = parent.split('.').collect();
    labels.len() < 2
        || (labels.len() == 2
            && labels[1].len() == 2
            && [
                "co", "com", "net", "org", "gov", "edu", "ac", "ne", "or", "go",
            ]
            .contains(&labels[0]))
}

/// The suggested entries with a comment each, in order.
pub fn suggest(denials: &Denials) -> Vec<(String, String)> {
    let mut by_parent: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut default_port_names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for ((name, port), n) in denials {
        if DEFAULT_PORTS.contains(port) {
            *default_port_names.entry(name).or_default() += n;
        } else if DomainRule::parse(&format!("{name}:{port}")).is_ok() {
            out.push((format!("{name}:{port}"), format!("{n} denied")));
        }
    }
    for name in default_port_names.keys() {
        if let Some((_, parent)) = name.split_once('.') {
            if parent.contains('.') && !looks_like_public_suffix(parent) {
                by_parent.entry(parent.to_string()).or_default().push(name);
            }
        }
    }
    let mut grouped: BTreeMap<&str, String> = BTreeMap::new();
    for (parent, names) in &by_parent {
        if names.len() >= 2 && DomainRule::parse(&format!("*.{parent}")).is_ok() {
            for n in names {
                grouped.insert(n, parent.clone());
            }
        }
    }
    let mut groups: BTreeMap<String, (Vec<&str>, usize)> = BTreeMap::new();
    for (name, n) in &default_port_names {
        match grouped.get(name) {
            Some(parent) => {
                let g = groups.entry(format!("*.{parent}")).or_default();
                g.0.push(name);
                g.1 += n;
            }
            None if DomainRule::parse(name).is_ok() => {
                out.push((name.to_string(), format!("{n} denied")));
            }
            None => {}
        }
    }
    for (pattern, (names, n)) in groups {
        out.push((pattern, format!("{} ({n} denied)", names.join(", "))));
    }
    out.sort();
    out
}

/// The TOML a reviewer starts from.
pub fn render(entries: &[(String, String)], source: &str, bad_lines: usize) -> String {
    let mut out = format!(
        "# Suggested from {source}: destinations the agent was denied because nothing allowed\n\
         # them. Review every entry before adding it to a profile.\n"
    );
    if bad_lines > 0 {
        out.push_str(&format!(
            "# ({bad_lines} lines were not JSON and were skipped)\n"
        ));
    }
    out.push_str("[network]\nallow = [\n");
    for (pattern, comment) in entries {
        out.push_str(&format!(
            "  {:<40} # {comment}\n",
            format!("\"{pattern}\",")
        ));
    }
    out.push_str("]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(domain: &str, port: u16, decision: &str, reason: &str) -> String {
        serde_json::json!({
            "destination": { "domain": domain, "port": port },
            "airlock": { "decision": decision, "reason": reason },
        })
        .to_string()
    }

    #[test]
    fn denials_become_grouped_reviewable_entries() {
        let log = [
            line("api.example.com", 443, "deny", "not-allowlisted"),
            line("cdn.example.com", 443, "deny", "not-allowlisted"),
            line("cdn.example.com", 443, "deny", "not-allowlisted"),
            line("solo.example.org", 443, "deny", "not-allowlisted"),
            line("git.example.net", 8443, "deny", "port-not-allowed"),
            line("a.co.uk", 443, "deny", "not-allowlisted"),
            line("b.co.uk", 443, "deny", "not-allowlisted"),
            line("10.0.0.1", 443, "deny", "ip-literal"),
            line("127.0.0.1", 443, "deny", "not-allowlisted"),
            line("evil.example.com", 443, "deny", "denied-by-rule"),
            line("ok.example.com", 443, "allow", "allowed"),
            "not json".to_string(),
        ]
        .join("\n");
        let (denials, bad) = read(&log);
        assert_eq!(bad, 1);
        let got: Vec<String> = suggest(&denials).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            got,
            [
                "*.example.com",
                "a.co.uk",
                "b.co.uk",
                "git.example.net:8443",
                "solo.example.org"
            ]
        );
        let text = render(&suggest(&denials), "audit.jsonl", bad);
        assert!(
            text.contains("api.example.com, cdn.example.com (3 denied)"),
            "{text}"
        );
        for entry in &got {
            assert!(DomainRule::parse(entry).is_ok(), "{entry}");
        }
    }
}
