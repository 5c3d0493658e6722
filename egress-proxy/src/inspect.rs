//! What the proxy looks at inside a request before it lets it go: the
//! first 64 KiB of the body (held back, then replayed), the headers and the
//! URL, searched for secrets and placeholders bound to other hosts; and,
//! for hosts a credential is bound to, the injection itself.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::Request;

use crate::credentials::Apply;
use crate::scrub::{found_decoded, Matcher};
use crate::secrets::{Credential, Credentials};

/// How much of a body is searched for leaked credentials.
pub const SCAN_LIMIT: usize = 64 << 10;

/// A body whose first frames were read ahead, replayed before the rest.
#[derive(Debug)]
pub struct PrefixedBody {
    prefix: VecDeque<Frame<Bytes>>,
    prefix_len: u64,
    rest: Option<Incoming>,
}

impl Body for PrefixedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(f) = this.prefix.pop_front() {
            if let Some(d) = f.data_ref() {
                this.prefix_len -= d.len() as u64;
            }
            return Poll::Ready(Some(Ok(f)));
        }
        match &mut this.rest {
            Some(r) => Pin::new(r).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self
            .rest
            .as_ref()
            .map(|r| r.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0));
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + self.prefix_len);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + self.prefix_len);
        }
        hint
    }
}

/// Reads up to [`SCAN_LIMIT`] bytes of `body` ahead. Returns the bytes read
/// (for scanning) and a body that replays them.
pub async fn read_ahead(mut body: Incoming) -> Result<(Vec<u8>, PrefixedBody), hyper::Error> {
    let mut seen = Vec::new();
    let mut prefix = VecDeque::new();
    let mut prefix_len = 0u64;
    let mut ended = body.is_end_stream();
    while !ended && seen.len() < SCAN_LIMIT {
        match body.frame().await {
            None => ended = true,
            Some(Err(e)) => return Err(e),
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    let take = d.len().min(SCAN_LIMIT - seen.len());
                    seen.extend_from_slice(&d[..take]);
                    prefix_len += d.len() as u64;
                }
                prefix.push_back(f);
            }
        }
    }
    Ok((
        seen,
        PrefixedBody {
            prefix,
            prefix_len,
            rest: (!ended).then_some(body),
        },
    ))
}

/// The request line's target and every header, as bytes to search.
pub fn head_bytes<B>(req: &Request<B>) -> Vec<u8> {
    head_bytes_except(req, &[])
}

/// Like [`head_bytes`], leaving out the headers named in `skip`
/// (lowercase).
fn head_bytes_except<B>(req: &Request<B>, skip: &[String]) -> Vec<u8> {
    let mut out = req.uri().to_string().into_bytes();
    for (k, v) in req.headers() {
        if skip.iter().any(|s| s == k.as_str()) {
            continue;
        }
        out.push(b'\n');
        out.extend_from_slice(k.as_str().as_bytes());
        out.push(b':');
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// A credential found heading somewhere it is not bound to.
pub fn find_leak<'a>(
    creds: &'a Credentials,
    host: &str,
    head: &[u8],
    body: &[u8],
) -> Option<&'a Credential> {
    creds
        .leaked_to(host, head)
        .or_else(|| creds.leaked_to(host, body))
}

/// A placeholder credential bound to `host` whose placeholder appears
/// outside the headers it declares (another header, the URL, the body):
/// refused, since an upstream that reflects what it receives would hand
/// the swapped-in secret back.
pub fn find_misplaced<'a, B>(
    creds: &'a Credentials,
    host: &'a str,
    req: &Request<B>,
    body: &[u8],
) -> Option<&'a Credential> {
    creds.bound_to(host).find(|c| {
        let (Apply::Placeholder { headers, .. }, Some(ph)) =
            (&c.spec.apply, c.placeholder.as_deref())
        else {
            return false;
        };
        let m = Matcher::new([ph.as_bytes().to_vec()]);
        found_decoded(&m, &head_bytes_except(req, headers)) || found_decoded(&m, body)
    })
}

/// Applies every credential bound to `host`: sets injected headers and
/// swaps placeholders for secrets in the headers their credential names
/// (nowhere else). Returns the names of the credentials used.
pub fn inject<B>(creds: &Credentials, host: &str, req: &mut Request<B>) -> Vec<String> {
    let mut used = Vec::new();
    for c in creds.bound_to(host) {
        match &c.spec.apply {
            Apply::Header { name, template } => {
                let value = template.replace("{secret}", c.secret.expose());
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    req.headers_mut().insert(n, v);
                    used.push(c.spec.name.clone());
                }
            }
            Apply::Placeholder { headers, .. } => {
                let Some(ph) = c.placeholder.as_deref() else {
                    continue;
                };
                let mut replaced = false;
                for name in headers {
                    let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                        continue;
                    };
                    if let hyper::header::Entry::Occupied(mut e) = req.headers_mut().entry(name) {
                        for v in e.iter_mut() {
                            let Ok(s) = v.to_str() else { continue };
                            if !s.contains(ph) {
                                continue;
                            }
                            if let Ok(new) =
                                HeaderValue::from_str(&s.replace(ph, c.secret.expose()))
                            {
                                *v = new;
                                replaced = true;
                            }
                        }
                    }
                }
                if replaced {
                    used.push(c.spec.name.clone());
                }
            }
        }
    }
    used
}
