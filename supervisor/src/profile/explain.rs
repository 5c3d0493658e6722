//! `sandbox policy explain`: would this path or URL be reachable, and by
//! which rule (with the file, line and column it was written at)? Pure
//! functions: the path case reads the mount plan `sandbox run` builds, the
//! URL case asks the proxy's own `decide_target`, so each answer is what
//! enforcement does.

use std::path::{Path, PathBuf};

use egress_proxy::decide::{decide_request, decide_target};
use egress_proxy::name::{parse_host, Host};

use super::deny::shown_by;
use super::managed::canonical;
use super::merge::{expand, Effective, Entry, PathVars};
use super::protect::always_protected;
use crate::mounts::MountStep;

/// An answer: allowed or not, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Would the access be allowed at all?
    pub allowed: bool,
    /// One line: what access, and the rule with its origin.
    pub because: String,
}

/// Expanded `items`, canonical, each with its template and origin.
fn expanded(items: &[Entry<String>], vars: &PathVars) -> Vec<(PathBuf, String, String)> {
    items
        .iter()
        .flat_map(|e| {
            expand(&e.value, vars)
                .into_iter()
                .map(move |p| (canonical(&p), e.value.clone(), e.origin.clone()))
        })
        .collect()
}

/// How the agent would see `path` (a host path, as named inside), read off
/// `mounts`: the mount plan `sandbox run` builds for this policy
/// (`plan::build`), so the answer is what the view holds, not what the
/// rules alone suggest (a granted `${HOME}` under the empty HOME tmpfs is
/// not visible). The rules only name the origin of the step that decides.
pub fn path(eff: &Effective, vars: &PathVars, mounts: &[MountStep], path: &Path) -> Explanation {
    let path = canonical(path);
    let r = &eff.rules;
    let not_visible = |why: String| Explanation {
        allowed: false,
        because: format!("not visible: {why}"),
    };
    let Some(i) = shown_by(mounts, &path) else {
        return not_visible(
            "no filesystem rule grants it (the sandbox's /tmp and HOME are private and empty)"
                .to_string(),
        );
    };
    // The host path behind `path` in the bind beneath step `i`, if any.
    let host_behind = |upto: usize| -> Option<(PathBuf, &MountStep)> {
        let j = shown_by(&mounts[..upto], &path)?;
        match &mounts[j] {
            MountStep::Bind { source, target, .. }
            | MountStep::IdmappedBind { source, target, .. } => {
                let rel = path.strip_prefix(target).ok()?;
                Some((canonical(source).join(rel), &mounts[j]))
            }
            _ => None,
        }
    };
    // The writable tree a pin (`SelfBind`) below step `upto` stands in.
    let tree_under = |upto: usize| -> Option<&MountStep> {
        mounts[..upto].iter().rev().find(|m| {
            matches!(
                m,
                MountStep::Bind { writable: true, .. } | MountStep::IdmappedBind { .. }
            ) && path.starts_with(m.target())
        })
    };
    let grant_of = |source: &Path, writable: bool| -> Option<(String, String)> {
        let source = canonical(source);
        if writable && source == canonical(&vars.workspace) {
            return Some(("${WORKSPACE}".to_string(), "the workspace".to_string()));
        }
        let list = if writable { &r.write } else { &r.read };
        expanded(list, vars)
            .into_iter()
            .find(|(p, _, _)| *p == source)
            .map(|(_, t, o)| (t, o))
    };
    match &mounts[i] {
        MountStep::MaskDir { .. } | MountStep::MaskFile { .. } => {
            let host = host_behind(i).map_or(path.clone(), |(h, _)| h);
            let rule = expanded(&r.deny, vars)
                .into_iter()
                .filter(|(d, _, _)| host.starts_with(d) || path.starts_with(d))
                .max_by_key(|(d, _, _)| d.components().count());
            Explanation {
                allowed: false,
                because: match rule {
                    Some((_, t, o)) => format!("denied: filesystem.deny '{t}' ({o}) hides it"),
                    None => "denied: a filesystem.deny hides it".to_string(),
                },
            }
        }
        MountStep::Tmpfs { target, .. } if *target == path => Explanation {
            allowed: true,
            because: format!(
                "read-write: {} is the sandbox's own, empty at start",
                target.display()
            ),
        },
        MountStep::Tmpfs { target, .. } => {
            let behind = match host_behind(i) {
                Some((
                    _,
                    MountStep::Bind {
                        source, writable, ..
                    },
                )) => Some((source, *writable)),
                Some((_, MountStep::IdmappedBind { source, .. })) => Some((source, true)),
                _ => None,
            };
            let hidden = match behind.and_then(|(s, w)| grant_of(s, w).map(|g| (g, w))) {
                Some(((t, o), writable)) => {
                    let key = if writable { "write" } else { "read" };
                    format!("; filesystem.{key} '{t}' ({o}) is hidden under it")
                }
                None => String::new(),
            };
            not_visible(format!(
                "{} is a private, empty tmpfs inside (the agent's HOME or /tmp){hidden}",
                target.display()
            ))
        }
        MountStep::SelfBind {
            writable: false, ..
        } => match tree_under(i) {
            Some(tree) => protected(eff, tree.target(), &path),
            None => protected(eff, &path, &path),
        },
        // A pinned `.git`: as writable as the tree it is in, but for its
        // config and hooks.
        MountStep::SelfBind { writable: true, .. } => match tree_under(i) {
            Some(tree) if is_protected(eff, tree.target(), &path) => {
                protected(eff, tree.target(), &path)
            }
            Some(MountStep::Bind { source, .. }) | Some(MountStep::IdmappedBind { source, .. }) => {
                match grant_of(source, true) {
                    Some((t, o)) => Explanation {
                        allowed: true,
                        because: format!(
                            "read-write: filesystem.write '{t}' ({o}); pinned (cannot be renamed \
                             or replaced)"
                        ),
                    },
                    None => Explanation {
                        allowed: true,
                        because: "read-write; pinned (cannot be renamed or replaced)".to_string(),
                    },
                }
            }
            _ => Explanation {
                allowed: true,
                because: "read-write; pinned (cannot be renamed or replaced)".to_string(),
            },
        },
        MountStep::IdmappedBind { target, .. }
        | MountStep::Bind {
            target,
            writable: true,
            ..
        } if is_protected(eff, target, &path) => protected(eff, target, &path),
        MountStep::IdmappedBind { source, .. } => Explanation {
            allowed: true,
            because: match grant_of(source, true) {
                Some((t, o)) => format!(
                    "read-write: filesystem.write '{t}' ({o}); its owner's files appear as the \
                     agent's (idmapped)"
                ),
                None => "read-write (idmapped)".to_string(),
            },
        },
        MountStep::Bind {
            source, writable, ..
        } => {
            let access = if *writable { "read-write" } else { "read-only" };
            Explanation {
                allowed: true,
                because: match grant_of(source, *writable) {
                    Some((t, o)) if *writable => format!("{access}: filesystem.write '{t}' ({o})"),
                    Some((t, o)) => format!("{access}: filesystem.read '{t}' ({o})"),
                    None => format!(
                        "{access}: the sandbox's own {} (egress socket or CA bundle)",
                        mounts[i].target().display()
                    ),
                },
            }
        }
        MountStep::Symlink { points_to, .. } => Explanation {
            allowed: true,
            because: format!("a link to {} (as on the host)", points_to.display()),
        },
        other => Explanation {
            allowed: true,
            because: format!(
                "the sandbox's own {} (not the host's)",
                other.target().display()
            ),
        },
    }
}

/// Whether `path`, inside the writable tree `root`, is code the host runs
/// (always protected, or `filesystem.protect`).
fn is_protected(eff: &Effective, root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return false;
    };
    always_protected()
        .into_iter()
        .chain(eff.rules.protect.iter().map(|e| e.value.clone()))
        .any(|p| rel.starts_with(&p))
}

/// A protected path inside the writable tree `root`: read-only, and why.
fn protected(eff: &Effective, root: &Path, path: &Path) -> Explanation {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let why = always_protected()
        .into_iter()
        .map(|p| (p, "always protected".to_string()))
        .chain(eff.rules.protect.iter().map(|e| {
            (
                e.value.clone(),
                format!("filesystem.protect at {}", e.origin),
            )
        }))
        .find(|(p, _)| rel.starts_with(p));
    let (rel, why) = why.unwrap_or_else(|| (rel.display().to_string(), "protected".to_string()));
    Explanation {
        allowed: true,
        because: format!(
            "read-only: '{rel}' inside the writable tree {} is protected ({why}): read-only \
             while it exists, and quarantined after the run if the agent creates or changes it",
            root.display()
        ),
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
    fn paths_are_answered_from_the_plan_run_builds() {
        use crate::plan::{build, Host, RunRequest};
        let root = std::env::temp_dir().join(format!("airlock-explain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (ws, home, extra) = (root.join("ws"), root.join("home/u"), root.join("extra"));
        for d in [&ws, &home.join(".ssh"), &extra, &ws.join(".git")] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        for f in [
            home.join(".npmrc"),
            home.join(".ssh/id"),
            extra.join("x"),
            ws.join(".git/config"),
        ] {
            std::fs::write(&f, "").expect("write");
        }
        let e = eff(&format!(
            "[filesystem]\nwrite = [\"${{HOME}}\", \"{}\"]\nread = [\"{}\"]\ndeny = [\"{}/.ssh\"]\n",
            extra.display(),
            root.display(),
            home.display()
        ));
        let vars = PathVars {
            workspace: ws.clone(),
            home: Some(home.clone()),
            tmpdir: PathBuf::from("/tmp"),
        };
        let host = Host {
            euid: 1000,
            egid: 1000,
            home: Some(home.clone()),
            cwd: ws.clone(),
            vars: vec![("HOME".into(), home.clone().into())],
            session_id: "0123456789abcdef0123456789abcdef".into(),
        };
        let req = RunRequest {
            workspace: Some(ws.clone()),
            argv: vec!["true".into()],
            ..RunRequest::default()
        };
        // The one plan: run mounts it, explain reads it.
        let plan = build(&crate::profile::to_policy(&e, &vars), &req, &host).expect("plan");
        let kind = |p: &Path| match shown_by(&plan.mounts, p).map(|i| &plan.mounts[i]) {
            Some(MountStep::Bind { writable: true, .. }) => "bind-rw",
            Some(MountStep::Bind { .. }) => "bind-ro",
            Some(MountStep::Tmpfs { .. }) => "tmpfs",
            Some(MountStep::MaskDir { .. } | MountStep::MaskFile { .. }) => "mask",
            Some(MountStep::SelfBind {
                writable: false, ..
            }) => "pinned-ro",
            Some(MountStep::SelfBind { writable: true, .. }) => "pinned-rw",
            Some(_) => "other",
            None => "none",
        };
        let p = |rel: &str| root.join(rel);
        for (path, step, allowed, want) in [
            // write = ["${HOME}"]: the empty HOME tmpfs hides it.
            (
                p("home/u/.npmrc"),
                "tmpfs",
                false,
                "not visible: ".to_string()
                    + &home.display().to_string()
                    + " is a private, empty tmpfs inside (the agent's HOME or /tmp); \
                       filesystem.write '${HOME}' (p.toml:2:10) is hidden under it",
            ),
            (
                home.clone(),
                "tmpfs",
                true,
                "read-write: ".to_string() + &home.display().to_string() + " is the sandbox's own",
            ),
            (
                p("extra/x"),
                "bind-rw",
                true,
                "read-write: filesystem.write '".to_string()
                    + &extra.display().to_string()
                    + "' (p.toml:2:21)",
            ),
            (
                p("ws/src.rs"),
                "bind-rw",
                true,
                "read-write: filesystem.write '${WORKSPACE}' (the workspace)".to_string(),
            ),
            (
                p("ws/.git/config"),
                "pinned-ro",
                true,
                "'.git/config' inside the writable tree ".to_string()
                    + &ws.display().to_string()
                    + " is protected",
            ),
            (
                p("ws/.git/hooks"),
                "pinned-rw",
                true,
                "'.git/hooks' inside the writable tree ".to_string()
                    + &ws.display().to_string()
                    + " is protected",
            ),
            (
                PathBuf::from("/usr/bin/env"),
                "bind-ro",
                true,
                "read-only: filesystem.read '/usr' (<embedded default>:".to_string(),
            ),
            (
                PathBuf::from("/etc/shadow"),
                "mask",
                false,
                "denied: filesystem.deny '/etc/shadow'".to_string(),
            ),
            (
                PathBuf::from("/home/nobody-here"),
                "none",
                false,
                "not visible: no filesystem rule".to_string(),
            ),
        ] {
            assert_eq!(
                kind(&canonical(&path)),
                step,
                "{}: run's plan",
                path.display()
            );
            let x = super::path(&e, &vars, &plan.mounts, &path);
            assert_eq!(x.allowed, allowed, "{}: {}", path.display(), x.because);
            assert!(
                x.because.starts_with(&want) || x.because.contains(&want),
                "{}: {}\nwanted {want}",
                path.display(),
                x.because
            );
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
