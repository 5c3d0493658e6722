//! The seccomp layer: shrinks the kernel surface the agent can reach.
//!
//! Two filters are installed on the agent just before `execve`:
//! 1. a hand-written guard that kills foreign-architecture calls (e.g.
//!    `int 0x80` on x86_64), refuses x32-numbered calls, and answers
//!    `clone3` with ENOSYS so libcs fall back to `clone`, whose flags we
//!    *can* inspect (clone3 passes them in memory, out of BPF's reach);
//! 2. a deny table compiled by seccompiler: each row is a syscall, the
//!    arguments that make it dangerous (none: always), and why.
//!
//! Everything denied answers EPERM, so well-behaved programs see an
//! ordinary "operation not permitted" rather than dying.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use crate::error::SetupError;

const LAYER: &str = "seccomp";

/// When a denied syscall is refused: always, or only for some arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Every call.
    Always,
    /// When the flags argument (`arg`) has any namespace-creation bit.
    NamespaceFlags {
        /// Index of the flags argument.
        arg: u8,
    },
    /// When the socket is anything but a Unix socket or a plain TCP socket:
    /// another family (raw, packet, netlink, vsock...), or an IP socket of
    /// another type or protocol (UDP, raw IP, ICMP, SCTP, MPTCP). The only
    /// way out is TCP to the relay; UDP has nowhere to go and would only
    /// make DNS lookups hang instead of failing at once.
    NotUnixOrTcp,
    /// When the ioctl request's low 32 bits are TIOCSTI or TIOCLINUX (the
    /// kernel ignores the high bits, so comparing all 64 would be bypassable:
    /// CVE-2019-10063, CVE-2016-7545).
    TerminalInjection,
    /// When the persona is anything but a query or plain Linux.
    PersonaChange,
}

/// One row of the deny table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deny {
    /// The syscall name, for `policy show` and messages.
    pub name: &'static str,
    /// Its number on this architecture.
    pub nr: i64,
    /// Which calls are refused.
    pub when: When,
}

/// A deny row for `libc::SYS_<name>`, named `<name>`.
macro_rules! deny {
    ($sys:ident) => {
        deny!($sys, When::Always)
    };
    ($sys:ident, $when:expr) => {
        Deny {
            // stringify!(SYS_ptrace) is "SYS_ptrace": drop the prefix.
            name: &stringify!($sys)[4..],
            nr: libc::$sys,
            when: $when,
        }
    };
}

/// The deny table: what the agent may never call, and why (in the comments
/// of each group).
pub fn deny_table() -> Vec<Deny> {
    vec![
        // Reading or steering other processes (including our PID 1).
        deny!(SYS_ptrace),
        deny!(SYS_process_vm_readv),
        deny!(SYS_process_vm_writev),
        deny!(SYS_pidfd_getfd),
        // Reshaping the filesystem view, old and new mount API.
        deny!(SYS_mount),
        deny!(SYS_umount2),
        deny!(SYS_pivot_root),
        deny!(SYS_chroot),
        deny!(SYS_fsopen),
        deny!(SYS_fsconfig),
        deny!(SYS_fsmount),
        deny!(SYS_fspick),
        deny!(SYS_move_mount),
        deny!(SYS_open_tree),
        deny!(SYS_mount_setattr),
        // New namespaces: nested user namespaces are the classic route to
        // kernel bugs reachable only with (namespaced) capabilities.
        deny!(SYS_unshare),
        deny!(SYS_setns),
        deny!(SYS_clone, When::NamespaceFlags { arg: 0 }),
        // Kernel keyrings are shared across namespaces.
        deny!(SYS_keyctl),
        deny!(SYS_add_key),
        deny!(SYS_request_key),
        // Large, bug-rich kernel surfaces an agent has no need for.
        deny!(SYS_bpf),
        deny!(SYS_perf_event_open),
        deny!(SYS_userfaultfd),
        deny!(SYS_io_uring_setup),
        deny!(SYS_io_uring_enter),
        deny!(SYS_io_uring_register),
        // The kernel itself.
        deny!(SYS_kexec_load),
        deny!(SYS_kexec_file_load),
        deny!(SYS_init_module),
        deny!(SYS_finit_module),
        deny!(SYS_delete_module),
        // File handles bypass path-based checks (the "shocker" escape).
        deny!(SYS_open_by_handle_at),
        deny!(SYS_name_to_handle_at),
        // READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE and friends weaken the process.
        deny!(SYS_personality, When::PersonaChange),
        // Keystroke injection into the caller's terminal.
        deny!(SYS_ioctl, When::TerminalInjection),
        // Only Unix sockets and TCP (to the relay): no raw, packet, netlink,
        // vsock or bluetooth sockets, no UDP.
        deny!(SYS_socket, When::NotUnixOrTcp),
        deny!(SYS_socketpair, When::NotUnixOrTcp),
        // Host administration, refused without capabilities anyway.
        deny!(SYS_acct),
        deny!(SYS_swapon),
        deny!(SYS_swapoff),
        deny!(SYS_reboot),
        deny!(SYS_syslog),
        deny!(SYS_quotactl),
        deny!(SYS_settimeofday),
        deny!(SYS_clock_settime),
        deny!(SYS_vhangup),
        deny!(SYS_fanotify_init),
    ]
}

const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
/// Personas that are allowed: 0 (PER_LINUX), PER_LINUX32, and the query.
const ALLOWED_PERSONAS: &[u64] = &[0, 0x0008, 0xffff_ffff];

fn cond(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    // Only fails for an argument index above 5; ours are constants below 6.
    SeccompCondition::new(arg, len, op, value).expect("argument index is below 6")
}

fn rules_for(when: When) -> Vec<SeccompRule> {
    use SeccompCmpArgLen::{Dword, Qword};
    let rule = |conds: Vec<SeccompCondition>| {
        SeccompRule::new(conds).expect("a rule with at least one condition")
    };
    match when {
        When::Always => Vec::new(),
        When::NamespaceFlags { arg } => NAMESPACE_FLAGS
            .iter()
            .map(|&f| rule(vec![cond(arg, Qword, SeccompCmpOp::MaskedEq(f), f)]))
            .collect(),
        When::NotUnixOrTcp => {
            // Refuse every family except 1 (AF_UNIX), 2 (AF_INET), 10 (AF_INET6).
            let mut rules = vec![rule(vec![cond(0, Dword, SeccompCmpOp::Gt, 10)])];
            for family in [0u64, 3, 4, 5, 6, 7, 8, 9] {
                rules.push(rule(vec![cond(0, Dword, SeccompCmpOp::Eq, family)]));
            }
            // IP sockets: SOCK_STREAM only (the type's low 4 bits; the high
            // bits are SOCK_NONBLOCK/SOCK_CLOEXEC), protocol 0 or IPPROTO_TCP.
            for family in [libc::AF_INET as u64, libc::AF_INET6 as u64] {
                for ty in 0u64..16 {
                    if ty != libc::SOCK_STREAM as u64 {
                        rules.push(rule(vec![
                            cond(0, Dword, SeccompCmpOp::Eq, family),
                            cond(1, Dword, SeccompCmpOp::MaskedEq(0xf), ty),
                        ]));
                    }
                }
                rules.push(rule(vec![
                    cond(0, Dword, SeccompCmpOp::Eq, family),
                    cond(2, Dword, SeccompCmpOp::Gt, libc::IPPROTO_TCP as u64),
                ]));
            }
            rules
        }
        When::TerminalInjection => [TIOCSTI, TIOCLINUX]
            .iter()
            .map(|&req| rule(vec![cond(1, Dword, SeccompCmpOp::Eq, req)]))
            .collect(),
        When::PersonaChange => vec![rule(
            ALLOWED_PERSONAS
                .iter()
                .map(|&p| cond(0, Dword, SeccompCmpOp::Ne, p))
                .collect(),
        )],
    }
}

/// The compiled filters, ready to install.
#[derive(Debug, Clone, PartialEq)]
pub struct SeccompPlan {
    /// Architecture guard, x32 refusal and clone3 -> ENOSYS.
    pub guard: BpfProgram,
    /// The deny table.
    pub deny: BpfProgram,
}

/// Compiles the deny table and the guard for the running architecture.
pub fn compile() -> Result<SeccompPlan, SetupError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| SetupError::new(LAYER, format!("unsupported architecture: {e}")))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for row in deny_table() {
        rules.entry(row.nr).or_default().extend(rules_for(row.when));
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| SetupError::new(LAYER, format!("deny table: {e}")))?;
    let deny: BpfProgram = filter
        .try_into()
        .map_err(|e| SetupError::new(LAYER, format!("compile deny table: {e}")))?;
    Ok(SeccompPlan {
        guard: guard_program(),
        deny,
    })
}

/// Installs both filters on the calling thread. Needs `no_new_privs`.
pub fn install(plan: &SeccompPlan) -> Result<(), SetupError> {
    seccompiler::apply_filter(&plan.guard)
        .map_err(|e| SetupError::new(LAYER, format!("install guard filter: {e}")))?;
    seccompiler::apply_filter(&plan.deny)
        .map_err(|e| SetupError::new(LAYER, format!("install deny filter: {e}")))
}

// Classic BPF for the guard program (linux/filter.h, linux/seccomp.h).
/// BPF_LD | BPF_W | BPF_ABS.
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JEQ | BPF_K.
const BPF_JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGE | BPF_K.
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Syscall numbers at or above this are x32 calls on x86_64.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// aarch64 has no x32 ABI; nothing legitimate is numbered this high.
#[cfg(target_arch = "aarch64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn guard_program() -> BpfProgram {
    let errno = |e: i32| libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA);
    vec![
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFFSET_NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, errno(libc::EPERM)),
        jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(BPF_RET_K, errno(libc::ENOSYS)),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_table_compiles_for_this_architecture() {
        let plan = compile().expect("compiles");
        assert!(plan.deny.len() > 50);
        assert_eq!(plan.guard.len(), 9);
    }

    #[test]
    fn every_issue_listed_syscall_is_denied() {
        let names: Vec<&str> = deny_table().iter().map(|d| d.name).collect();
        for must in [
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "unshare",
            "setns",
            "clone",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "open_by_handle_at",
            "personality",
            "ioctl",
            "socket",
        ] {
            assert!(names.contains(&must), "{must} missing from the deny table");
        }
    }
}
