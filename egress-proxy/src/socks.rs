//! SOCKS5 (RFC 1928) on the proxy socket: no authentication, CONNECT only
//! (no BIND, no UDP ASSOCIATE), with domain names (`socks5h://`) decided
//! like any other request, and IP addresses treated as IP literals.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::Client;
use crate::decide::{decide_target, in_report_mode, Carriage, Decision};
use crate::gate;
use crate::meter::Metered;
use crate::name::parse_host;
use crate::proxy::ConnCtx;
use crate::splice;

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const REPLY_OK: u8 = 0;
const REPLY_GENERAL_FAILURE: u8 = 1;
const REPLY_NOT_ALLOWED: u8 = 2;
const REPLY_COMMAND_NOT_SUPPORTED: u8 = 7;
const REPLY_ADDRESS_NOT_SUPPORTED: u8 = 8;

/// A parsed CONNECT request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// Why a SOCKS5 handshake ended without a request: the reply to send, if
/// any, and what to write in the audit line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) reply: Option<u8>,
    why: &'static str,
}

fn refused(reply: Option<u8>, why: &'static str) -> Refused {
    Refused { reply, why }
}

/// Serves one SOCKS5 client connection. Every connection leaves one audit
/// line, whether it ended in the handshake, was refused, or was relayed.
pub async fn serve(mut stream: Metered<Client>, ctx: Arc<ConnCtx>) {
    let started = Instant::now();
    let mut event = ctx.event("connection", "socks5");
    let handshake = tokio::time::timeout(ctx.proxy.limits.header_timeout, handshake(&mut stream));
    let request = match handshake.await {
        Ok(Ok(r)) => r,
        Ok(Err(r)) => {
            if let Some(code) = r.reply {
                let _ = stream.write_all(&reply_bytes(code)).await;
            }
            event.error = Some(r.why.to_string());
            event.decision = Some(Decision {
                allow: false,
                rule: "socks5".into(),
                reason: "socks-request-refused",
            });
            event.duration = started.elapsed();
            ctx.finish(event);
            return;
        }
        Err(_) => {
            event.error = Some("no complete SOCKS5 request within the header timeout".into());
            event.duration = started.elapsed();
            ctx.finish(event);
            return;
        }
    };
    let target = format!("{}:{}", request.host, request.port);
    // A host with method/path rules must have every request seen; a SOCKS5
    // tunnel shows none (the client may bring its own TLS), so it is
    // refused before anything is dialled.
    if let Ok(host) = parse_host(&request.host) {
        let allowed = in_report_mode(
            &ctx.proxy.policy,
            decide_target(&ctx.proxy.policy, &host, request.port),
        )
        .allow;
        if let (true, Carriage::Refuse(d)) = (allowed, ctx.proxy.carriage(&host, true)) {
            let _ = stream.write_all(&reply_bytes(REPLY_NOT_ALLOWED)).await;
            event.host = host.to_string();
            event.port = request.port;
            event.error = Some(
                "the host has method/path rules, which SOCKS5 cannot show: use HTTPS_PROXY".into(),
            );
            event.decision = Some(d);
            event.duration = started.elapsed();
            ctx.finish(event);
            return;
        }
    }
    let upstream = match gate::open(&ctx.proxy, &request.host, request.port, &mut event).await {
        Ok(s) => s,
        Err(r) => {
            let _ = stream.write_all(&reply_bytes(r.socks_reply())).await;
            event.error.get_or_insert_with(|| r.message(&target));
            event.duration = started.elapsed();
            ctx.finish(event);
            return;
        }
    };
    if stream.write_all(&reply_bytes(REPLY_OK)).await.is_err() {
        return;
    }
    event.error = splice::run(
        stream.into_inner(),
        &[],
        upstream,
        ctx.meter.clone(),
        &ctx.proxy.limits,
        ctx.shutdown.clone(),
    )
    .await;
    let (up, down) = ctx.meter.bytes();
    event.bytes_up = up;
    event.bytes_down = down;
    event.duration = started.elapsed();
    ctx.finish(event);
}

/// A reply with the bound address 0.0.0.0:0 (clients ignore it).
fn reply_bytes(code: u8) -> [u8; 10] {
    [VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// Reads the greeting and the request. On error, says which reply code to
/// send (if any) before closing, and why.
pub(crate) async fn handshake<S>(s: &mut S) -> Result<Request, Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cut = |_| refused(None, "the client closed during the SOCKS5 handshake");
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.map_err(cut)?;
    if head[0] != VERSION {
        return Err(refused(None, "not SOCKS version 5"));
    }
    let mut methods = vec![0u8; head[1] as usize];
    s.read_exact(&mut methods).await.map_err(cut)?;
    if !methods.contains(&NO_AUTH) {
        let _ = s.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await;
        return Err(refused(
            None,
            "the client offered no acceptable method (no-auth)",
        ));
    }
    s.write_all(&[VERSION, NO_AUTH]).await.map_err(cut)?;

    let mut req = [0u8; 4];
    s.read_exact(&mut req)
        .await
        .map_err(|_| refused(Some(REPLY_GENERAL_FAILURE), "the request was cut short"))?;
    if req[0] != VERSION {
        return Err(refused(
            Some(REPLY_GENERAL_FAILURE),
            "the request is not SOCKS version 5",
        ));
    }
    match req[1] {
        CMD_CONNECT => {}
        2 => {
            return Err(refused(
                Some(REPLY_COMMAND_NOT_SUPPORTED),
                "BIND is not supported",
            ))
        }
        3 => {
            return Err(refused(
                Some(REPLY_COMMAND_NOT_SUPPORTED),
                "UDP ASSOCIATE is not supported",
            ))
        }
        _ => {
            return Err(refused(
                Some(REPLY_COMMAND_NOT_SUPPORTED),
                "unknown SOCKS5 command",
            ))
        }
    }
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            s.read_exact(&mut a).await.map_err(cut)?;
            IpAddr::V4(Ipv4Addr::from(a)).to_string()
        }
        3 => {
            let len = s.read_u8().await.map_err(cut)?;
            let mut name = vec![0u8; len as usize];
            s.read_exact(&mut name).await.map_err(cut)?;
            // Anything not UTF-8 fails normalization below, as a bad name.
            String::from_utf8_lossy(&name).into_owned()
        }
        4 => {
            let mut a = [0u8; 16];
            s.read_exact(&mut a).await.map_err(cut)?;
            format!("[{}]", Ipv6Addr::from(a))
        }
        _ => {
            return Err(refused(
                Some(REPLY_ADDRESS_NOT_SUPPORTED),
                "unknown SOCKS5 address type",
            ))
        }
    };
    let port = s.read_u16().await.map_err(cut)?;
    Ok(Request { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (Result<Request, Refused>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(bytes).await.expect("write");
        let r = handshake(&mut server).await;
        drop(server);
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        (r, out)
    }

    #[tokio::test]
    async fn domain_connect_is_parsed() {
        let mut b = vec![5, 1, 0, 5, 1, 0, 3, 15];
        b.extend_from_slice(b"api.example.com");
        b.extend_from_slice(&443u16.to_be_bytes());
        let (r, out) = parse(&b).await;
        assert_eq!(
            r,
            Ok(Request {
                host: "api.example.com".into(),
                port: 443
            })
        );
        assert_eq!(out, vec![5, 0]);
    }

    #[tokio::test]
    async fn ip_targets_become_literals() {
        let (r, _) = parse(&[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80]).await;
        assert_eq!(r.map(|r| r.host), Ok("127.0.0.1".into()));
        let mut b = vec![5, 1, 0, 5, 1, 0, 4];
        b.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        b.extend_from_slice(&[0, 80]);
        let (r, _) = parse(&b).await;
        assert_eq!(r.map(|r| r.host), Ok("[::1]".into()));
    }

    #[tokio::test]
    async fn bind_and_udp_are_not_supported() {
        for cmd in [2u8, 3] {
            let (r, _) = parse(&[5, 1, 0, 5, cmd, 0, 1, 127, 0, 0, 1, 0, 80]).await;
            assert_eq!(
                r.map_err(|e| e.reply),
                Err(Some(REPLY_COMMAND_NOT_SUPPORTED))
            );
        }
    }

    #[tokio::test]
    async fn authentication_only_clients_are_refused() {
        let (r, out) = parse(&[5, 1, 2]).await;
        assert_eq!(r.map_err(|e| e.reply), Err(None));
        assert_eq!(out, vec![5, 0xff]);
    }
}
