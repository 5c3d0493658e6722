//! The managed policy: an administrator's file that bounds every profile
//! and flag. Its denies always win, its `network.allow` (when written) and
//! `network.allow_cidr` bound what may be allowed, its `network.ports` and
//! `limits` are ceilings, and `[managed]` can forbid command-line network
//! and environment changes. Anything that would exceed it is rejected with
//! a message naming the managed rule; nothing is silently narrowed.
//!
//! `/etc/airlock/managed.toml` applies whenever it exists. `--managed PATH`
//! or `AIRLOCK_MANAGED_POLICY` name the file where that one does not exist
//! (e.g. a Kubernetes ConfigMap); they cannot replace it, or a user could
//! swap the administrator's policy for a laxer root-owned file. Either way
//! the file is honoured only when it and every directory above it are owned
//! by root and not writable by anyone else.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::load::{parse_layer, Layer};
use super::merge::{apply, covered_by, lint, CliLayer, Effective, Source};

/// Where the administrator's managed policy lives.
pub const DEFAULT_MANAGED: &str = "/etc/airlock/managed.toml";
/// Names the managed policy where [`DEFAULT_MANAGED`] does not exist.
pub const MANAGED_ENV: &str = "AIRLOCK_MANAGED_POLICY";

/// Which managed policy applies: the default file when it exists, else the
/// one given by flag or environment, else none.
pub fn locate(explicit: Option<&Path>, default: &Path) -> Result<Option<PathBuf>, String> {
    let explicit = explicit.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(MANAGED_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if default.exists() {
        if let Some(e) = &explicit {
            let same = std::fs::canonicalize(e).ok() == std::fs::canonicalize(default).ok();
            if !same {
                return Err(format!(
                    "managed policy: {} is in force and cannot be replaced by {}",
                    default.display(),
                    e.display()
                ));
            }
        }
        return Ok(Some(default.to_path_buf()));
    }
    Ok(explicit)
}

/// Why a file cannot be trusted as the managed policy, if it cannot.
pub fn untrusted(path: &Path, file: &File) -> Option<String> {
    let refuse = |why: String| {
        Some(format!(
            "refusing managed policy {}: {why}; anyone who can change it could loosen the \
             policy (fix: chown root:root, chmod go-w)",
            path.display()
        ))
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return refuse(format!("stat: {e}")),
    };
    if !meta.is_file() {
        return refuse("not a regular file".into());
    }
    if meta.uid() != 0 {
        return refuse(format!("owned by uid {}, not root", meta.uid()));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return refuse(format!(
            "writable by group or others (mode {:o})",
            meta.permissions().mode() & 0o7777
        ));
    }
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    for dir in canonical.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(dir) else {
            return refuse(format!("cannot stat {}", dir.display()));
        };
        let mode = m.permissions().mode();
        // A sticky directory (/tmp) does not let others replace root's file.
        if m.uid() != 0 || (mode & 0o022 != 0 && mode & 0o1000 == 0) {
            return refuse(format!(
                "directory {} is owned by uid {} or writable by others",
                dir.display(),
                m.uid()
            ));
        }
    }
    if !nix::unistd::geteuid().is_root()
        && nix::unistd::access(&canonical, nix::unistd::AccessFlags::W_OK).is_ok()
    {
        return refuse("writable by you".into());
    }
    None
}

/// Opens, checks and validates the managed policy.
pub fn load(path: &Path) -> Result<Layer, Vec<String>> {
    let label = path.display().to_string();
    let mut file =
        File::open(path).map_err(|e| vec![format!("managed policy {label}: cannot read: {e}")])?;
    if let Some(why) = untrusted(path, &file) {
        return Err(vec![why]);
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| vec![format!("managed policy {label}: cannot read: {e}")])?;
    let canonical = std::fs::canonicalize(path).ok();
    parse_layer(&label, canonical, &text)
}

fn path_within(path: &str, dir: &str) -> bool {
    path == dir || dir == "/" || path.starts_with(&format!("{dir}/"))
}

/// Applies the managed layer on top of the merged policy. `cli` is checked
/// against `[managed]`.
pub fn enforce(eff: &mut Effective, managed: &Layer, cli: &CliLayer) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let m = &managed.rules;
    let label = &managed.label;
    let flags = managed.managed.clone().unwrap_or_default();
    if flags.allow_cli_network == Some(false) && cli.touches_network() {
        errors.push(format!(
            "--allow/--deny/--allow-cidr/--allow-port are refused by the managed policy {label} \
             ([managed] allow_cli_network = false); use a profile the policy permits"
        ));
    }
    if flags.allow_cli_env == Some(false) && !cli.env.is_empty() {
        errors.push(format!(
            "--env is refused by the managed policy {label} ([managed] allow_cli_env = false)"
        ));
    }
    // The embedded default's own ceilings are no request of the user's:
    // where the managed policy has a ceiling for the same limit, that
    // ceiling takes their place (below) instead of clashing with them.
    let from_default = |origin: &str| origin.starts_with(super::load::EMBEDDED_LABEL);
    let (l, ml) = (&mut eff.rules.limits, &m.limits);
    if ml.memory.is_some() && l.memory.as_ref().is_some_and(|e| from_default(&e.origin)) {
        l.memory = None;
    }
    if ml.pids.is_some() && l.pids.as_ref().is_some_and(|e| from_default(&e.origin)) {
        l.pids = None;
    }
    let r = &eff.rules;
    for grant in r.read.iter().chain(&r.write) {
        if let Some(d) = m.deny.iter().find(|d| path_within(&grant.value, &d.value)) {
            errors.push(format!(
                "{}: '{}' is denied by the managed policy (filesystem.deny '{}' at {})",
                grant.origin, grant.value, d.value, d.origin
            ));
        }
    }
    for a in &r.allow {
        if let Some(d) = m.net_deny.iter().find(|d| covered_by(&a.value, &d.value.0)) {
            errors.push(format!(
                "{}: allow '{}' is denied by the managed policy (network.deny '{}' at {})",
                a.origin, a.value, d.value.0, d.origin
            ));
        }
    }
    let managed_ports = m.ports.as_ref().map(|p| p.value.clone());
    let eff_ports = r
        .ports
        .as_ref()
        .map(|p| p.value.clone())
        .or(managed_ports.clone())
        .unwrap_or(egress_proxy::policy::DEFAULT_PORTS.to_vec());
    if let (Some(mp), Some(ep)) = (&m.ports, &r.ports) {
        for p in &ep.value {
            if !mp.value.contains(p) {
                errors.push(format!(
                    "{}: port {p} exceeds the managed policy (network.ports {:?} at {})",
                    ep.origin, mp.value, mp.origin
                ));
            }
        }
    }
    if managed.has_network_allow {
        let ceiling_ports = managed_ports
            .clone()
            .unwrap_or(egress_proxy::policy::DEFAULT_PORTS.to_vec());
        for a in &r.allow {
            let bounded = m.allow.iter().any(|b| {
                let wanted: Vec<u16> = a.value.port.map_or(eff_ports.clone(), |p| vec![p]);
                let permitted: Vec<u16> = b.value.port.map_or(ceiling_ports.clone(), |p| vec![p]);
                covered_by(&a.value, &b.value) && wanted.iter().all(|p| permitted.contains(p))
            });
            if !bounded {
                let list: Vec<String> = m.allow.iter().map(|b| b.value.pattern.clone()).collect();
                errors.push(format!(
                    "{}: allow '{}' is outside the managed policy's network.allow [{}] ({label})",
                    a.origin,
                    a.value,
                    list.join(", ")
                ));
            }
        }
    }
    if managed.has_network_cidr {
        for c in &r.allow_cidr {
            if !m
                .allow_cidr
                .iter()
                .any(|b| b.value.prefix <= c.value.prefix && b.value.contains(c.value.addr))
            {
                errors.push(format!(
                    "{}: allow_cidr {} is outside the managed policy's network.allow_cidr ({label})",
                    c.origin, c.value
                ));
            }
        }
    }
    for h in &r.host_rules {
        if let Some(mh) = m.host_rules.iter().find(|mh| mh.value.host == h.value.host) {
            errors.push(format!(
                "{}: network.rules for '{}' would widen the managed policy's rules for it (at {})",
                h.origin, h.value.host, mh.origin
            ));
        }
    }
    let (l, ml) = (&r.limits, &m.limits);
    macro_rules! ceiling {
        ($f:ident, $show:expr) => {
            if let (Some(v), Some(max)) = (&l.$f, &ml.$f) {
                if v.value > max.value {
                    errors.push(format!(
                        "{}: limits.{} = {} exceeds the managed ceiling {} (at {})",
                        v.origin,
                        stringify!($f),
                        $show(&v.value),
                        $show(&max.value),
                        max.origin
                    ));
                }
            }
        };
    }
    let size = |b: &u64| super::format::format_size(*b);
    let num = |n: &u64| n.to_string();
    ceiling!(memory, size);
    ceiling!(tmp_size, size);
    ceiling!(fsize, size);
    ceiling!(pids, num);
    ceiling!(nofile, num);
    ceiling!(cpu, |c: &f64| c.to_string());
    ceiling!(timeout, |d: &std::time::Duration| {
        super::merge::format_duration(*d)
    });
    for s in &m.env_set {
        if let Some(mine) = r
            .env_set
            .iter()
            .find(|x| x.value.0 == s.value.0 && x.value.1 != s.value.1)
        {
            errors.push(format!(
                "{}: env.set.{} is fixed by the managed policy (at {})",
                mine.origin, s.value.0, s.origin
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Within bounds: now the managed layer's own entries join, and its
    // ceilings become the values where nothing lower was asked for.
    let limits_before = eff.rules.limits.clone();
    let ports_before = eff.rules.ports.clone();
    apply(&mut eff.rules, m)?;
    let l = &mut eff.rules.limits;
    macro_rules! keep_lower {
        ($($f:ident),*) => { $( if limits_before.$f.is_some() { l.$f = limits_before.$f.clone(); } )* };
    }
    keep_lower!(memory, pids, cpu, nofile, fsize, tmp_size, timeout);
    // A managed cgroup limit is enforced: only the managed policy itself
    // may make it best-effort.
    let managed_cgroup =
        m.limits.memory.is_some() || m.limits.pids.is_some() || m.limits.cpu.is_some();
    if managed_cgroup && !m.limits.best_effort.as_ref().is_some_and(|b| b.value) {
        l.best_effort = None;
    }
    // The managed ports are a ceiling: explicit ports (checked above) stay.
    if ports_before.is_some() {
        eff.rules.ports = ports_before;
    }
    eff.sources.push(Source {
        label: label.clone(),
        sha256: managed.sha256.clone(),
        role: "managed",
    });
    let errors = lint(&eff.rules);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
