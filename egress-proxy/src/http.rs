//! HTTP/1.1 on the proxy socket: absolute-form forward proxying of plain
//! `http://` requests (each one re-checked, even on a kept-alive
//! connection), and `CONNECT host:port` tunnels. Hop-by-hop and `Proxy-*`
//! headers are stripped, the Host header must agree with the target,
//! redirects are passed back rather than followed, and the only upgrade
//! allowed is WebSocket.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, UPGRADE};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::audit::Event;
use crate::client::Client;
use crate::decide::{
    decide_overrides, decide_request, decide_target, in_report_mode, method_overrides, Carriage,
    Decision,
};
use crate::gate::{self, Refusal};
use crate::inspect::{find_leak, find_misplaced, head_bytes, read_ahead};
use crate::intercept;
use crate::meter::Metered;
use crate::name::{parse_host, Host};
use crate::proxy::ConnCtx;
use crate::splice;
use crate::tunnel;

/// The body type every response and upstream request uses.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The header that carries a denial's reason.
pub const DENY_HEADER: &str = "x-airlock-deny";
/// The header that carries why an allowed destination failed.
pub const ERROR_HEADER: &str = "x-airlock-error";

/// The upstream connection kept for the next request of the same client
/// connection to the same destination.
struct Cached {
    host: Host,
    port: u16,
    ip: std::net::IpAddr,
    sender: SendRequest<Body>,
}

struct ConnState {
    ctx: Arc<ConnCtx>,
    cached: Mutex<Option<Cached>>,
}

/// Serves HTTP/1.1 on one client connection until it closes.
pub async fn serve<S>(stream: S, ctx: Arc<ConnCtx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = ctx.proxy.limits.clone();
    let state = Arc::new(ConnState {
        ctx: ctx.clone(),
        cached: Mutex::new(None),
    });
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(state, req).await) }
    });
    let conn = server(&limits)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut shutdown = ctx.shutdown.clone();
    let serve = async {
        let e = conn.await.err()?;
        record_rejected_head(&ctx, &e, "http");
        Some(e.to_string())
    };
    tunnel::bounded(serve, &ctx.meter, &limits, &mut shutdown).await;
}

/// A request head the HTTP parser refused (a bad header line, conflicting
/// `Content-Length`, an oversized head: hyper answers 400 or 431 itself)
/// still leaves an audit line, so every attempt is on record. (A header
/// timeout is not logged: hyper's also fires on an idle kept-alive
/// connection, which is no attempt.)
pub fn record_rejected_head(ctx: &ConnCtx, e: &hyper::Error, protocol: &'static str) {
    let (status, reason) = if e.is_parse_too_large() {
        (431, "request-head-too-large")
    } else if e.is_parse() || e.is_parse_status() {
        (400, "bad-request")
    } else if e.is_incomplete_message() {
        // Closed halfway through a request head or body: nothing answered,
        // but it was an attempt.
        (400, "incomplete-request")
    } else {
        return;
    };
    let mut event = ctx.event("http_request", protocol);
    event.status = Some(status);
    event.error = Some(e.to_string());
    event.decision = Some(Decision {
        allow: false,
        rule: "request-syntax".into(),
        reason,
    });
    ctx.finish(event);
}

/// The HTTP/1.1 server side with our limits on request heads (the plain
/// proxy port and intercepted tunnels alike).
pub fn server(limits: &crate::limits::Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        // A client may shut down its write side once its request is sent
        // and wait for the answer (RFC 9112 section 9.6 allows it); without
        // this, hyper drops the connection on that EOF and the client gets
        // nothing.
        .half_close(true)
        .keep_alive(true);
    b
}

async fn handle(state: Arc<ConnState>, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        connect(state, req).await
    } else {
        forward(state, req).await
    }
}

/// A plain-text response with extra headers.
pub fn text(status: u16, headers: &[(&str, &str)], body: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body + "\n"))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("text/plain"));
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    resp
}

/// The response for a refusal: 403 with `X-Airlock-Deny`, or 502/504 with
/// `X-Airlock-Error`.
pub fn refusal_response(r: &Refusal, target: &str) -> Response<Body> {
    let header = match r {
        Refusal::Policy(_) => DENY_HEADER,
        Refusal::Unreachable { .. } => ERROR_HEADER,
    };
    text(r.status(), &[(header, r.reason())], r.message(target))
}

/// Answers with `r` and records the event (with its status and how long
/// it took).
pub fn refuse(
    ctx: &ConnCtx,
    mut event: Event,
    started: Instant,
    r: &Refusal,
    target: &str,
) -> Response<Body> {
    event.status = Some(r.status());
    event.duration = started.elapsed();
    ctx.finish(event);
    refusal_response(r, target)
}

/// Denies without touching the network; logs it.
fn deny(ctx: &ConnCtx, event: Event, rule: &str, reason: &'static str) -> Response<Body> {
    deny_with(ctx, event, rule, reason, 403)
}

/// Denies with `status` (400 for malformed requests, 403 for policy);
/// logs it.
fn deny_with(
    ctx: &ConnCtx,
    mut event: Event,
    rule: &str,
    reason: &'static str,
    status: u16,
) -> Response<Body> {
    let d = Decision {
        allow: false,
        rule: rule.to_string(),
        reason,
    };
    let target = format!("{}:{}", event.host, event.port);
    let r = Refusal::Policy(d.clone());
    event.decision = Some(d);
    event.status = Some(status);
    ctx.finish(event);
    let mut resp = refusal_response(&r, &target);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    resp
}

/// Asks hyper to close the connection after `resp`: a client that sent a
/// malformed request target is not trusted to frame the next one.
fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The port an authority names, or `default` when it names none. The text
/// after the host must be `:` and a decimal port 1-65535, or nothing:
/// `host:83616` and `host:443.evil.test` are errors, never read as the
/// default port.
pub fn authority_port(a: &hyper::http::uri::Authority, default: Option<u16>) -> Option<u16> {
    let s = a.as_str();
    let hostport = s.rsplit_once('@').map_or(s, |(_, h)| h);
    let rest = hostport.strip_prefix(a.host())?;
    let Some(digits) = rest.strip_prefix(':') else {
        return if rest.is_empty() { default } else { None };
    };
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u16>().ok().filter(|p| *p != 0)
}

async fn connect(state: Arc<ConnState>, mut req: Request<Incoming>) -> Response<Body> {
    let ctx = state.ctx.clone();
    let mut event = ctx.event("connection", "connect");
    let started = Instant::now();
    let Some((host, port)) = req
        .uri()
        .authority()
        .and_then(|a| Some((a.host().to_string(), authority_port(a, None)?)))
    else {
        event.host = req.uri().to_string();
        return closing(deny_with(&ctx, event, "request-syntax", "bad-port", 400));
    };
    let target = format!("{host}:{port}");
    if let Some(leak) = ctx.proxy.interception.as_ref().and_then(|i| {
        i.credentials
            .leaked_in_name(&target)
            .map(|c| c.spec.name.clone())
    }) {
        event.credential = Some(leak.clone());
        event.host = "[redacted]".into();
        return deny(
            &ctx,
            event,
            &format!("credential:{leak}"),
            "credential-leak",
        );
    }
    let parsed = parse_host(&host);
    let carriage = match &parsed {
        Ok(h)
            if in_report_mode(&ctx.proxy.policy, decide_target(&ctx.proxy.policy, h, port))
                .allow =>
        {
            ctx.proxy.carriage(h, false)
        }
        // Refused anyway, by the gate below, with the destination's reason.
        _ => Carriage::Opaque,
    };
    if let Carriage::Refuse(d) = carriage {
        event.host = host.clone();
        event.port = port;
        event.error = Some(
            "the host has method/path rules and this proxy has no CA to inspect its requests"
                .into(),
        );
        return deny(&ctx, event, &d.rule, d.reason);
    }
    if let (Ok(Host::Name(name)), Carriage::Intercept) = (parsed, carriage) {
        let upstream = match intercept::dial(&ctx, &host, port, &mut event).await {
            Ok(s) => s,
            Err(r) => {
                return refuse(&ctx, event, started, &r, &target);
            }
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    intercept::serve(
                        TokioIo::new(upgraded),
                        ctx,
                        name,
                        port,
                        upstream,
                        event,
                        started,
                    )
                    .await
                }
                Err(e) => {
                    event.error = Some(format!("upgrade failed: {e}"));
                    ctx.finish(event);
                }
            }
        });
        return Response::new(Full::new(Bytes::new()).map_err(|n| match n {}).boxed());
    }
    let upstream = match gate::open(&ctx.proxy, &host, port, &mut event).await {
        Ok(s) => s,
        Err(r) => {
            return refuse(&ctx, event, started, &r, &target);
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                // Our own socket underneath: splice, zero-copy. Anything
                // else (a wrapped stream in tests): copy.
                match upgraded.downcast::<TokioIo<Metered<Client>>>() {
                    Ok(parts) => {
                        let client = parts.io.into_inner().into_inner();
                        event.error = splice::run(
                            client,
                            &parts.read_buf,
                            upstream,
                            ctx.meter.clone(),
                            &ctx.proxy.limits,
                            ctx.shutdown.clone(),
                        )
                        .await;
                    }
                    Err(upgraded) => {
                        let mut client = TokioIo::new(upgraded);
                        event.error = tunnel::run(
                            &mut client,
                            upstream,
                            ctx.meter.clone(),
                            &ctx.proxy.limits,
                            ctx.shutdown.clone(),
                        )
                        .await;
                    }
                }
            }
            Err(e) => event.error = Some(format!("upgrade failed: {e}")),
        }
        let (up, down) = ctx.meter.bytes();
        event.bytes_up = up;
        event.bytes_down = down;
        event.duration = started.elapsed();
        ctx.finish(event);
    });
    Response::new(Full::new(Bytes::new()).map_err(|n| match n {}).boxed())
}

/// Headers that describe one hop, never forwarded (RFC 9110 section 7.6.1),
/// plus everything addressed to the proxy.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        if !(keep_upgrade && name == UPGRADE) {
            headers.remove(name);
        }
    }
    for name in [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
    let proxy_headers: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_headers {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    }
}

/// Host header and URI authority agree (normalized, default port 80).
pub fn host_header_agrees(headers: &HeaderMap, host: &Host, port: u16) -> bool {
    let Some(value) = headers.get(HOST) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let Ok(auth) = value.parse::<hyper::http::uri::Authority>() else {
        return false;
    };
    parse_host(auth.host()).is_ok_and(|h| &h == host)
        && authority_port(&auth, Some(80)) == Some(port)
}

async fn forward(state: Arc<ConnState>, req: Request<Incoming>) -> Response<Body> {
    let ctx = state.ctx.clone();
    let started = Instant::now();
    let mut event = ctx.event("http_request", "http");
    event.method = Some(req.method().to_string());
    event.path = req.uri().path_and_query().map(|p| p.to_string());
    let uri = req.uri().clone();
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        event.host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let reason = if uri.scheme_str() == Some("https") {
            "https:// targets go through CONNECT (set HTTPS_PROXY)"
        } else {
            "expected an absolute-form request (http://host/path): set HTTP_PROXY"
        };
        event.error = Some(reason.to_string());
        let mut resp = deny(&ctx, event, "request-syntax", "not-a-proxy-request");
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let raw_host = authority.host().to_string();
    event.host = raw_host.clone();
    let Some(port) = authority_port(authority, Some(80)) else {
        event.error = Some(format!("'{authority}' does not name a port 1-65535"));
        return closing(deny_with(&ctx, event, "request-syntax", "bad-port", 400));
    };
    event.port = port;
    let host = match parse_host(&raw_host) {
        Ok(h) => h,
        Err(e) => {
            event.error = Some(e.to_string());
            return deny(&ctx, event, "name-syntax", "bad-name");
        }
    };
    event.host = host.to_string();
    if !host_header_agrees(req.headers(), &host, port) {
        return deny(&ctx, event, "host-header", "host-mismatch");
    }
    let websocket = match req.headers().get(UPGRADE) {
        None => false,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"websocket") => true,
        Some(_) => return deny(&ctx, event, "upgrade", "upgrade-refused"),
    };

    // A secret or placeholder bound elsewhere never leaves, even in plain
    // HTTP to an allowed host.
    let (parts, body) = req.into_parts();
    let mut req = match ctx.proxy.interception.as_ref() {
        Some(icpt) if !icpt.credentials.is_empty() => {
            let (seen, body) = match read_ahead(body).await {
                Ok(x) => x,
                Err(e) => {
                    event.error = Some(format!("reading the request body: {e}"));
                    return deny(&ctx, event, "request-body", "bad-request");
                }
            };
            let req = Request::from_parts(parts, body.boxed());
            let host_name = host.to_string();
            let leak = find_leak(&icpt.credentials, &host_name, &head_bytes(&req), &seen)
                .or_else(|| find_misplaced(&icpt.credentials, &host_name, &req, &seen));
            if let Some(c) = leak {
                let name = c.spec.name.clone();
                let mut leak = ctx.event("credential_leak_blocked", "http");
                leak.host = host.to_string();
                leak.port = port;
                leak.credential = Some(name.clone());
                leak.decision = Some(Decision {
                    allow: false,
                    rule: format!("credential:{name}"),
                    reason: "credential-leak",
                });
                ctx.finish(leak);
                event.credential = Some(name.clone());
                return deny(
                    &ctx,
                    event,
                    &format!("credential:{name}"),
                    "credential-leak",
                );
            }
            req
        }
        _ => Request::from_parts(parts, body.boxed()),
    };

    // Re-decide on every request, kept-alive or not; reuse the upstream
    // connection only for the same destination.
    // The destination, and the host's method/path rules on the path in
    // normal form: the same function `policy explain --url` asks.
    let verdict = decide_request(
        &ctx.proxy.policy,
        &host,
        port,
        req.method().as_str(),
        uri.path(),
    );
    if !verdict.decision.allow {
        let d = verdict.decision;
        return deny_with(&ctx, event, &d.rule, d.reason, verdict.status);
    }
    let overrides = method_overrides(
        req.headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes())),
        uri.query(),
    );
    if let Some(d) = decide_overrides(&ctx.proxy.policy, &host, &verdict.path, &overrides) {
        return deny(&ctx, event, &d.rule, d.reason);
    }
    let decision = verdict.decision;
    let reuse = if !websocket {
        state.take_cached(&host, port)
    } else {
        None
    };
    let (mut sender, ip) = match reuse {
        Some(c) => {
            event.decision = Some(decision);
            event.ip = Some(c.ip);
            (c.sender, c.ip)
        }
        None => {
            let target = format!("{}:{port}", host);
            let stream = match gate::open(&ctx.proxy, &raw_host, port, &mut event).await {
                Ok(s) => s,
                Err(r) => {
                    return refuse(&ctx, event, started, &r, &target);
                }
            };
            let ip = event.ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok((sender, conn)) => {
                    tokio::spawn(conn.with_upgrades());
                    (sender, ip)
                }
                Err(e) => {
                    let r = Refusal::Unreachable {
                        reason: "connect-failed",
                        detail: e.to_string(),
                    };
                    event.error = Some(e.to_string());
                    return refuse(&ctx, event, started, &r, &target);
                }
            }
        }
    };

    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, websocket);
    let host_value = if port == 80 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    if let Ok(v) = HeaderValue::from_str(&host_value) {
        parts.headers.insert(HOST, v);
    }
    // The path the rules judged (normal form under rules), not the raw one.
    let forwarded = match uri.query() {
        Some(q) => format!("{}?{q}", verdict.path),
        None => verdict.path,
    };
    parts.uri = forwarded
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body);

    let result = match sender.ready().await {
        Ok(()) => sender.send_request(upstream_req).await,
        Err(e) => Err(e),
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            let r = Refusal::Unreachable {
                reason: "upstream-error",
                detail: e.to_string(),
            };
            event.error = Some(e.to_string());
            return refuse(&ctx, event, started, &r, &format!("{host}:{port}"));
        }
    };
    event.status = Some(resp.status().as_u16());
    event.bytes_down = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    event.duration = started.elapsed();

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let ctx2 = ctx.clone();
            let mut ws_event = event.clone();
            ws_event.action = "connection";
            ws_event.protocol = "websocket";
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        ws_event.error = tunnel::run(
                            &mut client,
                            TokioIo::new(upstream),
                            ctx2.meter.clone(),
                            &ctx2.proxy.limits,
                            ctx2.shutdown.clone(),
                        )
                        .await;
                    }
                    Err(e) => ws_event.error = Some(format!("upgrade failed: {e}")),
                }
                ws_event.duration = started.elapsed();
                ctx2.finish(ws_event);
            });
        }
        ctx.finish(event);
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        return Response::from_parts(parts, body.boxed());
    }

    state.put_cached(Cached {
        host,
        port,
        ip,
        sender,
    });
    ctx.finish(event);
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    match ctx.proxy.interception.as_ref() {
        // A secret an upstream reflects never reaches the sandbox.
        Some(i) if !i.credentials.is_empty() => {
            crate::intercept::scrub_response(parts, body, &i.credentials)
        }
        _ => Response::from_parts(parts, body.boxed()),
    }
}

impl ConnState {
    fn take_cached(&self, host: &Host, port: u16) -> Option<Cached> {
        let mut slot = self.cached.lock().ok()?;
        match slot.take() {
            Some(c) if &c.host == host && c.port == port && !c.sender.is_closed() => Some(c),
            _ => None,
        }
    }

    fn put_cached(&self, c: Cached) {
        if let Ok(mut slot) = self.cached.lock() {
            *slot = Some(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_proxy_headers_are_stripped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("accept", "*/*"),
        ] {
            h.append(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["accept"]);
    }

    #[test]
    fn ports_that_are_not_ports_are_never_read_as_the_default() {
        let port = |s: &str, default| {
            s.parse::<hyper::http::uri::Authority>()
                .ok()
                .and_then(|a| authority_port(&a, default))
        };
        let cases: &[(&str, Option<u16>, Option<u16>)] = &[
            ("api.example.com", Some(80), Some(80)),
            ("api.example.com", None, None),
            ("api.example.com:8080", Some(80), Some(8080)),
            ("[::1]:443", None, Some(443)),
            ("[::1]", Some(443), Some(443)),
            ("user@api.example.com:81", Some(80), Some(81)),
            ("api.example.com:83616", Some(80), None),
            ("api.example.com:443.evil.test", Some(80), None),
            ("api.example.com:0", Some(80), None),
            ("api.example.com:", Some(80), None),
            ("api.example.com:+80", Some(80), None),
            ("api.example.com:000080", Some(80), None),
        ];
        for (auth, default, want) in cases {
            assert_eq!(port(auth, *default), *want, "{auth}");
        }
    }

    #[test]
    fn host_header_must_name_the_target() {
        let host = Host::Name("api.example.com".into());
        let mut h = HeaderMap::new();
        assert!(host_header_agrees(&h, &host, 80));
        h.insert(HOST, HeaderValue::from_static("API.example.com."));
        assert!(host_header_agrees(&h, &host, 80));
        h.insert(HOST, HeaderValue::from_static("api.example.com:80"));
        assert!(host_header_agrees(&h, &host, 80));
        h.insert(HOST, HeaderValue::from_static("api.example.com:8080"));
        assert!(!host_header_agrees(&h, &host, 80));
        h.insert(HOST, HeaderValue::from_static("evil.example.org"));
        assert!(!host_header_agrees(&h, &host, 80));
    }
}
