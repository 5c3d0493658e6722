//! Benchmark of TLS interception, in one process on loopback: a TLS
//! upstream, the proxy on a Unix socket (with a credential bound to
//! `localhost`, so CONNECTs to it are intercepted), and clients that go
//! direct, through an opaque tunnel (`127.0.0.1`, no credential) or through
//! interception. Prints a markdown table: keep-alive requests/s with p50/p99
//! latency, and new connections per second (CONNECT + TLS + one request)
//! with the leaf cache warm and cold. Then the cost of scrubbing secrets
//! from responses: keep-alive GETs of 1 KiB, 64 KiB and 1 MiB bodies
//! through interception with a credential (headers and body scrubbed) and
//! through a second proxy that intercepts the same host for a path rule
//! but holds no credential (nothing to scrub), p50/p99 side by side.
//!
//! `cargo run --release -p egress-proxy --example intercept_bench -- [SECONDS] [CONCURRENCY]`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use egress_proxy::ca::SessionCa;
use egress_proxy::config::ProxyPolicy;
use egress_proxy::proxy::Interception;
use egress_proxy::secrets::Credentials;
use egress_proxy::{AuditLog, Limits, Proxy};
use http_body_util::{BodyExt, Empty, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

type Tls = tokio_rustls::client::TlsStream<Box<dyn Stream>>;
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    Tunnel,
    Intercept,
    InterceptNoCredential,
}

struct Env {
    upstream_port: u16,
    socket: std::path::PathBuf,
    socket_plain: std::path::PathBuf,
    upstream_roots: Arc<rustls::ClientConfig>,
    session_roots: Arc<rustls::ClientConfig>,
    ca: Arc<SessionCa>,
}

fn client_config(pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
        let _ = roots.add(c);
    }
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

async fn upstream(cert_pem: String, key_pem: String) -> u16 {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .flatten()
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
                    // `/body/N`: N bytes of base64-alphabet text, the
                    // scrubber's worst case (every byte could start an
                    // encoded secret).
                    let n: usize = req
                        .uri()
                        .path()
                        .strip_prefix("/body/")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let body = if n == 0 {
                        Bytes::from_static(b"ok\n")
                    } else {
                        body_of(n)
                    };
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

/// `n` bytes of base64-alphabet text (cached per size).
fn body_of(n: usize) -> Bytes {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<HashMap<usize, Bytes>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut c = cache.lock().expect("cache");
    c.entry(n)
        .or_insert_with(|| {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut x = 0x2545_f491_4f6c_dd1du64;
            Bytes::from(
                (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        A[(x % 64) as usize]
                    })
                    .collect::<Vec<u8>>(),
            )
        })
        .clone()
}

async fn connect(env: &Env, path: Path) -> Tls {
    let (stream, config): (Box<dyn Stream>, _) = match path {
        Path::Direct => {
            let s = TcpStream::connect(("127.0.0.1", env.upstream_port))
                .await
                .expect("tcp");
            let _ = s.set_nodelay(true);
            (Box::new(s), env.upstream_roots.clone())
        }
        Path::Tunnel | Path::Intercept | Path::InterceptNoCredential => {
            let socket = if path == Path::InterceptNoCredential {
                &env.socket_plain
            } else {
                &env.socket
            };
            let mut s = UnixStream::connect(socket).await.expect("proxy");
            let target = if path == Path::Tunnel {
                "127.0.0.1"
            } else {
                "localhost"
            };
            s.write_all(
                format!("CONNECT {target}:{} HTTP/1.1\r\n\r\n", env.upstream_port).as_bytes(),
            )
            .await
            .expect("CONNECT");
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut b).await.expect("CONNECT response");
                head.push(b[0]);
            }
            assert!(
                head.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&head)
            );
            let config = if path == Path::Tunnel {
                env.upstream_roots.clone()
            } else {
                env.session_roots.clone()
            };
            (Box::new(s), config)
        }
    };
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(config)
        .connect(name, stream)
        .await
        .expect("TLS")
}

async fn one_request(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    target: &str,
    host: &str,
) -> Duration {
    let t = Instant::now();
    // The Host header names the port: inside an intercepted tunnel it must
    // agree with the CONNECT target, or the request is refused.
    let req = Request::get(target)
        .header("host", host)
        .body(Empty::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert!(
        resp.status().is_success(),
        "{target}: {} {:?}",
        resp.status(),
        resp.headers()
    );
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    if let Some(n) = target.strip_prefix("/body/") {
        assert_eq!(n.parse::<usize>().ok(), Some(body.len()), "{target}");
    }
    t.elapsed()
}

async fn keepalive(
    env: Arc<Env>,
    path: Path,
    secs: u64,
    conc: usize,
    target: &'static str,
) -> (f64, u128, u128) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            let tls = connect(&env, path).await;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let host = format!("localhost:{}", env.upstream_port);
            let mut lat = Vec::new();
            while Instant::now() < deadline && lat.len() < 5_000_000 {
                lat.push(one_request(&mut sender, target, &host).await);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_micros();
    (all.len() as f64 / secs as f64, pct(0.50), pct(0.99))
}

async fn new_connections(env: Arc<Env>, path: Path, secs: u64, cold: bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < deadline && n < 1_000_000 {
        if cold {
            env.ca.clear_cache();
        }
        let tls = connect(&env, path).await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        one_request(
            &mut sender,
            "/small",
            &format!("localhost:{}", env.upstream_port),
        )
        .await;
        n += 1;
    }
    n as f64 / secs as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let conc: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);

    // The upstream's own CA and certificate for "localhost".
    let up_key = rcgen::KeyPair::generate().expect("key");
    let up_cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&up_key)
        .expect("cert");
    let up_pem = up_cert.pem();
    let port = upstream(up_pem.clone(), up_key.serialize_pem()).await;

    let dir = std::env::temp_dir().join(format!("airlock-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let upstream_ca = dir.join("upstream.pem");
    std::fs::write(&upstream_ca, &up_pem).expect("write");
    let policy = ProxyPolicy::from_toml(&format!(
        "[network]\nallow = [\"localhost\"]\nallow_cidr = [\"127.0.0.0/8\", \"::1/128\"]\nports = [{port}]\n\
         [[credentials]]\nname = \"bench\"\nsource = {{ env = \"BENCH_TOKEN\" }}\nhosts = [\"localhost\"]\n\
         inject = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\n"
    ))
    .expect("policy");
    // A realistic length (API keys run 32 to 100+ characters); the scrubber
    // strides by the secret's length, so shorter secrets cost more.
    let env_lookup = |_: &str| Some("sk-bench-7f3a9c2e41d85b06e9a1c4f2".to_string());
    let credentials =
        Credentials::load_all(&policy.credentials, &env_lookup, &HashMap::new()).expect("creds");
    let ca = Arc::new(SessionCa::generate("bench").expect("ca"));
    let interception = Interception {
        credentials,
        ca: ca.clone(),
        upstream_tls: egress_proxy::tls::upstream_config(&[upstream_ca]).expect("roots"),
    };
    let socket = dir.join("egress.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    let limits = Limits {
        max_connections: 4096,
        ..Limits::default()
    };
    let proxy = Proxy::with_interception(
        policy.network,
        limits,
        Arc::new(AuditLog::discard("bench")),
        Some(interception),
    );
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(proxy.serve(listener, Vec::new(), rx.clone(), Duration::from_millis(100)));

    // The same host intercepted for a path rule, with no credential at all:
    // the interception path without scrubbing, for comparison.
    let plain_policy = ProxyPolicy::from_toml(&format!(
        "[network]\nallow = [\"localhost\"]\nallow_cidr = [\"127.0.0.0/8\", \"::1/128\"]\nports = [{port}]\n\
         [[network.rules]]\nhost = \"localhost\"\nmethods = [\"GET\"]\npaths = [\"/*\"]\n"
    ))
    .expect("policy");
    let socket_plain = dir.join("egress-plain.sock");
    let plain = Proxy::with_interception(
        plain_policy.network,
        Limits {
            max_connections: 4096,
            ..Limits::default()
        },
        Arc::new(AuditLog::discard("bench")),
        Some(Interception {
            credentials: Credentials::default(),
            ca: ca.clone(),
            upstream_tls: egress_proxy::tls::upstream_config(&[dir.join("upstream.pem")])
                .expect("roots"),
        }),
    );
    let plain_listener = tokio::net::UnixListener::bind(&socket_plain).expect("bind");
    tokio::spawn(plain.serve(plain_listener, Vec::new(), rx, Duration::from_millis(100)));

    let env = Arc::new(Env {
        upstream_port: port,
        socket,
        socket_plain,
        upstream_roots: client_config(&up_pem),
        session_roots: client_config(ca.cert_pem()),
        ca,
    });
    println!("| path | keep-alive req/s (c={conc}) | p50 / p99 | new conns/s (warm leaf) | new conns/s (cold leaf) |");
    println!("|---|---|---|---|---|");
    for (label, path) in [
        ("direct TLS", Path::Direct),
        ("opaque CONNECT tunnel", Path::Tunnel),
        ("intercepted + injected", Path::Intercept),
    ] {
        let (rps, p50, p99) = keepalive(env.clone(), path, secs, conc, "/small").await;
        let warm = new_connections(env.clone(), path, secs, false).await;
        let cold = if path == Path::Intercept {
            format!(
                "{:.0}",
                new_connections(env.clone(), path, secs, true).await
            )
        } else {
            "—".to_string()
        };
        println!("| {label} | {rps:.0} | {p50} / {p99} µs | {warm:.0} | {cold} |");
    }
    println!();
    println!("| body | intercepted, nothing to scrub: req/s, p50 / p99 | intercepted + scrubbed: req/s, p50 / p99 | p99 added |");
    println!("|---|---|---|---|");
    for (label, target) in [
        ("1 KiB", "/body/1024"),
        ("64 KiB", "/body/65536"),
        ("1 MiB", "/body/1048576"),
    ] {
        let (r0, a50, a99) =
            keepalive(env.clone(), Path::InterceptNoCredential, secs, conc, target).await;
        let (r1, b50, b99) = keepalive(env.clone(), Path::Intercept, secs, conc, target).await;
        println!(
            "| {label} | {r0:.0}, {a50} / {a99} µs | {r1:.0}, {b50} / {b99} µs | {} µs |",
            b99 as i128 - a99 as i128
        );
    }
    // The scrubber alone, out of the network's noise: 1 MiB of the same
    // text, in 16 KiB chunks, 200 times.
    let matcher = Arc::new(egress_proxy::scrub::Matcher::new(
        egress_proxy::scrub::encodings(b"sk-bench-7f3a9c2e41d85b06e9a1c4f2"),
    ));
    let short = Arc::new(egress_proxy::scrub::Matcher::new(
        egress_proxy::scrub::encodings(b"bench-secret"),
    ));
    let body = body_of(1 << 20);
    println!();
    for (label, m) in [
        ("32-character secret", matcher),
        ("12-character secret", short),
    ] {
        let mut times: Vec<Duration> = (0..200)
            .map(|_| {
                let t = Instant::now();
                let mut s = egress_proxy::scrub::Scrubber::new(m.clone());
                let mut n = 0;
                for c in body.chunks(16 << 10) {
                    n += s.push(c).len();
                }
                n += s.finish().len();
                assert_eq!(n, body.len());
                t.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "scrubbing 1 MiB alone ({label}): p50 {} µs, p99 {} µs",
            times[100].as_micros(),
            times[198].as_micros()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
