//! Finding secrets however they are spelled. Two directions:
//!
//! - Toward upstreams (leak checks), the proxy *decodes* what the sandbox
//!   sends (percent-encoding, possibly nested; base64 and base64url runs at
//!   every alignment; hex runs) and searches every view, ASCII
//!   case-insensitively, for the raw needle. Decoding the haystack catches
//!   any partial or mixed encoding an attacker can think of, which encoding
//!   the needle could not.
//! - Toward the sandbox (response scrubbing) and the audit log, the proxy
//!   cannot decode everything that streams past, so it searches for the
//!   secret's common *encodings*: raw, base64 and base64url (the characters
//!   that depend only on the secret, at each of the three alignments, so a
//!   secret inside a longer encoded string is found too), percent-encoding
//!   (every byte, and only the reserved ones), hex, and JSON escaping; hex
//!   and percent-encoding are matched case-insensitively (base64 and the
//!   raw secret too, which costs nothing and fails closed). Each match is
//!   overwritten with a filler of the same length, so `Content-Length`
//!   stays true and the framing of the response does not change.
//!
//! The matcher samples one byte in every `m` (the shortest pattern's
//! length) and verifies only the patterns that byte could belong to: a few
//! comparisons per `m` bytes, which keeps scrubbing a 1 MiB body well under
//! a millisecond (see docs/BENCHMARKS.md).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

/// Encoded forms shorter than this are not searched for: they would match
/// ordinary text (the raw secret is always searched for).
const MIN_ENCODED: usize = 8;

/// Case-insensitive multi-pattern search (patterns are stored lowercase).
///
/// A q-gram filter: with `m` the shortest pattern's length and `q` (up to
/// 4) the gram length, it reads one q-gram every `m - q + 1` bytes. Every
/// match starting at `s` contains exactly one sampled gram wholly inside
/// its first `m` bytes, so indexing each pattern's grams at offsets
/// `0..=m-q` finds every match; a 64 Kibit bitmap rejects almost every
/// sampled gram with one load.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Vec<u8>>,
    q: usize,
    min: usize,
    max: usize,
    bits: Vec<u64>,
    grams: std::collections::HashMap<u32, Vec<(u32, u32)>>,
    /// Bytes (lowercase) some pattern contains: a tail can only begin a
    /// match at one of these.
    inner: Vec<bool>,
}

/// ASCII lowercase, as a table.
const FOLD: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).to_ascii_lowercase();
        i += 1;
    }
    t
};

/// A q-gram's key. Four-byte grams (the usual case) are one load with bit
/// 5 set in every byte: that folds ASCII case (and merges a few other
/// pairs, harmless in a filter whose hits are verified exactly).
fn gram_key(bytes: &[u8]) -> u32 {
    match <[u8; 4]>::try_from(bytes) {
        Ok(four) => u32::from_le_bytes(four) | 0x2020_2020,
        Err(_) => bytes
            .iter()
            .fold(0u32, |k, b| (k << 8) | u32::from(FOLD[*b as usize])),
    }
}

fn gram_slot(key: u32) -> usize {
    (key.wrapping_mul(0x9e37_79b1) >> 16) as usize
}

impl Matcher {
    /// A matcher for `patterns` (empty ones are dropped).
    pub fn new(patterns: impl IntoIterator<Item = Vec<u8>>) -> Self {
        let mut patterns: Vec<Vec<u8>> = patterns
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.to_ascii_lowercase())
            .collect();
        patterns.sort();
        patterns.dedup();
        let min = patterns.iter().map(Vec::len).min().unwrap_or(0);
        let max = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let q = min.min(4);
        let mut bits = vec![0u64; 1 << 10];
        let mut grams: std::collections::HashMap<u32, Vec<(u32, u32)>> = Default::default();
        for (i, p) in patterns.iter().enumerate() {
            for j in 0..=(min - q) {
                let key = gram_key(&p[j..j + q]);
                let slot = gram_slot(key);
                bits[slot >> 6] |= 1 << (slot & 63);
                grams.entry(key).or_default().push((i as u32, j as u32));
            }
        }
        let mut inner = vec![false; 256];
        for p in &patterns {
            for b in p {
                inner[*b as usize] = true;
            }
        }
        Self {
            patterns,
            q,
            min,
            max,
            bits,
            grams,
            inner,
        }
    }

    /// Whether there is nothing to find.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The longest pattern's length.
    pub fn max_len(&self) -> usize {
        self.max
    }

    /// The earliest (then longest) match starting in `from..starts_before`,
    /// as (start, length). Matches must lie wholly inside `hay`.
    fn next_match(&self, hay: &[u8], from: usize, starts_before: usize) -> Option<(usize, usize)> {
        let (m, q) = (self.min, self.q);
        if m == 0 || hay.len() < m || from > hay.len() - m {
            return None;
        }
        let starts_before = starts_before.min(hay.len() - m + 1);
        let step = m - q + 1;
        let mut p = from;
        while p + q <= hay.len() {
            // Starts this sample can see: p-(m-q) ..= p.
            if p.saturating_sub(m - q) >= starts_before {
                return None;
            }
            let key = gram_key(&hay[p..p + q]);
            let slot = gram_slot(key);
            if self.bits[slot >> 6] & (1 << (slot & 63)) != 0 {
                let mut best: Option<(usize, usize)> = None;
                for &(pi, j) in self.grams.get(&key).map(Vec::as_slice).unwrap_or(&[]) {
                    let Some(s) = p.checked_sub(j as usize) else {
                        continue;
                    };
                    if s < from || s >= starts_before {
                        continue;
                    }
                    let pat = &self.patterns[pi as usize];
                    let Some(window) = hay.get(s..s + pat.len()) else {
                        continue;
                    };
                    if window.iter().zip(pat).all(|(a, b)| FOLD[*a as usize] == *b) {
                        let better = match best {
                            None => true,
                            Some((bs, bl)) => s < bs || (s == bs && pat.len() > bl),
                        };
                        if better {
                            best = Some((s, pat.len()));
                        }
                    }
                }
                if best.is_some() {
                    return best;
                }
            }
            p += step;
        }
        None
    }

    /// The length of the longest tail of `buf` (shorter than the longest
    /// pattern) that could be the start of a match: the bytes a stream
    /// must hold back. Usually 0 (a chunk that ends in a newline holds
    /// nothing back), so streamed events are not delayed.
    fn pending_prefix(&self, buf: &[u8]) -> usize {
        let most = self.max.saturating_sub(1).min(buf.len());
        // Only the tail after the last byte no pattern contains can begin
        // a match (usually none: text ends in a newline, a quote, a brace).
        let most = buf[buf.len() - most..]
            .iter()
            .rev()
            .take_while(|b| self.inner[FOLD[**b as usize] as usize])
            .count();
        (1..=most)
            .rev()
            .find(|&k| {
                let tail = &buf[buf.len() - k..];
                self.patterns.iter().any(|p| {
                    p.len() >= k && tail.iter().zip(p).all(|(a, b)| FOLD[*a as usize] == *b)
                })
            })
            .unwrap_or(0)
    }

    /// Whether any pattern occurs in `hay`.
    pub fn found_in(&self, hay: &[u8]) -> bool {
        self.next_match(hay, 0, hay.len()).is_some()
    }

    /// Overwrites every match starting before `starts_before` with `fill`.
    /// Returns how many were overwritten.
    fn overwrite(&self, buf: &mut [u8], starts_before: usize, fill: u8) -> usize {
        let mut at = 0;
        let mut n = 0;
        while let Some((s, len)) = self.next_match(buf, at, starts_before) {
            buf[s..s + len].fill(fill);
            at = s + len;
            n += 1;
        }
        n
    }
}

fn b64_alphabet(url: bool) -> &'static [u8; 64] {
    if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    }
}

/// Base64 without padding.
pub fn base64(data: &[u8], url: bool) -> Vec<u8> {
    let a = b64_alphabet(url);
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(a[((n >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    out
}

/// The base64 characters of `secret` that do not depend on what surrounds
/// it, when it starts `align` bytes into a 3-byte group.
fn base64_inner(secret: &[u8], align: usize, url: bool) -> Vec<u8> {
    let mut padded = vec![0u8; align];
    padded.extend_from_slice(secret);
    let enc = base64(&padded, url);
    let start_bit = 8 * align;
    let end_bit = 8 * (align + secret.len());
    let first = start_bit.div_ceil(6);
    let last = end_bit / 6; // exclusive: chars whose 6 bits end by end_bit
    enc.get(first..last.min(enc.len()))
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

fn hex(data: &[u8]) -> Vec<u8> {
    const H: &[u8; 16] = b"0123456789abcdef";
    data.iter()
        .flat_map(|b| [H[(b >> 4) as usize], H[(b & 15) as usize]])
        .collect()
}

fn percent_all(data: &[u8]) -> Vec<u8> {
    data.iter()
        .flat_map(|b| {
            let h = hex(&[*b]);
            [b'%', h[0], h[1]]
        })
        .collect()
}

fn percent_reserved(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in data {
        if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
            out.push(*b);
        } else {
            out.push(b'%');
            out.extend(hex(&[*b]));
        }
    }
    out
}

fn json_escaped(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in data {
        if matches!(b, b'"' | b'\\' | b'/') {
            out.push(b'\\');
        }
        out.push(*b);
    }
    out
}

/// The forms of `secret` searched for in responses and the audit log: the
/// raw value and its common encodings.
pub fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![secret.to_vec()];
    let mut encoded = vec![
        hex(secret),
        percent_all(secret),
        percent_reserved(secret),
        json_escaped(secret),
    ];
    for url in [false, true] {
        for align in 0..3 {
            encoded.push(base64_inner(secret, align, url));
        }
    }
    out.extend(encoded.into_iter().filter(|e| e.len() >= MIN_ENCODED));
    out
}

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'%' && i + 2 < data.len() {
            if let (Some(h), Some(l)) = (unhex(data[i + 1]), unhex(data[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

fn b64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

/// Decodes a run of base64 (either alphabet) characters, ignoring a
/// trailing partial group.
fn base64_decode(run: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(run.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in run {
        let Some(v) = b64_value(*c) else { break };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Maximal runs of bytes satisfying `f`, at least `min` long.
fn runs(data: &[u8], min: usize, f: impl Fn(u8) -> bool) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, b) in data.iter().enumerate() {
        match (f(*b), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s >= min {
                    out.push(&data[s..i]);
                }
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        if data.len() - s >= min {
            out.push(&data[s..]);
        }
    }
    out
}

/// Every decoded view of `data` a leak check searches: the bytes, their
/// percent-decoding (up to three nested layers), and for each of those the
/// base64/base64url runs decoded at every alignment and the hex runs
/// decoded at both alignments.
pub fn decoded_views(data: &[u8]) -> Vec<Vec<u8>> {
    let mut layers = vec![data.to_vec()];
    for _ in 0..3 {
        let next = percent_decode(layers.last().map(Vec::as_slice).unwrap_or_default());
        if layers.last().is_some_and(|l| *l == next) {
            break;
        }
        layers.push(next);
    }
    let mut views = Vec::new();
    for layer in &layers {
        for run in runs(layer, MIN_ENCODED, |b| b64_value(b).is_some()) {
            for off in 0..4.min(run.len()) {
                views.push(base64_decode(&run[off..]));
            }
        }
        for run in runs(layer, MIN_ENCODED, |b| unhex(b).is_some()) {
            for off in 0..2 {
                let digits = &run[off..];
                views.push(
                    digits
                        .chunks_exact(2)
                        .map(|p| unhex(p[0]).unwrap_or(0) << 4 | unhex(p[1]).unwrap_or(0))
                        .collect(),
                );
            }
        }
    }
    layers.extend(views);
    layers
}

/// Whether any of `matcher`'s patterns appears in `data` or any of its
/// decoded views.
pub fn found_decoded(matcher: &Matcher, data: &[u8]) -> bool {
    !matcher.is_empty() && decoded_views(data).iter().any(|v| matcher.found_in(v))
}

/// A host name as the leak check sees it: lowercase with every dot
/// removed, so a needle split across labels (`abc.def.example.com`) is
/// whole again.
pub fn undotted(name: &str) -> Vec<u8> {
    name.bytes().filter(|b| *b != b'.').collect()
}

/// `text` with every `(needle, replacement)` replaced, needles matched
/// ASCII case-insensitively.
pub fn replace_ci(text: &str, redactions: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (needle, replacement) in redactions {
        if needle.is_empty() || out.len() < needle.len() {
            continue;
        }
        let lower = out.to_ascii_lowercase();
        let want = needle.to_ascii_lowercase();
        if !lower.contains(&want) {
            continue;
        }
        // ASCII lowercasing keeps byte offsets, so matches in `lower` are
        // char boundaries in `out` too.
        let mut next = String::with_capacity(out.len());
        let mut at = 0;
        for (i, _) in lower.match_indices(&want) {
            next.push_str(&out[at..i]);
            next.push_str(replacement);
            at = i + want.len();
        }
        next.push_str(&out[at..]);
        out = next;
    }
    out
}

/// Redacts every string in `v` (an audit event): each needle is replaced
/// by its marker, any case; a string in which a decoded form (see
/// [`decoded_views`]) still shows one of `matcher`'s patterns becomes
/// `[redacted]` as a whole.
pub fn redact_json(v: &mut serde_json::Value, redactions: &[(String, String)], matcher: &Matcher) {
    match v {
        serde_json::Value::String(s) => {
            let mut clean = replace_ci(s, redactions);
            if found_decoded(matcher, clean.as_bytes()) || found_decoded(matcher, &undotted(&clean))
            {
                clean = "[redacted]".to_string();
            }
            if clean != *s {
                *s = clean;
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                redact_json(x, redactions, matcher);
            }
        }
        serde_json::Value::Object(o) => {
            for (_, x) in o.iter_mut() {
                redact_json(x, redactions, matcher);
            }
        }
        _ => {}
    }
}

/// Streaming scrubber: overwrites every match in a byte stream, also
/// across chunk boundaries, holding back only a tail that could begin one
/// (at most `max_len - 1` bytes).
#[derive(Debug)]
pub struct Scrubber {
    matcher: std::sync::Arc<Matcher>,
    fill: u8,
    carry: BytesMut,
    /// Matches overwritten so far.
    pub hits: usize,
}

/// The filler for scrubbed bytes: a byte none of the patterns contains, so
/// a filled span can never combine with what follows into a new match.
pub fn filler(matcher: &Matcher) -> u8 {
    [b'*', b'#', b'X', b'~', b'!', b'^', b'|']
        .into_iter()
        .find(|c| {
            let c = c.to_ascii_lowercase();
            matcher.patterns.iter().all(|p| !p.contains(&c))
        })
        .unwrap_or(b'*')
}

impl Scrubber {
    /// A scrubber for one stream.
    pub fn new(matcher: std::sync::Arc<Matcher>) -> Self {
        let fill = filler(&matcher);
        Self {
            matcher,
            fill,
            carry: BytesMut::new(),
            hits: 0,
        }
    }

    /// Feeds `chunk`; returns the bytes that are safe to pass on.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        if self.matcher.is_empty() {
            return Bytes::copy_from_slice(chunk);
        }
        self.carry.extend_from_slice(chunk);
        // Hold back only a tail that could begin a match; every match that
        // starts before it lies wholly in the buffer.
        let hold = self.matcher.pending_prefix(&self.carry);
        let safe = self.carry.len() - hold;
        self.hits += self.matcher.overwrite(&mut self.carry, safe, self.fill);
        self.carry.split_to(safe).freeze()
    }

    /// Ends the stream; returns what was held back, scrubbed.
    pub fn finish(&mut self) -> Bytes {
        let len = self.carry.len();
        self.hits += self.matcher.overwrite(&mut self.carry, len, self.fill);
        self.carry.split().freeze()
    }

    /// Scrubs a whole value at once (a header).
    pub fn scrub_all(matcher: &Matcher, value: &[u8]) -> Option<Vec<u8>> {
        let mut v = value.to_vec();
        let fill = filler(matcher);
        (matcher.overwrite(&mut v, value.len(), fill) > 0).then_some(v)
    }
}

/// A response body with every match scrubbed, streaming.
pub struct ScrubBody<B> {
    inner: B,
    scrubber: Scrubber,
    pending: VecDeque<Frame<Bytes>>,
    done: bool,
}

impl<B> ScrubBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, matcher: std::sync::Arc<Matcher>) -> Self {
        Self {
            inner,
            scrubber: Scrubber::new(matcher),
            pending: VecDeque::new(),
            done: false,
        }
    }
}

impl<B> Body for ScrubBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(f) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(f)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.scrubber.push(&data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        // Trailers: flush the held-back bytes first.
                        let rest = this.scrubber.finish();
                        if !rest.is_empty() {
                            this.pending.push_back(Frame::data(rest));
                        }
                        this.pending.push_back(frame);
                        this.done = true;
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = this.scrubber.finish();
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        // Scrubbing keeps lengths, so the inner hint stays true.
        if self.done {
            SizeHint::with_exact(
                self.pending
                    .iter()
                    .filter_map(|f| f.data_ref())
                    .map(|d| d.len() as u64)
                    .sum(),
            )
        } else {
            let inner = self.inner.size_hint();
            let held = self.scrubber.carry.len() as u64
                + self
                    .pending
                    .iter()
                    .filter_map(|f| f.data_ref())
                    .map(|d| d.len() as u64)
                    .sum::<u64>();
            let mut h = SizeHint::new();
            h.set_lower(inner.lower() + held);
            if let Some(u) = inner.upper() {
                h.set_upper(u + held);
            }
            h
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SECRET: &[u8] = b"sk-test-9f8e7d6c5b4a";

    fn matcher() -> Arc<Matcher> {
        Arc::new(Matcher::new(encodings(SECRET)))
    }

    fn every_encoding_of(s: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![
            s.to_vec(),
            s.to_ascii_uppercase(),
            hex(s),
            hex(s).to_ascii_uppercase(),
            percent_all(s),
            percent_all(s).to_ascii_uppercase(),
        ];
        for url in [false, true] {
            out.push(base64(s, url));
            // Inside longer encoded strings, at each alignment.
            for pre in [&b"u:"[..], b"ab:", b"x"] {
                let mut v = pre.to_vec();
                v.extend_from_slice(s);
                v.extend_from_slice(b"\n");
                out.push(base64(&v, url));
            }
        }
        out
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"hello", false), b"aGVsbG8");
        assert_eq!(base64(b"\xfb\xff", true), b"-_8");
        assert_eq!(base64_decode(b"aGVsbG8"), b"hello");
    }

    #[test]
    fn every_encoding_is_scrubbed_from_a_body_split_anywhere() {
        let m = matcher();
        for enc in every_encoding_of(SECRET) {
            let mut body = b"{\"echo\": \"".to_vec();
            body.extend_from_slice(&enc);
            body.extend_from_slice(b"\"}");
            for split in 0..body.len() {
                let mut s = Scrubber::new(m.clone());
                let mut out = s.push(&body[..split]).to_vec();
                out.extend_from_slice(&s.push(&body[split..]));
                out.extend_from_slice(&s.finish());
                assert_eq!(out.len(), body.len(), "same length");
                assert!(
                    !found_decoded(&Matcher::new([SECRET.to_vec()]), &out),
                    "{} left in {}",
                    String::from_utf8_lossy(&enc),
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }

    #[test]
    fn a_body_byte_by_byte_is_scrubbed_too() {
        let m = matcher();
        let mut body = b"abc ".repeat(10);
        body.extend_from_slice(SECRET);
        body.extend_from_slice(b" tail");
        let mut s = Scrubber::new(m);
        let mut out = Vec::new();
        for b in &body {
            out.extend_from_slice(&s.push(&[*b]));
        }
        out.extend_from_slice(&s.finish());
        assert_eq!(out.len(), body.len());
        assert!(!out.windows(SECRET.len()).any(|w| w == SECRET));
        assert!(out.ends_with(b" tail"));
        assert_eq!(s.hits, 1);
    }

    #[test]
    fn a_streamed_event_is_not_held_back() {
        // Server-sent events end in a newline, which no encoding of a
        // secret contains: each one goes through whole, at once.
        let mut s = Scrubber::new(matcher());
        let event = b"data: {\"delta\": \"sk-test\"}\n\n";
        assert_eq!(&s.push(event)[..], &event[..]);
        // A tail that could begin the secret waits for the next chunk.
        let out = s.push(b"data: sk-te");
        assert_eq!(&out[..], b"data: ");
        let out = s.push(b"st-9f8e7d6c5b4a\n");
        assert!(!out.windows(SECRET.len()).any(|w| w == SECRET));
        assert!(out.ends_with(b"\n"));
    }

    #[test]
    fn text_without_the_secret_passes_unchanged() {
        let m = matcher();
        let body = b"sk-test- almost 736b2d74 but not quite".repeat(50);
        let mut s = Scrubber::new(m);
        let mut out = s.push(&body).to_vec();
        out.extend_from_slice(&s.finish());
        assert_eq!(out, body);
    }

    #[test]
    fn leak_checks_see_through_encodings_and_case() {
        let m = Matcher::new([SECRET.to_vec()]);
        for enc in every_encoding_of(SECRET) {
            let mut url = b"/v1/x/".to_vec();
            url.extend_from_slice(&enc);
            assert!(found_decoded(&m, &url), "{}", String::from_utf8_lossy(&url));
        }
        // Partial, mixed-case and double percent-encoding.
        assert!(found_decoded(&m, b"/sk-%74%45st-9f8e7d6c5b4a"));
        assert!(found_decoded(&m, b"/sk%252dtest-9f8e7d6c5b4a"));
        assert!(!found_decoded(&m, b"/sk-test-9f8e7d6c5b4"));
        assert!(found_decoded(
            &m,
            &undotted("sk-te.st-9f8e7d.6c5b4a.wild.test")
        ));
    }
}
