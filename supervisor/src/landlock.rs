//! The Landlock layer: a second, independent fence around the filesystem
//! view and the network, enforced by the kernel on the agent process.
//!
//! The mount layer decides what exists inside; Landlock decides what the
//! agent may do with it, so a mistake in one layer is not an escape. We use
//! the newest ABI the kernel offers: filesystem rights (ABI 1+), TCP bind and
//! connect rules (ABI 4+), abstract Unix socket and signal scoping (ABI 6+).
//! See <https://docs.kernel.org/userspace-api/landlock.html>.

use std::path::PathBuf;

use ::landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::error::SetupError;

const LAYER: &str = "landlock";

/// What the agent may do beneath a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsAccess {
    /// List directories only (used for `/`, whose content is all policy).
    ListOnly,
    /// Read files and list directories, no execute (e.g. `/proc`).
    ReadNoExec,
    /// Read, list and execute.
    ReadOnly,
    /// Read, list and execute beneath a read-only, `nodev` bind mount (the
    /// system trees of the full sandbox). The rule also grants truncate
    /// and device ioctl, which such a mount makes impossible anyway
    /// (truncate fails with EROFS, device nodes cannot be opened): Landlock
    /// resolves those two rights on every open, and a rule that grants
    /// them ends its walk up the path here instead of at the root, which
    /// made every open under `/usr` cost a walk to `/` (+10% on a file
    /// walk, `scripts/bench overhead`). Never used where nothing but
    /// Landlock stands between the agent and the files (degraded mode).
    ReadOnlyMount,
    /// Everything, including create, remove, rename and truncate.
    ReadWrite,
    /// Read and write an existing device node.
    Device,
    /// Read, write and ioctl a terminal device.
    Terminal,
}

/// One Landlock rule: an access right beneath a path (as seen inside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsRule {
    /// The path, after `pivot_root`.
    pub path: PathBuf,
    /// What is allowed beneath it.
    pub access: FsAccess,
}

/// The whole Landlock plan for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockPlan {
    /// Filesystem rules.
    pub fs: Vec<FsRule>,
    /// TCP ports the agent may connect to (the in-sandbox relay ports).
    /// Every other TCP connect and every TCP bind is denied.
    pub tcp_connect: Vec<u16>,
}

/// The Landlock ABI version the running kernel offers (0: none).
pub fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attr, size 0 and the VERSION flag, the syscall only
    // returns the ABI version; it reads and writes no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        0
    } else {
        v as i32
    }
}

fn abi_from(version: i32) -> ABI {
    match version {
        ..=0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        7 => ABI::V7,
        8 => ABI::V8,
        _ => ABI::V9,
    }
}

fn rights(access: FsAccess, abi: ABI) -> BitFlags<AccessFs> {
    let supported = AccessFs::from_all(abi);
    let wanted = match access {
        FsAccess::ListOnly => BitFlags::from(AccessFs::ReadDir),
        FsAccess::ReadNoExec => AccessFs::ReadFile | AccessFs::ReadDir,
        FsAccess::ReadOnly => AccessFs::from_read(abi),
        FsAccess::ReadOnlyMount => {
            AccessFs::from_read(abi) | AccessFs::Truncate | AccessFs::IoctlDev
        }
        FsAccess::ReadWrite => AccessFs::from_all(abi),
        FsAccess::Device => AccessFs::ReadFile | AccessFs::WriteFile,
        FsAccess::Terminal => AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev,
    };
    wanted & supported
}

/// What Landlock enforced, for `doctor` and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enforced {
    /// The ABI the ruleset was built for.
    pub abi: i32,
    /// TCP bind/connect rules were enforced.
    pub tcp: bool,
    /// Abstract Unix socket and signal scoping were enforced.
    pub scoped: bool,
}

/// Restricts the calling process (the agent, just before `execve`).
///
/// Fails unless the kernel enforces every right we asked for: the ruleset is
/// built for exactly the ABI the kernel reports, as a hard requirement.
pub fn restrict_self(plan: &LandlockPlan) -> Result<Enforced, SetupError> {
    let version = kernel_abi();
    if version < 1 {
        return Err(SetupError::new(
            LAYER,
            "this kernel offers no Landlock (needs Linux 5.13+ with CONFIG_SECURITY_LANDLOCK \
             and 'landlock' in the lsm= boot list); run 'sandbox doctor'",
        ));
    }
    let abi = abi_from(version);
    let tcp = version >= 4;
    let scoped = version >= 6;
    let status = build(plan, abi, tcp, scoped)
        .map_err(|e| SetupError::new(LAYER, format!("ruleset for ABI {version}: {e}")))?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(SetupError::new(
            LAYER,
            format!("kernel ABI {version} only partially enforced the ruleset"),
        ));
    }
    Ok(Enforced {
        abi: version,
        tcp,
        scoped,
    })
}

fn build(
    plan: &LandlockPlan,
    abi: ABI,
    tcp: bool,
    scoped: bool,
) -> Result<RestrictionStatus, Box<dyn std::error::Error>> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))?;
    if tcp {
        ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
    }
    if scoped {
        ruleset = ruleset.scope(Scope::from_all(abi))?;
    }
    let mut created = ruleset.create()?;
    for rule in &plan.fs {
        let fd = PathFd::new(&rule.path).map_err(|e| format!("{}: {e}", rule.path.display()))?;
        let mut access = rights(rule.access, abi);
        // A rule on a file carries only file rights (the degraded mode
        // grants single files when it carves around a denied path).
        if !rule.path.is_dir() {
            access &= AccessFs::from_file(abi);
        }
        created = created.add_rule(PathBeneath::new(fd, access))?;
    }
    if tcp {
        for port in &plan.tcp_connect {
            created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
        }
    }
    Ok(created.restrict_self()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_never_includes_write_rights() {
        let r = rights(FsAccess::ReadOnly, ABI::V6);
        assert!(r.contains(AccessFs::Execute));
        assert!(!r.contains(AccessFs::WriteFile));
        assert!(!r.contains(AccessFs::RemoveFile));
        assert!(!r.contains(AccessFs::MakeChar));
    }

    #[test]
    fn read_only_mounts_add_only_rights_the_mount_voids() {
        let r = rights(FsAccess::ReadOnlyMount, ABI::V6);
        assert_eq!(
            r & !rights(FsAccess::ReadOnly, ABI::V6),
            AccessFs::Truncate | AccessFs::IoctlDev
        );
        assert!(!r.contains(AccessFs::WriteFile));
        assert!(!r.contains(AccessFs::MakeReg));
        assert!(!r.contains(AccessFs::RemoveFile));
    }

    #[test]
    fn device_rights_drop_ioctl_on_old_abis() {
        assert!(!rights(FsAccess::Terminal, ABI::V4).contains(AccessFs::IoctlDev));
        assert!(rights(FsAccess::Terminal, ABI::V5).contains(AccessFs::IoctlDev));
    }
}
