//! `sandbox policy explain`: would this path or URL be reachable, and by
//! which rule (with the file, line and column it was written at)? Pure
//! functions of the effective policy; the URL case asks the proxy's own
//! `decide_target`, so the answer is the proxy's.

use std::path::{Path, PathBuf};

use egress_proxy::decide::{decide_request, decide_target};
use egress_proxy::name::{parse_host, Host};

use super::merge::{expand, Effective, PathVars};
use super::protect::ALWAYS_PROTECTED;

/// An answer: allowed or not, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Would the access be allowed at all?
    pub allowed: bool,
    /// One line: what access, and the rule with its origin.
    pub because: String,
}

fn within(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

/// How the agent would see `path` (a host path, as inside).
pub fn path(eff: &Effective, vars: &PathVars, path: &Path) -> Explanation {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let r = &eff.rules;
    let expanded = |items: &[super::merge::Entry<String>]| -> Vec<(PathBuf, String, String)> {
        items
            .iter()
            .flat_map(|e| {
                expand(&e.value, vars)
                    .into_iter()
                    .map(move |p| (p, e.value.clone(), e.origin.clone()))
            })
            .collect()
    };
    if let Some((_, t, o)) = expanded(&r.deny)
        .into_iter()
        .find(|(p, _, _)| within(&path, p))
    {
        return Explanation {
            allowed: false,
            because: format!("denied: filesystem.deny '{t}' ({o}) hides it"),
        };
    }
    let mut writable = vec![(
        vars.workspace.clone(),
        "${WORKSPACE}".to_string(),
        "the workspace".to_string(),
    )];
    writable.extend(expanded(&r.write));
    for (root, t, o) in &writable {
        if !within(&path, root) {
            continue;
        }
        let protected = ALWAYS_PROTECTED
            .iter()
            .map(|(p, _)| (p.to_string(), "always protected".to_string()))
            .chain(r.protect.iter().map(|e| {
                (
                    e.value.clone(),
                    format!("filesystem.protect at {}", e.origin),
                )
            }));
        for (rel, why) in protected {
            if within(&path, &root.join(&rel)) {
                return Explanation {
                    allowed: true,
                    because: format!(
                        "read-only: '{rel}' inside the writable tree {} is protected ({why}); the agent cannot create or change it",
                        root.display()
                    ),
                };
            }
        }
        return Explanation {
            allowed: true,
            because: format!("read-write: filesystem.write '{t}' ({o})"),
        };
    }
    let best = expanded(&r.read)
        .into_iter()
        .filter(|(p, _, _)| within(&path, p))
        .max_by_key(|(p, _, _)| p.components().count());
    match best {
        Some((_, t, o)) => Explanation {
            allowed: true,
            because: format!("read-only: filesystem.read '{t}' ({o})"),
        },
        None => Explanation {
            allowed: false,
            because: "not visible: no filesystem rule grants it (the sandbox's /tmp and HOME are \
                      private and empty)"
                .to_string(),
        },
    }
}

/// Would a request to `url` (`scheme://host[:port][/path]`) be let through?
pub fn url(eff: &Effective, url: &str, method: &str) -> Result<Explanation, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("'{url}' is not a URL (e.g. https://api.example.com/v1)"))?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => 443,
        "http" | "ws" => 80,
        other => {
            return Err(format!(
                "'{other}': only http and https URLs go through the proxy"
            ))
        }
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let req_path = match tail.split(['?', '#']).next() {
        Some(p) if !p.is_empty() => p,
        _ => "/",
    };
    let (host_raw, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse::<u16>() {
            Ok(port) if !h.is_empty() && !p.is_empty() => (h, port),
            _ if authority.starts_with('[') && authority.ends_with(']') => {
                (authority, default_port)
            }
            _ => return Err(format!("'{authority}': bad port")),
        },
        _ => (authority, default_port),
    };
    let policy = eff.network_policy();
    let host = match parse_host(host_raw) {
        Ok(h) => h,
        Err(e) => {
            return Ok(Explanation {
                allowed: false,
                because: format!("denied: the host is not a valid name ({e})"),
            })
        }
    };
    // The verdict is the proxy's own: the same function it calls on every
    // request it sees. `decide_target` only finds where the rule was written.
    let verdict = decide_request(&policy, &host, port, method, req_path);
    let d = decide_target(&policy, &host, port);
    let r = &eff.rules;
    let origin = if let Some(p) = d.rule.strip_prefix("allow:") {
        r.allow
            .iter()
            .find(|a| a.value.pattern == p)
            .map(|a| a.origin.clone())
    } else if let Some(p) = d.rule.strip_prefix("deny:") {
        r.net_deny
            .iter()
            .find(|a| a.value.0.pattern == p)
            .map(|a| a.origin.clone())
    } else if d.rule.starts_with("cidr:") {
        r.allow_cidr
            .iter()
            .find(|c| format!("cidr:{}", c.value) == d.rule)
            .map(|c| c.origin.clone())
    } else {
        None
    };
    let at = origin.map(|o| format!(" ({o})")).unwrap_or_default();
    let host_rules: Vec<_> = match &host {
        Host::Name(name) => r
            .host_rules
            .iter()
            .filter(|h| h.value.host.matches(name))
            .collect(),
        Host::Ip(_) => Vec::new(),
    };
    if !verdict.decision.allow {
        let because = match (verdict.decision.rule.as_str(), host_rules.first()) {
            ("path-syntax", _) => format!(
                "refused (400): the path {req_path} is ambiguous under network.rules: {}",
                verdict.decision.reason
            ),
            (rule, Some(h)) if rule.starts_with("rules:") => format!(
                "denied: the host is allowed{at} but network.rules for it ({}) admit no {method} {}",
                h.origin, verdict.path
            ),
            (rule, _) => format!("denied by {rule}{at}: {}", verdict.decision.reason),
        };
        return Ok(Explanation {
            allowed: false,
            because,
        });
    }
    let mut because = format!("allowed by {}{at} on port {port}", d.rule);
    if let Some(h) = host_rules
        .iter()
        .find(|h| h.value.admits(method, &verdict.path))
    {
        because.push_str(&format!(
            "; {method} {} admitted by network.rules ({}); HTTPS is intercepted and SOCKS5 refused for this host",
            verdict.path, h.origin
        ));
    }
    if let Host::Name(name) = &host {
        for c in r.credentials.iter().filter(|c| c.value.bound_to(name)) {
            because.push_str(&format!(
                "; credential '{}' applies ({})",
                c.value.name, c.origin
            ));
        }
    }
    Ok(Explanation {
        allowed: true,
        because,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load::{embedded_default, parse_layer};
    use crate::profile::merge::CliLayer;

    fn eff(text: &str) -> Effective {
        let l = parse_layer("p.toml", None, text).expect("valid");
        Effective::merge(&[embedded_default(), l], &CliLayer::default()).expect("valid")
    }

    #[test]
    fn urls_name_the_deciding_rule_and_its_position() {
        let e = eff("[network]\nallow = [\"*.example.com\", \"api.example.org\"]\ndeny = [\"evil.example.com\"]\n[[network.rules]]\nhost = \"api.example.org\"\nmethods = [\"GET\"]\npaths = [\"/v1/*\"]\n");
        for (u, allowed, want) in [
            (
                "https://a.example.com/x",
                true,
                "allow:*.example.com (p.toml:2:10)",
            ),
            (
                "https://evil.example.com/",
                false,
                "deny:evil.example.com (p.toml:3:9)",
            ),
            ("https://example.com/", false, "default-deny"),
            ("https://a.example.com:8443/", false, "ports"),
            ("http://127.0.0.1/", false, "ip-literal"),
            (
                "https://api.example.org/v1/models",
                true,
                "admitted by network.rules (p.toml:5:8)",
            ),
            (
                "https://api.example.org/admin",
                false,
                "admit no GET /admin",
            ),
        ] {
            let x = url(&e, u, "GET").expect("parses");
            assert_eq!(x.allowed, allowed, "{u}: {}", x.because);
            assert!(x.because.contains(want), "{u}: {}", x.because);
        }
        assert!(url(&e, "ftp://a.example.com/", "GET").is_err());
        assert!(url(&e, "a.example.com", "GET").is_err());
    }

    /// `policy explain --url` and the proxy's enforcement agree, row by
    /// row, because both ask `decide_request`: the answer printed is the
    /// one the proxy gives (status, rule) for the same method and URL.
    #[test]
    fn explain_and_the_proxy_agree_on_every_request() {
        let e = eff("[network]\nallow = [\"rules.example.com\", \"free.example.com\"]\nallow_cidr = [\"127.0.0.0/8\"]\n[[network.rules]]\nhost = \"rules.example.com\"\nmethods = [\"GET\"]\npaths = [\"/v1/*\"]\n");
        let policy = e.network_policy();
        // (method, url, allowed, proxy status when refused)
        let cases: &[(&str, &str, bool, u16)] = &[
            ("GET", "https://rules.example.com/v1/models", true, 200),
            ("GET", "http://rules.example.com/v1/models?x=1", true, 200),
            (
                "DELETE",
                "http://rules.example.com/admin/secret.txt",
                false,
                403,
            ),
            ("DELETE", "https://rules.example.com/v1/models", false, 403),
            (
                "GET",
                "https://rules.example.com/v1/../admin/secret.txt",
                false,
                403,
            ),
            (
                "GET",
                "https://rules.example.com/v1/%2e%2e/admin/secret.txt",
                false,
                403,
            ),
            (
                "GET",
                "https://rules.example.com/v1/..%2fadmin/secret.txt",
                false,
                400,
            ),
            ("GET", "https://rules.example.com/v1/x/../y", true, 200),
            ("DELETE", "http://free.example.com/anything", true, 200),
            ("GET", "https://evil.example.com/v1/models", false, 403),
            ("GET", "http://127.0.0.1/v1/../admin", true, 200),
        ];
        for (method, u, allowed, status) in cases {
            let x = url(&e, u, method).expect("parses");
            let (scheme, rest) = u.split_once("://").expect("url");
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let host = parse_host(&rest[..end]).expect("host");
            let port = if scheme == "https" { 443 } else { 80 };
            let path = rest[end..].split('?').next().unwrap_or("/");
            let proxy = decide_request(&policy, &host, port, method, path);
            assert_eq!(x.allowed, *allowed, "{method} {u}: {}", x.because);
            assert_eq!(proxy.decision.allow, x.allowed, "{method} {u}");
            if !allowed {
                assert_eq!(proxy.status, *status, "{method} {u}");
            }
        }
    }

    #[test]
    fn paths_name_the_deciding_rule() {
        let e = eff(
            "[filesystem]\nwrite = [\"/var/tmp/airlock-explain\"]\ndeny = [\"${HOME}/.ssh\"]\n",
        );
        let vars = PathVars {
            workspace: PathBuf::from("/work/project"),
            home: Some(PathBuf::from("/home/u")),
            tmpdir: PathBuf::from("/tmp"),
        };
        for (p, allowed, want) in [
            (
                "/usr/bin/env",
                true,
                "read-only: filesystem.read '/usr' (<embedded default>:",
            ),
            (
                "/etc/shadow",
                false,
                "denied: filesystem.deny '/etc/shadow'",
            ),
            (
                "/home/u/.ssh/id_ed25519",
                false,
                "denied: filesystem.deny '${HOME}/.ssh' (p.toml:3:9)",
            ),
            (
                "/work/project/src/main.rs",
                true,
                "read-write: filesystem.write '${WORKSPACE}' (the workspace)",
            ),
            (
                "/work/project/.git/hooks/pre-commit",
                true,
                "'.git/hooks' inside the writable tree /work/project is protected",
            ),
            (
                "/var/tmp/airlock-explain/x",
                true,
                "read-write: filesystem.write '/var/tmp/airlock-explain' (p.toml:2:10)",
            ),
            ("/home/u/notes.txt", false, "not visible"),
        ] {
            let x = path(&e, &vars, Path::new(p));
            assert_eq!(x.allowed, allowed, "{p}: {}", x.because);
            assert!(x.because.contains(want), "{p}: {}", x.because);
        }
    }
}
