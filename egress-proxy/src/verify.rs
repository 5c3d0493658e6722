//! Checking an audit log's hash chain: every session's lines must be
//! numbered 1, 2, 3... without gaps, each must carry the SHA-256 of the
//! previous line of its session as written, the first must chain to the
//! nonce its `session.start` records, and the session must end with
//! `session.end` (and, when a public key is given, a valid seal). A
//! modified, deleted, reordered or inserted line breaks one of these, and
//! the report names the line.

use std::collections::HashMap;

use serde_json::Value;

use crate::audit::sha256_hex;

/// One thing wrong, at a line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Line number in the file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The verdict over a whole file.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Lines read.
    pub lines: usize,
    /// Sessions seen.
    pub sessions: usize,
    /// Sessions whose seal verified.
    pub sealed: usize,
    /// Everything wrong, in file order.
    pub problems: Vec<Problem>,
}

struct Session {
    next: u64,
    prev: String,
    last_line: usize,
    ended: bool,
    sealed: bool,
}

fn chain_fields(v: &Value) -> Option<(&str, u64, &str)> {
    let a = if v["airlock"].is_object() {
        &v["airlock"]
    } else {
        &v["unmapped"]["airlock"]
    };
    Some((
        a["session"]["id"].as_str()?,
        a["seq"].as_u64()?,
        a["prev_hash"].as_str()?,
    ))
}

fn action(v: &Value) -> &str {
    v["event"]["action"]
        .as_str()
        .or_else(|| v["unmapped"]["event"]["action"].as_str())
        .unwrap_or("")
}

fn airlock(v: &Value) -> &Value {
    if v["airlock"].is_object() {
        &v["airlock"]
    } else {
        &v["unmapped"]["airlock"]
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Verifies `text` (a whole audit file). With `pubkey` (raw Ed25519), every
/// session must also carry a valid seal over its chain head.
pub fn verify(text: &str, pubkey: Option<&[u8]>) -> Report {
    let mut report = Report::default();
    let mut sessions: HashMap<String, Session> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        report.lines = n;
        let mut problem = |message: String| report.problems.push(Problem { line: n, message });
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            problem("not a JSON object (edited or truncated?)".into());
            continue;
        };
        let Some((sid, seq, prev)) = chain_fields(&v) else {
            problem("no airlock.session.id / airlock.seq / airlock.prev_hash".into());
            continue;
        };
        let hash = sha256_hex(line.as_bytes());
        let act = action(&v);
        match sessions.get_mut(sid) {
            None => {
                if seq != 1 {
                    problem(format!(
                        "session {sid} begins at seq {seq}: its first {} line(s) are missing",
                        seq - 1
                    ));
                } else if act != "session.start" {
                    problem(format!("session {sid} does not begin with session.start"));
                } else if airlock(&v)["session"]["nonce"].as_str() != Some(prev) {
                    problem(format!(
                        "session {sid}: the first line does not chain to the session nonce"
                    ));
                }
                order.push(sid.to_string());
                sessions.insert(
                    sid.to_string(),
                    Session {
                        next: seq + 1,
                        prev: hash,
                        last_line: n,
                        ended: act == "session.end",
                        sealed: false,
                    },
                );
            }
            Some(s) => {
                if s.ended && act != "audit.sealed" {
                    problem(format!("session {sid} continues after its session.end"));
                }
                if seq != s.next {
                    problem(format!(
                        "session {sid}: expected seq {}, found {seq} (a line was deleted, inserted or moved)",
                        s.next
                    ));
                } else if prev != s.prev {
                    problem(format!(
                        "session {sid}: prev_hash does not match line {} (that line was modified, or lines were reordered)",
                        s.last_line
                    ));
                }
                if act == "audit.sealed" {
                    let chain = &airlock(&v)["chain"];
                    let head_ok = chain["head"].as_str() == Some(s.prev.as_str());
                    let sig_ok = match (pubkey, chain["signature"].as_str().and_then(unhex)) {
                        (Some(key), Some(sig)) => {
                            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
                                .verify(s.prev.as_bytes(), &sig)
                                .is_ok()
                        }
                        (None, _) => true,
                        (Some(_), None) => false,
                    };
                    if !head_ok || !sig_ok {
                        problem(format!(
                            "session {sid}: the seal does not match the chain head (modified after sealing, or another key)"
                        ));
                    } else if pubkey.is_some() {
                        s.sealed = true;
                    }
                }
                s.next = seq.max(s.next) + 1;
                s.prev = hash;
                s.last_line = n;
                s.ended |= act == "session.end";
            }
        }
    }
    report.sessions = order.len();
    for sid in &order {
        let s = &sessions[sid];
        if !s.ended {
            report.problems.push(Problem {
                line: s.last_line,
                message: format!(
                    "session {sid} has no session.end after line {} (the log was truncated, or the session is still running)",
                    s.last_line
                ),
            });
        }
        if pubkey.is_some() && !s.sealed {
            report.problems.push(Problem {
                line: s.last_line,
                message: format!("session {sid} has no valid seal"),
            });
        }
        if s.sealed {
            report.sealed += 1;
        }
    }
    report.problems.sort_by_key(|p| p.line);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, Options, SinkSpec};
    use serde_json::json;

    fn sample(dir: &std::path::Path) -> String {
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open_with(&SinkSpec::File(path.clone()), "s1", Options::default())
            .expect("open");
        log.record_value(json!({"event": {"action": "session.start"}, "airlock": {"session": {"nonce": log.nonce()}}}));
        for i in 0..4 {
            log.record_value(
                json!({"event": {"action": "http.request"}, "url": {"path": format!("/{i}")}}),
            );
        }
        log.record_value(json!({"event": {"action": "session.end"}}));
        std::fs::read_to_string(path).expect("read")
    }

    fn tmp() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("airlock-verify-{}", crate::new_session_id()));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    fn first_problem_line(text: &[String]) -> Option<usize> {
        verify(&(text.join("\n") + "\n"), None)
            .problems
            .first()
            .map(|p| p.line)
    }

    #[test]
    fn an_intact_log_verifies() {
        let d = tmp();
        let r = verify(&sample(&d), None);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!((r.lines, r.sessions), (6, 1));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn every_kind_of_tampering_is_found_and_located() {
        let d = tmp();
        let good = lines(&sample(&d));
        let mut edited = good.clone();
        edited[2] = edited[2].replace("\"/1\"", "\"/x\"");
        assert_eq!(first_problem_line(&edited), Some(4), "edit of line 3");
        let mut deleted = good.clone();
        deleted.remove(2);
        assert_eq!(first_problem_line(&deleted), Some(3), "deletion of line 3");
        let mut swapped = good.clone();
        swapped.swap(2, 3);
        assert_eq!(
            first_problem_line(&swapped),
            Some(3),
            "swap of lines 3 and 4"
        );
        let mut truncated = good.clone();
        truncated.truncate(4);
        assert_eq!(first_problem_line(&truncated), Some(4), "truncation");
        let mut inserted = good.clone();
        inserted.insert(3, good[2].clone());
        assert_eq!(first_problem_line(&inserted), Some(4), "insertion");
        let _ = std::fs::remove_dir_all(d);
    }
}
