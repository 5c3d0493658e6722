//! One `egress-proxy serve` shared by several sandboxes, as in a pod or on
//! a build host: each sandbox gets its own socket through the control
//! socket and every line of the sidecar's audit log names the right one;
//! operators see the traffic in the metrics; SIGTERM drains open tunnels
//! up to a deadline, then cuts them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::net::{can_run, Names, Upstream};
use common::{Sandbox, TempDir};
use serde_json::Value;

/// A running `egress-proxy serve` with its files.
struct Sidecar {
    child: Option<Child>,
    dir: TempDir,
    metrics: u16,
}

impl Sidecar {
    /// Starts a sidecar allowing api.example.com and the loopback upstream
    /// on `port`, with a shared socket, a control socket and metrics.
    fn start(names: &Names, port: u16, extra: &[&str]) -> Sidecar {
        let dir = TempDir::new("/tmp", "airlock-sidecar");
        let policy = dir.join("policy.toml");
        common::write_file(
            &policy,
            &format!(
                "[network]\nallow = [\"api.example.com\"]\nallow_cidr = [\"127.0.0.0/8\"]\nports = [{port}]\n"
            ),
            0o644,
        );
        let metrics = free_port();
        let bin = common::sandbox_bin().with_file_name("egress-proxy");
        let mut serve = Command::new(&bin);
        serve
            .arg("serve")
            .arg("--listen")
            .arg(format!("unix:{}", dir.join("egress.sock").display()))
            .arg("--control")
            .arg(format!("unix:{}", dir.join("control.sock").display()))
            .arg("--policy")
            .arg(&policy)
            .arg("--audit-log")
            .arg(dir.join("sidecar.jsonl"))
            .arg("--socket-mode")
            .arg("666")
            .arg("--metrics")
            .arg(format!("127.0.0.1:{metrics}"))
            .args(extra);
        let child = names
            .wrap(&serve)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start egress-proxy serve");
        let sidecar = Sidecar {
            child: Some(child),
            dir,
            metrics,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if sidecar.http_get("/ready").0 == 200 {
                return sidecar;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the sidecar never became ready");
    }

    fn control(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    fn shared(&self) -> PathBuf {
        self.dir.join("egress.sock")
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("sidecar.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
            .collect()
    }

    /// (status, body) of `GET path` on the metrics address; status 0 when
    /// nothing answers.
    fn http_get(&self, path: &str) -> (u16, String) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.metrics)) else {
            return (0, String::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// The value of the metric line `name{labels}` (0 when absent).
    fn metric(&self, line_start: &str) -> f64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == line_start).then(|| v.parse().ok())?
            })
            .unwrap_or(0.0)
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // The sidecar runs under `unshare ... sh -c 'exec'`: same pid.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let status = common::wait_with_limit(&mut child, limit);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The session id `sandbox run` recorded in its own audit log.
fn session_id(sb: &Sandbox) -> String {
    sb.audit_events()
        .iter()
        .find(|e| e["event"]["action"] == "session.start")
        .and_then(|e| e["airlock"]["session"]["id"].as_str().map(String::from))
        .expect("the sandbox recorded session.start")
}

fn session_sockets(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("session-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn two_sandboxes_sharing_one_sidecar_are_each_attributed_to_their_session() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let names = Names::new();
    let sidecar = Sidecar::start(&names, up.port, &[]);
    let control = sidecar.control().display().to_string();
    let requests_before =
        sidecar.metric("airlock_egress_requests_total{protocol=\"http\",decision=\"allow\"}");
    assert_eq!(requests_before, 0.0);

    // Two sandboxes at once, each fetching its own path twice with a pause
    // in between so their sessions overlap, and one denied request each.
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let spawn = |sb: &Sandbox, tag: &str| {
        let script = format!(
            "curl -sS --max-time 20 http://api.example.com:{p}/from-{tag}; sleep 1; \
             curl -sS --max-time 20 http://api.example.com:{p}/from-{tag}; \
             curl -sS --max-time 20 -o /dev/null -w 'denied %{{http_code}}\\n' http://evil.example.com:{p}/",
            p = up.port
        );
        let cmd = sb.command_with(&["--egress-control", &control], &["/bin/sh", "-c", &script]);
        names
            .wrap(&cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sandbox")
    };
    let (ca, cb) = (spawn(&a, "a"), spawn(&b, "b"));
    let (oa, ob) = (
        ca.wait_with_output().expect("a"),
        cb.wait_with_output().expect("b"),
    );
    for (o, tag) in [(&oa, "a"), (&ob, "b")] {
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.matches(&format!("path /from-{tag}")).count() == 2 && out.contains("denied 403"),
            "sandbox {tag}: {out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    let (sa, sb_id) = (session_id(&a), session_id(&b));
    assert_ne!(sa, sb_id);
    let events = sidecar.events();
    let mut sockets = std::collections::HashMap::new();
    for (tag, sid) in [("a", &sa), ("b", &sb_id)] {
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["url"]["path"] == format!("/from-{tag}"))
            .collect();
        assert_eq!(mine.len(), 2, "two requests from {tag}: {events:#?}");
        for e in &mine {
            assert_eq!(
                e["airlock"]["sandbox"]["session"]["id"], **sid,
                "request from {tag} attributed to its own session: {e}"
            );
        }
        let socket = mine[0]["airlock"]["sandbox"]["socket"]["id"].clone();
        assert!(socket.is_string(), "{}", mine[0]);
        // Its denial is attributed to it too.
        let denials = events
            .iter()
            .filter(|e| {
                e["event"]["action"] == "network.denied"
                    && e["airlock"]["sandbox"]["session"]["id"] == **sid
            })
            .count();
        assert_eq!(denials, 1, "{tag}'s denial: {events:#?}");
        // Opened and closed once, by the supervisor of that session.
        for action in ["egress.sandbox.open", "egress.sandbox.close"] {
            assert_eq!(
                events
                    .iter()
                    .filter(|e| e["event"]["action"] == action
                        && e["airlock"]["sandbox"]["session"]["id"] == **sid)
                    .count(),
                1,
                "{action} for {tag}"
            );
        }
        sockets.insert(tag, socket);
    }
    assert_ne!(sockets["a"], sockets["b"], "one socket per sandbox");
    // The sessions are over: their sockets are gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !session_sockets(sidecar.dir.path()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(session_sockets(sidecar.dir.path()).is_empty());

    // The metrics saw the same traffic.
    let allowed =
        sidecar.metric("airlock_egress_requests_total{protocol=\"http\",decision=\"allow\"}");
    assert_eq!(allowed, 4.0);
    assert_eq!(
        sidecar.metric("airlock_egress_denials_total{rule=\"default-deny\"}"),
        2.0
    );
    assert_eq!(
        sidecar.metric("airlock_egress_request_duration_seconds_count"),
        4.0
    );
    assert!(sidecar.metric("airlock_egress_connections_total") >= 6.0);
    assert!(sidecar.metric("airlock_egress_bytes_total{direction=\"down\"}") > 0.0);
    assert!(sidecar.metric("airlock_egress_bytes_total{direction=\"up\"}") > 0.0);
    assert_eq!(sidecar.metric("airlock_egress_connections_active"), 0.0);
}

#[test]
fn a_sandbox_cannot_start_when_the_sidecar_is_not_there() {
    let sb = Sandbox::new();
    let dir = TempDir::new("/tmp", "airlock-nosidecar");
    let out = sb.run_with(
        &[
            "--egress-control",
            &dir.join("control.sock").display().to_string(),
        ],
        &["true"],
    );
    out.assert_code(125, "no sidecar, no run");
    assert!(out.stderr.contains("--egress-control"), "{out}");
}

#[test]
fn a_forged_control_request_is_refused() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let names = Names::new();
    let sidecar = Sidecar::start(&names, up.port, &[]);
    let mut s = UnixStream::connect(sidecar.control()).expect("control");
    s.write_all(b"OPEN ../../etc/evil\n").expect("write");
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).expect("read");
    assert!(line.starts_with("ERR "), "{line}");
    assert!(session_sockets(sidecar.dir.path()).is_empty());
}

/// Opens a CONNECT tunnel to the loopback upstream on the shared socket.
fn tunnel(sidecar: &Sidecar, port: u16) -> UnixStream {
    let mut s = UnixStream::connect(sidecar.shared()).expect("connect to the sidecar");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .expect("CONNECT");
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

fn read_head(s: &mut UnixStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn sigterm_drains_open_tunnels_then_cuts_them_at_the_deadline() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let names = Names::new();
    let mut sidecar = Sidecar::start(&names, up.port, &["--drain-timeout", "3"]);
    let mut busy = tunnel(&sidecar, up.port);
    let _idle = tunnel(&sidecar, up.port);
    assert_eq!(sidecar.metric("airlock_egress_connections_active"), 2.0);

    sidecar.signal(libc::SIGTERM);
    // Draining: not ready, no new connections...
    let deadline = Instant::now() + Duration::from_secs(2);
    while sidecar.http_get("/ready").0 != 503 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sidecar.http_get("/ready").0,
        503,
        "not ready while draining"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        UnixStream::connect(sidecar.shared()).is_err(),
        "no new connection while draining"
    );
    // ...but an open tunnel still carries a request.
    write!(busy, "GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let head = read_head(&mut busy);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = [0u8; 20];
    busy.read_exact(&mut body).expect("body");
    assert_eq!(&body, b"hello from upstream\n");

    // The tunnels stay open, so the sidecar cuts them at the deadline.
    // (15 s is a bound against hangs, not a measurement: the drain record
    // below says what happened at the deadline.)
    let status = sidecar.wait(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let events = sidecar.events();
    let end = events
        .iter()
        .find(|e| e["event"]["action"] == "session.end")
        .expect("session.end");
    let drain = &end["airlock"]["egress"]["drain"];
    assert_eq!(drain["open_at_signal"], 2, "{end}");
    assert_eq!(drain["cut_at_deadline"], 2, "{end}");
    assert_eq!(drain["timeout_seconds"], 3, "{end}");
    let cut = events
        .iter()
        .filter(|e| e["airlock"]["error"] == "session ended")
        .count();
    assert_eq!(cut, 2, "both tunnels recorded as cut: {events:#?}");
}

/// A sidecar killed mid-session leaves the sandbox with no way out (the
/// agent's next request gets `503`), and the supervisor records `proxy.error`
/// in its own audit log.
#[test]
fn a_killed_sidecar_leaves_no_way_out_and_is_recorded() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let names = Names::new();
    let mut sidecar = Sidecar::start(&names, up.port, &[]);
    let control = sidecar.control().display().to_string();
    let sb = Sandbox::new();
    let flag = sb.workspace.join("killed");
    let script = format!(
        "curl -sS --max-time 10 -o /dev/null -w 'before %{{http_code}}\\n' http://api.example.com:{p}/hello; \
         touch {ready}; while [ ! -e {flag} ]; do sleep 0.05; done; \
         curl -sS --max-time 10 -o /dev/null -w 'after %{{http_code}}\\n' http://api.example.com:{p}/hello; true",
        p = up.port,
        ready = sb.workspace.join("ready").display(),
        flag = flag.display(),
    );
    let cmd = sb.command_with(&["--egress-control", &control], &["/bin/sh", "-c", &script]);
    let mut run = common::Streaming::spawn(names.wrap(&cmd));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sb.workspace.join("ready").exists() {
        assert!(
            Instant::now() < deadline,
            "the agent never made its first request"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    sidecar.signal(libc::SIGKILL);
    let _ = sidecar.wait(Duration::from_secs(10));
    std::fs::write(&flag, b"").expect("flag");
    let out = run.finish();
    assert!(out.stdout.contains("before 200"), "{out}");
    assert!(
        out.stdout.contains("after 503"),
        "no way out after the sidecar died, and the agent is told so\n{out}"
    );
    let log = std::fs::read_to_string(sb.audit_log()).expect("audit log");
    assert!(log.contains("\"action\":\"proxy.error\""), "{log}");
}

/// README's sidecar setup, word for word, as root: `egress-proxy serve
/// --listen unix:/run/airlock/egress.sock --policy FILE` with its default
/// socket mode (0660, root's), then `sandbox run --egress-socket
/// /run/airlock/egress.sock -- curl ...`. The agent's unprivileged ids
/// cannot open that socket, so the supervisor relays with its own: curl
/// gets its answer and the sidecar logs it. Then the sidecar dies, its
/// socket left behind: the agent gets `503` with the reason, and the
/// supervisor's stderr and the session's audit log say why. (A private
/// mount namespace gives the test its own /run and /var/log/airlock, so
/// the documented paths are used as they are; the sidecar's audit goes to
/// its stdout by default.)
#[test]
fn the_documented_sidecar_commands_work_as_root_and_say_why_when_not() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let names = Names::new();
    let sb = Sandbox::new();
    let dir = TempDir::new("/tmp", "airlock-documented");
    let policy = dir.join("policy.toml");
    common::write_file(
        &policy,
        &format!(
            "[network]\nallow = [\"api.example.com\"]\nallow_cidr = [\"127.0.0.0/8\"]\nports = [{}]\n",
            up.port
        ),
        0o644,
    );
    let script = r#"
set -u
mount -t tmpfs tmpfs /run && mkdir -p /run/airlock
mkdir -p /var/log/airlock && mount -t tmpfs tmpfs /var/log/airlock
"$PROXY" serve --listen unix:/run/airlock/egress.sock --policy "$POLICY" >"$OUT/sidecar.jsonl" 2>"$OUT/sidecar.err" &
SIDECAR=$!
for i in $(seq 100); do [ -S /run/airlock/egress.sock ] && break; sleep 0.1; done
stat -c 'mode %a %U' /run/airlock/egress.sock
"$SANDBOX" run --egress-socket /run/airlock/egress.sock -- curl -sS --max-time 20 -w ' status %{http_code}\n' "http://api.example.com:$PORT/documented"
echo "run1 exit $?"
kill -9 $SIDECAR; wait $SIDECAR 2>/dev/null
"$SANDBOX" run --egress-socket /run/airlock/egress.sock -- curl -sS --max-time 20 -D - "http://api.example.com:$PORT/after" 2>"$OUT/run2.err"
echo "run2 exit $?"
cp /var/log/airlock/audit.jsonl "$OUT/audit.jsonl"
"#;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .env(
            "PROXY",
            common::sandbox_bin().with_file_name("egress-proxy"),
        )
        .env("SANDBOX", common::sandbox_bin())
        .env("POLICY", &policy)
        .env("OUT", dir.path())
        .env("PORT", up.port.to_string())
        .current_dir(sb.workspace.path());
    let out = common::run_to_end(names.wrap(&cmd));
    assert!(out.stdout.contains("mode 660 root"), "{out}");
    assert!(out.stdout.contains("status 200"), "{out}");
    assert!(out.stdout.contains("run1 exit 0"), "{out}");
    assert_eq!(up.requests().len(), 1, "{:?}", up.requests());
    let sidecar_log = std::fs::read_to_string(dir.join("sidecar.jsonl")).unwrap_or_default();
    assert!(
        sidecar_log
            .lines()
            .any(|l| l.contains("/documented") && l.contains("\"allow\"")),
        "the sidecar logged the request (its audit goes to stdout):\n{sidecar_log}"
    );
    let log = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
    let lower = out.stdout.to_lowercase();
    assert!(lower.contains("http/1.1 503"), "{out}");
    assert!(
        lower.contains("x-airlock-error: sidecar-unreachable"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("cannot connect to the egress sidecar's socket /run/airlock/egress.sock"),
        "the agent is told why\n{out}"
    );
    let run2_err = std::fs::read_to_string(dir.join("run2.err")).unwrap_or_default();
    assert!(
        run2_err.contains("sandbox: egress: cannot connect to the egress sidecar's socket")
            && run2_err.contains("ECONNREFUSED"),
        "the supervisor says why: {run2_err}"
    );
    assert!(
        log.lines().any(
            |l| l.contains("proxy.error") && l.contains("cannot connect to the egress sidecar")
        ),
        "the session's audit log says why:\n{log}"
    );
}
