//! Method/path rules end to end, and the proxy's record of malformed
//! traffic: a host with `[[network.rules]]` is reachable only where the
//! proxy sees every request (plain HTTP checked per request, CONNECT
//! intercepted, SOCKS5 refused), paths are judged and forwarded in normal
//! form, and every attempt, however malformed, leaves an audit line.
//! Real clients inside a real sandbox; upstreams on the host's loopback.

mod common;

use std::path::Path;
use std::process::Command;

use common::net::{can_run, https_echo, Cert, Names, Upstream};
use common::{install_executable, run_to_end, sandbox_bin, write_file, Sandbox, TempDir};
use serde_json::Value;

/// A profile allowing api.example.com (rules: GET /v1/* only) and
/// other.example.com (no rules) on `port`, loopback allowed.
fn rules_profile(dir: &Path, port: u16) -> String {
    let path = dir.join("rules.toml");
    write_file(
        &path,
        &format!(
            r#"
[network]
allow = ["api.example.com", "other.example.com"]
allow_cidr = ["127.0.0.0/8"]
ports = [80, 443, {port}]

[[network.rules]]
host = "api.example.com"
methods = ["GET"]
paths = ["/v1/*"]
"#
        ),
        0o644,
    );
    path.display().to_string()
}

/// Copies the raw proxy client into the workspace; returns its path.
fn raw_client(sb: &Sandbox) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/raw_proxy_client.py");
    let dest = sb.workspace.join("raw_proxy_client.py");
    install_executable(&src, &dest);
    dest.display().to_string()
}

/// Runs the raw client inside the sandbox and parses its JSON lines.
fn raw(sb: &Sandbox, names: &Names, opts: &[&str], args: &[&str]) -> Vec<Value> {
    let client = raw_client(sb);
    let mut argv = vec!["python3", client.as_str()];
    argv.extend_from_slice(args);
    let out = sb.net_run(names, opts, &argv);
    out.assert_code(0, "the raw client should finish");
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}\n{out}")))
        .collect()
}

/// `sandbox policy explain OPTS --method M --url U`: allowed or not.
fn explain(opts: &[&str], method: &str, url: &str) -> bool {
    let mut cmd = Command::new(sandbox_bin());
    cmd.args(["policy", "explain"])
        .args(opts)
        .args(["--method", method, "--url", url]);
    let out = run_to_end(cmd);
    match out.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("policy explain failed\n{out}"),
    }
}

fn req(method: &str, host: &str, port: u16, path: &str) -> String {
    format!("{method} http://{host}:{port}{path} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\n\\r\\n")
}

/// Plain HTTP to a host with rules is checked per request on the path in
/// normal form: `DELETE /admin/...` and every dot-segment spelling of
/// `/admin` under `/v1/*` are refused (403), an encoded `/` is refused as
/// ambiguous (400), allowed requests reach the upstream with the
/// normalised path; and `policy explain --url` says the same as the proxy
/// for every request.
#[test]
fn plain_http_cannot_reach_paths_the_rules_refuse() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let dir = TempDir::new("/tmp", "airlock-rules");
    let profile = rules_profile(dir.path(), up.port);
    let sb = Sandbox::new();
    let names = Names::new();
    let opts = ["--profile", profile.as_str()];
    let p = up.port;
    let api = "api.example.com";
    // (method, host, path, status, deny reason, path the upstream sees)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        u16,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        ("GET", api, "/v1/hello", 200, None, Some("/v1/hello")),
        (
            "DELETE",
            api,
            "/admin/secret.txt",
            403,
            Some("method-or-path-not-allowed"),
            None,
        ),
        (
            "DELETE",
            api,
            "/v1/hello",
            403,
            Some("method-or-path-not-allowed"),
            None,
        ),
        (
            "GET",
            api,
            "/admin/secret.txt",
            403,
            Some("method-or-path-not-allowed"),
            None,
        ),
        (
            "GET",
            api,
            "/v1/../admin/secret.txt",
            403,
            Some("method-or-path-not-allowed"),
            None,
        ),
        (
            "GET",
            api,
            "/v1/%2e%2e/admin/secret.txt",
            403,
            Some("method-or-path-not-allowed"),
            None,
        ),
        (
            "GET",
            api,
            "/v1/..%2fadmin/secret.txt",
            400,
            Some("path-encoded-slash"),
            None,
        ),
        (
            "GET",
            api,
            "/v1/..%5cadmin/secret.txt",
            400,
            Some("path-backslash"),
            None,
        ),
        (
            "GET",
            api,
            "/v1/..;/admin/secret.txt",
            400,
            Some("path-dot-segment-parameter"),
            None,
        ),
        ("GET", api, "/v1/x%00", 400, Some("path-nul"), None),
        (
            "GET",
            api,
            "/v1/%zz",
            400,
            Some("path-bad-percent-encoding"),
            None,
        ),
        (
            "GET",
            api,
            "/v1/%252e%252e/admin/secret.txt",
            400,
            Some("path-double-encoding"),
            None,
        ),
        (
            "GET",
            api,
            "/v1/..%3b/admin/secret.txt",
            400,
            Some("path-dot-segment-parameter"),
            None,
        ),
        (
            "GET",
            api,
            "/v1/%7Euser/./x",
            200,
            None,
            Some("/v1/~user/x"),
        ),
        // No rules on this host: forwarded exactly as sent.
        (
            "DELETE",
            "other.example.com",
            "/a/../b",
            200,
            None,
            Some("/a/../b"),
        ),
    ];
    let requests: Vec<String> = cases
        .iter()
        .map(|(m, h, path, ..)| req(m, h, p, path))
        .collect();
    let mut args = vec!["session"];
    args.extend(requests.iter().map(String::as_str));
    let answers = raw(&sb, &names, &opts, &args);
    assert_eq!(answers.len(), cases.len(), "{answers:?}");
    for ((m, h, path, status, deny, _), a) in cases.iter().zip(&answers) {
        assert_eq!(a["status"], *status, "{m} {h}{path}: {a}");
        assert_eq!(a["deny"].as_str(), *deny, "{m} {h}{path}: {a}");
        let explained = explain(&opts, m, &format!("http://{h}:{p}{path}"));
        assert_eq!(
            explained,
            *status == 200,
            "policy explain disagrees with the proxy on {m} {h}{path}"
        );
    }
    let seen = up.requests();
    let want: Vec<String> = cases
        .iter()
        .filter_map(|(m, _, _, _, _, fwd)| fwd.map(|f| format!("{m} {f} HTTP/1.1")))
        .collect();
    assert_eq!(seen, want, "what the upstream received");
    assert!(seen.iter().all(|r| !r.contains("admin")), "{seen:?}");

    // A GET-only rule does not admit a GET that asks to be a DELETE.
    let overrides = [
        format!("GET http://{api}:{p}/v1/hello HTTP/1.1\\r\\nHost: {api}:{p}\\r\\nX-HTTP-Method-Override: DELETE\\r\\n\\r\\n"),
        req("GET", api, p, "/v1/hello?_method=DELETE"),
    ];
    let mut args = vec!["session"];
    args.extend(overrides.iter().map(String::as_str));
    let answers = raw(&sb, &names, &opts, &args);
    assert_eq!(answers.len(), 2, "{answers:?}");
    for a in answers {
        assert_eq!(
            (&a["status"], &a["deny"]),
            (
                &Value::from(403),
                &Value::from("method-override-not-allowed")
            ),
            "{a}"
        );
    }
    assert_eq!(up.requests().len(), want.len(), "{:?}", up.requests());
}

/// Through CONNECT, a host with rules is intercepted with the session CA
/// (even with no credential), and the same dot-segment tricks never reach
/// `/admin` on an upstream that would normalise them itself.
#[test]
fn intercepted_tunnel_cannot_reach_paths_the_rules_refuse() {
    if !can_run() {
        return;
    }
    let tls = TempDir::new("/tmp", "airlock-rules-tls");
    let cert = Cert::generate(tls.path(), &["api.example.com"]);
    let record = tls.join("received.jsonl");
    let echo = https_echo(&cert, &record);
    let profile = rules_profile(tls.path(), echo.port);
    let sb = Sandbox::new();
    let names = Names::new();
    let ca = cert.ca.display().to_string();
    let opts = ["--profile", profile.as_str(), "--upstream-ca", ca.as_str()];
    let p = echo.port;
    let script = format!(
        "for spec in 'GET /v1/ok' 'GET /v1/%7Euser/./x' 'GET /v1/../admin/secret.txt' \
           'GET /v1/%2e%2e/admin/secret.txt' 'GET /v1/..%2fadmin/secret.txt' \
           'DELETE /admin/secret.txt' 'DELETE /v1/ok'; do \
           set -- $spec; \
           curl -sS --max-time 20 --path-as-is -o /dev/null -X $1 \
             -w \"$1 $2 %{{http_code}}\\n\" https://api.example.com:{p}$2; \
         done"
    );
    let out = sb.net_sh(&names, &opts, &script);
    for want in [
        "GET /v1/ok 200",
        "GET /v1/%7Euser/./x 200",
        "GET /v1/../admin/secret.txt 403",
        "GET /v1/%2e%2e/admin/secret.txt 403",
        "GET /v1/..%2fadmin/secret.txt 400",
        "DELETE /admin/secret.txt 403",
        "DELETE /v1/ok 403",
    ] {
        assert!(out.stdout.contains(want), "{want}\n{out}");
    }
    let received = std::fs::read_to_string(&record).unwrap_or_default();
    let paths: Vec<String> = received
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            format!(
                "{} {}",
                v["method"].as_str().unwrap_or(""),
                v["path"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(paths, vec!["GET /v1/ok", "GET /v1/~user/x"], "{received}");
}

/// SOCKS5 shows the proxy no request, so a host with rules is refused
/// there (reply 2, "not allowed by ruleset") with an audit line saying
/// why; a host without rules still works.
#[test]
fn socks5_to_a_host_with_rules_is_refused_and_logged() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let dir = TempDir::new("/tmp", "airlock-rules");
    let profile = rules_profile(dir.path(), up.port);
    let sb = Sandbox::new();
    let names = Names::new();
    let opts = ["--profile", profile.as_str()];
    let p = up.port.to_string();
    let a = raw(&sb, &names, &opts, &["socks", "3", "api.example.com", &p]);
    assert_eq!(a[0]["reply"], 2, "{a:?}");
    let a = raw(&sb, &names, &opts, &["socks", "3", "other.example.com", &p]);
    assert_eq!(a[0]["reply"], 0, "{a:?}");
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    let events = sb.network_events();
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e["airlock"]["reason"] == "rules-need-inspection")
        .collect();
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert_eq!(refused[0]["destination"]["domain"], "api.example.com");
    assert_eq!(refused[0]["airlock"]["protocol"], "socks5");
}

/// Every attempt leaves one line, whatever its fate: SOCKS5 BIND, UDP
/// ASSOCIATE and an unknown address type; request heads hyper's parser
/// refuses (a bad header line, conflicting Content-Length: 400); ports
/// that are not ports (`:83616`, `:443.evil.test`: 400, never port 80).
/// A bare query component (`?TOKEN`) is redacted like a value.
#[test]
fn every_malformed_attempt_leaves_an_audit_line() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let p = up.port;
    let ps = p.to_string();
    let opts = [
        "--allow",
        "api.example.com",
        "--allow-cidr",
        "127.0.0.0/8",
        "--allow-port",
        ps.as_str(),
    ];
    let hello = |auth: &str| {
        format!("GET http://{auth}/hello HTTP/1.1\\r\\nHost: api.example.com:{p}\\r\\n\\r\\n")
    };
    let bad_line = format!(
        "GET http://api.example.com:{p}/hello HTTP/1.1\\r\\nHost: api.example.com:{p}\\r\\nno colon here\\r\\n\\r\\n"
    );
    let two_lengths = format!(
        "POST http://api.example.com:{p}/hello HTTP/1.1\\r\\nHost: api.example.com:{p}\\r\\nContent-Length: 1\\r\\nContent-Length: 2\\r\\n\\r\\nab"
    );
    let big_port = hello("api.example.com:83616");
    let dotted_port = hello("api.example.com:443.evil.test");
    let connect_port =
        "CONNECT api.example.com:83616 HTTP/1.1\\r\\nHost: api.example.com:83616\\r\\n\\r\\n";
    let token = format!("GET http://api.example.com:{p}/hello?SECRETISH-TOKEN-42 HTTP/1.1\\r\\nHost: api.example.com:{p}\\r\\n\\r\\n");
    let client = raw_client(&sb);
    let script = format!(
        "python3 {client} bytes 1080 '\\x05\\x01\\x00\\x05\\x02\\x00\\x01\\x7f\\x00\\x00\\x01\\x00\\x50' \
           '\\x05\\x01\\x00\\x05\\x03\\x00\\x01\\x7f\\x00\\x00\\x01\\x00\\x50' \
           '\\x05\\x01\\x00\\x05\\x01\\x00\\x09\\x7f\\x00\\x00\\x01\\x00\\x50'; \
         python3 {client} bytes 3128 '{bad_line}' '{two_lengths}' '{big_port}' '{dotted_port}' '{connect_port}'; \
         python3 {client} session '{token}'"
    );
    let out = sb.net_sh(&names, &opts, &script);
    out.assert_code(0, "the raw client should finish");
    let answers: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}\n{out}")))
        .collect();
    assert_eq!(answers.len(), 9, "{out}");
    // SOCKS5: method reply 05 00, then the request reply: 07, 07, 08.
    for (a, code) in answers[..3].iter().zip(["07", "07", "08"]) {
        let reply = a["reply"].as_str().unwrap_or("");
        assert!(reply.starts_with(&format!("050005{code}")), "{a}");
    }
    for a in &answers[3..8] {
        let text = a["text"].as_str().unwrap_or("");
        assert!(text.starts_with("HTTP/1.1 400"), "{a}");
    }
    assert_eq!(answers[8]["status"], 200, "{}", answers[8]);
    assert_eq!(
        up.requests(),
        vec!["GET /hello?SECRETISH-TOKEN-42 HTTP/1.1"]
    );

    let events = sb.network_events();
    let socks: Vec<&Value> = events
        .iter()
        .filter(|e| e["airlock"]["reason"] == "socks-request-refused")
        .collect();
    assert_eq!(
        socks.len(),
        3,
        "BIND, UDP ASSOCIATE, bad address type\n{events:#?}"
    );
    for why in ["BIND", "UDP ASSOCIATE", "address type"] {
        assert!(
            socks
                .iter()
                .any(|e| e["airlock"]["error"].as_str().unwrap_or("").contains(why)),
            "{why}\n{socks:#?}"
        );
    }
    let bad_requests = events
        .iter()
        .filter(|e| {
            matches!(
                e["airlock"]["reason"].as_str(),
                Some("bad-request" | "bad-port")
            )
        })
        .count();
    assert_eq!(
        bad_requests, 5,
        "one line per rejected request\n{events:#?}"
    );
    // (The session.start line records the command line, which holds it.)
    let logged: Vec<&Value> = events
        .iter()
        .filter(|e| e.to_string().contains("SECRETISH-TOKEN-42"))
        .collect();
    assert!(
        logged.is_empty(),
        "the bare query component was logged\n{logged:#?}"
    );
    assert!(
        events.iter().any(|e| e["url"]["query"] == "REDACTED"),
        "{events:#?}"
    );
}
