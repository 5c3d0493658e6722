//! The prober: attempts one dangerous (or harmless) operation per argument
//! and reports what the kernel said, so end-to-end tests and
//! `sandbox selftest` can assert on the outcome a sandboxed program
//! actually sees. One source, two binaries: `sandbox __probe NAME...` (what
//! selftest runs inside the sandbox) and the tests crate's `probe`, which
//! includes this file by path (std and libc only, so it stays standalone).
//!
//! Usage: `probe NAME [NAME...]`, where a NAME may carry an argument after
//! `=` (for example `tcp-connect=127.0.0.1:8080`). For every NAME, in order,
//! exactly one line is printed:
//!
//! * `NAME: ok` — the attempt succeeded;
//! * `NAME: errno=EPERM` — the attempt failed with that errno (symbolic name,
//!   or the number when the name is not in the table below);
//! * `NAME: killed-by-signal=N` — the attempt killed the process (seccomp's
//!   `SECCOMP_RET_KILL_PROCESS` shows up as `killed-by-signal=31`, SIGSYS);
//! * `NAME: refused-by-probe=initial-user-namespace` — the probe would damage
//!   the host it runs on (detach `/`, stop PID 1, ...), so it declines to run
//!   it outside a user namespace; see [`is_destructive`];
//! * `whoami: ...` / `caps: ...` — the two reporting probes, see below.
//!
//! Each attempt runs in a forked child so that a fatal signal is observed by
//! the parent and reported instead of ending the whole run. The exit status
//! is 0 once every probe has been reported, 2 on an unknown NAME or a
//! malformed argument (nothing is attempted in that case).

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

/// Outcome of one attempt, as computed inside the forked child.
enum Outcome {
    /// The call succeeded.
    Ok,
    /// The call failed with this errno.
    Errno(i32),
    /// A reporting probe (`whoami`, `caps`) produced this text.
    Report(String),
}

/// Result of a single attempt: `Ok(())` or the errno it failed with.
type Attempt = Result<(), i32>;

/// A parsed probe: its printed name and the function that performs it.
struct Probe {
    /// The NAME exactly as given on the command line (including `=ARG`).
    label: String,
    /// The attempt, run in a forked child.
    run: Box<dyn Fn() -> Outcome>,
}

/// `KEY_SPEC_SESSION_KEYRING` from `<linux/keyctl.h>`.
const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
/// `KEYCTL_GET_KEYRING_ID` from `<linux/keyctl.h>`.
const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
/// `KEYCTL_UNLINK` from `<linux/keyctl.h>`, used to clean up after `add-key`.
const KEYCTL_UNLINK: libc::c_long = 9;
/// `BPF_MAP_CREATE` from `<linux/bpf.h>`.
const BPF_MAP_CREATE: libc::c_long = 0;
/// `PER_LINUX | READ_IMPLIES_EXEC`: makes every readable mapping executable,
/// the classic way to defeat NX (see personality(2)).
const READ_IMPLIES_EXEC: libc::c_ulong = 0x0400000;
/// `personality(0xffffffff)` queries the persona without changing it.
const PERSONALITY_QUERY: libc::c_ulong = 0xffff_ffff;
/// TIOCSTI pushes bytes into a terminal's input queue: a sandboxed program
/// sharing the user's tty can type commands into the parent shell
/// (CVE-2017-5226 in bubblewrap, CVE-2016-7545 in SELinux sandbox).
const TIOCSTI: u64 = 0x5412;
/// TIOCSTI with bits set above the 32 the kernel looks at: `ioctl`'s `cmd`
/// is an `unsigned int`, so a filter that compares all 64 bits is bypassed.
const TIOCSTI_HIGH_BITS: u64 = 0x1_0000_5412;
/// TIOCLINUX can paste the console selection into a virtual console's input
/// (TIOCL_SETSEL + TIOCL_PASTESEL), the same injection as TIOCSTI. The probe
/// sends the harmless subcommand 6 (TIOCL_GETSHIFTSTATE) only to see whether
/// the request reaches the tty layer at all.
const TIOCLINUX: u64 = 0x541C;
/// Bit that marks an x32 ABI syscall number on x86_64.
const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
/// Inode number of the initial user namespace (`PROC_USER_INIT_INO`).
const INITIAL_USER_NS: &str = "user:[4026531837]";
/// statmount(2) (Linux 6.8; the libc crate lacks it).
const SYS_STATMOUNT: libc::c_long = 457;
/// listmount(2) (Linux 6.8).
const SYS_LISTMOUNT: libc::c_long = 458;
/// open_tree_attr(2) (Linux 6.15).
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;
/// One above the highest syscall number the sandbox's filter knows
/// (`seccomp::HIGHEST_KNOWN`, a unit test keeps them in step): a call a
/// newer kernel may add (Linux 6.19's `listns`).
pub const SYSCALL_BEYOND_KNOWN: libc::c_long = 470;
/// `struct mnt_id_req` size (MNT_ID_REQ_SIZE_VER0).
const MNT_ID_REQ_SIZE: usize = 24;
/// `LSMT_ROOT`: the root of the caller's mount namespace, for listmount.
const LSMT_ROOT: u64 = 0xffff_ffff_ffff_ffff;
/// Size of `struct clone_args` (CLONE_ARGS_SIZE_VER2).
const CLONE_ARGS_SIZE: usize = 88;
/// Size of `struct io_uring_params`.
const IO_URING_PARAMS_SIZE: usize = 120;
/// Size of the zeroed `union bpf_attr` passed to `bpf(2)`.
const BPF_ATTR_SIZE: usize = 128;
/// `PERF_TYPE_SOFTWARE` from `<linux/perf_event.h>`.
const PERF_TYPE_SOFTWARE: u32 = 1;
/// `PERF_COUNT_SW_CPU_CLOCK` from `<linux/perf_event.h>`.
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
/// Size of `struct perf_event_attr` (PERF_ATTR_SIZE_VER8).
const PERF_ATTR_SIZE: usize = 136;

/// Runs the probes named in `args` (without the program name), printing one
/// line each; the exit code is 0, or 2 for bad usage.
pub fn main(args: Vec<String>) -> ExitCode {
    if args.is_empty() {
        eprintln!("usage: probe NAME[=ARG] [NAME[=ARG]...]");
        return ExitCode::from(2);
    }
    // Parse everything first so a typo attempts nothing.
    let mut probes = Vec::with_capacity(args.len());
    for arg in &args {
        match parse(arg) {
            Ok(probe) => probes.push(probe),
            Err(message) => {
                eprintln!("probe: {message}");
                return ExitCode::from(2);
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    for probe in &probes {
        let verdict = run_in_child(probe);
        // A closed stdout is not worth a panic; the exit status still says 0.
        let _ = writeln!(stdout, "{}: {}", probe.label, verdict);
        let _ = stdout.flush();
    }
    ExitCode::SUCCESS
}

/// Turns one command-line NAME into a [`Probe`], or explains why it cannot.
fn parse(arg: &str) -> Result<Probe, String> {
    let (name, value) = match arg.split_once('=') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (arg, None),
    };
    let needs_value = |what: &str| {
        value
            .clone()
            .ok_or_else(|| format!("{name} needs an argument: {name}={what}"))
    };
    let run: Box<dyn Fn() -> Outcome> = match name {
        "ptrace-attach-1" => simple(ptrace_attach_1),
        "ptrace-traceme" => simple(ptrace_traceme),
        "process-vm-readv-1" => simple(process_vm_readv_1),
        "proc-1-mem" => simple(proc_1_mem),
        "mount-tmpfs" => simple(mount_tmpfs),
        "umount-root" => simple(umount_root),
        "pivot-root" => simple(pivot_root),
        "chroot" => simple(chroot),
        "fsopen" => simple(fsopen),
        "open-tree" => simple(open_tree),
        "open-tree-attr" => simple(open_tree_attr),
        "mount-setattr" => simple(mount_setattr),
        "move-mount" => simple(move_mount),
        "fsconfig" => simple(fsconfig),
        "fsmount" => simple(fsmount),
        "fspick" => simple(fspick),
        "statmount" => simple(statmount),
        "listmount" => simple(listmount),
        "quotactl-fd" => simple(quotactl_fd),
        "memfd-secret" => simple(memfd_secret),
        "syscall-beyond-known" => simple(syscall_beyond_known),
        "unshare-user" => simple(|| unshare(libc::CLONE_NEWUSER)),
        "unshare-net" => simple(|| unshare(libc::CLONE_NEWNET)),
        "unshare-mount" => simple(|| unshare(libc::CLONE_NEWNS)),
        "setns" => simple(setns),
        "clone-newuser" => simple(|| clone_with(libc::CLONE_NEWUSER)),
        "clone-newpid" => simple(|| clone_with(libc::CLONE_NEWPID)),
        "clone-newnet" => simple(|| clone_with(libc::CLONE_NEWNET)),
        "clone3" => simple(clone3),
        "keyctl" => simple(keyctl),
        "add-key" => simple(add_key),
        "request-key" => simple(request_key),
        "bpf" => simple(bpf),
        "perf-event-open" => simple(perf_event_open),
        "userfaultfd" => simple(userfaultfd),
        "io-uring-setup" => simple(io_uring_setup),
        "kexec-load" => simple(kexec_load),
        "init-module" => simple(init_module),
        "finit-module" => simple(finit_module),
        "delete-module" => simple(delete_module),
        "open-by-handle-at" => simple(open_by_handle_at),
        "personality-read-implies-exec" => simple(|| personality(READ_IMPLIES_EXEC)),
        "personality-query" => simple(|| personality(PERSONALITY_QUERY)),
        "tiocsti" => simple(|| tty_ioctl(TIOCSTI, b'x')),
        "tiocsti-high-bits" => simple(|| tty_ioctl(TIOCSTI_HIGH_BITS, b'x')),
        "tioclinux" => simple(|| tty_ioctl(TIOCLINUX, 6)),
        "socket-packet" => simple(|| socket(libc::AF_PACKET, libc::SOCK_RAW, 0)),
        "socket-netlink" => {
            simple(|| socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE))
        }
        "socket-vsock" => simple(|| socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0)),
        "socket-unix" => simple(|| socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)),
        "socket-inet" => simple(|| socket(libc::AF_INET, libc::SOCK_STREAM, 0)),
        "socket-inet6" => simple(|| socket(libc::AF_INET6, libc::SOCK_STREAM, 0)),
        "x32-getpid" => simple(x32_getpid),
        "int80-getpid" => simple(int80_getpid),
        "tcp-connect" => {
            let addr = parse_addr(name, &needs_value("HOST:PORT")?)?;
            simple(move || tcp_connect(addr))
        }
        "udp-send" => {
            let addr = parse_addr(name, &needs_value("HOST:PORT")?)?;
            simple(move || udp_send(addr))
        }
        "abstract-connect" => {
            let abstract_name = needs_value("NAME")?;
            simple(move || abstract_connect(&abstract_name))
        }
        "write-file" => {
            let path = needs_value("PATH")?;
            simple(move || write_file(&path))
        }
        "read-file" => {
            let path = needs_value("PATH")?;
            simple(move || read_file(&path))
        }
        "file-size" => {
            let path = needs_value("PATH")?;
            Box::new(move || match std::fs::metadata(&path) {
                Ok(m) => Outcome::Report(format!("size={}", m.len())),
                Err(e) => Outcome::Errno(e.raw_os_error().unwrap_or(0)),
            })
        }
        "mknod" => {
            let path = cstring(&needs_value("PATH")?)?;
            simple(move || mknod(&path))
        }
        "signal-init" => simple(|| {
            // SAFETY: kill(2) with signal 0 only checks permission.
            check(unsafe { libc::kill(1, 0) } as libc::c_long)
        }),
        "mount-cgroup" => simple(mount_cgroup),
        "fd-exhaust" => Box::new(fd_exhaust),
        "fork-bomb" => {
            // An optional bound: `fork-bomb=8192` (default 1024).
            let bound = match &value {
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=65536).contains(n))
                    .ok_or_else(|| format!("fork-bomb={v}: a bound from 1 to 65536"))?,
                None => 1024,
            };
            Box::new(move || fork_bomb(bound))
        }
        "tmp-fill" => simple(tmp_fill),
        "mem-hog" => simple(mem_hog),
        "core-limit" => Box::new(core_limit),
        "getenv" => {
            let var = needs_value("NAME")?;
            Box::new(move || {
                Outcome::Report(if std::env::var_os(&var).is_some() {
                    "present".to_owned()
                } else {
                    "absent".to_owned()
                })
            })
        }
        "daemon" => {
            let marker = needs_value("SECONDS")?;
            simple(move || daemon(&marker))
        }
        "proxy-connect" => {
            let target = needs_value("HOST:PORT")?;
            Box::new(move || proxy_connect(&target))
        }
        "dns" => {
            let host = needs_value("NAME")?;
            Box::new(move || dns(&host))
        }
        "list-dir" => {
            let dir = needs_value("PATH")?;
            Box::new(move || list_dir(&dir))
        }
        "whoami" => Box::new(whoami),
        "caps" => Box::new(caps),
        _ => return Err(format!("unknown probe {name:?} (see the top of probe.rs)")),
    };
    let label = arg.to_owned();
    if is_destructive(name) {
        return Ok(Probe {
            label,
            run: Box::new(move || guard_host(&*run)),
        });
    }
    Ok(Probe { label, run })
}

/// Probes that, if they succeeded on the host, would break it: detach `/`,
/// mount over the host `/tmp`, SIGSTOP the host's PID 1, unload kexec images.
fn is_destructive(name: &str) -> bool {
    matches!(
        name,
        "ptrace-attach-1" | "mount-tmpfs" | "umount-root" | "pivot-root" | "kexec-load"
    )
}

/// Runs `run` only when the probe is not in the initial user namespace (a
/// sandbox always creates its own); on the host it reports a refusal instead.
fn guard_host(run: &dyn Fn() -> Outcome) -> Outcome {
    if in_initial_user_namespace() {
        return Outcome::Report("refused-by-probe=initial-user-namespace".to_owned());
    }
    run()
}

/// True when this process is (or may be) in the host's user namespace.
/// Errs on the side of "yes" when neither check can be made.
fn in_initial_user_namespace() -> bool {
    if let Ok(link) = std::fs::read_link("/proc/self/ns/user") {
        return link.as_os_str() == INITIAL_USER_NS;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"],
        Err(_) => true,
    }
}

/// Wraps a plain attempt so it fits in [`Probe::run`].
fn simple(attempt: impl Fn() -> Attempt + 'static) -> Box<dyn Fn() -> Outcome> {
    Box::new(move || match attempt() {
        Ok(()) => Outcome::Ok,
        Err(errno) => Outcome::Errno(errno),
    })
}

/// Parses `HOST:PORT` (IPv6 as `[::1]:PORT`).
fn parse_addr(name: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|e| format!("{name}={value}: expected IP:PORT such as 127.0.0.1:8080 ({e})"))
}

/// Converts a path argument to a C string, refusing interior NULs.
fn cstring(value: &str) -> Result<CString, String> {
    CString::new(value).map_err(|_| format!("{value:?} contains a NUL byte"))
}

// ---------------------------------------------------------------------------
// Fork wrapper
// ---------------------------------------------------------------------------

/// Runs the probe in a forked child and renders what happened to it.
///
/// The child writes its verdict to a pipe and `_exit`s; the parent reads the
/// pipe to EOF and then reaps the child, so a child killed by seccomp (or
/// anything else) is reported as `killed-by-signal=N`.
fn run_in_child(probe: &Probe) -> String {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return format!("probe-error=pipe:{}", errno_name(last_errno()));
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    // SAFETY: the probe is single-threaded, so the child may allocate and use
    // std freely before it `_exit`s (no lock can be held by another thread).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return format!("probe-error=fork:{}", errno_name(last_errno()));
    }
    if pid == 0 {
        // SAFETY: closing our copy of the read end; the fd is ours.
        unsafe { libc::close(read_fd) };
        let text = match (probe.run)() {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Errno(errno) => format!("errno={}", errno_name(errno)),
            Outcome::Report(text) => text,
        };
        write_all_fd(write_fd, text.as_bytes());
        // SAFETY: `_exit` skips atexit handlers and stdio flushing, which
        // belong to the parent.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: the parent does not write; closing lets read() see EOF.
    unsafe { libc::close(write_fd) };
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::read(read_fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            text.extend_from_slice(&buf[..n as usize]);
        } else if n == 0 || last_errno() != libc::EINTR {
            break;
        }
    }
    // SAFETY: `read_fd` is ours and no longer used.
    unsafe { libc::close(read_fd) };
    let status = wait_for(pid);
    match status {
        Some(status) if libc::WIFSIGNALED(status) => {
            format!("killed-by-signal={}", libc::WTERMSIG(status))
        }
        _ if !text.is_empty() => String::from_utf8_lossy(&text).into_owned(),
        Some(status) if libc::WIFEXITED(status) => {
            format!(
                "probe-error=child-exited-{}-silently",
                libc::WEXITSTATUS(status)
            )
        }
        _ => "probe-error=child-lost".to_owned(),
    }
}

/// Reaps `pid`, retrying on EINTR; `None` when it cannot be waited for.
fn wait_for(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && last_errno() == libc::EINTR {
            continue;
        }
        return None;
    }
}

/// Writes all of `bytes` to `fd`, giving up quietly on error.
fn write_all_fd(fd: libc::c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for `bytes.len()` bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && last_errno() == libc::EINTR {
            continue;
        } else {
            return;
        }
    }
}

/// The calling thread's errno.
fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Maps a `-1`-on-error return value to an [`Attempt`].
fn check(ret: libc::c_long) -> Attempt {
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

/// Like [`check`], but closes the file descriptor a successful call returned.
fn check_fd(ret: libc::c_long) -> Attempt {
    check(ret)?;
    // SAFETY: the call just returned this fd to us.
    unsafe { libc::close(ret as libc::c_int) };
    Ok(())
}

/// Converts an `io::Error` from std into the errno it carries.
fn io_errno(error: std::io::Error) -> i32 {
    error.raw_os_error().unwrap_or(libc::EIO)
}

/// Symbolic name of an errno value, or its number when not in the table.
fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EDESTADDRREQ => "EDESTADDRREQ",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::ESTALE => "ESTALE",
        libc::ENOKEY => "ENOKEY",
        libc::EKEYREVOKED => "EKEYREVOKED",
        libc::EKEYREJECTED => "EKEYREJECTED",
        libc::EKEYEXPIRED => "EKEYEXPIRED",
        libc::EDQUOT => "EDQUOT",
        libc::ENOMEDIUM => "ENOMEDIUM",
        libc::EUSERS => "EUSERS",
        _ => return errno.to_string(),
    };
    name.to_owned()
}

// ---------------------------------------------------------------------------
// Process inspection: reading or controlling another process's memory.
// ---------------------------------------------------------------------------

/// ptrace(PTRACE_ATTACH, 1): take control of PID 1 (in a sandbox, its init).
fn ptrace_attach_1() -> Attempt {
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: plain syscall with integer and null pointer arguments.
    check(unsafe { libc::ptrace(libc::PTRACE_ATTACH, 1, null, null) })?;
    // The attach sent PID 1 a SIGSTOP. Wait for that stop, then detach with
    // signal 0, which discards the SIGSTOP and lets PID 1 run on; merely
    // exiting would leave it stopped (and a stopped init wedges the sandbox).
    wait_for(1);
    // SAFETY: as above; PID 1 is now in a ptrace-stop, as DETACH requires.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, 1, null, null) };
    Ok(())
}

/// ptrace(PTRACE_TRACEME): ask to be traced by the parent.
fn ptrace_traceme() -> Attempt {
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: plain syscall with null pointer arguments.
    check(unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, null, null) })
}

/// process_vm_readv from PID 1: read another process's memory without ptrace.
fn process_vm_readv_1() -> Attempt {
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: 0x1000 as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` points at our own 8-byte buffer; `remote` is only
    // interpreted in the other process's address space.
    check(unsafe { libc::process_vm_readv(1, &local, 1, &remote, 1, 0) } as libc::c_long)
}

/// open("/proc/1/mem"): read PID 1's memory through procfs.
fn proc_1_mem() -> Attempt {
    // SAFETY: the path is a NUL-terminated literal.
    check_fd(unsafe { libc::open(c"/proc/1/mem".as_ptr(), libc::O_RDONLY) } as libc::c_long)
}

// ---------------------------------------------------------------------------
// Mount table: rearranging the filesystem view to escape or hide from it.
// ---------------------------------------------------------------------------

/// mount("none", "/tmp", "tmpfs", 0, NULL).
fn mount_tmpfs() -> Attempt {
    // SAFETY: all strings are NUL-terminated literals; data is null.
    let ret = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/tmp".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    check(ret as libc::c_long)?;
    // Undo it: the probe reports, it does not leave changes behind.
    // SAFETY: NUL-terminated literal path.
    unsafe { libc::umount2(c"/tmp".as_ptr(), libc::MNT_DETACH) };
    Ok(())
}

/// umount2("/", MNT_DETACH): peel the sandbox root off to reveal what is under.
fn umount_root() -> Attempt {
    // SAFETY: NUL-terminated literal path.
    check(unsafe { libc::umount2(c"/".as_ptr(), libc::MNT_DETACH) } as libc::c_long)
}

/// pivot_root("/tmp", "/tmp").
fn pivot_root() -> Attempt {
    // SAFETY: raw syscall with two NUL-terminated literal paths.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, c"/tmp".as_ptr(), c"/tmp".as_ptr()) })
}

/// chroot("/tmp"): the first step of the classic chroot escape.
fn chroot() -> Attempt {
    // SAFETY: NUL-terminated literal path.
    check(unsafe { libc::chroot(c"/tmp".as_ptr()) } as libc::c_long)
}

/// fsopen("tmpfs", 0): the new mount API, which bypasses filters on mount(2).
fn fsopen() -> Attempt {
    // SAFETY: raw syscall with a NUL-terminated literal.
    check_fd(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0) })
}

/// open_tree(AT_FDCWD, "/", 0): grab a mount as an fd for move_mount.
fn open_tree() -> Attempt {
    // SAFETY: raw syscall with a NUL-terminated literal.
    check_fd(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c"/".as_ptr(), 0) })
}

/// open_tree_attr(AT_FDCWD, "/", 0, NULL, 0): open_tree with mount
/// attributes (Linux 6.15), the newest way to clone a mount.
fn open_tree_attr() -> Attempt {
    // SAFETY: raw syscall with a NUL-terminated literal and a null attr.
    check_fd(unsafe {
        libc::syscall(
            SYS_OPEN_TREE_ATTR,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            0,
            std::ptr::null::<u8>(),
            0,
        )
    })
}

/// mount_setattr(AT_FDCWD, "/", 0, NULL, 0): change a mount's flags (for
/// instance drop read-only).
fn mount_setattr() -> Attempt {
    // SAFETY: raw syscall with a NUL-terminated literal and a null attr.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            0,
            std::ptr::null::<u8>(),
            0,
        )
    })
}

/// move_mount(AT_FDCWD, "/tmp", AT_FDCWD, "/", 0): move a mount.
fn move_mount() -> Attempt {
    // SAFETY: raw syscall with NUL-terminated literals.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            libc::AT_FDCWD,
            c"/tmp".as_ptr(),
            libc::AT_FDCWD,
            c"/".as_ptr(),
            0,
        )
    })
}

/// fsconfig(-1, FSCONFIG_CMD_CREATE, NULL, NULL, 0).
fn fsconfig() -> Attempt {
    // SAFETY: raw syscall on integers and null pointers.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            -1,
            6,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    })
}

/// fsmount(-1, 0, 0).
fn fsmount() -> Attempt {
    // SAFETY: raw syscall on integers.
    check_fd(unsafe { libc::syscall(libc::SYS_fsmount, -1, 0, 0) })
}

/// fspick(AT_FDCWD, "/", 0): reconfigure an existing superblock.
fn fspick() -> Attempt {
    // SAFETY: raw syscall with a NUL-terminated literal.
    check_fd(unsafe { libc::syscall(libc::SYS_fspick, libc::AT_FDCWD, c"/".as_ptr(), 0) })
}

/// statmount of the root mount (id from listmount's request form): what
/// is mounted where, with which options.
fn statmount() -> Attempt {
    let mut req = [0u64; MNT_ID_REQ_SIZE / 8];
    req[0] = MNT_ID_REQ_SIZE as u64;
    req[1] = LSMT_ROOT;
    let mut buf = vec![0u64; 512];
    // SAFETY: `req` is a valid mnt_id_req; `buf` has the length given.
    check(unsafe {
        libc::syscall(
            SYS_STATMOUNT,
            req.as_ptr(),
            buf.as_mut_ptr(),
            buf.len() * 8,
            0,
        )
    })
}

/// listmount of the mount namespace's root: the ids of every mount.
fn listmount() -> Attempt {
    let mut req = [0u64; MNT_ID_REQ_SIZE / 8];
    req[0] = MNT_ID_REQ_SIZE as u64;
    req[1] = LSMT_ROOT;
    let mut ids = [0u64; 64];
    // SAFETY: `req` is a valid mnt_id_req; `ids` has the length given.
    check(unsafe { libc::syscall(SYS_LISTMOUNT, req.as_ptr(), ids.as_mut_ptr(), ids.len(), 0) })
}

/// quotactl_fd(open("/"), Q_GETFMT, 0, &fmt): quota control by fd.
fn quotactl_fd() -> Attempt {
    // SAFETY: NUL-terminated literal path.
    let fd = unsafe { libc::open(c"/".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    check(fd as libc::c_long)?;
    let mut fmt = 0u32;
    // Q_GETFMT is QCMD(0x800004, USRQUOTA).
    // SAFETY: `fd` is ours; `fmt` is a valid out-pointer.
    let result = check(unsafe {
        libc::syscall(libc::SYS_quotactl_fd, fd, 0x0080_0004u32 << 8, 0, &mut fmt)
    });
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    result
}

/// memfd_secret(0): memory taken out of the kernel's direct map.
fn memfd_secret() -> Attempt {
    // SAFETY: raw syscall on an integer flag.
    check_fd(unsafe { libc::syscall(libc::SYS_memfd_secret, 0) })
}

/// The first syscall number beyond those the filter knows: a call some
/// newer kernel adds must not reach it unreviewed.
fn syscall_beyond_known() -> Attempt {
    // SAFETY: a number no kernel this build knows implements; all
    // arguments are zero.
    check(unsafe { libc::syscall(SYSCALL_BEYOND_KNOWN, 0, 0, 0, 0, 0, 0) })
}

// ---------------------------------------------------------------------------
// Namespaces: a fresh namespace hands back capabilities inside it.
// ---------------------------------------------------------------------------

/// unshare(flags).
fn unshare(flags: libc::c_int) -> Attempt {
    // SAFETY: plain syscall on integer flags.
    check(unsafe { libc::unshare(flags) } as libc::c_long)
}

/// open("/proc/self/ns/net") then setns(fd, 0).
fn setns() -> Attempt {
    // SAFETY: NUL-terminated literal path.
    let fd = unsafe { libc::open(c"/proc/self/ns/net".as_ptr(), libc::O_RDONLY) };
    check(fd as libc::c_long)?;
    // SAFETY: `fd` is the namespace fd we just opened.
    let result = check(unsafe { libc::setns(fd, 0) } as libc::c_long);
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    result
}

/// Raw clone(flags | SIGCHLD) with no new stack (fork-like); the new child
/// exits at once and is reaped.
fn clone_with(flags: libc::c_int) -> Attempt {
    let all = (flags | libc::SIGCHLD) as libc::c_long;
    // SAFETY: without CLONE_VM and with no new stack the child runs on a
    // copy of our memory, like fork(); it only calls `_exit`.
    let pid = unsafe { libc::syscall(libc::SYS_clone, all, 0, 0, 0, 0) };
    reap_fork_like(pid)
}

/// clone3 with a zeroed `struct clone_args` (flags 0, exit_signal SIGCHLD).
/// Seccomp cannot inspect clone3's flags (they sit behind a pointer), so a
/// filter must refuse the whole call with ENOSYS to make libc fall back to
/// clone, whose flags it can check.
fn clone3() -> Attempt {
    let mut args = [0u64; CLONE_ARGS_SIZE / 8];
    args[4] = libc::SIGCHLD as u64; // exit_signal
                                    // SAFETY: `args` is a valid clone_args of CLONE_ARGS_SIZE bytes; with no
                                    // CLONE_VM and no stack the child is a fork-like copy that only `_exit`s.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), CLONE_ARGS_SIZE) };
    reap_fork_like(pid)
}

/// Shared tail of the clone probes: `_exit` in the new child, reap in ours.
fn reap_fork_like(pid: libc::c_long) -> Attempt {
    if pid == 0 {
        // SAFETY: we are the freshly cloned child; leave immediately.
        unsafe { libc::_exit(0) };
    }
    check(pid)?;
    wait_for(pid as libc::pid_t);
    Ok(())
}

// ---------------------------------------------------------------------------
// Kernel keyring: not namespaced, so keys leak between sandbox and host.
// ---------------------------------------------------------------------------

/// keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0).
fn keyctl() -> Attempt {
    // SAFETY: raw syscall on integers.
    check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING,
            0,
        )
    })
}

/// add_key("user", "airlock-probe", "x", 1, KEY_SPEC_SESSION_KEYRING).
fn add_key() -> Attempt {
    // SAFETY: raw syscall with NUL-terminated literals and a 1-byte payload.
    let key = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            c"airlock-probe".as_ptr(),
            c"x".as_ptr(),
            1usize,
            KEY_SPEC_SESSION_KEYRING,
        )
    };
    check(key)?;
    // Clean up the key we just added (best effort).
    // SAFETY: raw syscall on integers.
    unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_UNLINK,
            key,
            KEY_SPEC_SESSION_KEYRING,
        )
    };
    Ok(())
}

/// request_key("user", "airlock-probe-absent", NULL, 0).
fn request_key() -> Attempt {
    // SAFETY: raw syscall with NUL-terminated literals and a null info.
    check(unsafe {
        libc::syscall(
            libc::SYS_request_key,
            c"user".as_ptr(),
            c"airlock-probe-absent".as_ptr(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
}

// ---------------------------------------------------------------------------
// Kernel attack surface: interfaces with a long record of privilege
// escalation bugs that no sandboxed program needs.
// ---------------------------------------------------------------------------

/// bpf(BPF_MAP_CREATE, zeroed attr, 128).
fn bpf() -> Attempt {
    let attr = [0u8; BPF_ATTR_SIZE];
    // SAFETY: `attr` is a readable zeroed buffer of the size passed.
    check_fd(unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_ptr(), attr.len()) })
}

/// perf_event_open(software CPU clock, this process, any CPU).
fn perf_event_open() -> Attempt {
    let mut attr = [0u8; PERF_ATTR_SIZE];
    // struct perf_event_attr starts { u32 type; u32 size; u64 config; ... }.
    attr[0..4].copy_from_slice(&PERF_TYPE_SOFTWARE.to_ne_bytes());
    attr[4..8].copy_from_slice(&(PERF_ATTR_SIZE as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&PERF_COUNT_SW_CPU_CLOCK.to_ne_bytes());
    // SAFETY: `attr` is a valid perf_event_attr of the size it declares.
    check_fd(unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) })
}

/// userfaultfd(0): lets an exploit pause the kernel mid-copy (race widening).
fn userfaultfd() -> Attempt {
    // SAFETY: raw syscall on an integer.
    check_fd(unsafe { libc::syscall(libc::SYS_userfaultfd, 0) })
}

/// io_uring_setup(8, zeroed params): performs syscalls seccomp never sees.
fn io_uring_setup() -> Attempt {
    let mut params = [0u8; IO_URING_PARAMS_SIZE];
    // SAFETY: `params` is a writable zeroed io_uring_params.
    check_fd(unsafe { libc::syscall(libc::SYS_io_uring_setup, 8, params.as_mut_ptr()) })
}

/// kexec_load(0, 0, NULL, 0).
fn kexec_load() -> Attempt {
    // SAFETY: raw syscall on integers and a null segment list.
    check(unsafe { libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0) })
}

/// init_module(NULL, 0, "").
fn init_module() -> Attempt {
    // SAFETY: a null image of length 0 is never dereferenced by the kernel
    // beyond returning an error; params is a NUL-terminated literal.
    check(unsafe {
        libc::syscall(
            libc::SYS_init_module,
            std::ptr::null::<u8>(),
            0,
            c"".as_ptr(),
        )
    })
}

/// finit_module(-1, "", 0).
fn finit_module() -> Attempt {
    // SAFETY: raw syscall with an invalid fd and a NUL-terminated literal.
    check(unsafe { libc::syscall(libc::SYS_finit_module, -1, c"".as_ptr(), 0) })
}

/// delete_module("airlock_none", 0).
fn delete_module() -> Attempt {
    // SAFETY: raw syscall with a NUL-terminated literal.
    check(unsafe { libc::syscall(libc::SYS_delete_module, c"airlock_none".as_ptr(), 0) })
}

/// open_by_handle_at(AT_FDCWD, zeroed handle, O_RDONLY): opens files by inode
/// handle, bypassing the mount view (the 2014 "shocker" Docker escape).
fn open_by_handle_at() -> Attempt {
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut handle = [0u8; 16];
    handle[0..4].copy_from_slice(&8u32.to_ne_bytes());
    // SAFETY: `handle` is a file_handle with 8 bytes of (zeroed) handle data.
    check_fd(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            libc::AT_FDCWD,
            handle.as_mut_ptr(),
            libc::O_RDONLY,
        )
    })
}

/// personality(persona).
fn personality(persona: libc::c_ulong) -> Attempt {
    // SAFETY: plain syscall on an integer.
    check(unsafe { libc::personality(persona) } as libc::c_long)
}

// ---------------------------------------------------------------------------
// Terminal injection.
// ---------------------------------------------------------------------------

/// Raw ioctl(0, request, &byte) on stdin. Raw so that the 64-bit request
/// value reaches the kernel (and seccomp) untruncated.
fn tty_ioctl(request: u64, byte: u8) -> Attempt {
    // SAFETY: the third argument points at a live byte.
    check(unsafe { libc::syscall(libc::SYS_ioctl, 0, request, &byte as *const u8) })
}

// ---------------------------------------------------------------------------
// Sockets and network.
// ---------------------------------------------------------------------------

/// socket(domain, kind, protocol).
fn socket(domain: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> Attempt {
    // SAFETY: plain syscall on integers.
    check_fd(unsafe { libc::socket(domain, kind, protocol) } as libc::c_long)
}

/// TCP connect to `addr`.
fn tcp_connect(addr: SocketAddr) -> Attempt {
    TcpStream::connect(addr).map(drop).map_err(io_errno)
}

/// Send one UDP datagram to `addr` from an ephemeral port.
fn udp_send(addr: SocketAddr) -> Attempt {
    let local = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(local).map_err(io_errno)?;
    socket
        .send_to(b"airlock-probe", addr)
        .map(drop)
        .map_err(io_errno)
}

/// Connect to the abstract unix socket `\0NAME`; abstract sockets live in the
/// network namespace, not the filesystem, so mounts do not hide them.
fn abstract_connect(name: &str) -> Attempt {
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(io_errno)?;
    UnixStream::connect_addr(&addr).map(drop).map_err(io_errno)
}

// ---------------------------------------------------------------------------
// Filesystem.
// ---------------------------------------------------------------------------

/// open(PATH, O_WRONLY|O_CREAT|O_TRUNC, 0644) and write "x".
fn write_file(path: &str) -> Attempt {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(io_errno)?;
    file.write_all(b"x").map_err(io_errno)
}

/// open(PATH, O_RDONLY) and read it to the end.
fn read_file(path: &str) -> Attempt {
    let mut file = std::fs::File::open(path).map_err(io_errno)?;
    let mut sink = Vec::new();
    file.read_to_end(&mut sink).map(drop).map_err(io_errno)
}

/// mknod(PATH, S_IFCHR|0600, makedev(1, 3)): a private /dev/null node;
/// device nodes would give raw access to whatever device the numbers name.
fn mknod(path: &CString) -> Attempt {
    let dev = libc::makedev(1, 3);
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, dev) } as libc::c_long)
}

// ---------------------------------------------------------------------------
// Reporting probes.
// ---------------------------------------------------------------------------

/// `uid=R/E/S gid=R/E/S` from getresuid/getresgid.
/// `CONNECT TARGET` through the in-sandbox proxy port: reports
/// `http=STATUS deny=REASON` (the proxy's answer and `X-Airlock-Deny`).
fn proxy_connect(target: &str) -> Outcome {
    let mut s = match TcpStream::connect("127.0.0.1:3128") {
        Ok(s) => s,
        Err(e) => return Outcome::Errno(e.raw_os_error().unwrap_or(0)),
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(20)));
    if s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .is_err()
    {
        return Outcome::Report("http=write-failed".into());
    }
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.split(' ').nth(1).unwrap_or("none");
    let deny = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-airlock-deny")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "-".into());
    Outcome::Report(format!("http={status} deny={deny}"))
}

/// Resolves NAME with the libc resolver: `resolved` or `failed`.
fn dns(host: &str) -> Outcome {
    use std::net::ToSocketAddrs;
    let found = (host, 80).to_socket_addrs().map(|a| a.count()).unwrap_or(0);
    Outcome::Report(if found > 0 { "resolved" } else { "failed" }.into())
}

/// The names in directory PATH, sorted, comma-separated.
fn list_dir(dir: &str) -> Outcome {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            Outcome::Report(names.join(","))
        }
        Err(e) => Outcome::Errno(e.raw_os_error().unwrap_or(0)),
    }
}

fn whoami() -> Outcome {
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: all six out-pointers are valid.
    let ok = unsafe {
        libc::getresuid(&mut ruid, &mut euid, &mut suid) == 0
            && libc::getresgid(&mut rgid, &mut egid, &mut sgid) == 0
    };
    if !ok {
        return Outcome::Errno(last_errno());
    }
    Outcome::Report(format!("uid={ruid}/{euid}/{suid} gid={rgid}/{egid}/{sgid}"))
}

/// Capability, no_new_privs and seccomp lines of /proc/self/status, e.g.
/// `CapInh: 0000000000000000 ... NoNewPrivs: 1 Seccomp: 2`.
fn caps() -> Outcome {
    const FIELDS: [&str; 7] = [
        "CapInh:",
        "CapPrm:",
        "CapEff:",
        "CapBnd:",
        "CapAmb:",
        "NoNewPrivs:",
        "Seccomp:",
    ];
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => status,
        Err(error) => return Outcome::Errno(io_errno(error)),
    };
    let mut parts = Vec::new();
    for field in FIELDS {
        if let Some(line) = status.lines().find(|line| line.starts_with(field)) {
            parts.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    Outcome::Report(parts.join(" "))
}

// ---------------------------------------------------------------------------
// Foreign system call ABIs: a filter written for x86_64 numbers is blind to
// the same numbers in another ABI.
// ---------------------------------------------------------------------------

/// getpid through the x32 ABI (syscall number with bit 30 set).
fn x32_getpid() -> Attempt {
    // SAFETY: getpid takes no arguments and touches no memory.
    check(unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) })
}

/// getpid through the i386 ABI (`int 0x80`, syscall 20). A seccomp filter
/// that checks the architecture kills the process here.
fn int80_getpid() -> Attempt {
    let ret: i32;
    // SAFETY: i386 getpid takes no arguments and touches no user memory; the
    // 64-bit kernel entry for int 0x80 may clobber r8-r11, declared below.
    unsafe {
        core::arch::asm!(
            "int 0x80",
            inlateout("eax") 20i32 => ret,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    if (-4095..0).contains(&ret) {
        Err(-ret)
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Resources and lifecycle
// ---------------------------------------------------------------------------

/// Mounts a cgroup2 filesystem (to reach its own cgroup's limits).
fn mount_cgroup() -> Attempt {
    let (src, target, fstype) = (c"none", c"/tmp", c"cgroup2");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let ret = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    check(ret as libc::c_long)
}

/// Opens /dev/null until it fails: `errno=E after=N` (N descriptors were
/// opened), or `no-limit-within=65536`.
fn fd_exhaust() -> Outcome {
    for n in 0..65536u32 {
        // SAFETY: a valid NUL-terminated path; the descriptors die with us.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return Outcome::Report(format!("errno={} after={n}", errno_name(last_errno())));
        }
    }
    Outcome::Report("no-limit-within=65536".to_owned())
}

/// Forks children that sleep until a fork fails: `errno=E after=N`, or
/// `no-limit-within=BOUND` (bounded so a missing limit cannot hurt the
/// host). Every child is killed before returning.
fn fork_bomb(bound: u32) -> Outcome {
    let mut children = Vec::new();
    let mut result = format!("no-limit-within={bound}");
    for n in 0..bound {
        // SAFETY: the child only pauses until it is killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            loop {
                // SAFETY: pause(2) has no arguments.
                unsafe { libc::pause() };
            }
        }
        if pid < 0 {
            result = format!("errno={} after={n}", errno_name(last_errno()));
            break;
        }
        children.push(pid);
    }
    for pid in children {
        // SAFETY: our own children.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_for(pid);
    }
    Outcome::Report(result)
}

/// Fills /tmp with 1 MiB files (up to 4 GiB) until a write fails.
fn tmp_fill() -> Attempt {
    let chunk = vec![0x5au8; 1 << 20];
    let mut result = Ok(());
    for i in 0..4096 {
        let path = format!("/tmp/airlock-fill-{}-{i}", std::process::id());
        if let Err(e) = std::fs::write(&path, &chunk) {
            result = Err(io_errno(e));
            break;
        }
    }
    for i in 0..4096 {
        let _ = std::fs::remove_file(format!("/tmp/airlock-fill-{}-{i}", std::process::id()));
    }
    result
}

/// Allocates and touches up to 2 GiB, 1 MiB at a time; `ok` if nothing
/// stopped it (the OOM killer shows as `killed-by-signal=9`).
fn mem_hog() -> Attempt {
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..2048 {
        let mut block = Vec::new();
        if block.try_reserve_exact(1 << 20).is_err() {
            return Err(libc::ENOMEM);
        }
        block.resize(1 << 20, 1u8);
        held.push(block);
    }
    Ok(())
}

/// `RLIMIT_CORE` as `soft/hard` (`unlimited` for infinity).
fn core_limit() -> Outcome {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) } != 0 {
        return Outcome::Errno(last_errno());
    }
    let show = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_owned()
        } else {
            v.to_string()
        }
    };
    Outcome::Report(format!("{}/{}", show(lim.rlim_cur), show(lim.rlim_max)))
}

/// Starts a double-forked `setsid` daemon that ignores SIGTERM and runs
/// `sleep SECONDS` (SECONDS doubles as a marker the caller looks for on
/// the host afterwards).
fn daemon(seconds: &str) -> Attempt {
    let Ok(arg) = CString::new(seconds) else {
        return Err(libc::EINVAL);
    };
    // SAFETY: single-threaded; the children only call async-signal-safe
    // functions before execv or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_errno());
    }
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::setsid();
            if libc::fork() == 0 {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                let prog = c"/bin/sleep";
                let argv = [prog.as_ptr(), arg.as_ptr(), std::ptr::null()];
                libc::execv(prog.as_ptr(), argv.as_ptr());
            }
            libc::_exit(0);
        }
    }
    wait_for(pid);
    Ok(())
}
