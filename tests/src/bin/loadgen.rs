//! `loadgen`: a small HTTP/1.1 load generator and upstream server for the
//! proxy benchmark (`scripts/bench proxy`). Standard library only: blocking
//! sockets and one OS thread per connection.
//!
//! Subcommands:
//!
//! * `loadgen upstream --listen 127.0.0.1:PORT [--max-secs S]` — a keep-alive
//!   HTTP/1.1 origin server. `GET /small` answers 200 with a 100-byte body;
//!   `GET /bytes/N` answers 200 with N zero bytes, written in 1 MiB chunks.
//!   Both carry `Content-Length`. Absolute-form request targets
//!   (`GET http://H:P/small`) are accepted too. Once bound it prints
//!   `listening ADDR` (the real port when PORT is 0) and serves until killed
//!   or until `--max-secs` (default 3600) have passed. Bulk data through a
//!   CONNECT tunnel is simply `GET /bytes/N` sent over the tunnel.
//! * `loadgen get --url http://H:P/PATH [--proxy tcp:H:P | --proxy unix:PATH]
//!   [--concurrency N] [--duration SECS] [--max-requests M]` — N keep-alive
//!   connections, each sending GETs back to back (absolute-form with a
//!   `Host` header through a proxy, origin-form when direct) until the
//!   duration has passed or M requests (default 10 000 000) have been sent
//!   in total. When the peer closes a connection (`Connection: close`, or
//!   silently after a response, as tinyproxy does) the client reconnects
//!   and, in the silent case, resends the request once; neither is an
//!   error, and the latency then includes the reconnect. Non-200 responses,
//!   I/O errors and failed connects are errors. Prints
//!   `requests=R rps=X p50_us=A p99_us=B errors=E` on stdout (R counts
//!   successful requests; rps is R over the wall time) and `connections=C`
//!   (connections opened) on stderr.
//! * `loadgen tunnel --target H:P --bytes N [--proxy tcp:H:P | --proxy
//!   unix:PATH] [--timeout SECS]` — one connection (through the proxy with
//!   `CONNECT H:P HTTP/1.1`, which must answer 200, or direct), then
//!   `GET /bytes/N` and the whole body is read. Prints
//!   `bytes=N secs=S mb_per_s=X` (MB = 10^6 bytes), timed from sending the
//!   GET to the last body byte. N accepts the suffixes `K`, `M`, `G`
//!   (powers of 1024) and `KiB`, `MiB`, `GiB`.
//!
//! Exit status: 0 on success, 1 on a failed run (nothing could be measured,
//! or the tunnel transfer failed), 2 on a usage error.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Body of `GET /small`: exactly 100 bytes.
const SMALL_BODY: &[u8; 100] = b"airlock loadgen small response body, padded to exactly one hundred bytes for the proxy benchmark...\n";

/// Chunk size used when writing and reading bulk bodies.
const CHUNK: usize = 1 << 20;

/// Largest request or response head (request line / status line plus
/// headers) accepted, in bytes.
const MAX_HEAD: usize = 64 * 1024;

/// Socket read/write timeout: bounds how long any single blocking call may
/// hang on a stalled peer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Default cap on the total number of requests sent by `loadgen get`.
const DEFAULT_MAX_REQUESTS: u64 = 10_000_000;

/// Largest accepted `--concurrency`.
const MAX_CONCURRENCY: usize = 4096;

/// A usage or runtime error, printed as `loadgen: MESSAGE`.
#[derive(Debug)]
enum Error {
    /// Bad command line: exit status 2.
    Usage(String),
    /// The run itself failed: exit status 1.
    Run(String),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Run(e.to_string())
    }
}

/// Shorthand for a usage error.
fn usage<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error::Usage(msg.into()))
}

/// Where to connect: a TCP address or a Unix socket path.
#[derive(Clone, Debug)]
enum Endpoint {
    /// `tcp:HOST:PORT` (or plain `HOST:PORT`).
    Tcp(String),
    /// `unix:PATH`.
    Unix(String),
}

impl Endpoint {
    /// Parses `tcp:H:P`, `unix:PATH` or a bare `H:P`.
    fn parse(s: &str) -> Result<Self, Error> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return usage("--proxy unix: needs a path");
            }
            Ok(Endpoint::Unix(path.to_string()))
        } else {
            let addr = s.strip_prefix("tcp:").unwrap_or(s);
            if !addr.contains(':') {
                return usage(format!(
                    "bad endpoint {s:?}: expected tcp:HOST:PORT or unix:PATH"
                ));
            }
            Ok(Endpoint::Tcp(addr.to_string()))
        }
    }

    /// Opens a connection with read/write timeouts and, for TCP, Nagle off.
    fn connect(&self) -> io::Result<Conn> {
        match self {
            Endpoint::Tcp(addr) => {
                let sa = addr.to_socket_addrs()?.next().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address"))
                })?;
                let s = TcpStream::connect_timeout(&sa, IO_TIMEOUT)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Conn::Tcp(s))
            }
            Endpoint::Unix(path) => {
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Conn::Unix(s))
            }
        }
    }
}

/// A connected stream of either kind.
enum Conn {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix stream socket connection.
    Unix(UnixStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Simple `--flag VALUE` parser over the arguments after the subcommand.
struct Flags {
    /// `(name, value)` pairs in command-line order.
    pairs: Vec<(String, String)>,
}

impl Flags {
    /// Splits `--name VALUE` / `--name=VALUE` pairs; rejects anything else
    /// and any flag not in `known`.
    fn parse(args: &[String], known: &[&str]) -> Result<Self, Error> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(body) = arg.strip_prefix("--") else {
                return usage(format!("unexpected argument {arg:?}"));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => match it.next() {
                    Some(v) => (body.to_string(), v.clone()),
                    None => return usage(format!("--{body} needs a value")),
                },
            };
            if !known.contains(&name.as_str()) {
                return usage(format!("unknown flag --{name}"));
            }
            pairs.push((name, value));
        }
        Ok(Flags { pairs })
    }

    /// The last value given for `name`, if any.
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value for `name`, or a usage error when it is missing.
    fn required(&self, name: &str) -> Result<&str, Error> {
        match self.get(name) {
            Some(v) => Ok(v),
            None => usage(format!("--{name} is required")),
        }
    }

    /// The value for `name` parsed as a number, or `default`.
    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, Error> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .or_else(|_| usage(format!("--{name}: not a number: {v:?}"))),
        }
    }
}

/// Parses a byte count with an optional binary suffix (`K`, `M`, `G`,
/// `KiB`, `MiB`, `GiB`).
fn parse_size(s: &str) -> Result<u64, Error> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    let n: u64 = num
        .parse()
        .or_else(|_| usage(format!("bad byte count {s:?}")))?;
    let mult: u64 = match suffix {
        "" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return usage(format!("bad byte-count suffix in {s:?}")),
    };
    n.checked_mul(mult)
        .map_or_else(|| usage(format!("byte count {s:?} too large")), Ok)
}

/// A parsed `http://HOST:PORT/PATH` URL.
struct Url {
    /// `HOST:PORT` as written (port defaults to 80).
    authority: String,
    /// The path, starting with `/`.
    path: String,
}

impl Url {
    /// Parses a plain `http://` URL; no userinfo, query is kept in the path.
    fn parse(s: &str) -> Result<Self, Error> {
        let Some(rest) = s.strip_prefix("http://") else {
            return usage(format!("--url must start with http://: {s:?}"));
        };
        let (auth, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if auth.is_empty() || auth.contains('@') {
            return usage(format!("bad authority in --url {s:?}"));
        }
        let authority = if auth.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']')) {
            auth.to_string()
        } else {
            format!("{auth}:80")
        };
        Ok(Url {
            authority,
            path: path.to_string(),
        })
    }
}

/// A parsed message head: the first line's pieces plus the headers that
/// matter here.
struct Head {
    /// First line split on spaces (method/target/version or
    /// version/status/reason).
    first: Vec<String>,
    /// `Content-Length`, when present and valid.
    content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` was present.
    chunked: bool,
    /// The message asks to close the connection afterwards
    /// (`Connection: close`, or HTTP/1.0 without `keep-alive`).
    close: bool,
}

/// Reads one message head (up to the blank line). `Ok(None)` on a clean
/// end of stream before any byte of the head.
fn read_head<R: BufRead>(r: &mut R, line: &mut String) -> Result<Option<Head>, Error> {
    let mut total = 0usize;
    let mut first: Option<Vec<String>> = None;
    let mut content_length = None;
    let mut chunked = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    loop {
        line.clear();
        let n = r.read_line(line)?;
        if n == 0 {
            if first.is_none() && total == 0 {
                return Ok(None);
            }
            return Err(Error::Run("connection closed inside a message head".into()));
        }
        total += n;
        if total > MAX_HEAD {
            return Err(Error::Run("message head too large".into()));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if first.is_none() {
            if l.is_empty() {
                continue; // tolerate a stray CRLF between messages
            }
            first = Some(l.split(' ').map(str::to_string).collect());
            continue;
        }
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            return Err(Error::Run(format!("malformed header line {l:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse()
                    .map_err(|_| Error::Run(format!("bad Content-Length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection")
            || name.eq_ignore_ascii_case("proxy-connection")
        {
            let v = value.to_ascii_lowercase();
            conn_close |= v.contains("close");
            conn_keep_alive |= v.contains("keep-alive");
        }
    }
    let first = first.unwrap_or_default();
    let http10 = first.iter().any(|p| p.eq_ignore_ascii_case("HTTP/1.0"));
    Ok(Some(Head {
        first,
        content_length,
        chunked,
        close: conn_close || (http10 && !conn_keep_alive),
    }))
}

/// Reads and discards exactly `n` bytes; returns how many were read.
fn drain<R: Read>(r: &mut R, mut n: u64, buf: &mut [u8]) -> Result<u64, Error> {
    let total = n;
    while n > 0 {
        let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        let got = r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(Error::Run(format!(
                "connection closed after {} of {} body bytes",
                total - n,
                total
            )));
        }
        n -= got as u64;
    }
    Ok(total)
}

/// Reads and discards a chunked body (including trailers); returns the
/// number of payload bytes.
fn drain_chunked<R: BufRead>(r: &mut R, line: &mut String, buf: &mut [u8]) -> Result<u64, Error> {
    let mut total = 0u64;
    loop {
        line.clear();
        if r.read_line(line)? == 0 {
            return Err(Error::Run("connection closed inside a chunked body".into()));
        }
        let size_str = line.trim_end().split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_str, 16)
            .map_err(|_| Error::Run(format!("bad chunk size {size_str:?}")))?;
        if size == 0 {
            // Trailers until the blank line.
            for _ in 0..1024 {
                line.clear();
                if r.read_line(line)? == 0 || line.trim_end().is_empty() {
                    return Ok(total);
                }
            }
            return Err(Error::Run("too many trailer lines".into()));
        }
        total += drain(r, size, buf)?;
        line.clear();
        r.read_line(line)?; // CRLF after the chunk
    }
}

/// Reads a response body framed by `head`; returns its length. A body
/// delimited by end of stream (no length, not chunked) is read to EOF.
fn read_body<R: BufRead>(
    r: &mut R,
    head: &Head,
    line: &mut String,
    buf: &mut [u8],
) -> Result<u64, Error> {
    let status = head.first.get(1).map(String::as_str).unwrap_or("");
    if status == "204" || status == "304" || status.starts_with('1') {
        return Ok(0);
    }
    if head.chunked {
        return drain_chunked(r, line, buf);
    }
    if let Some(n) = head.content_length {
        return drain(r, n, buf);
    }
    let mut total = 0u64;
    loop {
        let got = r.read(buf)?;
        if got == 0 {
            return Ok(total);
        }
        total += got as u64;
    }
}

// ---------------------------------------------------------------- upstream

/// `loadgen upstream`: binds, prints the address, serves forever (bounded by
/// `--max-secs`).
fn cmd_upstream(args: &[String]) -> Result<(), Error> {
    let flags = Flags::parse(args, &["listen", "max-secs"])?;
    let listen = flags.required("listen")?;
    let max_secs: u64 = flags.number("max-secs", 3600)?;
    let listener =
        TcpListener::bind(listen).map_err(|e| Error::Run(format!("bind {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "listening {addr}")?;
        out.flush()?;
    }
    thread::spawn(move || {
        thread::sleep(Duration::from_secs(max_secs));
        eprintln!("loadgen upstream: --max-secs {max_secs} reached, exiting");
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                thread::spawn(move || {
                    // Errors on one connection (peer reset, timeout) only
                    // end that connection.
                    let _ = serve_conn(s);
                });
            }
            Err(e) => {
                eprintln!("loadgen upstream: accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Ok(())
}

/// Serves keep-alive requests on one connection until the peer closes it
/// or asks to.
fn serve_conn(stream: TcpStream) -> Result<(), Error> {
    stream.set_nodelay(true)?;
    // Idle keep-alive connections are dropped after a minute.
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let mut line = String::new();
    let mut scratch = vec![0u8; 64 * 1024];
    let zeros = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(512);
    loop {
        let Some(head) = read_head(&mut reader, &mut line)? else {
            return Ok(());
        };
        // Discard any request body.
        if let Some(n) = head.content_length {
            drain(&mut reader, n, &mut scratch)?;
        } else if head.chunked {
            drain_chunked(&mut reader, &mut line, &mut scratch)?;
        }
        let method = head.first.first().map(String::as_str).unwrap_or("");
        let target = head.first.get(1).map(String::as_str).unwrap_or("");
        let path = origin_path(target);
        out.clear();
        let conn_hdr = if head.close {
            "Connection: close\r\n"
        } else {
            ""
        };
        if method != "GET" && method != "HEAD" {
            write!(
                out,
                "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nAllow: GET, HEAD\r\n{conn_hdr}\r\n"
            )?;
            writer.write_all(&out)?;
        } else if path == "/small" {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{conn_hdr}\r\n",
                SMALL_BODY.len()
            )?;
            if method == "GET" {
                out.extend_from_slice(SMALL_BODY);
            }
            writer.write_all(&out)?;
        } else if let Some(n) = path
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse::<u64>().ok())
        {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n{conn_hdr}\r\n"
            )?;
            writer.write_all(&out)?;
            if method == "GET" {
                let mut left = n;
                while left > 0 {
                    let k = zeros.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    writer.write_all(&zeros[..k])?;
                    left -= k as u64;
                }
            }
        } else {
            write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n{conn_hdr}\r\n"
            )?;
            writer.write_all(&out)?;
        }
        if head.close {
            let _ = writer.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}

/// The path of a request target: origin-form as is, absolute-form
/// (`http://H:P/x`) reduced to `/x`.
fn origin_path(target: &str) -> &str {
    match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    }
}

// --------------------------------------------------------------------- get

/// Per-worker results of `loadgen get`.
#[derive(Default)]
struct WorkerStats {
    /// Latency of every successful request, in microseconds.
    latencies_us: Vec<u32>,
    /// Failed requests (I/O error, bad framing, non-200 status).
    errors: u64,
    /// Connections opened (1 per worker with working keep-alive).
    connections: u64,
}

/// `loadgen get`: runs the closed-loop keep-alive load and prints the
/// summary line.
fn cmd_get(args: &[String]) -> Result<(), Error> {
    let flags = Flags::parse(
        args,
        &["url", "proxy", "concurrency", "duration", "max-requests"],
    )?;
    let url = Url::parse(flags.required("url")?)?;
    let proxy = flags.get("proxy").map(Endpoint::parse).transpose()?;
    let concurrency: usize = flags.number("concurrency", 1)?;
    let duration: f64 = flags.number("duration", 5.0)?;
    let max_requests: u64 = flags.number("max-requests", DEFAULT_MAX_REQUESTS)?;
    if concurrency == 0 || concurrency > MAX_CONCURRENCY {
        return usage(format!("--concurrency must be 1..={MAX_CONCURRENCY}"));
    }
    if !(duration > 0.0 && duration <= 86_400.0) {
        return usage("--duration must be in (0, 86400] seconds");
    }
    let (endpoint, request) = match &proxy {
        Some(p) => (
            p.clone(),
            format!(
                "GET http://{a}{p} HTTP/1.1\r\nHost: {a}\r\nUser-Agent: airlock-loadgen\r\n\r\n",
                a = url.authority,
                p = url.path
            ),
        ),
        None => (
            Endpoint::Tcp(url.authority.clone()),
            format!(
                "GET {p} HTTP/1.1\r\nHost: {a}\r\nUser-Agent: airlock-loadgen\r\n\r\n",
                a = url.authority,
                p = url.path
            ),
        ),
    };
    let request: Arc<[u8]> = Arc::from(request.into_bytes());
    let issued = Arc::new(AtomicU64::new(0));
    let printed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(duration);
    let handles: Vec<_> = (0..concurrency)
        .map(|_| {
            let endpoint = endpoint.clone();
            let request = Arc::clone(&request);
            let issued = Arc::clone(&issued);
            let printed = Arc::clone(&printed);
            thread::spawn(move || {
                get_worker(
                    &endpoint,
                    &request,
                    deadline,
                    &issued,
                    max_requests,
                    &printed,
                )
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0u64;
    let mut connections = 0u64;
    for h in handles {
        match h.join() {
            Ok(s) => {
                all.extend_from_slice(&s.latencies_us);
                errors += s.errors;
                connections += s.connections;
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let requests = all.len() as u64;
    let pct = |p: usize| -> u32 {
        if all.is_empty() {
            0
        } else {
            all[(all.len() * p / 100).min(all.len() - 1)]
        }
    };
    let rps = if elapsed > 0.0 {
        requests as f64 / elapsed
    } else {
        0.0
    };
    println!(
        "requests={requests} rps={rps:.0} p50_us={} p99_us={} errors={errors}",
        pct(50),
        pct(99)
    );
    eprintln!("connections={connections}");
    if requests == 0 {
        return Err(Error::Run("no request succeeded".into()));
    }
    Ok(())
}

/// How many error messages `loadgen get` prints in total (the rest are
/// only counted).
const MAX_PRINTED_ERRORS: u64 = 5;

/// Prints `msg` unless [`MAX_PRINTED_ERRORS`] messages were already printed
/// by any worker.
fn report_error(printed: &AtomicU64, msg: &str) {
    if printed.fetch_add(1, Ordering::Relaxed) < MAX_PRINTED_ERRORS {
        eprintln!("loadgen get: {msg}");
    }
}

/// Outcome of [`one_request`] when no usable response arrived.
enum Failure {
    /// The peer closed (or reset) the connection before sending any byte of
    /// the response. On a connection that already carried a response this
    /// is the ordinary keep-alive race (some proxies close after every
    /// response without saying `Connection: close`): the request is retried
    /// once on a fresh connection, as HTTP clients do for idempotent
    /// requests.
    ClosedBeforeResponse,
    /// Anything else: counted as an error.
    Other(Error),
}

/// One closed-loop client: send, read the full response, repeat; reconnect
/// when the connection ends.
fn get_worker(
    endpoint: &Endpoint,
    request: &[u8],
    deadline: Instant,
    issued: &AtomicU64,
    max_requests: u64,
    printed: &AtomicU64,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut line = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut conn: Option<BufReader<Conn>> = None;
    // Responses already read on the current connection.
    let mut served = 0u64;
    'requests: while Instant::now() < deadline {
        if issued.fetch_add(1, Ordering::Relaxed) >= max_requests {
            break;
        }
        // Latency includes any reconnect the request needed.
        let t0 = Instant::now();
        // At most two attempts: the second only after a stale keep-alive
        // connection.
        for _attempt in 0..2 {
            let reader = match conn.as_mut() {
                Some(r) => r,
                None => match endpoint.connect() {
                    Ok(c) => {
                        stats.connections += 1;
                        served = 0;
                        conn.insert(BufReader::with_capacity(16 * 1024, c))
                    }
                    Err(e) => {
                        stats.errors += 1;
                        report_error(printed, &format!("connect: {e}"));
                        thread::sleep(Duration::from_millis(10));
                        continue 'requests;
                    }
                },
            };
            match one_request(reader, request, &mut line, &mut buf) {
                Ok((refused, keep)) => {
                    served += 1;
                    if let Some(status) = refused {
                        stats.errors += 1;
                        report_error(printed, &format!("response {status}"));
                    } else {
                        let us = t0.elapsed().as_micros();
                        stats
                            .latencies_us
                            .push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    if !keep {
                        conn = None;
                    }
                    continue 'requests;
                }
                Err(Failure::ClosedBeforeResponse) if served > 0 => {
                    conn = None;
                }
                Err(Failure::ClosedBeforeResponse) => {
                    stats.errors += 1;
                    report_error(printed, "connection closed before the response");
                    conn = None;
                    continue 'requests;
                }
                Err(Failure::Other(e)) => {
                    stats.errors += 1;
                    report_error(printed, &describe(&e));
                    conn = None;
                    continue 'requests;
                }
            }
        }
        // Two fresh-connection closes in a row for one request.
        stats.errors += 1;
        report_error(
            printed,
            "connection closed before the response (after retry)",
        );
    }
    stats
}

/// Whether an I/O error means the peer is gone (closed or reset).
fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// Sends one request and reads its response. Returns the status line when
/// the status is not 200 (`None` for 200), and whether the connection may
/// be reused.
fn one_request(
    reader: &mut BufReader<Conn>,
    request: &[u8],
    line: &mut String,
    buf: &mut [u8],
) -> Result<(Option<String>, bool), Failure> {
    if let Err(e) = reader.get_mut().write_all(request) {
        return Err(if is_peer_gone(&e) {
            Failure::ClosedBeforeResponse
        } else {
            Failure::Other(e.into())
        });
    }
    // Peek for the first response byte so that a close before it can be
    // told apart from a truncated response.
    match reader.fill_buf() {
        Ok([]) => return Err(Failure::ClosedBeforeResponse),
        Ok(_) => {}
        Err(e) if is_peer_gone(&e) => return Err(Failure::ClosedBeforeResponse),
        Err(e) => return Err(Failure::Other(e.into())),
    }
    let head = read_head(reader, line)
        .map_err(Failure::Other)?
        .ok_or(Failure::ClosedBeforeResponse)?;
    let status = head.first.get(1).map(String::as_str).unwrap_or("");
    let framed = head.chunked || head.content_length.is_some();
    let refused = (status != "200").then(|| head.first.join(" "));
    read_body(reader, &head, line, buf).map_err(Failure::Other)?;
    Ok((refused, framed && !head.close))
}

// ------------------------------------------------------------------ tunnel

/// `loadgen tunnel`: one bulk download, optionally through CONNECT.
fn cmd_tunnel(args: &[String]) -> Result<(), Error> {
    let flags = Flags::parse(args, &["target", "bytes", "proxy", "timeout"])?;
    let target = flags.required("target")?.to_string();
    if !target.contains(':') {
        return usage("--target must be HOST:PORT");
    }
    let bytes = parse_size(flags.required("bytes")?)?;
    let proxy = flags.get("proxy").map(Endpoint::parse).transpose()?;
    let timeout: f64 = flags.number("timeout", 300.0)?;
    if !(timeout > 0.0 && timeout <= 86_400.0) {
        return usage("--timeout must be in (0, 86400] seconds");
    }
    // Hard bound on the whole transfer, whatever the peer does.
    thread::spawn(move || {
        thread::sleep(Duration::from_secs_f64(timeout));
        eprintln!("loadgen tunnel: --timeout {timeout}s reached");
        std::process::exit(1);
    });
    let endpoint = proxy.clone().unwrap_or(Endpoint::Tcp(target.clone()));
    let mut reader = BufReader::with_capacity(CHUNK, endpoint.connect()?);
    let mut line = String::new();
    if proxy.is_some() {
        write!(
            reader.get_mut(),
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
        )?;
        let head = read_head(&mut reader, &mut line)?
            .ok_or_else(|| Error::Run("proxy closed the connection after CONNECT".into()))?;
        if head.first.get(1).map(String::as_str) != Some("200") {
            return Err(Error::Run(format!(
                "CONNECT refused: {}",
                head.first.join(" ")
            )));
        }
    }
    let start = Instant::now();
    write!(
        reader.get_mut(),
        "GET /bytes/{bytes} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )?;
    let head = read_head(&mut reader, &mut line)?
        .ok_or_else(|| Error::Run("connection closed before the response".into()))?;
    if head.first.get(1).map(String::as_str) != Some("200") {
        return Err(Error::Run(format!("status {}", head.first.join(" "))));
    }
    let mut buf = vec![0u8; CHUNK];
    let got = read_body(&mut reader, &head, &mut line, &mut buf)?;
    let secs = start.elapsed().as_secs_f64();
    if got != bytes {
        return Err(Error::Run(format!("got {got} of {bytes} bytes")));
    }
    println!(
        "bytes={bytes} secs={secs:.3} mb_per_s={:.1}",
        bytes as f64 / 1e6 / secs
    );
    Ok(())
}

// -------------------------------------------------------------------- main

/// Renders an error for stderr.
fn describe(e: &Error) -> String {
    match e {
        Error::Usage(m) | Error::Run(m) => m.clone(),
    }
}

/// Command-line help.
const USAGE: &str = "usage:
  loadgen upstream --listen 127.0.0.1:PORT [--max-secs S]
  loadgen get --url http://H:P/PATH [--proxy tcp:H:P|unix:PATH] [--concurrency N] [--duration SECS] [--max-requests M]
  loadgen tunnel --target H:P --bytes N[K|M|G] [--proxy tcp:H:P|unix:PATH] [--timeout SECS]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("upstream") => cmd_upstream(&args[1..]),
        Some("get") => cmd_get(&args[1..]),
        Some("tunnel") => cmd_tunnel(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => usage("missing or unknown subcommand"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Usage(m)) => {
            eprintln!("loadgen: {m}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Error::Run(m)) => {
            eprintln!("loadgen: {m}");
            ExitCode::from(1)
        }
    }
}
