//! TLS interception for hosts that carry a credential or have method/path
//! rules. The sandbox's TLS ends here with a leaf from the session CA; the
//! proxy opens its own verified TLS to the upstream. Inside, every request
//! is checked again: SNI and Host must both be the CONNECT host (no domain
//! fronting, no second host smuggled into the tunnel), the policy and the
//! host's method/path rules must allow it, and no credential bound to
//! another host may ride along. Then the host's credentials are applied.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, HOST, UPGRADE};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};

use crate::audit::Event;
use crate::decide::{decide_overrides, decide_request, method_overrides, Decision};
use crate::gate;
use crate::http::{authority_port, refusal_response, refuse, strip_hop_by_hop, Body};
use crate::inspect::{find_leak, find_misplaced, head_bytes, inject, read_ahead};
use crate::name::{parse_host, Host};
use crate::proxy::ConnCtx;
use crate::scrub::{ScrubBody, Scrubber};
use crate::tls;
use crate::tunnel;

/// A verified TLS connection to the upstream.
pub type UpstreamTls = TlsStream<TcpStream>;

/// Dials `host:port` through the gate and completes a verified TLS
/// handshake with it. Failures are refusals the client can read.
pub async fn dial(
    ctx: &ConnCtx,
    host: &str,
    port: u16,
    event: &mut Event,
) -> Result<UpstreamTls, gate::Refusal> {
    let tcp = gate::open(&ctx.proxy, host, port, event).await?;
    let Some(icpt) = ctx.proxy.interception.as_ref() else {
        return Err(gate::Refusal::Unreachable {
            reason: "upstream-tls",
            detail: "interception is not configured".into(),
        });
    };
    let name = ServerName::try_from(host.to_string()).map_err(|e| gate::Refusal::Unreachable {
        reason: "upstream-tls",
        detail: e.to_string(),
    })?;
    let connector = TlsConnector::from(icpt.upstream_tls.clone());
    let handshake = connector.connect(name, tcp);
    match tokio::time::timeout(ctx.proxy.limits.connect_timeout, handshake).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => {
            let detail = format!("TLS to {host}:{port} failed: {e}");
            event.error = Some(detail.clone());
            Err(gate::Refusal::Unreachable {
                reason: "upstream-tls",
                detail,
            })
        }
        Err(_) => Err(gate::Refusal::Unreachable {
            reason: "timeout",
            detail: "TLS handshake with the upstream timed out".into(),
        }),
    }
}

struct Tunnel {
    ctx: Arc<ConnCtx>,
    host: String,
    port: u16,
    ip: Option<IpAddr>,
    upstream: Mutex<Option<SendRequest<Body>>>,
}

/// Terminates the sandbox's TLS on `client` (the CONNECT tunnel) and serves
/// its requests over `upstream`. Records `event` (the CONNECT) at the end.
pub async fn serve<S>(
    client: S,
    ctx: Arc<ConnCtx>,
    host: String,
    port: u16,
    upstream: UpstreamTls,
    mut event: Event,
    started: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = ctx.proxy.limits.clone();
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), client);
    let start = match tokio::time::timeout(limits.header_timeout, acceptor).await {
        Ok(Ok(s)) => s,
        _ => {
            event.error = Some("no TLS ClientHello from the sandbox".into());
            return finish(&ctx, event, started);
        }
    };
    let sni = start
        .client_hello()
        .server_name()
        .map(str::to_ascii_lowercase);
    let sni_host = sni.as_deref().and_then(|s| parse_host(s).ok());
    if sni_host != Some(Host::Name(host.clone())) {
        event.decision = Some(Decision {
            allow: false,
            rule: "tls-sni".into(),
            reason: "sni-mismatch",
        });
        event.error = Some(format!(
            "TLS SNI {:?} is not the CONNECT host {host}",
            sni.unwrap_or_default()
        ));
        return finish(&ctx, event, started);
    }
    let Some(icpt) = ctx.proxy.interception.as_ref() else {
        return finish(&ctx, event, started);
    };
    let config = match icpt.ca.leaf(&host).await {
        Ok(leaf) => match tls::sandbox_facing(leaf) {
            Ok(c) => c,
            Err(e) => {
                event.error = Some(format!("TLS setup: {e}"));
                return finish(&ctx, event, started);
            }
        },
        Err(e) => {
            event.error = Some(format!("leaf certificate: {e}"));
            return finish(&ctx, event, started);
        }
    };
    let tls = match start.into_stream(config).await {
        Ok(t) => t,
        Err(e) => {
            event.error = Some(format!("TLS handshake with the sandbox: {e}"));
            return finish(&ctx, event, started);
        }
    };
    let sender = match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
        Ok((sender, conn)) => {
            tokio::spawn(conn.with_upgrades());
            Some(sender)
        }
        Err(e) => {
            event.error = Some(format!("upstream HTTP: {e}"));
            return finish(&ctx, event, started);
        }
    };
    let tunnel = Arc::new(Tunnel {
        ctx: ctx.clone(),
        host,
        port,
        ip: event.ip,
        upstream: Mutex::new(sender),
    });
    let service = hyper::service::service_fn(move |req| {
        let tunnel = tunnel.clone();
        async move { Ok::<_, Infallible>(handle(tunnel, req).await) }
    });
    let conn = crate::http::server(&limits)
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    let mut shutdown = ctx.shutdown.clone();
    // A connection that merely closed is no error for the record.
    let serve = async {
        if let Err(e) = conn.await {
            crate::http::record_rejected_head(&ctx, &e, "https");
        }
        None
    };
    event.error = tunnel::bounded(serve, &ctx.meter, &limits, &mut shutdown).await;
    finish(&ctx, event, started);
}

fn finish(ctx: &ConnCtx, mut event: Event, started: Instant) {
    let (up, down) = ctx.meter.bytes();
    event.bytes_up = up;
    event.bytes_down = down;
    event.duration = started.elapsed();
    ctx.finish(event);
}

fn deny(tunnel: &Tunnel, mut event: Event, rule: String, reason: &'static str) -> Response<Body> {
    let d = Decision {
        allow: false,
        rule,
        reason,
    };
    let r = gate::Refusal::Policy(d.clone());
    event.decision = Some(d);
    event.status = Some(403);
    tunnel.ctx.finish(event);
    refusal_response(&r, &format!("{}:{}", tunnel.host, tunnel.port))
}

async fn handle(tunnel: Arc<Tunnel>, mut req: Request<Incoming>) -> Response<Body> {
    let ctx = tunnel.ctx.clone();
    let started = Instant::now();
    let mut event = ctx.event("http_request", "https");
    event.method = Some(req.method().to_string());
    event.path = req.uri().path_and_query().map(|p| p.to_string());
    event.host = tunnel.host.clone();
    event.port = tunnel.port;
    event.ip = tunnel.ip;
    let host = Host::Name(tunnel.host.clone());

    // The request must be for the host the tunnel was opened to.
    let uri_ok = match req.uri().authority() {
        None => true,
        Some(a) => {
            parse_host(a.host()).is_ok_and(|h| h == host)
                && authority_port(a, Some(443)) == Some(tunnel.port)
        }
    };
    if !uri_ok || !host_header_agrees_port(&req, &host, tunnel.port) {
        return deny(&tunnel, event, "host-header".into(), "host-mismatch");
    }
    // The destination, and the host's method/path rules on the path in
    // normal form: the same function `policy explain --url` asks.
    let verdict = decide_request(
        &ctx.proxy.policy,
        &host,
        tunnel.port,
        req.method().as_str(),
        req.uri().path(),
    );
    if !verdict.decision.allow {
        let r = gate::Refusal::Policy(verdict.decision.clone());
        event.decision = Some(verdict.decision);
        event.status = Some(verdict.status);
        ctx.finish(event);
        let mut resp = refusal_response(&r, &format!("{}:{}", tunnel.host, tunnel.port));
        *resp.status_mut() = StatusCode::from_u16(verdict.status).unwrap_or(StatusCode::FORBIDDEN);
        return resp;
    }
    let overrides = method_overrides(
        req.headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes())),
        req.uri().query(),
    );
    if let Some(d) = decide_overrides(&ctx.proxy.policy, &host, &verdict.path, &overrides) {
        return deny(&tunnel, event, d.rule, d.reason);
    }
    let decision = verdict.decision;
    let websocket = match req.headers().get(UPGRADE) {
        None => false,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"websocket") => true,
        Some(_) => return deny(&tunnel, event, "upgrade".into(), "upgrade-refused"),
    };
    event.decision = Some(decision);

    let Some(icpt) = ctx.proxy.interception.as_ref() else {
        return deny(&tunnel, event, "interception".into(), "not-intercepted");
    };
    let creds = &icpt.credentials;
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let (seen, body) = match read_ahead(body).await {
        Ok(x) => x,
        Err(e) => {
            event.error = Some(format!("reading the request body: {e}"));
            event.status = Some(400);
            ctx.finish(event);
            return crate::http::text(400, &[], "airlock: could not read the request body".into());
        }
    };
    let mut req = Request::from_parts(parts, body.boxed());
    let leak = find_leak(creds, &tunnel.host, &head_bytes(&req), &seen)
        .or_else(|| find_misplaced(creds, &tunnel.host, &req, &seen));
    if let Some(c) = leak {
        let name = c.spec.name.clone();
        let mut leak = ctx.event("credential_leak_blocked", "https");
        leak.host = tunnel.host.clone();
        leak.port = tunnel.port;
        leak.credential = Some(name.clone());
        leak.decision = Some(Decision {
            allow: false,
            rule: format!("credential:{name}"),
            reason: "credential-leak",
        });
        ctx.finish(leak);
        return deny(
            &tunnel,
            event,
            format!("credential:{name}"),
            "credential-leak",
        );
    }
    let used = inject(creds, &tunnel.host, &mut req);
    for name in &used {
        let mut ev = ctx.event("credential_used", "https");
        ev.host = tunnel.host.clone();
        ev.port = tunnel.port;
        ev.credential = Some(name.clone());
        ev.decision = event.decision.clone();
        ev.method = event.method.clone();
        ev.path = event.path.clone();
        ctx.finish(ev);
    }

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, websocket);
    // Ask a credential host for an uncompressed body, so the scrubber below
    // can see a reflected secret (decoding would cost more, and a body we
    // decode is one more decompression bomb to bound).
    let bound = creds.any_bound_to(&tunnel.host);
    if bound {
        parts
            .headers
            .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    let host_value = if tunnel.port == 443 {
        tunnel.host.clone()
    } else {
        format!("{}:{}", tunnel.host, tunnel.port)
    };
    if let Ok(v) = HeaderValue::from_str(&host_value) {
        parts.headers.insert(HOST, v);
    }
    // The path the rules judged (normal form under rules), not the raw one.
    let forwarded = match parts.uri.query() {
        Some(q) => format!("{}?{q}", verdict.path),
        None => verdict.path,
    };
    parts.uri = forwarded
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body);

    let mut sender = match take_sender(&tunnel, &mut event).await {
        Ok(s) => s,
        Err(r) => {
            return refuse(&ctx, event, started, &r, &host_value);
        }
    };
    let result = match sender.ready().await {
        Ok(()) => sender.send_request(upstream_req).await,
        Err(e) => Err(e),
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            let r = gate::Refusal::Unreachable {
                reason: "upstream-error",
                detail: e.to_string(),
            };
            event.error = Some(e.to_string());
            return refuse(&ctx, event, started, &r, &host_value);
        }
    };
    event.status = Some(resp.status().as_u16());
    event.duration = started.elapsed();
    if bound && compressed(&resp) {
        // We asked for identity; a credential host that compresses anyway
        // could carry a reflected secret past the scrubber: fail closed.
        let r = gate::Refusal::Unreachable {
            reason: "compressed-response",
            detail: "the upstream sent a compressed body although the proxy asked for none \
                     (credential hosts are scrubbed, which needs plain bodies)"
                .into(),
        };
        event.error = Some(r.message(&host_value));
        return refuse(&ctx, event, started, &r, &host_value);
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let ctx2 = ctx.clone();
            tokio::spawn(async move {
                if let Ok((c, u)) = tokio::try_join!(client_upgrade, upstream_upgrade) {
                    let mut c = TokioIo::new(c);
                    let _ = tunnel::run(
                        &mut c,
                        TokioIo::new(u),
                        ctx2.meter.clone(),
                        &ctx2.proxy.limits,
                        ctx2.shutdown.clone(),
                    )
                    .await;
                }
            });
        }
    } else if let Ok(mut slot) = tunnel.upstream.lock() {
        *slot = Some(sender);
    }
    ctx.finish(event);
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(
        &mut parts.headers,
        parts.status == StatusCode::SWITCHING_PROTOCOLS,
    );
    // An upstream that echoes a secret back (a debug header, an echo
    // endpoint, an error quoting the request) must not hand it to the
    // sandbox: headers and body are scrubbed, every common encoding, with a
    // filler of the same length (Content-Length stays true).
    scrub_response(parts, body, creds)
}

/// The response with every secret of `creds`, in every common encoding,
/// overwritten in its headers and (streaming) its body.
pub fn scrub_response(
    mut parts: hyper::http::response::Parts,
    body: Incoming,
    creds: &crate::secrets::Credentials,
) -> Response<Body> {
    let matcher = creds.scrub_matcher();
    if matcher.is_empty() {
        return Response::from_parts(parts, body.boxed());
    }
    for v in parts.headers.values_mut() {
        if let Some(clean) = Scrubber::scrub_all(&matcher, v.as_bytes()) {
            if let Ok(new) = HeaderValue::from_bytes(&clean) {
                *v = new;
            }
        }
    }
    Response::from_parts(parts, ScrubBody::new(body, matcher).boxed())
}

/// Whether `resp` carries a content coding other than identity.
fn compressed<B>(resp: &Response<B>) -> bool {
    resp.headers().get_all(CONTENT_ENCODING).iter().any(|v| {
        v.to_str().map_or(true, |s| {
            s.split(',')
                .any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity"))
        })
    })
}

/// The Host header, if any, names the tunnel's host and port (443 when it
/// names none).
fn host_header_agrees_port<B>(req: &Request<B>, host: &Host, port: u16) -> bool {
    match req.headers().get(HOST) {
        None => true,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<hyper::http::uri::Authority>().ok())
            .is_some_and(|a| {
                parse_host(a.host()).is_ok_and(|h| &h == host)
                    && authority_port(&a, Some(443)) == Some(port)
            }),
    }
}

/// The kept upstream connection, or a new one if it closed.
async fn take_sender(
    tunnel: &Tunnel,
    event: &mut Event,
) -> Result<SendRequest<Body>, gate::Refusal> {
    let kept = tunnel.upstream.lock().ok().and_then(|mut s| s.take());
    if let Some(s) = kept.filter(|s| !s.is_closed()) {
        return Ok(s);
    }
    let tls = dial(&tunnel.ctx, &tunnel.host, tunnel.port, event).await?;
    match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
        Ok((sender, conn)) => {
            tokio::spawn(conn.with_upgrades());
            Ok(sender)
        }
        Err(e) => Err(gate::Refusal::Unreachable {
            reason: "upstream-error",
            detail: e.to_string(),
        }),
    }
}
