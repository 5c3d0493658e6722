//! The deny table as one classic-BPF program.
//!
//! Layout (every jump is forward, as BPF requires):
//!
//! ```text
//!   load arch;  not ours        -> KILL
//!   load nr;    x32 bit set     -> EPERM
//!               above the highest known number -> ENOSYS
//!               a binary search over the table's numbers (and clone3's):
//!                 "nr >= pivot" splits until a few rows are left, then
//!                 one compare per row: always -> EPERM, clone3 -> ENOSYS,
//!                 by arguments -> that row's block; no row -> ALLOW
//!   the argument blocks (each ends in ALLOW or EPERM)
//!   ALLOW, EPERM, ENOSYS, KILL
//! ```
//!
//! Only the syscalls that have an argument block ever load an argument, so
//! for every other number the kernel can prove the answer constant and
//! skip the program entirely (its seccomp action cache). To prove it, the
//! kernel emulates the program once per syscall number when the filter is
//! installed, with interrupts off: a chain of one compare per row made
//! every allowed number walk all ~60 rows (about 30,000 instructions, 0.15
//! ms of every start); the search answers any number in a dozen. Arguments are
//! compared on their low 32 bits: every argument checked here is a 32-bit
//! `int`/`unsigned int` to the kernel (clone's flags are truncated by it
//! too), so the high half cannot change what the kernel does.

use seccompiler::{sock_filter, BpfProgram};

use super::{Deny, When, HIGHEST_KNOWN};

/// BPF_LD | BPF_W | BPF_ABS: load a 32-bit word of `seccomp_data`.
const LD_W_ABS: u16 = 0x20;
/// BPF_ALU | BPF_AND | BPF_K.
const AND_K: u16 = 0x54;
/// BPF_JMP | BPF_JA.
const JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ | BPF_K.
const JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGE | BPF_K.
const JGE_K: u16 = 0x35;
/// BPF_JMP | BPF_JSET | BPF_K.
const JSET_K: u16 = 0x45;
/// BPF_RET | BPF_K.
const RET_K: u16 = 0x06;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;

/// Offset of the low 32 bits of syscall argument `i`.
const fn arg_low(i: u8) -> u32 {
    16 + 8 * i as u32 + if cfg!(target_endian = "big") { 4 } else { 0 }
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Syscall numbers at or above this are x32 calls on x86_64 (aarch64 has
/// no x32 ABI, and nothing legitimate is numbered this high).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Every namespace-creation flag of clone(2).
const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// S_ISUID | S_ISGID.
const SET_ID_BITS: u32 = 0o6000;
/// O_CREAT, and O_TMPFILE's own bit (`__O_TMPFILE`).
const CREATE_FLAGS: u32 = libc::O_CREAT as u32 | 0o20000000;

const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541C;
/// Personas that are allowed: PER_LINUX, PER_LINUX32, and the query.
const ALLOWED_PERSONAS: [u32; 3] = [0, 0x0008, 0xffff_ffff];

/// The filter's answers.
pub const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
/// Refused with EPERM.
pub const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
/// Refused with ENOSYS (clone3, so libcs fall back to clone).
pub const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
/// The whole process is killed (a foreign architecture's call).
pub const RET_KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

/// A place in the program a jump can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Allow,
    Deny,
    NoSys,
    Kill,
    /// The argument block of table row `n`.
    Block(usize),
    /// The IP-socket part of row `n`'s socket block.
    IpSocket(usize),
    /// The search over the rows from index `n` on (an upper half).
    Rows(usize),
}

/// Where a conditional jump goes.
#[derive(Debug, Clone, Copy)]
enum To {
    Next,
    L(Label),
}

/// One instruction with symbolic targets, or a label's position.
#[derive(Debug)]
enum Insn {
    Stmt(u16, u32),
    Jump(u16, u32, To, To),
    Goto(Label),
    Here(Label),
}

/// Compiles the deny table; fails on a duplicated syscall or a program too
/// large for BPF's 8-bit jump offsets.
pub fn build(table: &[Deny]) -> Result<BpfProgram, String> {
    let mut rows: Vec<&Deny> = table.iter().collect();
    rows.sort_by_key(|d| d.nr);
    if let Some(w) = rows.windows(2).find(|w| w[0].nr == w[1].nr) {
        return Err(format!("{} is listed twice", w[0].name));
    }
    // What each number leads to, sorted by number.
    let mut targets = Vec::with_capacity(rows.len() + 1);
    for (n, row) in rows.iter().enumerate() {
        let nr = u32::try_from(row.nr).map_err(|_| format!("{}: bad number", row.name))?;
        // Rows with the same condition share one block.
        let first = rows.iter().position(|r| r.when == row.when).unwrap_or(n);
        let on_match = match row.when {
            When::Always => Label::Deny,
            _ => Label::Block(first),
        };
        targets.push((nr, on_match));
    }
    // clone3 and openat2 pass what we would check in memory: ENOSYS makes
    // libcs fall back to clone and openat, whose arguments we can inspect.
    for (name, nosys) in [
        ("clone3", libc::SYS_clone3 as u32),
        ("openat2", libc::SYS_openat2 as u32),
    ] {
        if targets.iter().any(|(nr, _)| *nr == nosys) {
            return Err(format!("{name} is answered with ENOSYS, not listed"));
        }
        targets.push((nosys, Label::NoSys));
    }
    targets.sort_by_key(|(nr, _)| *nr);
    let mut p = vec![
        Insn::Stmt(LD_W_ABS, ARCH),
        Insn::Jump(JEQ_K, AUDIT_ARCH, To::Next, To::L(Label::Kill)),
        Insn::Stmt(LD_W_ABS, NR),
        Insn::Jump(JGE_K, X32_SYSCALL_BIT, To::L(Label::Deny), To::Next),
        // A call newer than this table: answered as a kernel without it
        // would, so libcs fall back and nothing unreviewed runs.
        Insn::Jump(JGE_K, HIGHEST_KNOWN + 1, To::L(Label::NoSys), To::Next),
    ];
    search(&mut p, &targets, 0);
    for (n, row) in rows.iter().enumerate() {
        let first = rows.iter().position(|r| r.when == row.when) == Some(n);
        if row.when != When::Always && first {
            p.push(Insn::Here(Label::Block(n)));
            argument_block(&mut p, n, row.when);
        }
    }
    for (label, ret) in [
        (Label::Allow, RET_ALLOW),
        (Label::Deny, RET_EPERM),
        (Label::NoSys, RET_ENOSYS),
        (Label::Kill, RET_KILL),
    ] {
        p.push(Insn::Here(label));
        p.push(Insn::Stmt(RET_K, ret));
    }
    assemble(&p)
}

/// At most this many rows are compared one by one; more are split.
const LINEAR_ROWS: usize = 3;

/// The search over `targets` (sorted by number; the first is at index
/// `first` of the whole table): the upper half is jumped to, the lower
/// half follows, so every jump is forward. A number no row lists is
/// allowed.
fn search(p: &mut Vec<Insn>, targets: &[(u32, Label)], first: usize) {
    if targets.len() <= LINEAR_ROWS {
        for (nr, to) in targets {
            p.push(Insn::Jump(JEQ_K, *nr, To::L(*to), To::Next));
        }
        p.push(Insn::Goto(Label::Allow));
        return;
    }
    let mid = targets.len() / 2;
    let upper = Label::Rows(first + mid);
    p.push(Insn::Jump(JGE_K, targets[mid].0, To::L(upper), To::Next));
    search(p, &targets[..mid], first);
    p.push(Insn::Here(upper));
    search(p, &targets[mid..], first + mid);
}

/// The checks of one conditional row; every path ends in Allow or Deny.
fn argument_block(p: &mut Vec<Insn>, n: usize, when: When) {
    use Label::{Allow, Deny};
    use To::{Next, L};
    match when {
        When::Always => {}
        When::NamespaceFlags { arg } => p.extend([
            Insn::Stmt(LD_W_ABS, arg_low(arg)),
            Insn::Jump(JSET_K, NAMESPACE_FLAGS, L(Deny), L(Allow)),
        ]),
        When::TerminalInjection => p.extend([
            Insn::Stmt(LD_W_ABS, arg_low(1)),
            Insn::Jump(JEQ_K, TIOCSTI, L(Deny), Next),
            Insn::Jump(JEQ_K, TIOCLINUX, L(Deny), L(Allow)),
        ]),
        When::PersonaChange => {
            p.push(Insn::Stmt(LD_W_ABS, arg_low(0)));
            for persona in ALLOWED_PERSONAS {
                p.push(Insn::Jump(JEQ_K, persona, L(Allow), Next));
            }
            p.push(Insn::Goto(Deny));
        }
        When::SetIdMode { mode } => p.extend([
            Insn::Stmt(LD_W_ABS, arg_low(mode)),
            Insn::Jump(JSET_K, SET_ID_BITS, L(Deny), L(Allow)),
        ]),
        When::CreateSetId { flags, mode } => p.extend([
            Insn::Stmt(LD_W_ABS, arg_low(flags)),
            Insn::Jump(JSET_K, CREATE_FLAGS, Next, L(Allow)),
            Insn::Stmt(LD_W_ABS, arg_low(mode)),
            Insn::Jump(JSET_K, SET_ID_BITS, L(Deny), L(Allow)),
        ]),
        When::NotUnixOrTcp => p.extend([
            // The family: Unix sockets freely, IP sockets checked below,
            // anything else (raw, packet, netlink, vsock, alg...) refused.
            Insn::Stmt(LD_W_ABS, arg_low(0)),
            Insn::Jump(JEQ_K, libc::AF_UNIX as u32, L(Allow), Next),
            Insn::Jump(JEQ_K, libc::AF_INET as u32, L(Label::IpSocket(n)), Next),
            Insn::Jump(JEQ_K, libc::AF_INET6 as u32, L(Label::IpSocket(n)), L(Deny)),
            Insn::Here(Label::IpSocket(n)),
            // The type's low 4 bits (the rest are SOCK_NONBLOCK and
            // SOCK_CLOEXEC): stream only.
            Insn::Stmt(LD_W_ABS, arg_low(1)),
            Insn::Stmt(AND_K, 0xf),
            Insn::Jump(JEQ_K, libc::SOCK_STREAM as u32, Next, L(Deny)),
            // The protocol: the default or TCP (no SCTP, no MPTCP).
            Insn::Stmt(LD_W_ABS, arg_low(2)),
            Insn::Jump(JEQ_K, 0, L(Allow), Next),
            Insn::Jump(JEQ_K, libc::IPPROTO_TCP as u32, L(Allow), L(Deny)),
        ]),
    }
}

/// Resolves labels to forward offsets.
fn assemble(p: &[Insn]) -> Result<BpfProgram, String> {
    // Index of each label: the real instruction that follows it.
    let mut labels: Vec<(Label, usize)> = Vec::new();
    let mut at = 0;
    for insn in p {
        match insn {
            Insn::Here(l) => labels.push((*l, at)),
            _ => at += 1,
        }
    }
    let find = |l: Label| {
        labels
            .iter()
            .find(|(x, _)| *x == l)
            .map(|(_, i)| *i)
            .ok_or_else(|| format!("label {l:?} is never placed"))
    };
    let mut out = Vec::with_capacity(at);
    for insn in p {
        let here = out.len();
        let offset = |to: To| -> Result<usize, String> {
            match to {
                To::Next => Ok(0),
                To::L(l) => find(l)?
                    .checked_sub(here + 1)
                    .ok_or_else(|| format!("jump back to {l:?}")),
            }
        };
        let short = |to: To| -> Result<u8, String> {
            u8::try_from(offset(to)?).map_err(|_| "the program is too long for a jump".to_string())
        };
        match *insn {
            Insn::Here(_) => {}
            Insn::Stmt(code, k) => out.push(sock_filter {
                code,
                jt: 0,
                jf: 0,
                k,
            }),
            Insn::Jump(code, k, jt, jf) => out.push(sock_filter {
                code,
                jt: short(jt)?,
                jf: short(jf)?,
                k,
            }),
            Insn::Goto(l) => out.push(sock_filter {
                code: JA,
                jt: 0,
                jf: 0,
                k: offset(To::L(l))? as u32,
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{
        deny_table,
        interpret::{run, run_counted},
    };
    use super::*;

    fn program() -> BpfProgram {
        build(&deny_table()).expect("compiles")
    }

    fn call(nr: i64, args: [u64; 6]) -> u32 {
        run(&program(), AUDIT_ARCH, nr as u32, args)
    }

    fn args(a: &[u64]) -> [u64; 6] {
        let mut out = [0u64; 6];
        out[..a.len()].copy_from_slice(a);
        out
    }

    #[test]
    fn ordinary_calls_are_allowed() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_connect,
        ] {
            assert_eq!(call(nr, args(&[])), RET_ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn every_always_row_is_refused() {
        for row in deny_table().iter().filter(|r| r.when == When::Always) {
            assert_eq!(call(row.nr, args(&[])), RET_EPERM, "{}", row.name);
        }
    }

    #[test]
    fn architecture_x32_and_clone3() {
        let foreign_i386 = 0x4000_0003;
        assert_eq!(run(&program(), foreign_i386, 0, args(&[])), RET_KILL);
        let x32_read = X32_SYSCALL_BIT | libc::SYS_read as u32;
        assert_eq!(run(&program(), AUDIT_ARCH, x32_read, args(&[])), RET_EPERM);
        assert_eq!(call(libc::SYS_clone3, args(&[])), RET_ENOSYS);
    }

    #[test]
    fn clone_with_any_namespace_flag_is_refused() {
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD) as u64;
        assert_eq!(call(libc::SYS_clone, args(&[thread])), RET_ALLOW);
        assert_eq!(
            call(libc::SYS_clone, args(&[libc::SIGCHLD as u64])),
            RET_ALLOW
        );
        for bit in 0..32 {
            let flag = 1u64 << bit;
            let expect = if flag & NAMESPACE_FLAGS as u64 != 0 {
                RET_EPERM
            } else {
                RET_ALLOW
            };
            assert_eq!(
                call(libc::SYS_clone, args(&[flag | (1 << 40)])),
                expect,
                "bit {bit}"
            );
        }
    }

    #[test]
    fn terminal_injection_is_refused_whatever_the_high_bits() {
        for req in [TIOCSTI, TIOCLINUX] {
            assert_eq!(call(libc::SYS_ioctl, args(&[0, req as u64])), RET_EPERM);
            let high = req as u64 | 0xdead_beef_0000_0000;
            assert_eq!(call(libc::SYS_ioctl, args(&[0, high])), RET_EPERM);
        }
        assert_eq!(call(libc::SYS_ioctl, args(&[0, libc::TCGETS])), RET_ALLOW);
    }

    #[test]
    fn only_plain_personas() {
        for p in [0u64, 8, 0xffff_ffff] {
            assert_eq!(call(libc::SYS_personality, args(&[p])), RET_ALLOW, "{p:#x}");
        }
        for p in [0x0040_0000u64, 0x0004_0000, 0x0008 | 0x0040_0000, 1] {
            assert_eq!(call(libc::SYS_personality, args(&[p])), RET_EPERM, "{p:#x}");
        }
    }

    #[test]
    fn sockets_unix_or_tcp_only() {
        let stream_flags = (libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u64;
        for nr in [libc::SYS_socket, libc::SYS_socketpair] {
            let s = |f: i32, t: u64, p: u64| call(nr, args(&[f as u64, t, p]));
            assert_eq!(s(libc::AF_UNIX, libc::SOCK_DGRAM as u64, 0), RET_ALLOW);
            assert_eq!(s(libc::AF_UNIX, libc::SOCK_SEQPACKET as u64, 0), RET_ALLOW);
            for family in [libc::AF_INET, libc::AF_INET6] {
                assert_eq!(s(family, libc::SOCK_STREAM as u64, 0), RET_ALLOW);
                assert_eq!(s(family, stream_flags, libc::IPPROTO_TCP as u64), RET_ALLOW);
                for ty in 0..16u64 {
                    if ty != libc::SOCK_STREAM as u64 {
                        assert_eq!(s(family, ty, 0), RET_EPERM, "type {ty}");
                    }
                }
                for proto in [1u64, 17, 132, 262, 255] {
                    assert_eq!(s(family, libc::SOCK_STREAM as u64, proto), RET_EPERM);
                }
            }
            for family in [0, 3, 4, 5, 9, 16, 17, 38, 40, 44, 45] {
                assert_eq!(
                    s(family, libc::SOCK_STREAM as u64, 0),
                    RET_EPERM,
                    "{family}"
                );
            }
        }
    }

    #[test]
    fn every_number_gets_its_rows_answer() {
        let table = deny_table();
        for nr in 0..1024u32 {
            let row = table.iter().find(|r| r.nr == i64::from(nr));
            let got = call(i64::from(nr), args(&[]));
            let want = match row {
                Some(r) if r.when == When::Always => RET_EPERM,
                // Zero arguments: each block's harmless case.
                Some(r) if r.when == When::NotUnixOrTcp => RET_EPERM,
                Some(_) => RET_ALLOW,
                None if i64::from(nr) == libc::SYS_clone3 => RET_ENOSYS,
                None if i64::from(nr) == libc::SYS_openat2 => RET_ENOSYS,
                None if nr > HIGHEST_KNOWN => RET_ENOSYS,
                None => RET_ALLOW,
            };
            assert_eq!(got, want, "syscall {nr}");
        }
    }

    /// The kernel emulates the program for every syscall number on every
    /// install (interrupts off); a linear chain took ~65 instructions per
    /// allowed number here. The search must stay logarithmic.
    #[test]
    fn any_number_is_answered_in_a_few_instructions() {
        let program = program();
        let rows = deny_table().len() + 1;
        let depth = usize::BITS - rows.leading_zeros();
        let bound = 5 + depth as usize + LINEAR_ROWS + 1;
        for nr in 0..1024u32 {
            let (_, steps) = run_counted(&program, AUDIT_ARCH, nr, args(&[]));
            let has_block = deny_table()
                .iter()
                .any(|r| r.nr == i64::from(nr) && r.when != When::Always);
            if !has_block {
                assert!(
                    steps <= bound,
                    "syscall {nr}: {steps} steps (bound {bound})"
                );
            }
        }
    }

    /// Calls added after this table was written (Linux 6.19's listns is
    /// 470) reach no kernel code: ENOSYS, like clone3, up to the x32 range.
    #[test]
    fn numbers_beyond_the_known_ones_are_enosys() {
        for nr in [
            HIGHEST_KNOWN + 1,
            HIGHEST_KNOWN + 2,
            512,
            1000,
            0xffff,
            X32_SYSCALL_BIT - 1,
        ] {
            assert_eq!(call(i64::from(nr), args(&[])), RET_ENOSYS, "{nr}");
        }
        assert_eq!(call(i64::from(HIGHEST_KNOWN), args(&[])), RET_ALLOW);
        for (name, nr) in [
            ("open_tree_attr", 467),
            ("listmount", 458),
            ("statmount", 457),
            ("quotactl_fd", libc::SYS_quotactl_fd),
            ("memfd_secret", libc::SYS_memfd_secret),
            ("mount_setattr", libc::SYS_mount_setattr),
        ] {
            assert_eq!(call(nr, args(&[])), RET_EPERM, "{name}");
        }
    }

    #[test]
    fn set_id_bits_are_refused_on_every_path_that_sets_a_mode() {
        let suid = 0o4755u64;
        let sgid = 0o2755u64;
        let plain = 0o755u64;
        let creat = libc::O_CREAT as u64 | libc::O_WRONLY as u64;
        let tmpfile = libc::O_TMPFILE as u64 | libc::O_RDWR as u64;
        let rows: &[(i64, &[u64], u32)] = &[
            (libc::SYS_chmod, &[0, suid], RET_EPERM),
            (libc::SYS_chmod, &[0, sgid], RET_EPERM),
            (libc::SYS_chmod, &[0, plain], RET_ALLOW),
            (libc::SYS_fchmod, &[3, suid], RET_EPERM),
            (libc::SYS_fchmodat, &[0, 0, suid], RET_EPERM),
            (libc::SYS_fchmodat, &[0, 0, plain], RET_ALLOW),
            (libc::SYS_fchmodat2, &[0, 0, sgid, 0], RET_EPERM),
            (libc::SYS_creat, &[0, suid], RET_EPERM),
            (
                libc::SYS_mknod,
                &[0, libc::S_IFREG as u64 | suid, 0],
                RET_EPERM,
            ),
            (
                libc::SYS_mknodat,
                &[0, 0, libc::S_IFREG as u64 | sgid, 0],
                RET_EPERM,
            ),
            (libc::SYS_open, &[0, creat, suid], RET_EPERM),
            (libc::SYS_open, &[0, creat, plain], RET_ALLOW),
            // Without O_CREAT the mode is unused.
            (libc::SYS_open, &[0, 0, suid], RET_ALLOW),
            (libc::SYS_openat, &[0, 0, creat, suid], RET_EPERM),
            (libc::SYS_openat, &[0, 0, tmpfile, sgid], RET_EPERM),
            (libc::SYS_openat, &[0, 0, creat, 0o644], RET_ALLOW),
            // The high half of a 64-bit register does not hide the bits.
            (libc::SYS_chmod, &[0, (1 << 32) | suid], RET_EPERM),
            (libc::SYS_openat2, &[0, 0, 0, 0], RET_ENOSYS),
        ];
        for (nr, a, want) in rows {
            assert_eq!(call(*nr, args(a)), *want, "syscall {nr} {a:?}");
        }
    }

    #[test]
    fn clone3_cannot_be_a_row() {
        let mut table = deny_table();
        table.push(Deny {
            name: "clone3",
            nr: libc::SYS_clone3,
            when: When::Always,
        });
        assert!(build(&table).unwrap_err().contains("clone3"));
    }

    #[test]
    fn duplicates_are_rejected() {
        let mut table = deny_table();
        table.push(table[0]);
        assert!(build(&table).unwrap_err().contains("twice"));
    }
}
