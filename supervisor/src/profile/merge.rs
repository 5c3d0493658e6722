//! Merging: embedded default ⊕ profile chain ⊕ command-line flags, each
//! entry remembering where it came from (`FILE:LINE:COL` or `--allow`), so
//! every later message can name the rule. Lists are unions (a deny always
//! wins over a grant when enforced), scalars (limits, `network.ports`) are
//! overridden by later layers, `env.set` by name.
//!
//! The result is pure data: [`Effective::canonical`] is its canonical
//! serialization (sorted, normalized) and [`Effective::hash`] the SHA-256
//! that goes into the plan as `policy_hash` and into every audit event.

use std::path::{Path, PathBuf};
use std::time::Duration;

use egress_proxy::credentials::{Apply, CredentialSpec, SecretSource};
use egress_proxy::policy::{Cidr, DenyRule, DomainRule, HostRule, DEFAULT_PORTS};
use egress_proxy::NetworkPolicy;
use serde_json::{json, Map, Value};

use super::format::format_size;
use super::load::{sha256_hex, Layer};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<T> {
    /// The value.
    pub value: T,
    /// `FILE:LINE:COL`, a flag such as `--allow`, or the managed policy's.
    pub origin: String,
}

impl<T> Entry<T> {
    /// `value` from `origin`.
    pub fn new(value: T, origin: impl Into<String>) -> Self {
        Self {
            value,
            origin: origin.into(),
        }
    }
}

/// Resource limits, each with its origin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Bytes of memory (cgroup, issue 6).
    pub memory: Option<Entry<u64>>,
    /// Processes and threads (cgroup, issue 6).
    pub pids: Option<Entry<u64>>,
    /// CPUs (cgroup, issue 6).
    pub cpu: Option<Entry<f64>>,
    /// Open files per process.
    pub nofile: Option<Entry<u64>>,
    /// Largest file a process may write, in bytes.
    pub fsize: Option<Entry<u64>>,
    /// Bytes of the private `/tmp`.
    pub tmp_size: Option<Entry<u64>>,
    /// Wall-clock limit.
    pub timeout: Option<Entry<Duration>>,
    /// cgroup limits this host cannot enforce are skipped with a warning.
    pub best_effort: Option<Entry<bool>>,
}

/// What one layer, or the merged policy, grants and denies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// `filesystem.read` templates.
    pub read: Vec<Entry<String>>,
    /// `filesystem.write` templates.
    pub write: Vec<Entry<String>>,
    /// `filesystem.deny` templates.
    pub deny: Vec<Entry<String>>,
    /// `filesystem.protect`, relative to each writable tree.
    pub protect: Vec<Entry<String>>,
    /// `network.allow`.
    pub allow: Vec<Entry<DomainRule>>,
    /// `network.deny`.
    pub net_deny: Vec<Entry<DenyRule>>,
    /// `network.allow_cidr`.
    pub allow_cidr: Vec<Entry<Cidr>>,
    /// `network.ports`.
    pub ports: Option<Entry<Vec<u16>>>,
    /// `network.rules`.
    pub host_rules: Vec<Entry<HostRule>>,
    /// `[[credentials]]`.
    pub credentials: Vec<Entry<CredentialSpec>>,
    /// `[limits]`.
    pub limits: Limits,
    /// `env.pass`.
    pub env_pass: Vec<Entry<String>>,
    /// `env.set`, by name.
    pub env_set: Vec<Entry<(String, String)>>,
}

/// The flags of `sandbox run` (and `policy show`) that change the policy.
#[derive(Debug, Clone, Default)]
pub struct CliLayer {
    /// `--allow`.
    pub allow: Vec<String>,
    /// `--deny`.
    pub deny: Vec<String>,
    /// `--allow-cidr`.
    pub allow_cidr: Vec<String>,
    /// `--allow-port`.
    pub allow_port: Vec<u16>,
    /// `--env`.
    pub env: Vec<String>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--network-mode report`.
    pub report: bool,
}

impl CliLayer {
    /// Does the command line change the network policy?
    pub fn touches_network(&self) -> bool {
        self.report
            || !(self.allow.is_empty()
                && self.deny.is_empty()
                && self.allow_cidr.is_empty()
                && self.allow_port.is_empty())
    }
}

/// One file the effective policy was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file, or `<embedded default>`.
    pub label: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// `profile` or `managed`.
    pub role: &'static str,
}

/// The effective policy, before path variables are expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// The files, in the order applied (managed last).
    pub sources: Vec<Source>,
    /// The merged rules.
    pub rules: Rules,
    /// The managed policy's denies, their variables already resolved from
    /// trusted sources (also in `rules.deny`), for the canonical check of
    /// every grant against them (`managed::check_grants`).
    pub managed_deny: Vec<Entry<String>>,
}

fn push_unique<T: PartialEq + Clone>(into: &mut Vec<Entry<T>>, from: &[Entry<T>]) {
    for e in from {
        if !into.iter().any(|x| x.value == e.value) {
            into.push(e.clone());
        }
    }
}

/// Adds `layer` on top of `acc`. Errors (duplicate credentials) name both places.
pub fn apply(acc: &mut Rules, layer: &Rules) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    push_unique(&mut acc.read, &layer.read);
    push_unique(&mut acc.write, &layer.write);
    push_unique(&mut acc.deny, &layer.deny);
    push_unique(&mut acc.protect, &layer.protect);
    push_unique(&mut acc.allow, &layer.allow);
    push_unique(&mut acc.net_deny, &layer.net_deny);
    push_unique(&mut acc.allow_cidr, &layer.allow_cidr);
    push_unique(&mut acc.host_rules, &layer.host_rules);
    push_unique(&mut acc.env_pass, &layer.env_pass);
    if layer.ports.is_some() {
        acc.ports = layer.ports.clone();
    }
    for c in &layer.credentials {
        match acc
            .credentials
            .iter()
            .find(|x| x.value.name == c.value.name)
        {
            Some(first) if first.value == c.value => {}
            Some(first) => errors.push(format!(
                "{}: credential '{}' is already declared at {}",
                c.origin, c.value.name, first.origin
            )),
            None => acc.credentials.push(c.clone()),
        }
    }
    for s in &layer.env_set {
        acc.env_set.retain(|x| x.value.0 != s.value.0);
        acc.env_set.push(s.clone());
    }
    let (l, n) = (&mut acc.limits, &layer.limits);
    macro_rules! over {
        ($($f:ident),*) => { $( if n.$f.is_some() { l.$f = n.$f.clone(); } )* };
    }
    over!(
        memory,
        pids,
        cpu,
        nofile,
        fsize,
        tmp_size,
        timeout,
        best_effort
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The command line as a layer; bad patterns name their flag.
pub fn cli_rules(cli: &CliLayer, ports_so_far: Option<&[u16]>) -> Result<Rules, Vec<String>> {
    let mut rules = Rules::default();
    let mut errors = Vec::new();
    for a in &cli.allow {
        match DomainRule::parse(a) {
            Ok(r) => rules.allow.push(Entry::new(r, format!("--allow {a}"))),
            Err(e) => errors.push(format!("network: --allow: {e}")),
        }
    }
    for d in &cli.deny {
        match DenyRule::parse(d) {
            Ok(r) => rules.net_deny.push(Entry::new(r, format!("--deny {d}"))),
            Err(e) => errors.push(format!("network: --deny: {e}")),
        }
    }
    for c in &cli.allow_cidr {
        match Cidr::parse(c) {
            Ok(r) => rules
                .allow_cidr
                .push(Entry::new(r, format!("--allow-cidr {c}"))),
            Err(e) => errors.push(format!("network: --allow-cidr: {e}")),
        }
    }
    if !cli.allow_port.is_empty() {
        let mut ports = ports_so_far.unwrap_or(DEFAULT_PORTS).to_vec();
        for p in &cli.allow_port {
            if *p == 0 {
                errors.push("network: --allow-port 0 is not a port".to_string());
            } else if !ports.contains(p) {
                ports.push(*p);
            }
        }
        rules.ports = Some(Entry::new(ports, "--allow-port"));
    }
    for arg in &cli.env {
        let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
        // A name no shell could export (`BAD NAME`, `1X`, empty) is a typo
        // or a trick; refused as `env(1)` would, never passed along.
        if !egress_proxy::credentials::valid_env_name(name) {
            errors.push(format!(
                "--env {arg:?}: {name:?} is not a variable name (letters, digits and '_', not \
                 starting with a digit); use --env NAME or --env NAME=VALUE"
            ));
            continue;
        }
        if arg.contains('\0') {
            errors.push(format!("--env {name}: the value contains NUL"));
            continue;
        }
        if let Some((name, value)) = arg.split_once('=') {
            rules
                .env_set
                .push(Entry::new((name.to_string(), value.to_string()), "--env"));
        } else {
            rules.env_pass.push(Entry::new(arg.clone(), "--env"));
        }
    }
    if let Some(t) = cli.timeout {
        rules.limits.timeout = Some(Entry::new(t, "--timeout"));
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

/// Is every name `allow` matches also matched by `deny`?
pub fn covered_by(allow: &DomainRule, deny: &DomainRule) -> bool {
    match allow.pattern.strip_prefix("*.") {
        Some(suffix) => match deny.pattern.strip_prefix("*.") {
            Some(d) => suffix == d || suffix.ends_with(&format!(".{d}")),
            None => false,
        },
        None => {
            let name = allow.pattern.split(':').next().unwrap_or_default();
            deny.matches(name)
        }
    }
}

/// Checks that hold for any merged policy: no allow entry is dead (fully
/// covered by a deny), no credential's source variable passes into the
/// sandbox, every `network.rules` host is allowed.
pub fn lint(rules: &Rules) -> Vec<String> {
    let mut errors = Vec::new();
    for a in &rules.allow {
        if let Some(d) = rules
            .net_deny
            .iter()
            .find(|d| covered_by(&a.value, &d.value.0))
        {
            errors.push(format!(
                "{}: allow '{}' is entirely covered by deny '{}' at {}: the deny wins, remove one",
                a.origin, a.value, d.value.0, d.origin
            ));
        }
    }
    for c in &rules.credentials {
        if let SecretSource::Env(var) = &c.value.source {
            let leaks = rules
                .env_pass
                .iter()
                .map(|p| (&p.value, &p.origin))
                .find(|(n, _)| *n == var);
            if let Some((_, origin)) = leaks {
                errors.push(format!(
                    "{origin}: env passes {var}, the secret of credential '{}' ({}): secrets stay \
                     with the proxy; remove it from the environment",
                    c.value.name, c.origin
                ));
            }
        }
    }
    for r in &rules.host_rules {
        let host = &r.value.host;
        if !rules.allow.iter().any(|a| covered_by(host, &a.value)) {
            errors.push(format!(
                "{}: network.rules for '{host}' have no effect: the host is not in network.allow",
                r.origin
            ));
        }
    }
    errors
}

impl Effective {
    /// Merges the layers in order, then the command line. Does not apply
    /// the managed policy (see `managed.rs`).
    pub fn merge(layers: &[Layer], cli: &CliLayer) -> Result<Self, Vec<String>> {
        let mut rules = Rules::default();
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        for layer in layers {
            if let Err(e) = apply(&mut rules, &layer.rules) {
                errors.extend(e);
            }
            sources.push(Source {
                label: layer.label.clone(),
                sha256: layer.sha256.clone(),
                role: "profile",
            });
        }
        let ports = rules.ports.as_ref().map(|p| p.value.clone());
        match cli_rules(cli, ports.as_deref()) {
            Ok(c) => {
                if let Err(e) = apply(&mut rules, &c) {
                    errors.extend(e);
                }
            }
            Err(e) => errors.extend(e),
        }
        errors.extend(lint(&rules));
        if errors.is_empty() {
            Ok(Self {
                sources,
                rules,
                managed_deny: Vec::new(),
            })
        } else {
            Err(errors)
        }
    }

    /// The network policy the session proxy enforces.
    pub fn network_policy(&self) -> NetworkPolicy {
        let r = &self.rules;
        NetworkPolicy {
            allow: r.allow.iter().map(|e| e.value.clone()).collect(),
            deny: r.net_deny.iter().map(|e| e.value.clone()).collect(),
            allow_cidr: r.allow_cidr.iter().map(|e| e.value).collect(),
            ports: r.ports.as_ref().map(|p| p.value.clone()),
            rules: r.host_rules.iter().map(|e| e.value.clone()).collect(),
            report_only: false,
        }
    }

    /// The canonical serialization: sorted, normalized, defaults filled
    /// in, origins left out (moving a rule between files keeps the hash).
    pub fn canonical(&self) -> Value {
        let r = &self.rules;
        let sorted = |items: Vec<String>| {
            let mut v = items;
            v.sort();
            v.dedup();
            Value::from(v)
        };
        let strings =
            |items: &[Entry<String>]| sorted(items.iter().map(|e| e.value.clone()).collect());
        let mut ports = r
            .ports
            .as_ref()
            .map_or(DEFAULT_PORTS.to_vec(), |p| p.value.clone());
        ports.sort_unstable();
        ports.dedup();
        let mut host_rules: Vec<Value> = r
            .host_rules
            .iter()
            .map(|h| {
                json!({
                    "host": h.value.host.pattern,
                    "methods": sorted(h.value.methods.clone()),
                    "paths": sorted(h.value.paths.clone()),
                })
            })
            .collect();
        host_rules.sort_by_key(|v| v.to_string());
        let mut credentials: Vec<Value> = r
            .credentials
            .iter()
            .map(|c| credential_json(&c.value))
            .collect();
        credentials.sort_by_key(|v| v.to_string());
        let mut limits = Map::new();
        let l = &r.limits;
        if let Some(m) = &l.memory {
            limits.insert("memory".into(), json!(format_size(m.value)));
        }
        if let Some(p) = &l.pids {
            limits.insert("pids".into(), json!(p.value));
        }
        if let Some(c) = &l.cpu {
            limits.insert("cpu".into(), json!(c.value));
        }
        if let Some(n) = &l.nofile {
            limits.insert("nofile".into(), json!(n.value));
        }
        if let Some(f) = &l.fsize {
            limits.insert("fsize".into(), json!(format_size(f.value)));
        }
        if let Some(t) = &l.tmp_size {
            limits.insert("tmp_size".into(), json!(format_size(t.value)));
        }
        if let Some(t) = &l.timeout {
            limits.insert("timeout".into(), json!(format_duration(t.value)));
        }
        if let Some(b) = &l.best_effort {
            limits.insert("best_effort".into(), json!(b.value));
        }
        let mut set = Map::new();
        for s in &r.env_set {
            set.insert(s.value.0.clone(), json!(s.value.1));
        }
        json!({
            "filesystem": {
                "read": strings(&r.read),
                "write": strings(&r.write),
                "deny": strings(&r.deny),
                "protect": strings(&r.protect),
            },
            "network": {
                "allow": sorted(r.allow.iter().map(|e| e.value.pattern.clone()).collect()),
                "deny": sorted(r.net_deny.iter().map(|e| e.value.0.pattern.clone()).collect()),
                "allow_cidr": sorted(r.allow_cidr.iter().map(|e| e.value.to_string()).collect()),
                "ports": ports,
                "rules": host_rules,
            },
            "credentials": credentials,
            "limits": limits,
            "env": { "pass": strings(&r.env_pass), "set": set },
        })
    }

    /// SHA-256 of the canonical serialization (compact JSON, sorted keys).
    pub fn hash(&self) -> String {
        sha256_hex(self.canonical().to_string().as_bytes())
    }
}

fn credential_json(c: &CredentialSpec) -> Value {
    let source = match &c.source {
        SecretSource::Env(v) => json!({ "env": v }),
        SecretSource::File(f) => json!({ "file": f.display().to_string() }),
        SecretSource::Command(cmd) => json!({ "command": cmd }),
    };
    let mut hosts: Vec<String> = c.hosts.iter().map(|h| h.pattern.clone()).collect();
    hosts.sort();
    let mut v = json!({ "name": c.name, "source": source, "hosts": hosts });
    match &c.apply {
        Apply::Header { name, template } => {
            v["inject"] = json!({ "header": name, "value": template });
        }
        Apply::Placeholder { env, headers } => {
            v["placeholder"] = json!({ "env": env, "headers": headers });
        }
    }
    v
}

/// `90s`, `5m`, `1h`, `1500ms`: the shortest form `--timeout` reads back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The host facts path variables expand to.
#[derive(Debug, Clone)]
pub struct PathVars {
    /// `${WORKSPACE}`.
    pub workspace: PathBuf,
    /// `${HOME}` (the host's), if set.
    pub home: Option<PathBuf>,
    /// `${TMPDIR}` (the host's, else `/tmp`).
    pub tmpdir: PathBuf,
}

/// Expands one template; `None` when it names an unset variable. Globs in
/// the last component are expanded against the directory's entries.
pub fn expand(template: &str, vars: &PathVars) -> Vec<PathBuf> {
    let (base, rest) = if let Some(r) = template.strip_prefix("${WORKSPACE}") {
        (Some(vars.workspace.clone()), r)
    } else if let Some(r) = template.strip_prefix("${HOME}") {
        (vars.home.clone(), r)
    } else if let Some(r) = template.strip_prefix("${TMPDIR}") {
        (Some(vars.tmpdir.clone()), r)
    } else {
        (Some(PathBuf::from("/")), template)
    };
    let Some(base) = base else {
        return Vec::new();
    };
    let path = base.join(rest.trim_start_matches('/'));
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return vec![path];
    };
    if !name.contains('*') {
        return vec![path];
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob_match(name, n)))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// `*` matches any run of characters (including none) within one name.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == name;
    }
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load::parse_layer;

    fn layer(label: &str, text: &str) -> Layer {
        parse_layer(label, None, text).unwrap_or_else(|e| panic!("{label}: {e:?}"))
    }

    #[test]
    fn merge_order_later_layers_win_for_scalars_and_lists_are_unions() {
        let base = layer(
            "base",
            "[filesystem]\nread = [\"/opt/a\"]\n[network]\nallow = [\"a.example.com\"]\nports = [443]\n[limits]\ntimeout = \"10m\"\npids = 100\n[env]\nset = { MODE = \"base\" }\n",
        );
        let child = layer(
            "child",
            "[filesystem]\nread = [\"/opt/a\", \"/opt/b\"]\n[network]\nallow = [\"b.example.com\"]\n[limits]\ntimeout = \"5m\"\n[env]\nset = { MODE = \"child\" }\n",
        );
        let cli = CliLayer {
            allow: vec!["c.example.com".into()],
            allow_port: vec![8443],
            env: vec!["MODE=cli".into()],
            timeout: Some(Duration::from_secs(30)),
            ..CliLayer::default()
        };
        struct Case {
            what: &'static str,
            layers: Vec<Layer>,
            cli: CliLayer,
            timeout: Duration,
            pids: Option<u64>,
            mode: &'static str,
            allow: &'static [&'static str],
            ports: &'static [u16],
        }
        for c in [
            Case {
                what: "base alone",
                layers: vec![base.clone()],
                cli: CliLayer::default(),
                timeout: Duration::from_secs(600),
                pids: Some(100),
                mode: "base",
                allow: &["a.example.com"],
                ports: &[443],
            },
            Case {
                what: "child overrides base scalars",
                layers: vec![base.clone(), child.clone()],
                cli: CliLayer::default(),
                timeout: Duration::from_secs(300),
                pids: Some(100),
                mode: "child",
                allow: &["a.example.com", "b.example.com"],
                ports: &[443],
            },
            Case {
                what: "flags override everything",
                layers: vec![base.clone(), child.clone()],
                cli: cli.clone(),
                timeout: Duration::from_secs(30),
                pids: Some(100),
                mode: "cli",
                allow: &["a.example.com", "b.example.com", "c.example.com"],
                ports: &[443, 8443],
            },
            Case {
                what: "order matters: base after child",
                layers: vec![child.clone(), base.clone()],
                cli: CliLayer::default(),
                timeout: Duration::from_secs(600),
                pids: Some(100),
                mode: "base",
                allow: &["b.example.com", "a.example.com"],
                ports: &[443],
            },
        ] {
            let eff =
                Effective::merge(&c.layers, &c.cli).unwrap_or_else(|e| panic!("{}: {e:?}", c.what));
            let r = &eff.rules;
            assert_eq!(
                r.limits.timeout.as_ref().map(|t| t.value),
                Some(c.timeout),
                "{}",
                c.what
            );
            assert_eq!(
                r.limits.pids.as_ref().map(|t| t.value),
                c.pids,
                "{}",
                c.what
            );
            assert_eq!(r.env_set.len(), 1, "{}", c.what);
            assert_eq!(r.env_set[0].value.1, c.mode, "{}", c.what);
            let allow: Vec<&str> = r.allow.iter().map(|a| a.value.pattern.as_str()).collect();
            assert_eq!(allow, c.allow, "{}", c.what);
            assert_eq!(eff.network_policy().default_ports(), c.ports, "{}", c.what);
            assert_eq!(
                r.read.iter().filter(|e| e.value == "/opt/a").count(),
                1,
                "{}",
                c.what
            );
        }
    }

    #[test]
    fn hash_ignores_order_and_origin_but_not_content() {
        let a = layer(
            "a",
            "[network]\nallow = [\"a.example.com\", \"b.example.com\"]\n",
        );
        let b = layer(
            "b",
            "[network]\nallow = [\"b.example.com\", \"a.example.com\"]\n",
        );
        let c = layer("c", "[network]\nallow = [\"b.example.com\"]\n");
        let h = |l: &Layer| {
            Effective::merge(std::slice::from_ref(l), &CliLayer::default())
                .expect("ok")
                .hash()
        };
        assert_eq!(h(&a), h(&b));
        assert_ne!(h(&a), h(&c));
        assert_eq!(h(&a).len(), 64);
    }

    #[test]
    fn dead_allow_entries_and_leaked_secrets_are_errors_with_positions() {
        let l = layer(
            "p.toml",
            "[network]\nallow = [\"api.example.com\", \"*.x.example.com\"]\ndeny = [\"*.example.com\"]\n",
        );
        let e = Effective::merge(&[l], &CliLayer::default()).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("p.toml:2:10: allow 'api.example.com' is entirely covered by deny '*.example.com' at p.toml:3:9"), "{e:?}");
        assert!(e[1].starts_with("p.toml:2:29:"), "{e:?}");
        let l = layer(
            "s.toml",
            "[env]\npass = [\"TOKEN\"]\n[network]\nallow = [\"api.example.com\"]\n[[credentials]]\nname = \"t\"\nsource = { env = \"TOKEN\" }\nhosts = [\"api.example.com\"]\ninject = { header = \"Authorization\", value = \"Bearer {secret}\" }\n",
        );
        let e = Effective::merge(&[l], &CliLayer::default()).unwrap_err();
        assert!(e[0].starts_with("s.toml:2:9: env passes TOKEN"), "{e:?}");
        assert!(e[0].contains("(s.toml:6:8)"), "{e:?}");
        let l = layer(
            "r.toml",
            "[[network.rules]]\nhost = \"api.example.com\"\nmethods = [\"GET\"]\n",
        );
        let e = Effective::merge(&[l], &CliLayer::default()).unwrap_err();
        assert!(
            e[0].starts_with("r.toml:2:8: network.rules for 'api.example.com' have no effect"),
            "{e:?}"
        );
    }

    #[test]
    fn env_flags_with_invalid_names_are_refused() {
        for (arg, ok) in [
            ("FOO=bar", true),
            ("_X", true),
            ("FOO=a b=c", true),
            ("BAD NAME=1", false),
            ("1X=1", false),
            ("=1", false),
            ("", false),
            ("A-B", false),
            ("X=\0", false),
        ] {
            let cli = CliLayer {
                env: vec![arg.to_string()],
                ..CliLayer::default()
            };
            match cli_rules(&cli, None) {
                Ok(_) => assert!(ok, "{arg:?} was accepted"),
                Err(e) => {
                    assert!(!ok, "{arg:?}: {e:?}");
                    assert!(e[0].starts_with("--env "), "{e:?}");
                }
            }
        }
    }

    #[test]
    fn globs_match_within_one_name() {
        for (p, n, want) in [
            ("ssh_host_*_key", "ssh_host_rsa_key", true),
            ("ssh_host_*_key", "ssh_host_rsa_key.pub", false),
            ("*.pem", "a.pem", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("x*", "x", true),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} {n}");
        }
    }
}
