//! Request paths in normal form (RFC 3986 section 6.2.2), so a method/path
//! rule matches what the upstream will serve and not the bytes the client
//! chose: `/v1/../admin`, `/v1/%2e%2e/admin` and `/V1/%7euser` must be
//! judged as `/admin` and `/V1/~user`. Forms whose meaning depends on the
//! upstream (an encoded `/` or `\`, a NUL, a backslash, a `..;` segment
//! that Tomcat-style servers read as `..`) are refused rather than guessed.

use std::fmt;

/// Why a path cannot be put in normal form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (`*`, empty authority forms).
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadPercent,
    /// `%2F`: one server splits on it, the next does not.
    EncodedSlash,
    /// `%5C` or a raw `\`: some servers read it as `/`.
    Backslash,
    /// `%00`: C-string handling truncates the path upstream.
    Nul,
    /// A raw byte outside printable ASCII.
    BadByte,
    /// `..;x`, `.;x` or `..%3B`: servers that strip path parameters see a
    /// dot segment the normal form does not.
    DotWithParameter,
    /// `%25` before two hex digits (`%252e`): a server that decodes twice
    /// sees an escape the normal form does not.
    DoubleEncoding,
}

impl PathError {
    /// The stable reason sent as `X-Airlock-Deny`.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path-not-absolute",
            PathError::BadPercent => "path-bad-percent-encoding",
            PathError::EncodedSlash => "path-encoded-slash",
            PathError::Backslash => "path-backslash",
            PathError::Nul => "path-nul",
            PathError::BadByte => "path-bad-byte",
            PathError::DotWithParameter => "path-dot-segment-parameter",
            PathError::DoubleEncoding => "path-double-encoding",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path does not start with '/'",
            PathError::BadPercent => "a '%' is not followed by two hex digits",
            PathError::EncodedSlash => "the path contains an encoded '/' (%2F)",
            PathError::Backslash => "the path contains a backslash (raw or %5C)",
            PathError::Nul => "the path contains an encoded NUL (%00)",
            PathError::BadByte => "the path contains a byte outside printable ASCII",
            PathError::DotWithParameter => "a dot segment carries a ';' parameter",
            PathError::DoubleEncoding => {
                "the path holds an encoded escape (%25 and two hex digits)"
            }
        })
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Puts `raw` (a path without its query) in normal form: percent-encoded
/// unreserved characters decoded, other escapes in uppercase hex, dot
/// segments removed. Ambiguous forms are errors.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadPercent);
                };
                let v = hi << 4 | lo;
                match v {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0 => return Err(PathError::Nul),
                    v if unreserved(v) => decoded.push(char::from(v)),
                    v => decoded.push_str(&format!("%{v:02X}")),
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            0x21..=0x7e => decoded.push(char::from(b)),
            _ => return Err(PathError::BadByte),
        }
        i += 1;
    }
    // Checked on the decoded form, so `%25%34%31` (which decodes to
    // `%2541`) is caught too and normalising twice changes nothing.
    let d = decoded.as_bytes();
    if (0..d.len()).any(|i| {
        d[i..].starts_with(b"%25")
            && d.get(i + 3).copied().and_then(hex).is_some()
            && d.get(i + 4).copied().and_then(hex).is_some()
    }) {
        return Err(PathError::DoubleEncoding);
    }
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    if segments.iter().any(|s| dot_with_parameter(s)) {
        return Err(PathError::DotWithParameter);
    }
    Ok(remove_dot_segments(&segments))
}

/// Whether a segment (unreserved escapes already decoded) is a dot
/// segment once path parameters are stripped, before or after decoding
/// the rest: `..;x`, `.;`, `..%3B`, `..%3Bx`.
fn dot_with_parameter(segment: &str) -> bool {
    if segment == "." || segment == ".." {
        return false;
    }
    segment
        .replace("%3B", ";")
        .split_once(';')
        .is_some_and(|(head, _)| head == "." || head == "..")
}

/// RFC 3986 section 5.2.4 on an absolute path split at `/` (the leading
/// empty segment dropped): `.` goes, `..` removes the segment before it,
/// and a final dot segment leaves a trailing `/`.
fn remove_dot_segments(segments: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(segments.iter().map(|s| s.len() + 1).sum());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// Whether `path` is already in normal form (what rule paths in a policy
/// must be written in).
pub fn is_normal(path: &str) -> bool {
    normalize(path).is_ok_and(|n| n == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_judged_in_normal_form() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/v1/messages", Ok("/v1/messages")),
            ("/v1/../admin/secret.txt", Ok("/admin/secret.txt")),
            ("/v1/%2e%2e/admin/secret.txt", Ok("/admin/secret.txt")),
            ("/v1/%2E%2e/admin", Ok("/admin")),
            ("/v1/.%2e/admin", Ok("/admin")),
            ("/v1/./x", Ok("/v1/x")),
            ("/v1/x/.", Ok("/v1/x/")),
            ("/v1/x/..", Ok("/v1/")),
            ("/..", Ok("/")),
            ("/../../etc/passwd", Ok("/etc/passwd")),
            ("/v1/%7euser", Ok("/v1/~user")),
            ("/v1/%41%62c", Ok("/v1/Abc")),
            ("/v1/a%2cb", Ok("/v1/a%2Cb")),
            ("/v1/%252e%252e/admin", Err(PathError::DoubleEncoding)),
            ("/v1/%25", Ok("/v1/%25")),
            ("/v1/%25zz", Ok("/v1/%25zz")),
            ("/v1/%25%34%31", Err(PathError::DoubleEncoding)),
            ("/v1/..%3b/admin", Err(PathError::DotWithParameter)),
            ("/v1/%2e%2e%3Bx/admin", Err(PathError::DotWithParameter)),
            ("/v1/a%3b/x", Ok("/v1/a%3B/x")),
            ("/v1//x", Ok("/v1//x")),
            ("/v1/...", Ok("/v1/...")),
            ("/v1/..a", Ok("/v1/..a")),
            ("/v1/x;a=b", Ok("/v1/x;a=b")),
            ("/v1/..%2fadmin/secret.txt", Err(PathError::EncodedSlash)),
            ("/v1/%2Fadmin", Err(PathError::EncodedSlash)),
            ("/v1/..%5cadmin", Err(PathError::Backslash)),
            ("/v1/..\\admin", Err(PathError::Backslash)),
            ("/v1/x%00.txt", Err(PathError::Nul)),
            ("/v1/%zz", Err(PathError::BadPercent)),
            ("/v1/%2", Err(PathError::BadPercent)),
            ("/v1/%", Err(PathError::BadPercent)),
            ("/v1/..;/admin", Err(PathError::DotWithParameter)),
            ("/v1/.;x/admin", Err(PathError::DotWithParameter)),
            ("/v1/%2e%2e;/admin", Err(PathError::DotWithParameter)),
            ("/v1/\u{e9}", Err(PathError::BadByte)),
            ("/v1/a b", Err(PathError::BadByte)),
            ("*", Err(PathError::NotAbsolute)),
            ("", Err(PathError::NotAbsolute)),
            ("v1/x", Err(PathError::NotAbsolute)),
        ];
        for (raw, want) in cases {
            assert_eq!(
                normalize(raw).as_deref().map_err(|e| *e),
                want.as_deref().map_err(|e| *e),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn normal_form_is_recognised() {
        assert!(is_normal("/v1/"));
        assert!(is_normal("/v1/messages"));
        assert!(!is_normal("/v1/../x"));
        assert!(!is_normal("/v1/%7e"));
        assert!(!is_normal("v1"));
    }
}
