//! Network fixtures for the egress tests: upstream servers on the host's
//! loopback, a DNS spy, test names mapped to 127.0.0.1, and TLS material.
//!
//! Test names resolve through a private `/etc/hosts` and `/etc/resolv.conf`
//! bind-mounted in a mount namespace made for one `sandbox run` (with
//! `unshare`), so the proxy resolves them exactly as it would in production
//! (getaddrinfo), the host's files are never touched, and no query leaves
//! the machine: the only nameserver is the spy on 127.0.0.66.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{run_to_end, write_file, RunOutput, Sandbox, TempDir};

/// Names the tests use; every one maps to 127.0.0.1.
pub const TEST_NAMES: &[&str] = &[
    "api.example.com",
    "evil.example.com",
    "example.org",
    "a.example.org",
    "deep.a.example.org",
    "badexample.org",
    "git.example.com",
    "other.example.com",
];

/// The nameserver the private resolv.conf names by default (nothing
/// listens there unless a [`DnsSpy`] does).
pub const SPY_ADDR: &str = "127.0.0.66:53";

/// Whether these tests can run: they need root for the mount namespace.
pub fn can_run() -> bool {
    if super::is_root() {
        return true;
    }
    eprintln!("skipped: the egress tests need root (unshare --mount for a private /etc/hosts)");
    false
}

/// A private hosts file and resolv.conf for one test.
pub struct Names {
    dir: TempDir,
}

impl Names {
    /// Maps every name in [`TEST_NAMES`] to 127.0.0.1.
    pub fn new() -> Names {
        Self::with_nameserver("127.0.0.66")
    }

    /// As [`Names::new`], with `ip` as the only nameserver.
    pub fn with_nameserver(ip: &str) -> Names {
        let dir = TempDir::new("/tmp", "airlock-names");
        let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for n in TEST_NAMES {
            hosts.push_str(&format!("127.0.0.1 {n}\n"));
        }
        write_file(&dir.join("hosts"), &hosts, 0o644);
        write_file(
            &dir.join("resolv.conf"),
            &format!("nameserver {ip}\noptions timeout:1 attempts:1\n"),
            0o644,
        );
        Names { dir }
    }

    /// Also maps `name` to `ip` (for names outside [`TEST_NAMES`]).
    pub fn add_host(&self, ip: &str, name: &str) {
        let path = self.dir.join("hosts");
        let mut hosts = std::fs::read_to_string(&path).unwrap_or_default();
        hosts.push_str(&format!("{ip} {name}\n"));
        write_file(&path, &hosts, 0o644);
    }

    /// `cmd` wrapped to run in a new mount namespace that sees our files.
    pub fn wrap(&self, inner: &Command) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(
                "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf \
                 && shift 2 && exec \"$@\"",
            )
            .arg("sh")
            .arg(self.dir.join("hosts"))
            .arg(self.dir.join("resolv.conf"))
            .arg(inner.get_program())
            .args(inner.get_args());
        if let Some(dir) = inner.get_current_dir() {
            cmd.current_dir(dir);
        }
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null());
        cmd
    }
}

impl Sandbox {
    /// `sandbox run OPTS -- ARGV` with the test names resolvable.
    pub fn net_run(&self, names: &Names, opts: &[&str], argv: &[&str]) -> RunOutput {
        run_to_end(names.wrap(&self.command_with(opts, argv)))
    }

    /// `sh -c SCRIPT` with network options.
    pub fn net_sh(&self, names: &Names, opts: &[&str], script: &str) -> RunOutput {
        self.net_run(names, opts, &["/bin/sh", "-c", script])
    }

    /// The network events (connections, requests, denials, credential
    /// uses) of this sandbox's sessions, without session start/end.
    pub fn network_events(&self) -> Vec<serde_json::Value> {
        self.audit_events()
            .into_iter()
            .filter(|e| {
                let a = e["event"]["action"].as_str().unwrap_or("");
                !a.starts_with("session.") && !a.starts_with("audit.")
            })
            .collect()
    }

    /// The audit events this sandbox's sessions wrote, parsed.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.audit_log()).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .collect()
    }
}

/// A small HTTP/1.1 server on the host's loopback with keep-alive.
///
/// `/hello` answers `hello from upstream`; `/headers` echoes the request
/// head it received; `/redirect` answers 302 to `http://evil.example.com/`;
/// `/bytes/N` sends N bytes; `/ws` with `Upgrade: websocket` switches
/// protocols and echoes bytes. Every request line is recorded.
pub struct Upstream {
    /// Its port on 127.0.0.1.
    pub port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    /// Starts the server on an ephemeral port.
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().expect("upstream addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || serve(stream, log));
            }
        });
        Upstream { port, seen }
    }

    /// Request lines received so far.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

fn serve(stream: TcpStream, log: Arc<Mutex<Vec<String>>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut out = stream;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let end = line == "\r\n" || line == "\n";
            head.push_str(&line);
            if end {
                break;
            }
        }
        let request_line = head.lines().next().unwrap_or("").to_string();
        if let Ok(mut l) = log.lock() {
            l.push(request_line.clone());
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
        if path == "/ws" && head.to_lowercase().contains("upgrade: websocket") {
            // Switch protocols, then echo raw bytes until the client closes.
            let _ = out.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Accept: test\r\n\r\n",
            );
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            return;
        }
        let (status, extra, body): (&str, String, Vec<u8>) = if path == "/hello" {
            ("200 OK", String::new(), b"hello from upstream\n".to_vec())
        } else if path == "/headers" {
            ("200 OK", String::new(), head.clone().into_bytes())
        } else if path == "/redirect" {
            (
                "302 Found",
                "Location: http://evil.example.com/\r\n".to_string(),
                b"moved\n".to_vec(),
            )
        } else if let Some(n) = path.strip_prefix("/bytes/") {
            let n: usize = n.parse().unwrap_or(0);
            ("200 OK", String::new(), vec![b'x'; n])
        } else {
            (
                "200 OK",
                String::new(),
                format!("path {path}\n").into_bytes(),
            )
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{extra}\r\n",
            body.len()
        );
        if out.write_all(response.as_bytes()).is_err() || out.write_all(&body).is_err() {
            return;
        }
    }
}

/// A UDP "nameserver" on [`SPY_ADDR`] that records every name asked and
/// answers REFUSED. Proves that denied names are never looked up.
pub struct DnsSpy {
    asked: Arc<Mutex<Vec<String>>>,
    /// The address it listens on (port 53 of some 127.0.0.x).
    pub addr: SocketAddr,
}

impl DnsSpy {
    /// Binds the spy. Tests that use it run one at a time (see
    /// [`DNS_LOCK`]), since the address is fixed.
    pub fn start() -> DnsSpy {
        // Port 53 of the first free address from 127.0.0.66 on (another
        // test run on this machine may hold one).
        let socket = (66..=126)
            .find_map(|x| UdpSocket::bind(format!("127.0.0.{x}:53")).ok())
            .expect("bind the DNS spy on port 53 of some 127.0.0.66-126");
        let addr = socket.local_addr().expect("spy address");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                if n < 12 {
                    continue;
                }
                if let Some(name) = qname(&buf[12..n]) {
                    if let Ok(mut l) = log.lock() {
                        l.push(name);
                    }
                }
                // Same id, QR=1, RCODE=5 (REFUSED).
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80;
                reply[3] = (reply[3] & 0xf0) | 5;
                let _ = socket.send_to(&reply, peer);
            }
        });
        DnsSpy { asked, addr }
    }

    /// Names asked so far (lowercased, without trailing dot).
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Serialises tests that bind the DNS spy's fixed address.
pub static DNS_LOCK: Mutex<()> = Mutex::new(());

fn qname(mut q: &[u8]) -> Option<String> {
    let mut labels = Vec::new();
    loop {
        let (&len, rest) = q.split_first()?;
        if len == 0 {
            break;
        }
        let label = rest.get(..len as usize)?;
        labels.push(String::from_utf8_lossy(label).to_lowercase());
        q = &rest[len as usize..];
    }
    Some(labels.join("."))
}

/// A test CA and a server certificate it signed for `names` (and
/// 127.0.0.1), made with openssl.
pub struct Cert {
    /// The test CA (PEM): what clients trust.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cert {
    /// Generates the CA and the server pair in `dir` (readable by the agent).
    pub fn generate(dir: &Path, names: &[&str]) -> Cert {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca_args = vec!["req", "-x509"];
        ca_args.extend(ec);
        ca_args.extend([
            "-days",
            "1",
            "-subj",
            "/CN=airlock test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&ca_args, dir);
        let subj = format!("/CN={}", names[0]);
        let mut req_args = vec!["req"];
        req_args.extend(ec);
        req_args.extend(["-subj", &subj, "-keyout", "key.pem", "-out", "leaf.csr"]);
        openssl(&req_args, dir);
        let mut san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        san.push("IP:127.0.0.1".into());
        write_file(
            &dir.join("leaf.ext"),
            &format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
            0o644,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "leaf.ext",
                "-out",
                "cert.pem",
            ],
            dir,
        );
        for f in ["ca.pem", "cert.pem"] {
            super::set_mode(&dir.join(f), 0o644);
        }
        Cert {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// A Python fixture server from `tests/fixtures/` that prints `PORT <n>`.
pub struct PyServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl PyServer {
    /// Starts `tests/fixtures/SCRIPT ARGS...` and reads its port.
    pub fn start(script: &str, args: &[&std::ffi::OsStr]) -> PyServer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(script);
        let mut child = Command::new("python3")
            .arg(path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read PORT line");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{script} said {line:?}"));
        PyServer { port, child }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/fixtures/https_echo_server.py`: records what it received in
/// `record` (JSON lines, on the host).
pub fn https_echo(cert: &Cert, record: &Path) -> PyServer {
    PyServer::start(
        "https_echo_server.py",
        &[
            "--cert".as_ref(),
            cert.cert.as_os_str(),
            "--key".as_ref(),
            cert.key.as_os_str(),
            "--record".as_ref(),
            record.as_os_str(),
        ],
    )
}

/// `tests/fixtures/git_http_server.py` serving the bare repositories in
/// `root`, over TLS when `cert` is given.
pub fn git_server(root: &Path, cert: Option<&Cert>) -> PyServer {
    let mut args: Vec<&std::ffi::OsStr> = vec!["--root".as_ref(), root.as_os_str()];
    if let Some(c) = cert {
        args.extend([
            "--cert".as_ref(),
            c.cert.as_os_str(),
            "--key".as_ref(),
            c.key.as_os_str(),
        ]);
    }
    PyServer::start("git_http_server.py", &args)
}

/// A bare repository `root/NAME.git` with one commit of `file.txt`.
pub fn make_bare_repo(root: &Path, name: &str, content: &str) {
    let work = root.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).expect("mkdir work");
    std::fs::write(work.join("file.txt"), content).expect("write file");
    let git = |args: &[&str], dir: &Path| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"], &work);
    git(&["add", "file.txt"], &work);
    git(
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-q",
            "-m",
            "one",
        ],
        &work,
    );
    let bare = format!("{name}.git");
    git(
        &["clone", "-q", "--bare", ".", &format!("../{bare}")],
        &work,
    );
}

/// Parses `KEY: value` headers of an HTTP response head.
pub fn headers_of(head: &str) -> HashMap<String, String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect()
}
