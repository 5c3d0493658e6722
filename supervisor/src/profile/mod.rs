//! Profiles and the managed policy: the TOML files security teams edit,
//! review and trust, merged into the [`Policy`] `sandbox run` enforces.
//!
//! Effective policy = embedded default ⊕ profile chain (`extends`) ⊕
//! command-line flags, then bounded by the managed policy (`managed.rs`).
//! One layer, one file: `format.rs` (the document), `load.rs` (lookup,
//! validation, `extends`), `merge.rs`, `managed.rs`, `protect.rs` (the
//! always-protected paths), `deny.rs` (where denies are masked), and one
//! file per `sandbox policy` command.

pub mod check;
pub mod deny;
pub mod explain;
pub mod format;
pub mod load;
pub mod managed;
pub mod merge;
#[cfg(test)]
mod properties;
pub mod protect;
pub mod show;
pub mod suggest;

use std::path::{Path, PathBuf};

use crate::policy::{FilesystemPolicy, Limits, Policy, PolicySource};
use merge::{CliLayer, Effective, PathVars};

/// Which profiles, managed policy and flags make up a policy.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--profile` (names or paths), applied in order.
    pub profiles: Vec<String>,
    /// `--managed PATH`.
    pub managed: Option<PathBuf>,
    /// The flags that change the policy.
    pub cli: CliLayer,
    /// `--workspace` (else the current directory): a grant the managed
    /// denies are checked against.
    pub workspace: Option<PathBuf>,
}

/// Loads, merges and bounds the effective policy. Every error names its
/// file, line and column, or its flag, or the managed rule.
pub fn effective(sel: &Selection) -> Result<Effective, Vec<String>> {
    effective_with(sel, Path::new(managed::DEFAULT_MANAGED))
}

/// [`effective`] with another default managed-policy location (tests).
pub fn effective_with(sel: &Selection, default_managed: &Path) -> Result<Effective, Vec<String>> {
    let mut layers = vec![load::embedded_default()];
    layers.extend(load::chain(&sel.profiles)?);
    let errors: Vec<String> = layers
        .iter()
        .filter(|l| l.managed.is_some())
        .map(|l| {
            format!(
                "{}: has a [managed] table, so it is a managed policy, not a profile: pass it \
                 with --managed (or install it as {})",
                l.label,
                managed::DEFAULT_MANAGED
            )
        })
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut eff = Effective::merge(&layers, &sel.cli)?;
    if let Some(path) =
        managed::locate(sel.managed.as_deref(), default_managed).map_err(|e| vec![e])?
    {
        let m = managed::load(&path)?;
        managed::enforce(&mut eff, &m, &sel.cli)?;
        let errors = managed::check_grants(&eff, &path_vars(sel.workspace.as_deref()));
        if !errors.is_empty() {
            return Err(errors);
        }
    }
    Ok(eff)
}

/// The variables for `workspace` (given or the current directory) and this
/// process's environment.
pub fn path_vars(workspace: Option<&Path>) -> PathVars {
    let ws = workspace
        .map(Path::to_path_buf)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("/"));
    PathVars {
        workspace: std::fs::canonicalize(&ws).unwrap_or(ws),
        home: std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute()),
        tmpdir: std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .filter(|t| t.is_absolute())
            .unwrap_or_else(|| PathBuf::from("/tmp")),
    }
}

/// The policy `sandbox run` enforces, with path variables expanded.
pub fn to_policy(eff: &Effective, vars: &PathVars) -> Policy {
    let r = &eff.rules;
    let paths = |items: &[merge::Entry<String>]| -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for e in items {
            for p in merge::expand(&e.value, vars) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    };
    let env_value = |v: &str| {
        let mut v = v.replace("${WORKSPACE}", &vars.workspace.display().to_string());
        if let Some(h) = &vars.home {
            v = v.replace("${HOME}", &h.display().to_string());
        }
        v
    };
    let l = &r.limits;
    Policy {
        filesystem: FilesystemPolicy {
            read: paths(&r.read),
            write: paths(&r.write),
            deny: paths(&r.deny),
            protect: r.protect.iter().map(|e| PathBuf::from(&e.value)).collect(),
        },
        env_pass: r.env_pass.iter().map(|e| e.value.clone()).collect(),
        env_set: r
            .env_set
            .iter()
            .map(|e| (e.value.0.clone(), env_value(&e.value.1)))
            .collect(),
        network: eff.network_policy(),
        credentials: r.credentials.iter().map(|e| e.value.clone()).collect(),
        limits: Limits {
            memory: l.memory.as_ref().map(|e| e.value),
            pids: l.pids.as_ref().map(|e| e.value),
            cpu_millis: l.cpu.as_ref().map(|e| (e.value * 1000.0).round() as u64),
            nofile: l.nofile.as_ref().map(|e| e.value),
            fsize: l.fsize.as_ref().map(|e| e.value),
            tmp_size: l.tmp_size.as_ref().map(|e| e.value),
            timeout: l.timeout.as_ref().map(|e| e.value),
            best_effort: l.best_effort.as_ref().is_some_and(|e| e.value),
            default_ceilings: default_ceilings(l),
        },
        hash: eff.hash(),
        sources: eff
            .sources
            .iter()
            .map(|s| PolicySource {
                label: s.label.clone(),
                sha256: s.sha256.clone(),
                role: s.role,
            })
            .collect(),
    }
}

/// The cgroup limits whose value is the embedded default's own.
fn default_ceilings(l: &merge::Limits) -> Vec<&'static str> {
    let from_default =
        |origin: Option<&String>| origin.is_some_and(|o| o.starts_with(load::EMBEDDED_LABEL));
    [
        ("memory", l.memory.as_ref().map(|e| &e.origin)),
        ("pids", l.pids.as_ref().map(|e| &e.origin)),
        ("cpu", l.cpu.as_ref().map(|e| &e.origin)),
    ]
    .into_iter()
    .filter(|(_, origin)| from_default(*origin))
    .map(|(limit, _)| limit)
    .collect()
}

/// Runs `sandbox policy ...`; returns the exit code.
pub fn command(cmd: crate::cli::PolicyCommand) -> u8 {
    use crate::cli::PolicyCommand as P;
    let load = |select: &crate::cli::SelectArgs| {
        let sel = Selection {
            profiles: select.profile.clone(),
            managed: select.managed.clone(),
            cli: CliLayer {
                allow: select.allow.clone(),
                deny: select.deny.clone(),
                allow_cidr: select.allow_cidr.clone(),
                allow_port: select.allow_port.clone(),
                env: select.env.clone(),
                timeout: select.timeout,
                report: false,
            },
            workspace: select.workspace.clone(),
        };
        effective(&sel).map_err(|errors| {
            for e in errors {
                eprintln!("sandbox: policy: {e}");
            }
        })
    };
    match cmd {
        P::Check { managed, files } => check::main(&files, managed.as_deref()),
        P::Show { select, json } => match load(&select) {
            Ok(eff) if json => {
                println!("{}", show::render_json(&eff));
                0
            }
            Ok(eff) => {
                print!("{}", show::render(&eff));
                0
            }
            Err(()) => 2,
        },
        P::Schema => {
            print!("{}", format::schema_json());
            0
        }
        P::Explain {
            select,
            path,
            url,
            method,
        } => {
            let Ok(eff) = load(&select) else { return 2 };
            let answer = match (path, url) {
                (Some(p), _) => {
                    let vars = path_vars(select.workspace.as_deref());
                    run_plan(&eff, &select, &vars)
                        .map(|mounts| explain::path(&eff, &vars, &mounts, &p))
                }
                (None, Some(u)) => explain::url(&eff, &u, &method.to_ascii_uppercase()),
                (None, None) => Err("give --path or --url".to_string()),
            };
            match answer {
                Ok(x) => {
                    println!(
                        "{}: {}",
                        if x.allowed { "allowed" } else { "denied" },
                        x.because
                    );
                    u8::from(!x.allowed)
                }
                Err(e) => {
                    eprintln!("sandbox: policy explain: {e}");
                    2
                }
            }
        }
        P::Suggest { audit } => match std::fs::read_to_string(&audit) {
            Ok(text) => {
                let (denials, bad) = suggest::read(&text);
                print!(
                    "{}",
                    suggest::render(
                        &suggest::suggest(&denials),
                        &audit.display().to_string(),
                        bad
                    )
                );
                0
            }
            Err(e) => {
                eprintln!("sandbox: policy suggest: {}: {e}", audit.display());
                2
            }
        },
    }
}

/// The mount plan `sandbox run` would build for `eff` and these flags
/// (`plan::build`, the one function both use), or the error run would
/// stop with.
fn run_plan(
    eff: &Effective,
    select: &crate::cli::SelectArgs,
    vars: &PathVars,
) -> Result<Vec<crate::mounts::MountStep>, String> {
    let request = crate::plan::RunRequest {
        workspace: select.workspace.clone(),
        env: select.env.clone(),
        timeout: select.timeout,
        argv: vec!["true".into()],
        network: crate::egress::NetworkRequest {
            allow: select.allow.clone(),
            deny: select.deny.clone(),
            allow_cidr: select.allow_cidr.clone(),
            allow_port: select.allow_port.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    crate::plan::Host::current()
        .and_then(|host| crate::plan::build(&to_policy(eff, vars), &request, &host))
        .map(|plan| plan.mounts)
        .map_err(|e| format!("`sandbox run` would stop here: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_is_the_compiled_in_default() {
        let eff =
            Effective::merge(&[load::embedded_default()], &CliLayer::default()).expect("valid");
        let vars = path_vars(Some(Path::new("/tmp")));
        let from_toml = to_policy(&eff, &vars);
        let code = Policy::embedded_default();
        assert_eq!(from_toml.filesystem, code.filesystem);
        assert_eq!(from_toml.env_pass, code.env_pass);
        assert_eq!(from_toml.network, code.network);
        assert!(from_toml.credentials.is_empty());
        assert_eq!(from_toml.hash.len(), 64);
    }

    /// The default's ceilings are marked as its own (so an unenforceable
    /// one only warns); a profile's value for the same limit is not.
    #[test]
    fn default_ceilings_are_marked_and_a_profiles_limit_is_not() {
        let vars = path_vars(Some(Path::new("/tmp")));
        let eff =
            Effective::merge(&[load::embedded_default()], &CliLayer::default()).expect("valid");
        let p = to_policy(&eff, &vars);
        assert_eq!(p.limits.pids, Some(4096));
        assert!(p.limits.memory.is_some_and(|m| m >= 16 << 20));
        assert_eq!(p.limits.default_ceilings, ["memory", "pids"]);
        let profile =
            load::parse_layer("p.toml", None, "[limits]\npids = 100\n").expect("valid profile");
        let eff = Effective::merge(&[load::embedded_default(), profile], &CliLayer::default())
            .expect("valid");
        let p = to_policy(&eff, &vars);
        assert_eq!(p.limits.pids, Some(100));
        assert_eq!(p.limits.default_ceilings, ["memory"]);
    }

    /// A managed ceiling below (or above) the default's own takes its
    /// place, enforced like any managed limit, instead of refusing every
    /// run for a value nobody asked for.
    #[test]
    fn a_managed_ceiling_replaces_the_defaults_own() {
        let dir = std::env::temp_dir().join(format!("airlock-mc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let vars = path_vars(Some(Path::new("/tmp")));
        for (pids, memory) in [(1000, "64M"), (10000, "100%")] {
            let file = dir.join("managed.toml");
            std::fs::write(
                &file,
                format!("[limits]\npids = {pids}\nmemory = \"{memory}\"\n"),
            )
            .expect("write");
            let sel = Selection {
                managed: Some(file),
                ..Selection::default()
            };
            let eff = effective_with(&sel, &dir.join("absent.toml"))
                .unwrap_or_else(|e| panic!("{pids}: {e:?}"));
            let p = to_policy(&eff, &vars);
            assert_eq!(p.limits.pids, Some(pids));
            assert!(p.limits.default_ceilings.is_empty(), "{pids}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
