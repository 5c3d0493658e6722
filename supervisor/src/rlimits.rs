//! The rlimit layer: per-process limits the agent gets just before exec.
//!
//! - `RLIMIT_CORE` 0, soft and hard: a crash never writes a core file (it
//!   would hold the agent's memory, secrets placeholders included, on disk).
//! - `RLIMIT_NOFILE` from `[limits] nofile`, soft and hard, so fd
//!   exhaustion stops at EMFILE inside one process.
//! - `RLIMIT_FSIZE` from `[limits] fsize`: a larger write gets EFBIG.
//!
//! Hard limits can only go down without `CAP_SYS_RESOURCE` in the initial
//! user namespace, which nobody in the sandbox has: the agent cannot undo
//! them. A limit above the current hard limit is an error (fail closed).

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::error::SetupError;
use crate::policy::Limits;

const LAYER: &str = "rlimits";

/// One rlimit the agent gets, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// Which resource.
    pub resource: Resource,
    /// Its name, for messages (`RLIMIT_NOFILE`).
    pub name: &'static str,
    /// The `[limits]` key it comes from, if any.
    pub key: Option<&'static str>,
    /// Soft and hard value.
    pub value: u64,
}

/// The rlimits for `limits`.
pub fn plan(limits: &Limits) -> Vec<Rlimit> {
    let mut out = vec![Rlimit {
        resource: Resource::RLIMIT_CORE,
        name: "RLIMIT_CORE",
        key: None,
        value: 0,
    }];
    if let Some(n) = limits.nofile {
        out.push(Rlimit {
            resource: Resource::RLIMIT_NOFILE,
            name: "RLIMIT_NOFILE",
            key: Some("nofile"),
            value: n,
        });
    }
    if let Some(f) = limits.fsize {
        out.push(Rlimit {
            resource: Resource::RLIMIT_FSIZE,
            name: "RLIMIT_FSIZE",
            key: Some("fsize"),
            value: f,
        });
    }
    out
}

/// Applies `rlimits` to the calling process (the agent, before exec).
pub fn apply(rlimits: &[Rlimit]) -> Result<(), SetupError> {
    for r in rlimits {
        let (_, hard) = getrlimit(r.resource)
            .map_err(|e| SetupError::io(LAYER, format!("read {}", r.name), e))?;
        if r.value > hard {
            let key = r.key.unwrap_or(r.name);
            return Err(SetupError::new(
                LAYER,
                format!(
                    "limits.{key} = {} is above this host's hard {} ({hard}); lower it in the \
                     profile or raise the hard limit where sandbox starts (ulimit -H)",
                    r.value, r.name
                ),
            ));
        }
        setrlimit(r.resource, r.value, r.value)
            .map_err(|e| SetupError::io(LAYER, format!("set {} to {}", r.name, r.value), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_dumps_are_always_off() {
        let p = plan(&Limits::default());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].resource, Resource::RLIMIT_CORE);
        assert_eq!(p[0].value, 0);
    }

    #[test]
    fn nofile_and_fsize_come_from_the_limits() {
        let p = plan(&Limits {
            nofile: Some(256),
            fsize: Some(1 << 20),
            ..Limits::default()
        });
        let got: Vec<(&str, u64)> = p.iter().map(|r| (r.name, r.value)).collect();
        assert_eq!(
            got,
            [
                ("RLIMIT_CORE", 0),
                ("RLIMIT_NOFILE", 256),
                ("RLIMIT_FSIZE", 1 << 20)
            ]
        );
    }
}
