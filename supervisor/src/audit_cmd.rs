//! `sandbox audit verify | summary | tail`: what a compliance team runs on
//! the log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use egress_proxy::verify::verify;
use serde_json::{json, Value};

use crate::cli::AuditCommand;

/// Runs an audit subcommand; returns the exit code.
pub fn main(cmd: AuditCommand) -> u8 {
    match cmd {
        AuditCommand::Verify { pubkey, files } => verify_files(pubkey.as_deref(), &files),
        AuditCommand::Summary { json, files } => summary(&files, json),
        AuditCommand::Tail { follow, file } => tail(file, follow),
    }
}

fn read(path: &Path) -> Result<String, u8> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("sandbox: {}: {e}", path.display());
        2
    })
}

fn verify_files(pubkey: Option<&Path>, files: &[PathBuf]) -> u8 {
    let key = match pubkey.map(egress_proxy::seal::public_key_from_pem_file) {
        Some(Err(e)) => {
            eprintln!("sandbox: --pubkey {e}");
            return 2;
        }
        Some(Ok(k)) => Some(k),
        None => None,
    };
    let mut failed = false;
    for f in files {
        let text = match read(f) {
            Ok(t) => t,
            Err(code) => return code,
        };
        let report = verify(&text, key.as_deref());
        for p in &report.problems {
            println!("{}:{}: {}", f.display(), p.line, p.message);
        }
        if report.problems.is_empty() {
            println!(
                "{}: OK: {} lines, {} sessions, chain intact{}",
                f.display(),
                report.lines,
                report.sessions,
                if key.is_some() {
                    format!(", {} sealed", report.sealed)
                } else {
                    String::new()
                }
            );
        } else {
            failed = true;
        }
    }
    u8::from(failed)
}

fn field<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur
}

fn airlock(v: &Value) -> &Value {
    if v["airlock"].is_object() {
        &v["airlock"]
    } else {
        &v["unmapped"]["airlock"]
    }
}

fn action(v: &Value) -> &str {
    v["event"]["action"]
        .as_str()
        .or_else(|| v["unmapped"]["event"]["action"].as_str())
        .unwrap_or("")
}

#[derive(Default)]
struct Dest {
    requests: u64,
    denied: u64,
    bytes_up: u64,
    bytes_down: u64,
    credentials: BTreeMap<String, u64>,
}

/// One session's command line, exit code and destinations.
type SessionSummary = (String, Option<i64>, BTreeMap<String, Dest>);

fn summary(files: &[PathBuf], as_json: bool) -> u8 {
    let mut sessions: BTreeMap<String, SessionSummary> = BTreeMap::new();
    for f in files {
        let text = match read(f) {
            Ok(t) => t,
            Err(code) => return code,
        };
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let sid = airlock(&v)["session"]["id"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            let entry = sessions.entry(sid).or_default();
            let act = action(&v);
            match act {
                "session.start" => {
                    entry.0 = field(&v, &["process", "command_line"])
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                }
                "session.end" => entry.1 = field(&v, &["process", "exit_code"]).as_i64(),
                _ => {
                    let domain = field(&v, &["destination", "domain"])
                        .as_str()
                        .unwrap_or("?");
                    let port = field(&v, &["destination", "port"]).as_u64().unwrap_or(0);
                    if act.is_empty() || act.starts_with("audit.") {
                        continue;
                    }
                    let d = entry.2.entry(format!("{domain}:{port}")).or_default();
                    if act == "credential.used" {
                        let name = airlock(&v)["credential"]["name"]
                            .as_str()
                            .unwrap_or("?")
                            .to_string();
                        *d.credentials.entry(name).or_default() += 1;
                        continue;
                    }
                    d.requests += 1;
                    if act == "network.denied" || act == "credential_leak_blocked" {
                        d.denied += 1;
                    }
                    d.bytes_up += field(&v, &["source", "bytes"]).as_u64().unwrap_or(0);
                    d.bytes_down += field(&v, &["destination", "bytes"]).as_u64().unwrap_or(0);
                }
            }
        }
    }
    if as_json {
        let out: Vec<Value> = sessions
            .iter()
            .map(|(sid, (cmd, exit, dests))| {
                json!({
                    "session": sid,
                    "command_line": cmd,
                    "exit_code": exit,
                    "destinations": dests.iter().map(|(k, d)| json!({
                        "destination": k,
                        "requests": d.requests,
                        "denied": d.denied,
                        "bytes_up": d.bytes_up,
                        "bytes_down": d.bytes_down,
                        "credentials": d.credentials,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", Value::Array(out));
        return 0;
    }
    for (sid, (cmd, exit, dests)) in &sessions {
        let exit = exit.map_or("-".to_string(), |c| c.to_string());
        println!("session {sid}  exit {exit}  {cmd}");
        println!(
            "  {:<40} {:>8} {:>7} {:>12} {:>12}  credentials",
            "destination", "requests", "denied", "bytes up", "bytes down"
        );
        for (k, d) in dests {
            let creds: Vec<String> = d
                .credentials
                .iter()
                .map(|(n, c)| format!("{n}×{c}"))
                .collect();
            println!(
                "  {:<40} {:>8} {:>7} {:>12} {:>12}  {}",
                k,
                d.requests,
                d.denied,
                d.bytes_up,
                d.bytes_down,
                creds.join(", ")
            );
        }
    }
    0
}

fn human(v: &Value) -> String {
    let ts = v["@timestamp"].as_str().unwrap_or("");
    let time = ts.get(11..19).unwrap_or(ts);
    let sid = airlock(v)["session"]["id"].as_str().unwrap_or("");
    let short = sid.get(..8).unwrap_or(sid);
    let act = action(v);
    let rest = match act {
        "session.start" => field(v, &["process", "command_line"])
            .as_str()
            .unwrap_or("")
            .to_string(),
        "session.end" => format!(
            "exit {}",
            field(v, &["process", "exit_code"]).as_i64().unwrap_or(-1)
        ),
        "isolation.failure" => v["error"]["message"].as_str().unwrap_or("").to_string(),
        _ => {
            let d = &v["destination"];
            let mut s = format!(
                "{}:{}",
                d["domain"].as_str().unwrap_or("?"),
                d["port"].as_u64().unwrap_or(0)
            );
            if let Some(m) = v["http"]["request"]["method"].as_str() {
                s.push_str(&format!(" {m} {}", v["url"]["path"].as_str().unwrap_or("")));
            }
            if let Some(c) = v["http"]["response"]["status_code"].as_u64() {
                s.push_str(&format!(" → {c}"));
            }
            if let Some(r) = v["rule"]["id"].as_str() {
                s.push_str(&format!(" [{r}]"));
            }
            if let Some(c) = airlock(v)["credential"]["name"].as_str() {
                s.push_str(&format!(" credential={c}"));
            }
            s
        }
    };
    format!("{time} {short} {act:<24} {rest}")
}

fn tail(file: Option<PathBuf>, follow: bool) -> u8 {
    let path = file.unwrap_or_else(|| {
        crate::audit::default_audit_log(
            nix::unistd::geteuid().as_raw(),
            std::env::var_os("HOME").map(PathBuf::from).as_deref(),
            std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .as_deref(),
        )
    });
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sandbox: {}: {e}", path.display());
            return 2;
        }
    };
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) if follow => {
                std::thread::sleep(Duration::from_millis(200));
                // Rotation: the path now names another file (a new inode),
                // or this one was truncated. Read the new one from its start.
                let current = reader.get_ref().metadata().ok();
                let at_path = std::fs::metadata(&path).ok();
                let pos = reader.stream_position().unwrap_or(0);
                let rotated = match (&current, &at_path) {
                    (Some(c), Some(p)) => c.ino() != p.ino() || p.len() < pos,
                    _ => false,
                };
                if rotated {
                    if let Ok(f) = std::fs::File::open(&path) {
                        reader = BufReader::new(f);
                    } else {
                        let _ = reader.seek(SeekFrom::Start(0));
                    }
                }
            }
            Ok(0) | Err(_) => return 0,
            Ok(_) => {
                if let Ok(v) = serde_json::from_str::<Value>(line.trim_end()) {
                    println!("{}", human(&v));
                    use std::io::Write;
                    let _ = std::io::stdout().flush();
                }
            }
        }
    }
}
