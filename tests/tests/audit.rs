//! The audit trail end to end: what a compliance team relies on. Every
//! session is recorded from start to end in a hash chain that `sandbox
//! audit verify` checks line by line; tampering of any kind is named by
//! position; a seal made with a key outside the sandbox verifies; OCSF and
//! ECS lines carry their schemas' required fields; nothing is lost under
//! load; a failed sink closes the network.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;

use common::net::{can_run, Names, Upstream};
use common::{install_executable, run_to_end, sandbox_bin, write_file, Sandbox, TempDir};
use serde_json::Value;

fn opts(up: &Upstream) -> Vec<String> {
    vec![
        "--allow".into(),
        "api.example.com".into(),
        "--allow-cidr".into(),
        "127.0.0.0/8".into(),
        "--allow-port".into(),
        up.port.to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A short session: two allowed requests and one denied.
fn record_session(sb: &Sandbox, names: &Names, up: &Upstream, extra: &[&str]) {
    let mut o = opts(up);
    o.extend(extra.iter().map(|s| s.to_string()));
    let p = up.port;
    let out = sb.net_sh(
        names,
        &strs(&o),
        &format!(
            "curl -sS -o /dev/null http://api.example.com:{p}/hello; \
             curl -sS -o /dev/null http://api.example.com:{p}/hello?x=1; \
             curl -sS -o /dev/null http://evil.example.com:{p}/; true"
        ),
    );
    out.assert_code(0, "the session should run");
}

fn audit(args: &[&str]) -> common::RunOutput {
    let mut cmd = Command::new(sandbox_bin());
    cmd.arg("audit").args(args);
    run_to_end(cmd)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read audit log")
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    write_file(path, &(lines.join("\n") + "\n"), 0o600);
}

fn parsed(path: &Path) -> Vec<Value> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// An untouched log verifies; an edit, a deletion, a swap, an insertion and
/// a truncation are each detected and located.
#[test]
fn tampering_of_every_kind_is_detected_and_located() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    record_session(&sb, &names, &up, &[]);
    let log = sb.audit_log();
    let out = audit(&["verify", &log.display().to_string()]);
    out.assert_code(0, "an untouched log verifies");
    assert!(out.stdout.contains("chain intact"), "{out}");

    let good = lines(&log);
    assert!(good.len() >= 5, "start, 3 requests, end: {good:?}");
    let dir = TempDir::new("/tmp", "airlock-tamper");
    let mut cases: Vec<(&str, Vec<String>, usize)> = Vec::new();
    let mut edited = good.clone();
    edited[1] = edited[1].replacen("api.example.com", "apj.example.com", 1);
    cases.push(("edit", edited, 3));
    let mut deleted = good.clone();
    deleted.remove(1);
    cases.push(("delete", deleted, 2));
    let mut swapped = good.clone();
    swapped.swap(1, 2);
    cases.push(("swap", swapped, 2));
    let mut inserted = good.clone();
    inserted.insert(2, good[1].clone());
    cases.push(("insert", inserted, 3));
    let mut truncated = good.clone();
    truncated.pop();
    let last = truncated.len();
    cases.push(("truncate", truncated, last));
    for (what, text, line) in cases {
        let f = dir.join(&format!("{what}.jsonl"));
        write_lines(&f, &text);
        let out = audit(&["verify", &f.display().to_string()]);
        out.assert_code(1, what);
        assert!(
            out.stdout.contains(&format!("{}:{line}:", f.display())),
            "{what} should be reported at line {line}\n{out}"
        );
    }
}

/// A chain sealed with a key held outside the sandbox verifies with the
/// public key, and not with another key or after an edit.
#[test]
fn sealed_chain_verifies_only_with_its_key_and_unchanged() {
    if !can_run() {
        return;
    }
    let keys = TempDir::new("/tmp", "airlock-keys");
    for (name, args) in [
        ("key.pem", vec!["genpkey", "-algorithm", "ed25519", "-out"]),
        (
            "other.pem",
            vec!["genpkey", "-algorithm", "ed25519", "-out"],
        ),
    ] {
        let mut a = args.clone();
        let path = keys.join(name).display().to_string();
        a.push(&path);
        assert!(Command::new("openssl")
            .args(&a)
            .status()
            .expect("openssl")
            .success());
    }
    for (key, pubname) in [("key.pem", "pub.pem"), ("other.pem", "otherpub.pem")] {
        assert!(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(keys.join(key))
            .arg("-out")
            .arg(keys.join(pubname))
            .status()
            .expect("openssl")
            .success());
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let key = keys.join("key.pem").display().to_string();
    record_session(&sb, &names, &up, &["--audit-sign-key", &key]);
    let log = sb.audit_log().display().to_string();
    let pubkey = keys.join("pub.pem").display().to_string();
    let other = keys.join("otherpub.pem").display().to_string();
    let ok = audit(&["verify", "--pubkey", &pubkey, &log]);
    ok.assert_code(0, "the seal verifies with its key");
    assert!(ok.stdout.contains("1 sealed"), "{ok}");
    audit(&["verify", "--pubkey", &other, &log]).assert_code(1, "another key fails");
    // Rewrite the exit code in session.end and recompute nothing: caught.
    let mut text = lines(&sb.audit_log());
    let end = text
        .iter()
        .position(|l| l.contains("\"action\":\"session.end\""))
        .expect("session.end");
    text[end] = text[end].replace("\"exit_code\":0", "\"exit_code\":1");
    let f = keys.join("edited.jsonl");
    write_lines(&f, &text);
    audit(&["verify", "--pubkey", &pubkey, &f.display().to_string()])
        .assert_code(1, "an edit after sealing fails");
}

/// session.start says who ran what under which policy on which kernel;
/// session.end says how it ended, even when the agent was killed
/// mid-request.
#[test]
fn session_start_and_end_frame_every_session() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let script = format!(
        "import os, signal, socket\n\
         s = socket.create_connection(('127.0.0.1', 3128))\n\
         s.sendall(b'GET http://api.example.com:{p}/hello HTTP/1.1\\r\\nHost: api.example.com:{p}\\r\\n')\n\
         os.kill(os.getpid(), signal.SIGKILL)\n",
        p = up.port
    );
    let out = sb.net_run(&names, &strs(&opts(&up)), &["python3", "-c", &script]);
    assert_eq!(out.code(), Some(137), "{out}");
    let events = parsed(&sb.audit_log());
    let start = &events[0];
    assert_eq!(start["event"]["action"], "session.start");
    assert!(start["process"]["command_line"]
        .as_str()
        .unwrap_or("")
        .starts_with("python3 -c"));
    assert_eq!(start["airlock"]["seq"], 1);
    assert_eq!(
        start["airlock"]["prev_hash"],
        start["airlock"]["session"]["nonce"]
    );
    assert!(
        start["airlock"]["policy"]["hash"]
            .as_str()
            .unwrap_or("")
            .len()
            == 64,
        "{start}"
    );
    assert!(
        start["airlock"]["landlock"]["abi"].as_i64().unwrap_or(0) >= 1,
        "{start}"
    );
    assert!(start["host"]["os"]["kernel"].is_string(), "{start}");
    let end = events.last().expect("events");
    assert_eq!(end["event"]["action"], "session.end", "{events:#?}");
    assert_eq!(end["process"]["exit_code"], 137);
    assert_eq!(end["airlock"]["exit"]["signal"], 9);
    let sid = &start["airlock"]["session"]["id"];
    for e in &events {
        assert_eq!(&e["airlock"]["session"]["id"], sid);
        assert_eq!(
            e["airlock"]["policy"]["hash"],
            start["airlock"]["policy"]["hash"]
        );
    }
    let out = audit(&["verify", &sb.audit_log().display().to_string()]);
    out.assert_code(0, "the chain of a killed agent's session verifies");
}

/// Every ECS line carries the fields SIEM pipelines key on; every OCSF line
/// carries its class's required attributes (OCSF 1.3: base event, Network
/// Activity 4001, HTTP Activity 4002, Process Activity 1007).
#[test]
fn ecs_and_ocsf_lines_carry_their_required_fields() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let names = Names::new();
    let ecs = Sandbox::new();
    record_session(&ecs, &names, &up, &[]);
    for e in parsed(&ecs.audit_log()) {
        for f in [
            &["@timestamp"][..],
            &["event", "kind"],
            &["event", "category"],
            &["event", "type"],
            &["event", "action"],
            &["event", "outcome"],
            &["airlock", "session", "id"],
            &["airlock", "seq"],
            &["airlock", "prev_hash"],
            &["airlock", "policy", "hash"],
        ] {
            let mut v = &e;
            for k in f {
                v = &v[*k];
            }
            assert!(!v.is_null(), "ECS line lacks {f:?}: {e}");
        }
        let action = e["event"]["action"].as_str().unwrap_or("");
        if action.starts_with("network.") || action == "http.request" {
            for f in ["domain", "port"] {
                assert!(!e["destination"][f].is_null(), "{e}");
            }
            assert!(!e["rule"]["id"].is_null(), "{e}");
        }
    }
    let ocsf = Sandbox::new();
    record_session(&ocsf, &names, &up, &["--audit-format", "ocsf"]);
    let base = [
        "activity_id",
        "category_uid",
        "class_uid",
        "severity_id",
        "time",
        "type_uid",
        "metadata",
    ];
    let mut classes = std::collections::BTreeSet::new();
    for e in parsed(&ocsf.audit_log()) {
        for f in base {
            assert!(!e[f].is_null(), "OCSF line lacks {f}: {e}");
        }
        assert!(e["metadata"]["version"].is_string() && e["metadata"]["product"].is_object());
        let class = e["class_uid"].as_u64().unwrap_or(0);
        assert_eq!(
            e["type_uid"].as_u64(),
            Some(class * 100 + e["activity_id"].as_u64().unwrap_or(0))
        );
        let extra: &[&str] = match class {
            4001 => &["dst_endpoint", "src_endpoint"],
            4002 => &["http_request", "dst_endpoint"],
            1007 => &["actor", "process"],
            _ => &[],
        };
        for f in extra {
            assert!(!e[*f].is_null(), "class {class} lacks {f}: {e}");
        }
        classes.insert(class);
    }
    assert!(
        classes.contains(&4002) && classes.contains(&1007),
        "{classes:?}"
    );
    let out = audit(&["verify", &ocsf.audit_log().display().to_string()]);
    out.assert_code(0, "the OCSF chain verifies too");
}

/// Credentials in headers never reach the log, whatever header carries them.
#[test]
fn sensitive_headers_are_never_logged() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let p = up.port;
    let out = sb.net_sh(
        &names,
        &strs(&opts(&up)),
        &format!(
            "curl -sS -o /dev/null -H 'Authorization: Bearer canary-authz' -H 'Cookie: s=canary-cookie' \
             -H 'Proxy-Authorization: Basic canary-proxy' 'http://api.example.com:{p}/hello?token=canary-query'"
        ),
    );
    out.assert_code(0, "request");
    let text: String = lines(&sb.audit_log())
        .into_iter()
        .filter(|l| !l.contains("\"action\":\"session.start\""))
        .collect();
    for canary in [
        "canary-authz",
        "canary-cookie",
        "canary-proxy",
        "canary-query",
    ] {
        assert!(!text.contains(canary), "{canary} reached the audit log");
    }
}

/// Under load, every request the upstream saw has its event, and the chain
/// still verifies.
#[test]
fn no_event_is_lost_under_load() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let loadgen = sb.workspace.join("loadgen");
    install_executable(Path::new(env!("CARGO_BIN_EXE_loadgen")), &loadgen);
    let out = sb.net_run(
        &names,
        &strs(&opts(&up)),
        &[
            &loadgen.display().to_string(),
            "get",
            "--proxy",
            "tcp:127.0.0.1:3128",
            "--url",
            &format!("http://api.example.com:{}/hello", up.port),
            "--concurrency",
            "8",
            "--duration",
            "30",
            "--max-requests",
            "3000",
        ],
    );
    out.assert_code(0, "loadgen");
    let seen = up.requests().len();
    assert!(seen >= 3000, "the upstream saw {seen} requests\n{out}");
    let events = sb
        .network_events()
        .into_iter()
        .filter(|e| e["event"]["action"] == "http.request")
        .count();
    assert_eq!(events, seen, "one http.request event per upstream request");
    audit(&["verify", &sb.audit_log().display().to_string()])
        .assert_code(0, "the chain verifies after load");
}

/// A sink that fails closes the network: later connections are refused
/// with a reason, not let through unrecorded. A sink that cannot be opened
/// stops the run before it starts.
#[test]
fn a_failed_audit_sink_closes_the_network() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let dir = TempDir::new("/tmp", "airlock-sink");
    let sock = dir.join("shipper.sock");
    let out = sb.run_with(
        &["--audit-log", &format!("unix:{}", sock.display())],
        &["true"],
    );
    out.assert_code(125, "no shipper listening: refuse to start");
    assert!(out.stderr.contains("audit:"), "{out}");

    // A shipper that reads session.start and then goes away.
    let listener = UnixListener::bind(&sock).expect("bind shipper");
    let reader = std::thread::spawn(move || {
        let (conn, _) = listener.accept().expect("accept");
        let mut first = String::new();
        BufReader::new(conn).read_line(&mut first).expect("read");
        first
    });
    let mut o = opts(&up);
    o.extend(["--audit-log".into(), format!("unix:{}", sock.display())]);
    let p = up.port;
    let out = sb.net_sh(
        &names,
        &strs(&o),
        &format!(
            "sleep 0.5; curl -sS -o /dev/null http://api.example.com:{p}/hello; \
             curl -sS -D - -o /dev/null http://api.example.com:{p}/hello"
        ),
    );
    let first = reader.join().expect("shipper");
    assert!(first.contains("session.start"), "{first}");
    assert!(
        out.stdout
            .to_lowercase()
            .contains("x-airlock-deny: audit-unavailable"),
        "{out}"
    );
    assert!(up.requests().len() <= 1, "{:?}", up.requests());
}

/// `sandbox audit tail -f` keeps following the log across rotation (the
/// file moved away and a new one started), as a log shipper would.
#[test]
fn tail_follows_the_log_across_rotation() {
    let sb = Sandbox::new();
    sb.run(&["true"]).assert_code(0, "session A");
    let log = sb.audit_log();
    let mut tail = Command::new(sandbox_bin())
        .args(["audit", "tail", "--follow"])
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start tail");
    let stdout = tail.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |want: &str, count: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut seen = 0;
        while std::time::Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
                if l.contains(want) {
                    seen += 1;
                    if seen == count {
                        return;
                    }
                }
            }
        }
        panic!("tail did not print {count} line(s) with {want:?}");
    };
    wait_for("session.end", 1);
    std::fs::rename(&log, log.with_extension("jsonl.1")).expect("rotate");
    sb.run(&["true"]).assert_code(0, "session B");
    wait_for("session.end", 1);
    let _ = tail.kill();
    let _ = tail.wait();
}
