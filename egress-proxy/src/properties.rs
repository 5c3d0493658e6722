//! Property tests for the proxy's own parsers, under random input: the
//! first-byte sniffer, SOCKS5 requests, host names and IP literals, request
//! paths, and the policy loader. A few thousand cases each in CI;
//! `scripts/bench fuzz` runs the same properties with `PROPTEST_CASES` in
//! the millions.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

use crate::name::{parse_host, parse_ipv4_any, Host};
use crate::proxy::{sniff, Sniffed};
use crate::reqpath::normalize;

/// CI's case count unless `PROPTEST_CASES` says otherwise.
pub(crate) fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 2000;
    }
    // No regression files written into the source tree.
    c.failure_persistence = None;
    c
}

thread_local! {
    static RT: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Feeds `bytes` (then end of input) to the SOCKS5 handshake.
fn socks(bytes: &[u8]) -> Result<crate::socks::Request, crate::socks::Refused> {
    RT.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
        });
        rt.block_on(async {
            let (mut client, mut server) = tokio::io::duplex(bytes.len() + 1024);
            client.write_all(bytes).await.expect("buffered");
            client.shutdown().await.expect("shutdown");
            let r = crate::socks::handshake(&mut server).await;
            drop(client);
            r
        })
    })
}

/// IPv4 spellings `inet_aton` accepts and browsers read as addresses:
/// one to four parts, each decimal, octal or hex, any case, maybe a
/// trailing dot.
fn ipv4_spelling() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((any::<u32>(), 0..3u8, any::<bool>()), 1..=4),
        any::<bool>(),
    )
        .prop_map(|(parts, dot)| {
            let mut s = parts
                .iter()
                .map(|(v, base, upper)| {
                    let v = if parts.len() == 1 { *v } else { *v & 0xff };
                    let p = match base {
                        0 => v.to_string(),
                        1 => format!("0{v:o}"),
                        _ => format!("0x{v:x}"),
                    };
                    if *upper {
                        p.to_uppercase()
                    } else {
                        p
                    }
                })
                .collect::<Vec<_>>()
                .join(".");
            if dot {
                s.push('.');
            }
            s
        })
}

/// Hosts as a client might write them, good and bad.
fn host_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9.\\-]{0,30}",
        "[0-9a-fA-FxX.:\\[\\]%@_\\-]{0,30}",
        ipv4_spelling(),
        any::<String>(),
        "[a-z]{1,8}(\\.[a-z0-9\u{e9}\u{3b1}\u{ff0e}\u{3002}-]{1,8}){0,3}\\.?",
    ]
}

/// Paths built from the pieces path tricks are made of.
fn path_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just(".%2e".to_string()),
        Just("..;".to_string()),
        Just("%2f".to_string()),
        Just("%5c".to_string()),
        Just("%00".to_string()),
        Just("%7e".to_string()),
        Just("%25".to_string()),
        Just("%34%31".to_string()),
        Just("%3b".to_string()),
        Just("%".to_string()),
        "[a-zA-Z0-9._~;=%-]{1,6}",
    ];
    prop_oneof![
        prop::collection::vec(piece, 0..10).prop_map(|v| format!("/{}", v.join("/"))),
        "/[a-zA-Z0-9./%;~_\\\\-]{0,40}",
        any::<String>(),
    ]
}

/// TOML-ish text: real section and key names with random values, or noise.
fn toml_text() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("[network]"),
        Just("[[network.rules]]"),
        Just("[filesystem]"),
        Just("[limits]"),
        Just("[env]"),
        Just("[profile]"),
        Just("[[credentials]]"),
        Just("[managed]"),
    ];
    let key = prop_oneof![
        Just("allow"),
        Just("deny"),
        Just("allow_cidr"),
        Just("ports"),
        Just("host"),
        Just("methods"),
        Just("paths"),
        Just("read"),
        Just("write"),
        Just("name"),
        Just("extends"),
        Just("memory"),
        Just("timeout"),
        Just("source"),
        Just("hosts"),
        Just("inject"),
        Just("placeholder"),
    ];
    let value = prop_oneof![
        "\"[ -~]{0,20}\"",
        "[0-9]{1,6}",
        "\\[(\"[a-z0-9.*:/%-]{0,16}\", ){0,3}\\]",
        "\\{ [a-z]{1,6} = \"[a-z{}]{0,8}\" \\}",
        Just("true".to_string()),
    ];
    prop_oneof![
        prop::collection::vec((section, prop::collection::vec((key, value), 0..4)), 0..5).prop_map(
            |sections| {
                let mut s = String::new();
                for (sec, kvs) in sections {
                    s.push_str(sec);
                    s.push('\n');
                    for (k, v) in kvs {
                        s.push_str(&format!("{k} = {v}\n"));
                    }
                }
                s
            }
        ),
        "[\\[\\]a-z_=\" .,{}\n0-9*/:-]{0,120}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Only the SOCKS5 version byte goes to the SOCKS parser; no HTTP
    /// method starts with it.
    #[test]
    fn sniffing_sends_only_0x05_to_socks(b in any::<u8>()) {
        prop_assert_eq!(sniff(b) == Sniffed::Socks5, b == 0x05);
        for m in ["GET", "CONNECT", "POST", "PRI"] {
            prop_assert_eq!(sniff(m.as_bytes()[0]), Sniffed::Http);
        }
    }

    /// Random bytes never panic or hang the SOCKS5 parser; what it accepts
    /// is a version-5 CONNECT, and a refusal's reply is a defined code.
    #[test]
    fn socks_parser_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        match socks(&bytes) {
            Ok(_) => {
                prop_assert_eq!(bytes[0], 5);
                let n = usize::from(bytes[1]);
                prop_assert!(bytes[2..2 + n].contains(&0));
                prop_assert_eq!(&bytes[2 + n..2 + n + 2], &[5u8, 1][..]);
            }
            Err(r) => prop_assert!(matches!(r.reply, None | Some(1 | 7 | 8))),
        }
    }

    /// A well-formed CONNECT for any address type and port parses back to
    /// what was encoded.
    #[test]
    fn socks_requests_round_trip(
        atyp in prop_oneof![Just(1u8), Just(3u8), Just(4u8)],
        v4 in any::<u32>(),
        v6 in any::<u128>(),
        name in "[a-z0-9.-]{1,60}",
        port in any::<u16>(),
        extra_methods in prop::collection::vec(any::<u8>(), 0..5),
    ) {
        let mut b = vec![5u8, (extra_methods.len() + 1) as u8];
        b.extend_from_slice(&extra_methods);
        b.push(0);
        b.extend_from_slice(&[5, 1, 0, atyp]);
        let want = match atyp {
            1 => {
                b.extend_from_slice(&v4.to_be_bytes());
                IpAddr::V4(Ipv4Addr::from(v4)).to_string()
            }
            3 => {
                b.push(name.len() as u8);
                b.extend_from_slice(name.as_bytes());
                name.clone()
            }
            _ => {
                b.extend_from_slice(&v6.to_be_bytes());
                format!("[{}]", Ipv6Addr::from(v6))
            }
        };
        b.extend_from_slice(&port.to_be_bytes());
        let r = socks(&b).map_err(|e| e.reply);
        prop_assert_eq!(r.map(|r| (r.host, r.port)), Ok((want, port)));
    }

    /// A name the normaliser accepts is never an IP literal, is already
    /// normal (lowercase, no trailing dot, idempotent) and is a valid DNS
    /// name; an IP literal prints back to the same address.
    #[test]
    fn accepted_names_are_never_ip_literals(raw in host_text()) {
        match parse_host(&raw) {
            Ok(Host::Name(n)) => {
                prop_assert!(n.parse::<IpAddr>().is_err(), "{n}");
                prop_assert!(parse_ipv4_any(&n).is_none(), "{n}");
                prop_assert_eq!(n.to_ascii_lowercase(), n.clone());
                prop_assert!(!n.ends_with('.'));
                prop_assert!(n.len() <= 253);
                prop_assert!(n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
                prop_assert_eq!(parse_host(&n), Ok(Host::Name(n.clone())));
            }
            Ok(Host::Ip(ip)) => {
                prop_assert_eq!(parse_host(&Host::Ip(ip).to_string()), Ok(Host::Ip(ip)));
            }
            Err(_) => {}
        }
    }

    /// Every `inet_aton` spelling of an address is an address (or refused),
    /// never a name that a wildcard rule could match.
    #[test]
    fn ipv4_spellings_are_never_names(raw in ipv4_spelling()) {
        prop_assert!(!matches!(parse_host(&raw), Ok(Host::Name(_))), "{raw}");
    }

    /// A normalised path starts with `/`, holds no dot segment and no
    /// ambiguous escape, is printable ASCII, and is its own normal form.
    #[test]
    fn normalised_paths_have_no_dot_segments_and_are_idempotent(raw in path_text()) {
        if let Ok(n) = normalize(&raw) {
            prop_assert!(n.starts_with('/'));
            prop_assert!(n.split('/').all(|s| s != "." && s != ".."), "{raw:?} -> {n:?}");
            prop_assert!(n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'\\'));
            let upper = n.to_ascii_uppercase();
            prop_assert!(!upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%00"));
            prop_assert_eq!(normalize(&n), Ok(n.clone()), "{:?}", raw);
        }
    }

    /// The policy loader never panics, whatever the text.
    #[test]
    fn policy_loader_survives_random_toml(text in toml_text()) {
        let _ = crate::config::ProxyPolicy::from_toml(&text);
    }
}
