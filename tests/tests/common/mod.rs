//! Shared helpers for the end-to-end tests: locating the binaries, unique
//! temporary directories and markers, running `sandbox run` with a deadline,
//! parsing `probe` output, and scanning the host's process table.
//!
//! Every helper panics with a message that says what went wrong and what to
//! look at; tests are allowed to, product code is not.

// Each test file compiles its own copy of this module and uses a subset.
#![allow(dead_code)]

pub mod net;

use std::collections::HashSet;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Host uid (and gid) the agent runs as when `sandbox` is started by root.
pub const NOBODY: u32 = 65534;

/// Upper bound for one `sandbox run` in a test. A bound against hangs, not a
/// performance assertion: the machine may be running many tests at once.
pub const RUN_DEADLINE: Duration = Duration::from_secs(90);

/// How long a captured pipe may stay open after `sandbox` has exited. If a
/// process from inside the sandbox survived, it still holds the pipe.
pub const PIPE_GRACE: Duration = Duration::from_secs(10);

/// How much of each captured stream a failure message shows.
pub const SHOWN_OUTPUT: usize = 8 * 1024;

/// The product binary: `$AIRLOCK_SANDBOX_BIN`, or `sandbox` next to the
/// `deps/` directory this test executable lives in (`target/<profile>/`).
pub fn sandbox_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("AIRLOCK_SANDBOX_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "AIRLOCK_SANDBOX_BIN={} does not exist",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("current_exe of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps/");
    let path = profile_dir.join("sandbox");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` first (scripts/test does), \
         or point AIRLOCK_SANDBOX_BIN at a built `sandbox`",
        path.display()
    );
    path
}

/// The `probe` helper built from `src/bin/probe.rs`.
pub fn probe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_probe"))
}

/// True when the tests run as root (the usual case in CI and here).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Host uid the agent runs as by default: 65534 under root, else our uid.
pub fn agent_uid() -> u32 {
    if is_root() {
        NOBODY
    } else {
        // SAFETY: getuid has no preconditions.
        unsafe { libc::getuid() }
    }
}

/// Host gid the agent runs as by default: 65534 under root, else our gid.
pub fn agent_gid() -> u32 {
    if is_root() {
        NOBODY
    } else {
        // SAFETY: getgid has no preconditions.
        unsafe { libc::getgid() }
    }
}

/// 64 random bits from the kernel.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    u64::from_ne_bytes(bytes)
}

/// 16 random hex digits, for names that must not collide between tests.
pub fn random_token() -> String {
    format!("{:016x}", random_u64())
}

/// 9 random decimal digits, for `sleep 4242.DIGITS` process markers.
pub fn random_digits() -> String {
    format!("{:09}", random_u64() % 1_000_000_000)
}

/// A `sleep` argument unique to one test, e.g. `4242.031415926`: findable
/// in the host's `/proc/*/cmdline` and harmless to `sleep`.
pub fn sleep_marker(prefix: u32) -> String {
    format!("{prefix}.{}", random_digits())
}

/// A directory with a random name, removed with its contents on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `BASE/PREFIX-RANDOM` with mode 0755.
    pub fn new(base: &str, prefix: &str) -> TempDir {
        let path = Path::new(base).join(format!("{prefix}-{}", random_token()));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        set_mode(&path, 0o755);
        TempDir { path }
    }

    /// The directory's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's path as a string (our names are always UTF-8).
    pub fn display(&self) -> String {
        self.path.display().to_string()
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// chmod, panicking with the path on failure.
pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// chown, panicking with the path on failure.
pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {uid}:{gid} {}: {e}", path.display()));
}

/// Writes `contents` to `path` and sets its mode.
pub fn write_file(path: &Path, contents: &str, mode: u32) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

/// Serialises "copy an executable" against "fork a child".
///
/// Tests run on parallel threads. If one thread forks while another holds
/// a freshly copied executable open for writing, the child inherits that
/// fd until it execs, and an exec of the copy in that window fails with
/// ETXTBSY ("Text file busy"). Spawns share the lock (`Command::spawn`
/// returns only once the child has exec'd, dropping inherited CLOEXEC fds);
/// copies take it exclusively.
static SPAWN_LOCK: RwLock<()> = RwLock::new(());

/// `cmd.spawn()`, never concurrently with [`install_executable`].
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let _shared = SPAWN_LOCK.read().unwrap_or_else(PoisonError::into_inner);
    cmd.spawn()
}

/// Copies `src` to `dest` with mode 0755, never while a child is forking.
pub fn install_executable(src: &Path, dest: &Path) {
    let _exclusive = SPAWN_LOCK.write().unwrap_or_else(PoisonError::into_inner);
    std::fs::copy(src, dest)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dest.display()));
    set_mode(dest, 0o755);
}

/// Copies the probe to `dir/name` with mode 0755.
pub fn install_probe(dir: &Path, name: &str) -> PathBuf {
    let dest = dir.join(name);
    install_executable(&probe_bin(), &dest);
    dest
}

/// What one finished command did.
pub struct RunOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Its stdout, lossily decoded.
    pub stdout: String,
    /// Its stderr, lossily decoded.
    pub stderr: String,
    /// The command line, for failure messages.
    pub command: String,
}

impl RunOutput {
    /// The exit code, or `None` if `sandbox` itself died by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with the full output unless the exit code is `want`.
    pub fn assert_code(&self, want: i32, why: &str) {
        assert_eq!(self.code(), Some(want), "{why}\n{self}");
    }
}

impl fmt::Display for RunOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.status,
            clip(&self.stdout),
            clip(&self.stderr)
        )
    }
}

/// At most [`SHOWN_OUTPUT`] bytes of `text`, for failure messages: a leak
/// test that fails may have captured a whole host process table.
fn clip(text: &str) -> String {
    if text.len() <= SHOWN_OUTPUT {
        return text.to_owned();
    }
    let mut end = SHOWN_OUTPUT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[... {} more bytes]", &text[..end], text.len() - end)
}

/// Reads `reader` to EOF on a thread; the result arrives on the channel.
fn drain(mut reader: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Waits for `child` to exit, for at most `limit`.
pub fn wait_with_limit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait().expect("try_wait on sandbox") {
            Some(status) => return Some(status),
            None if Instant::now() >= deadline => return None,
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Runs `cmd` to completion (bounded by [`RUN_DEADLINE`]) capturing output.
///
/// Panics if it does not finish in time, or if its stdout/stderr stay open
/// after it exited (something inside the sandbox outlived `sandbox`).
pub fn run_to_end(mut cmd: Command) -> RunOutput {
    let command = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(&mut cmd).unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let Some(status) = wait_with_limit(&mut child, RUN_DEADLINE) else {
        let _ = child.kill();
        let _ = child.wait();
        let out = stdout
            .recv_timeout(Duration::from_secs(1))
            .unwrap_or_default();
        let err = stderr
            .recv_timeout(Duration::from_secs(1))
            .unwrap_or_default();
        panic!(
            "{command} did not finish within {RUN_DEADLINE:?}; killed it\n\
             --- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        );
    };
    let collect = |rx: Receiver<Vec<u8>>, which: &str| match rx.recv_timeout(PIPE_GRACE) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => panic!(
            "{command} exited ({status}) but its {which} was still open {PIPE_GRACE:?} later: \
             a process from inside the sandbox outlived it"
        ),
    };
    let stdout = collect(stdout, "stdout");
    let stderr = collect(stderr, "stderr");
    RunOutput {
        status,
        stdout,
        stderr,
        command,
    }
}

/// A sandbox workspace prepared for the agent, with the probe inside it.
///
/// The cargo target directory is not visible inside the sandbox, so the
/// probe is copied into the workspace; under root the workspace is handed
/// to uid 65534, the agent's default identity.
pub struct Sandbox {
    /// The workspace directory (under /tmp, so it also exercises "workspace
    /// inside the private /tmp").
    pub workspace: TempDir,
    /// Holds the sessions' audit log, outside the workspace.
    pub audit: TempDir,
    /// Path of the probe inside the workspace (same path inside and out).
    pub probe: PathBuf,
}

impl Sandbox {
    /// A fresh workspace with the probe, owned by whoever runs the tests
    /// (root in CI: no chown, as users run it; the agent owns it through
    /// an idmapped mount).
    pub fn new() -> Sandbox {
        let workspace = TempDir::new("/tmp", "airlock-ws");
        let probe = install_probe(workspace.path(), "probe");
        let audit = TempDir::new("/tmp", "airlock-audit");
        Sandbox {
            workspace,
            audit,
            probe,
        }
    }

    /// The audit log every `sandbox run` of this helper appends to.
    pub fn audit_log(&self) -> PathBuf {
        self.audit.join("audit.jsonl")
    }

    /// The workspace path as a string.
    pub fn ws(&self) -> String {
        self.workspace.display()
    }

    /// `sandbox run OPTS -- ARGV` from inside the workspace, stdin from
    /// /dev/null, without adding `--workspace`.
    pub fn bare_command(&self, opts: &[&str], argv: &[&str]) -> Command {
        let mut cmd = Command::new(sandbox_bin());
        cmd.arg("run");
        if !opts.contains(&"--audit-log") {
            cmd.arg("--audit-log").arg(self.audit_log());
        }
        cmd.args(opts)
            .arg("--")
            .args(argv)
            .current_dir(self.workspace.path())
            .stdin(Stdio::null());
        cmd
    }

    /// `sandbox run --workspace WS OPTS -- ARGV`.
    pub fn command_with(&self, opts: &[&str], argv: &[&str]) -> Command {
        let ws = self.ws();
        let mut all = vec!["--workspace", ws.as_str()];
        all.extend_from_slice(opts);
        self.bare_command(&all, argv)
    }

    /// `sandbox run --workspace WS -- ARGV`.
    pub fn command(&self, argv: &[&str]) -> Command {
        self.command_with(&[], argv)
    }

    /// Runs `ARGV` in the sandbox to completion.
    pub fn run(&self, argv: &[&str]) -> RunOutput {
        run_to_end(self.command(argv))
    }

    /// Runs `ARGV` in the sandbox with extra `sandbox run` options.
    pub fn run_with(&self, opts: &[&str], argv: &[&str]) -> RunOutput {
        run_to_end(self.command_with(opts, argv))
    }

    /// Runs `sh -c SCRIPT` in the sandbox.
    pub fn sh(&self, script: &str) -> RunOutput {
        self.run(&["/bin/sh", "-c", script])
    }

    /// Runs the probe in the sandbox with the given probe names.
    pub fn probe(&self, names: &[&str]) -> ProbeReport {
        self.probe_with(&[], names)
    }

    /// Runs the probe with extra `sandbox run` options.
    pub fn probe_with(&self, opts: &[&str], names: &[&str]) -> ProbeReport {
        let probe = self.probe.display().to_string();
        let mut argv = vec![probe.as_str()];
        argv.extend_from_slice(names);
        ProbeReport::parse(self.run_with(opts, &argv), names)
    }
}

/// Parsed output of one `probe` run: one result per requested name.
pub struct ProbeReport {
    /// `(name, result)` in request order.
    pub results: Vec<(String, String)>,
    /// The raw run, for failure messages.
    pub output: RunOutput,
}

impl ProbeReport {
    /// Parses `NAME: RESULT` lines; panics unless the probe exited 0 and
    /// reported every requested name.
    pub fn parse(output: RunOutput, names: &[&str]) -> ProbeReport {
        output.assert_code(0, "the probe should run inside the sandbox and exit 0");
        let mut results = Vec::new();
        for name in names {
            let prefix = format!("{name}: ");
            let line = output
                .stdout
                .lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("probe printed no result for {name}\n{output}"));
            results.push(((*name).to_owned(), line.to_owned()));
        }
        ProbeReport { results, output }
    }

    /// The result for `name`, e.g. `ok` or `errno=EPERM`.
    pub fn get(&self, name: &str) -> &str {
        self.results
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.as_str())
            .unwrap_or_else(|| panic!("{name} was not probed\n{}", self.output))
    }

    /// Asserts each `(name, expected result)` pair, reporting every mismatch.
    pub fn expect(&self, expected: &[(&str, &str)]) {
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(name, want)| self.get(name) != *want)
            .map(|(name, want)| format!("  {name}: got {}, want {want}", self.get(name)))
            .collect();
        assert!(
            wrong.is_empty(),
            "probe results differ from the policy:\n{}\n{}",
            wrong.join("\n"),
            self.output
        );
    }

    /// Asserts that each name failed with some errno (which one depends on
    /// which layer stops it first: a hidden path, Landlock, permissions...).
    pub fn expect_refused(&self, names: &[&str]) {
        let wrong: Vec<String> = names
            .iter()
            .filter(|name| !self.get(name).starts_with("errno="))
            .map(|name| format!("  {name}: got {}, want errno=...", self.get(name)))
            .collect();
        assert!(
            wrong.is_empty(),
            "these attempts should have been refused:\n{}\n{}",
            wrong.join("\n"),
            self.output
        );
    }
}

/// Host processes (pid, cmdline) whose command line contains `marker`,
/// excluding zombies (whose cmdline is empty) and this test process.
pub fn host_processes_with(marker: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push((pid, cmdline.trim_end().to_owned()));
        }
    }
    found
}

/// SIGKILLs every host process whose command line contains `marker`.
pub fn kill_processes_with(marker: &str) {
    for (pid, _) in host_processes_with(marker) {
        // SAFETY: kill(2) on a pid we just read; at worst it has exited.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Polls until no host process carries `marker` or `limit` passes; returns
/// the survivors (empty on success).
pub fn wait_until_gone(marker: &str, limit: Duration) -> Vec<(i32, String)> {
    let deadline = Instant::now() + limit;
    loop {
        let left = host_processes_with(marker);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills leftover marked processes when a test ends, pass or fail, so a
/// failing test does not leave `sleep 4242...` behind for hours.
pub struct MarkerReaper(pub String);

impl Drop for MarkerReaper {
    fn drop(&mut self) {
        kill_processes_with(&self.0);
    }
}

/// A host child process killed and reaped on drop.
pub struct HostChild(pub Child);

impl Drop for HostChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `sandbox` whose stdout is read line by line as it arrives, for
/// tests that must act (send a signal, SIGKILL) while it runs.
pub struct Streaming {
    /// The `sandbox` process.
    pub child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Option<Receiver<Vec<u8>>>,
    command: String,
}

impl Streaming {
    /// Spawns `cmd` with stdout and stderr captured.
    pub fn spawn(mut cmd: Command) -> Streaming {
        let command = format!("{cmd:?}");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn(&mut cmd).unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Streaming {
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
            command,
        }
    }

    /// The `sandbox` process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the `sandbox` process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        let r = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(r, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Blocks until a stdout line equal to `want` arrives; panics (after
    /// killing `sandbox`) if it does not within `limit` or stdout closes.
    pub fn wait_for_line(&mut self, want: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line == want;
                    self.seen.push(line);
                    if done {
                        return;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let status = self.child.wait().ok();
                    let stderr = self
                        .stderr
                        .take()
                        .and_then(|rx| rx.recv_timeout(Duration::from_secs(1)).ok())
                        .unwrap_or_default();
                    let why = match e {
                        RecvTimeoutError::Timeout => format!("not within {limit:?}"),
                        RecvTimeoutError::Disconnected => "stdout closed first".to_owned(),
                    };
                    panic!(
                        "{} never printed {want:?} ({why}); status {status:?}\n\
                         --- stdout ---\n{}\n--- stderr ---\n{}",
                        self.command,
                        self.seen.join("\n"),
                        String::from_utf8_lossy(&stderr)
                    );
                }
            }
        }
    }

    /// Waits (bounded by [`RUN_DEADLINE`]) for `sandbox` to exit and returns
    /// everything it printed.
    pub fn finish(&mut self) -> RunOutput {
        let status = match wait_with_limit(&mut self.child, RUN_DEADLINE) {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {RUN_DEADLINE:?}; killed it\n--- stdout ---\n{}",
                    self.command,
                    self.seen.join("\n")
                );
            }
        };
        let deadline = Instant::now() + PIPE_GRACE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{} exited ({status}) but its stdout was still open {PIPE_GRACE:?} later: \
                     a process from inside the sandbox outlived it",
                    self.command
                ),
            }
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|rx| rx.recv_timeout(PIPE_GRACE).ok())
            .unwrap_or_default();
        let mut stdout = self.seen.join("\n");
        stdout.push('\n');
        RunOutput {
            status,
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            command: self.command.clone(),
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses the `probe caps` line into field -> value, e.g. `CapEff` ->
/// `0000000000000000`, `NoNewPrivs` -> `1`.
pub fn parse_caps(line: &str) -> Vec<(String, String)> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    tokens
        .chunks(2)
        .filter_map(|pair| match pair {
            [field, value] => Some((field.trim_end_matches(':').to_owned(), (*value).to_owned())),
            _ => None,
        })
        .collect()
}

/// Asserts the caps line shows a fully de-privileged process: every
/// capability set empty, no_new_privs set, seccomp in filter mode.
pub fn assert_deprivileged(caps_line: &str, context: &dyn fmt::Display) {
    let fields = parse_caps(caps_line);
    let want = [
        ("CapInh", "0000000000000000"),
        ("CapPrm", "0000000000000000"),
        ("CapEff", "0000000000000000"),
        ("CapBnd", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
    ];
    let mut wrong = Vec::new();
    for (field, value) in want {
        let got = fields
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, v)| v.as_str());
        if got != Some(value) {
            wrong.push(format!("  {field}: got {got:?}, want {value}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "the agent kept privileges:\n{}\n{context}",
        wrong.join("\n")
    );
}

/// Names of the variables in `env` output (`NAME=VALUE` per line).
pub fn env_names(env_output: &str) -> HashSet<String> {
    env_output
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name.to_owned()))
        .collect()
}

/// A pseudo-terminal pair: tests hand the slave to the sandbox as stdin,
/// like a user's interactive terminal, and watch the master for injected
/// input (the line discipline echoes it back there).
pub struct Pty {
    /// The side a terminal emulator would hold.
    pub master: std::fs::File,
    /// The side the sandboxed program gets as its terminal.
    pub slave: std::fs::File,
}

impl Pty {
    /// Opens a new pty pair.
    pub fn open() -> Pty {
        use std::os::fd::FromRawFd;
        // SAFETY: plain libc calls; every return value is checked and each
        // fd is wrapped in a File exactly once.
        unsafe {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(
                master >= 0,
                "posix_openpt: {}",
                std::io::Error::last_os_error()
            );
            let master_file = std::fs::File::from_raw_fd(master);
            assert_eq!(libc::grantpt(master), 0, "grantpt");
            assert_eq!(libc::unlockpt(master), 0, "unlockpt");
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(
                libc::ptsname_r(master, name.as_mut_ptr(), name.len()),
                0,
                "ptsname_r"
            );
            let slave = libc::open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            assert!(
                slave >= 0,
                "open pty slave: {}",
                std::io::Error::last_os_error()
            );
            Pty {
                master: master_file,
                slave: std::fs::File::from_raw_fd(slave),
            }
        }
    }

    /// A handle on the slave for a child's stdin.
    pub fn slave_stdio(&self) -> Stdio {
        Stdio::from(self.slave.try_clone().expect("dup pty slave"))
    }

    /// Everything currently readable on the master (without blocking).
    pub fn drain_master(&mut self) -> Vec<u8> {
        use std::os::fd::AsRawFd;
        let fd = self.master.as_raw_fd();
        // SAFETY: fcntl on an fd we own.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = self.master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }
}
