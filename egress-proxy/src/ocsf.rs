//! OCSF 1.3 rendering of our ECS events (`--audit-format ocsf`): HTTP
//! Activity (4002) for HTTP requests and credential uses, Network Activity
//! (4001) for connections and denials, Process Activity (1007) for session
//! start and end, Base Event (0) for the rest. Our own fields (session,
//! sequence, chain hash, rule) travel in `unmapped.airlock`, so the chain
//! verifies the same way in both formats.

use serde_json::{json, Value};

/// The OCSF schema version these objects follow.
pub const OCSF_VERSION: &str = "1.3.0";

fn http_activity(method: &str) -> u64 {
    match method.to_ascii_uppercase().as_str() {
        "CONNECT" => 1,
        "DELETE" => 2,
        "GET" => 3,
        "HEAD" => 4,
        "OPTIONS" => 5,
        "POST" => 6,
        "PUT" => 7,
        "TRACE" => 8,
        _ => 99,
    }
}

/// The OCSF object for one ECS event.
pub fn from_ecs(v: &Value) -> Value {
    let action = v["event"]["action"].as_str().unwrap_or("");
    let denied = v["airlock"]["decision"] == "deny"
        || action == "network.denied"
        || action == "credential_leak_blocked";
    let failed = v["event"]["outcome"] == "failure";
    let method = v["http"]["request"]["method"].as_str();
    let (category, class, activity) = match action {
        "session.start" => (1, 1007, 1),
        "session.end" => (1, 1007, 2),
        "isolation.failure" => (1, 1007, 99),
        "audit.sealed" | "proxy.error" => (0, 0, 0),
        _ => match method {
            Some(m) => (4, 4002, http_activity(m)),
            None if denied => (4, 4001, 5),
            None => (4, 4001, 2),
        },
    };
    let time = chrono_ms(v["@timestamp"].as_str().unwrap_or(""));
    let mut o = json!({
        "activity_id": activity,
        "category_uid": category,
        "class_uid": class,
        "type_uid": class * 100 + activity,
        "severity_id": if action == "isolation.failure" { 4 } else if denied { 3 } else { 1 },
        "status_id": if failed || denied { 2 } else { 1 },
        "time": time,
        "message": action,
        "metadata": {
            "version": OCSF_VERSION,
            "product": { "name": "airlock", "vendor_name": "airlock", "version": env!("CARGO_PKG_VERSION") },
            "log_name": "airlock-audit",
            "event_code": action,
        },
        "unmapped": { "airlock": v["airlock"].clone(), "rule": v["rule"].clone(), "event": v["event"].clone() },
    });
    if class == 4001 || class == 4002 {
        o["action_id"] = json!(if denied { 2 } else { 1 });
        o["disposition_id"] = json!(if denied { 2 } else { 1 });
        let d = &v["destination"];
        o["dst_endpoint"] = json!({
            "hostname": d["domain"],
            "ip": d["ip"],
            "port": d["port"],
        });
        o["src_endpoint"] = json!({ "uid": v["source"]["user"]["id"] });
        o["traffic"] = json!({ "bytes_out": v["source"]["bytes"], "bytes_in": d["bytes"] });
        o["connection_info"] = json!({ "protocol_name": "tcp", "direction_id": 2 });
    }
    if class == 4002 {
        o["http_request"] = json!({
            "http_method": method,
            "url": {
                "hostname": v["destination"]["domain"],
                "port": v["destination"]["port"],
                "path": v["url"]["path"],
                "query_string": v["url"]["query"],
            },
        });
        if let Some(code) = v["http"]["response"]["status_code"].as_u64() {
            o["http_response"] = json!({ "code": code });
        }
    }
    if class == 1007 {
        o["actor"] = json!({ "user": { "uid": v["user"]["id"], "name": v["user"]["name"] } });
        o["process"] = json!({
            "cmd_line": v["process"]["command_line"],
            "cwd": v["process"]["working_directory"],
            "exit_code": v["process"]["exit_code"],
        });
    }
    o
}

/// Milliseconds since the epoch from our RFC 3339 timestamps.
fn chrono_ms(ts: &str) -> u64 {
    let parse = || -> Option<u64> {
        let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
        let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
        let (y, m, day) = (d.next()??, d.next()??, d.next()??);
        let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
        let mut t = hms.split(':').map(|x| x.parse::<u64>().ok());
        let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
        // Days from civil (Howard Hinnant).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
        Some(((days * 86_400 + h * 3600 + mi * 60 + s) * 1000) + ms.parse::<u64>().ok()?)
    };
    parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_convert_to_epoch_millis() {
        assert_eq!(chrono_ms("1970-01-01T00:00:00.000Z"), 0);
        assert_eq!(chrono_ms("2026-11-23T15:05:09.123Z"), 1_795_446_309_123);
    }
}
