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
//!
//! Its path variables come from trusted sources only ([`TrustedVars`]):
//! `${HOME}` is the real uid's home in the account database, never the
//! caller's environment, which the user controls (`env -u HOME` once
//! turned a `${HOME}/.ssh` deny into no rule at all). Its denies are then
//! compared with every grant on canonical paths ([`check_grants`]).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::load::{parse_layer, Layer};
use super::merge::{apply, covered_by, expand, lint, CliLayer, Effective, Entry, PathVars, Source};

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

/// Where the managed policy's path variables come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedVars {
    /// `${HOME}`: the real uid's home directory in the account database,
    /// or why there is none.
    pub home: Result<PathBuf, String>,
}

impl TrustedVars {
    /// The facts for the real uid of this process (`getpwuid(getuid())`).
    pub fn current() -> Self {
        let uid = nix::unistd::getuid();
        let home = match nix::unistd::User::from_uid(uid) {
            Ok(Some(u)) if u.dir.is_absolute() => Ok(u.dir),
            Ok(Some(u)) => Err(format!(
                "the account database gives uid {uid} the home directory '{}', which is not \
                 absolute",
                u.dir.display()
            )),
            Ok(None) => Err(format!("uid {uid} has no entry in the account database")),
            Err(e) => Err(format!(
                "cannot read the account database for uid {uid}: {e}"
            )),
        };
        Self { home }
    }
}

/// One managed path template with its variables resolved from `vars`:
/// `${HOME}` from the account database, `${TMPDIR}` as `/tmp` (the
/// caller's `TMPDIR` is theirs to point anywhere). `${WORKSPACE}` stays:
/// it is the run's canonical workspace, not an environment value.
pub fn resolve_template(template: &str, vars: &TrustedVars) -> Result<String, String> {
    let (base, rest) = if let Some(rest) = template.strip_prefix("${HOME}") {
        let home = vars.home.as_ref().map_err(Clone::clone)?;
        let home = home
            .to_str()
            .ok_or_else(|| format!("the home directory {} is not UTF-8", home.display()))?;
        (home.trim_end_matches('/').to_string(), rest)
    } else if let Some(rest) = template.strip_prefix("${TMPDIR}") {
        ("/tmp".to_string(), rest)
    } else {
        return Ok(template.to_string());
    };
    Ok(match (base.is_empty(), rest.is_empty()) {
        (true, true) => "/".to_string(),
        _ => format!("{base}{rest}"),
    })
}

/// Resolves every path template of the managed layer; an unresolvable one
/// is an error (fail closed), never an empty rule.
fn resolve_paths(rules: &mut super::merge::Rules, vars: &TrustedVars, label: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for (key, list) in [
        ("read", &mut rules.read),
        ("write", &mut rules.write),
        ("deny", &mut rules.deny),
    ] {
        for e in list.iter_mut() {
            match resolve_template(&e.value, vars) {
                Ok(v) => e.value = v,
                Err(why) => errors.push(format!(
                    "{}: managed policy {label}: filesystem.{key} '{}' cannot be resolved: {why}; \
                     the managed policy's ${{HOME}} comes from the account database, never from \
                     the environment (fix the account or write the path out)",
                    e.origin, e.value
                )),
            }
        }
    }
    errors
}

/// `path` made absolute and canonical: symlinks resolved as far as the
/// path exists, `.` and `..` removed, no trailing slash. The part that does
/// not exist is appended as written (it cannot hold a symlink).
pub fn canonical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = if path.is_absolute() {
        PathBuf::from("/")
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
    };
    for c in path.components() {
        match c {
            Component::Normal(name) => {
                let next = out.join(name);
                // Resolving each existing step as it comes makes a later
                // `..` go up from where a symlink really led, as the kernel does.
                out = std::fs::canonicalize(&next).unwrap_or(next);
            }
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Grants inside a managed deny, compared on canonical paths: every path
/// `read`, `write` or the workspace would bind. A grant of a parent of a
/// denied path is fine (the deny is masked inside it, see `plan.rs`); a
/// grant at or inside a denied path exceeds the managed policy.
pub fn check_grants(eff: &Effective, vars: &PathVars) -> Vec<String> {
    let denies: Vec<(PathBuf, &Entry<String>)> = eff
        .managed_deny
        .iter()
        .flat_map(|d| {
            let mut paths = expand(&d.value, vars);
            // A glob names what exists now; the pattern's directory is
            // what a grant must not sit in either way.
            if paths.is_empty() && !d.value.contains('*') {
                paths.push(PathBuf::from(&d.value));
            }
            paths.into_iter().map(move |p| (canonical(&p), d))
        })
        .collect();
    if denies.is_empty() {
        return Vec::new();
    }
    let r = &eff.rules;
    let workspace = Entry::new("${WORKSPACE}".to_string(), "the workspace");
    let mut grants: Vec<(PathBuf, &str, &Entry<String>)> =
        vec![(canonical(&vars.workspace), "workspace", &workspace)];
    for (key, list) in [("read", &r.read), ("write", &r.write)] {
        for g in list {
            for p in expand(&g.value, vars) {
                grants.push((canonical(&p), key, g));
            }
        }
    }
    let mut errors = Vec::new();
    for (path, key, g) in grants {
        if let Some((_, d)) = denies.iter().find(|(d, _)| path.starts_with(d)) {
            let shown = path.display().to_string();
            let real = if shown == g.value {
                String::new()
            } else {
                format!(" ({shown})")
            };
            errors.push(format!(
                "{}: {key} '{}'{real} is denied by the managed policy (filesystem.deny '{}' at {})",
                g.origin, g.value, d.value, d.origin
            ));
        }
    }
    errors
}

/// Applies the managed layer on top of the merged policy. `cli` is checked
/// against `[managed]`; path variables come from [`TrustedVars::current`].
pub fn enforce(eff: &mut Effective, managed: &Layer, cli: &CliLayer) -> Result<(), Vec<String>> {
    let r = &managed.rules;
    // The account database is asked only when a rule needs it (NSS may be
    // a network directory, slow to answer).
    let needs_home = r
        .read
        .iter()
        .chain(&r.write)
        .chain(&r.deny)
        .any(|e| e.value.starts_with("${HOME}"));
    let trusted = if needs_home {
        TrustedVars::current()
    } else {
        TrustedVars {
            home: Err("not looked up".to_string()),
        }
    };
    enforce_with(eff, managed, cli, &trusted)
}

/// [`enforce`] with the trusted facts given (tests).
pub fn enforce_with(
    eff: &mut Effective,
    managed: &Layer,
    cli: &CliLayer,
    trusted: &TrustedVars,
) -> Result<(), Vec<String>> {
    let mut resolved = managed.rules.clone();
    let mut errors = resolve_paths(&mut resolved, trusted, &managed.label);
    let m = &resolved;
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
    // Filesystem grants are compared with the denies on canonical paths
    // once the run's variables are known (check_grants).
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
    eff.managed_deny = m.deny.clone();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load::{embedded_default, parse_layer};
    use std::os::unix::fs::symlink;

    fn trusted(home: &str) -> TrustedVars {
        TrustedVars {
            home: Ok(PathBuf::from(home)),
        }
    }

    #[test]
    fn managed_home_comes_from_the_account_database_never_the_environment() {
        for (template, vars, want) in [
            ("${HOME}/.ssh", trusted("/home/u"), Ok("/home/u/.ssh")),
            ("${HOME}/.ssh", trusted("/home/u/"), Ok("/home/u/.ssh")),
            ("${HOME}", trusted("/"), Ok("/")),
            ("${TMPDIR}/x", trusted("/home/u"), Ok("/tmp/x")),
            (
                "${WORKSPACE}/.env",
                trusted("/home/u"),
                Ok("${WORKSPACE}/.env"),
            ),
            ("/etc/x", trusted("/home/u"), Ok("/etc/x")),
            (
                "${HOME}/.ssh",
                TrustedVars {
                    home: Err("uid 4242 has no entry in the account database".into()),
                },
                Err("no entry"),
            ),
        ] {
            match (resolve_template(template, &vars), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{template}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{template}: {e}"),
                (got, w) => panic!("{template}: got {got:?}, wanted {w:?}"),
            }
        }
    }

    #[test]
    fn an_unresolvable_managed_home_stops_the_run_instead_of_dropping_the_deny() {
        let managed =
            parse_layer("m.toml", None, "[filesystem]\ndeny = [\"${HOME}/.ssh\"]\n").expect("ok");
        let mut eff = Effective::merge(&[embedded_default()], &CliLayer::default()).expect("ok");
        let no_home = TrustedVars {
            home: Err("uid 4242 has no entry in the account database".into()),
        };
        let e = enforce_with(&mut eff, &managed, &CliLayer::default(), &no_home).unwrap_err();
        assert!(
            e[0].starts_with("m.toml:2:9: managed policy m.toml: filesystem.deny '${HOME}/.ssh' cannot be resolved: uid 4242"),
            "{e:?}"
        );
    }

    #[test]
    fn grants_at_or_inside_a_managed_deny_are_refused_on_canonical_paths() {
        let root = std::env::temp_dir().join(format!("airlock-managed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let home = root.join("home/u");
        std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
        std::fs::create_dir_all(root.join("ws")).expect("mkdir");
        symlink(home.join(".ssh"), root.join("sshlink")).expect("symlink");
        symlink(&home, root.join("homelink")).expect("symlink");
        let managed =
            parse_layer("m.toml", None, "[filesystem]\ndeny = [\"${HOME}/.ssh\"]\n").expect("ok");
        let h = home.display().to_string();
        let r = root.display().to_string();
        for (grant, home_env, refused) in [
            (format!("read = [\"{h}/.ssh\"]"), None, true),
            (format!("read = [\"{h}/.ssh/id_ed25519\"]"), None, true),
            (format!("write = [\"{r}/sshlink\"]"), None, true),
            (format!("read = [\"{r}/homelink/.ssh\"]"), None, true),
            (format!("read = [\"{h}/.ssh/\"]"), None, true),
            // The user's own ${HOME} is theirs; the managed one is not.
            (
                "read = [\"${HOME}/.ssh\"]".to_string(),
                Some(home.clone()),
                true,
            ),
            (
                "read = [\"${HOME}\"]".to_string(),
                Some(PathBuf::from("/tmp")),
                false,
            ),
            // A parent is granted, the deny is masked inside it.
            (format!("read = [\"{h}\"]"), None, false),
            (format!("read = [\"{r}\"]"), None, false),
        ] {
            let profile =
                parse_layer("p.toml", None, &format!("[filesystem]\n{grant}\n")).expect("ok");
            let mut eff =
                Effective::merge(&[embedded_default(), profile], &CliLayer::default()).expect("ok");
            enforce_with(&mut eff, &managed, &CliLayer::default(), &trusted(&h)).expect("ok");
            let vars = PathVars {
                workspace: root.join("ws"),
                home: home_env,
                tmpdir: PathBuf::from("/tmp"),
            };
            let e = check_grants(&eff, &vars);
            assert_eq!(!e.is_empty(), refused, "{grant}: {e:?}");
            if refused {
                assert!(
                    e[0].starts_with("p.toml:2:")
                        && e[0].contains("is denied by the managed policy (filesystem.deny '")
                        && e[0].contains("at m.toml:2:9)"),
                    "{grant}: {e:?}"
                );
            }
        }
        // The workspace is a grant too.
        let mut eff = Effective::merge(&[embedded_default()], &CliLayer::default()).expect("ok");
        enforce_with(&mut eff, &managed, &CliLayer::default(), &trusted(&h)).expect("ok");
        for (ws, refused) in [(root.join("sshlink"), true), (home.clone(), false)] {
            let vars = PathVars {
                workspace: ws.clone(),
                home: None,
                tmpdir: PathBuf::from("/tmp"),
            };
            let e = check_grants(&eff, &vars);
            assert_eq!(!e.is_empty(), refused, "{}: {e:?}", ws.display());
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
