//! The seccomp layer: shrinks the kernel surface the agent can reach.
//!
//! One filter is installed on the agent just before `execve`. It kills
//! foreign-architecture calls (e.g. `int 0x80` on x86_64), refuses
//! x32-numbered calls, answers `clone3` with ENOSYS so libcs fall back to
//! `clone`, whose flags we *can* inspect (clone3 passes them in memory, out
//! of BPF's reach), and applies the deny table below: each row is a
//! syscall, the arguments that make it dangerous (none: always), and why.
//!
//! Everything denied answers EPERM, so well-behaved programs see an
//! ordinary "operation not permitted" rather than dying.
//!
//! A deny table only knows the calls that existed when it was written, so
//! every number above [`HIGHEST_KNOWN`] (a call a newer kernel added) is
//! answered ENOSYS, as a kernel without it would: libcs fall back, and a
//! new mount or namespace call (`listns` arrived in 6.19) cannot slip past
//! the table. Raising the bound means reviewing each new call first.
//!
//! The program is generated here (program.rs) rather than by seccompiler's
//! compiler, which emits five instructions per always-denied call and
//! 64-bit comparisons the kernel never needs here: the kernel converts,
//! JIT-compiles and emulates (for its per-syscall allow cache) the whole
//! program on every sandbox start, so its size is start-up time. The
//! seccompiler crate still installs it.

#[cfg(test)]
mod interpret;
mod program;

use seccompiler::BpfProgram;

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
    /// When the mode argument (`mode`) asks for set-user-ID or
    /// set-group-ID: as root, files the agent makes in an idmapped tree
    /// are root's on disk (see `idmap.rs`).
    SetIdMode {
        /// Index of the mode argument.
        mode: u8,
    },
    /// When the call creates a file (`O_CREAT` or `O_TMPFILE` in argument
    /// `flags`) whose mode (argument `mode`) asks for set-user-ID or
    /// set-group-ID.
    CreateSetId {
        /// Index of the flags argument.
        flags: u8,
        /// Index of the mode argument.
        mode: u8,
    },
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

/// The highest syscall number this build knows (`file_setattr`, Linux
/// 6.17; x86_64 and aarch64 share every number from 424 on). Every number
/// above it is answered ENOSYS.
pub const HIGHEST_KNOWN: u32 = 469;

/// Numbers of calls newer than the `libc` crate's tables (the same on
/// x86_64 and aarch64: include/uapi/asm-generic/unistd.h, syscall_64.tbl).
mod newer {
    /// statmount(2), Linux 6.8.
    pub const SYS_STATMOUNT: i64 = 457;
    /// listmount(2), Linux 6.8.
    pub const SYS_LISTMOUNT: i64 = 458;
    /// open_tree_attr(2), Linux 6.15.
    pub const SYS_OPEN_TREE_ATTR: i64 = 467;
}

/// A deny row for `libc::SYS_<name>`, named `<name>`.
macro_rules! deny {
    ($name:literal, $nr:expr) => {
        Deny {
            name: $name,
            nr: $nr,
            when: When::Always,
        }
    };
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
        deny!("open_tree_attr", newer::SYS_OPEN_TREE_ATTR),
        // The mount tree as data: the host's mount topology where a mount
        // namespace id can be named, and nothing an agent needs.
        deny!("statmount", newer::SYS_STATMOUNT),
        deny!("listmount", newer::SYS_LISTMOUNT),
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
        // Memory removed from the kernel's direct map: pinned, fragments
        // the host's page tables, and hides from the supervisor's view.
        deny!(SYS_memfd_secret),
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
        // No set-user-ID or set-group-ID files: in an idmapped tree what
        // the agent makes is root's on disk, and a setuid-root binary left
        // there would be a way to root for anyone on the host. (openat2
        // passes its mode in memory, out of BPF's reach: it answers ENOSYS,
        // see program.rs, and libcs fall back to openat.)
        deny!(SYS_chmod, When::SetIdMode { mode: 1 }),
        deny!(SYS_fchmod, When::SetIdMode { mode: 1 }),
        deny!(SYS_fchmodat, When::SetIdMode { mode: 2 }),
        deny!(SYS_fchmodat2, When::SetIdMode { mode: 2 }),
        deny!(SYS_creat, When::SetIdMode { mode: 1 }),
        deny!(SYS_mknod, When::SetIdMode { mode: 1 }),
        deny!(SYS_mknodat, When::SetIdMode { mode: 2 }),
        deny!(SYS_open, When::CreateSetId { flags: 1, mode: 2 }),
        deny!(SYS_openat, When::CreateSetId { flags: 2, mode: 3 }),
        // Host administration, refused without capabilities anyway.
        deny!(SYS_acct),
        deny!(SYS_swapon),
        deny!(SYS_swapoff),
        deny!(SYS_reboot),
        deny!(SYS_syslog),
        deny!(SYS_quotactl),
        deny!(SYS_quotactl_fd),
        deny!(SYS_settimeofday),
        deny!(SYS_clock_settime),
        deny!(SYS_vhangup),
        deny!(SYS_fanotify_init),
    ]
}

/// The compiled filter, ready to install.
#[derive(Debug, Clone, PartialEq)]
pub struct SeccompPlan {
    /// The BPF program.
    pub program: BpfProgram,
}

/// Compiles the deny table for the running architecture.
pub fn compile() -> Result<SeccompPlan, SetupError> {
    program::build(&deny_table())
        .map(|program| SeccompPlan { program })
        .map_err(|e| SetupError::new(LAYER, format!("compile the deny table: {e}")))
}

/// Installs the filter on the calling thread. Needs `no_new_privs`.
pub fn install(plan: &SeccompPlan) -> Result<(), SetupError> {
    seccompiler::apply_filter(&plan.program)
        .map_err(|e| SetupError::new(LAYER, format!("install the filter: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_table_compiles_small() {
        let plan = compile().expect("compiles");
        // Compact: the kernel converts, JITs and emulates it on every start
        // (the emulation, per syscall number, is bounded by the search's
        // depth: program.rs tests that; the size costs a few ns a row).
        assert!(
            plan.program.len() < 176,
            "{} instructions",
            plan.program.len()
        );
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
            "open_tree_attr",
            "mount_setattr",
            "fsconfig",
            "fspick",
            "statmount",
            "listmount",
            "quotactl_fd",
            "memfd_secret",
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

    #[test]
    fn every_row_is_a_known_number() {
        for row in deny_table() {
            assert!(
                (0..=i64::from(HIGHEST_KNOWN)).contains(&row.nr),
                "{} ({}) is beyond HIGHEST_KNOWN",
                row.name,
                row.nr
            );
        }
        // The libc crate's newest calls are below the bound too.
        for nr in [libc::SYS_mseal, libc::SYS_memfd_secret, libc::SYS_clone3] {
            assert!(nr <= i64::from(HIGHEST_KNOWN), "{nr}");
        }
        // The selftest's probe of a newer call uses the first number beyond.
        assert_eq!(
            crate::probes::SYSCALL_BEYOND_KNOWN,
            i64::from(HIGHEST_KNOWN) + 1
        );
    }
}
