//! Finding, reading and validating profile files, and following `extends`.
//!
//! A profile named `NAME` (letters, digits, `-`, `_`) is the first
//! `NAME.toml` found in, in order:
//!
//! 1. `~/.config/airlock/profiles` (`$XDG_CONFIG_HOME/airlock/profiles`),
//! 2. `/etc/airlock/profiles`,
//! 3. the installation's `share/airlock/profiles` (`<exe>/../share/airlock/profiles`),
//! 4. a source checkout's `profiles/` (`<repo>/target/<profile>/sandbox` finds
//!    `<repo>/profiles`).
//!
//! Anything containing a `/` or ending in `.toml` is a path instead (relative
//! to the current directory, or in `extends` to the extending file). The
//! managed policy bounds whatever these files say, so where a name resolves
//! is a convenience, not a trust decision.

use std::path::{Path, PathBuf};

use egress_proxy::config::RawNetwork;
use egress_proxy::credentials::valid_env_name;
use egress_proxy::policy::{at, Cidr, DenyRule, DomainRule};
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::format::{parse_size, ProfileDoc, RawManaged};
use super::merge::{Entry, Rules};

/// The embedded default, identical to the shipped `profiles/default.toml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../profiles/default.toml");
/// How the embedded default is named in messages and `policy show`.
pub const EMBEDDED_LABEL: &str = "<embedded default>";

/// One validated profile or managed-policy file.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The file (as given or found), or [`EMBEDDED_LABEL`].
    pub label: String,
    /// The canonical path, for cycle detection and relative `extends`.
    pub path: Option<PathBuf>,
    /// SHA-256 of the file's bytes, in hex.
    pub sha256: String,
    /// `profile.name`.
    pub name: Option<String>,
    /// `profile.description`.
    pub description: Option<String>,
    /// `profile.extends`, each with its position.
    pub extends: Vec<Entry<String>>,
    /// What the file grants and denies.
    pub rules: Rules,
    /// `[managed]`, if present.
    pub managed: Option<RawManaged>,
    /// Whether `[network]` has an `allow` key (a managed allowlist bounds
    /// profiles only when it is written, even as `allow = []`).
    pub has_network_allow: bool,
    /// Whether `[network]` has an `allow_cidr` key.
    pub has_network_cidr: bool,
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The directories searched for profile names, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".config"))
        });
    if let Some(c) = config {
        dirs.push(c.join("airlock/profiles"));
    }
    dirs.push(PathBuf::from("/etc/airlock/profiles"));
    if let Some(bin_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(bin_dir.join("../share/airlock/profiles"));
        // target/debug/sandbox in a checkout: the repository's profiles/.
        let repo = bin_dir.join("../..");
        if repo.join("Cargo.toml").is_file() {
            dirs.push(repo.join("profiles"));
        }
    }
    dirs
}

/// Is `spec` a path (rather than a name to look up)?
fn is_path(spec: &str) -> bool {
    spec.contains('/') || spec.ends_with(".toml")
}

/// Finds the file a profile name or path refers to. Paths in `extends` are
/// relative to `base` (the extending file's directory).
pub fn resolve(spec: &str, base: Option<&Path>) -> Result<PathBuf, String> {
    if is_path(spec) {
        let p = Path::new(spec);
        let p = match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p.to_path_buf(),
        };
        return std::fs::canonicalize(&p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    }
    if spec.is_empty()
        || !spec
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "'{spec}' is neither a profile name (letters, digits, '-', '_') nor a path"
        ));
    }
    let dirs = search_dirs();
    for dir in &dirs {
        let candidate = dir.join(format!("{spec}.toml"));
        if candidate.is_file() {
            return std::fs::canonicalize(&candidate)
                .map_err(|e| format!("cannot read {}: {e}", candidate.display()));
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "no profile named '{spec}' (searched {}); give a path to use a file elsewhere",
        searched.join(", ")
    ))
}

/// Reads and validates one file.
pub fn read_layer(path: &Path) -> Result<Layer, Vec<String>> {
    match read_partial(path)? {
        (layer, errors) if errors.is_empty() => Ok(layer),
        (_, errors) => Err(errors),
    }
}

/// Reads one file as [`parse_partial`] does.
pub fn read_partial(path: &Path) -> Result<(Layer, Vec<String>), Vec<String>> {
    let label = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| vec![format!("{label}: cannot read: {e}")])?;
    let text = String::from_utf8(bytes)
        .map_err(|_| vec![format!("{label}: not UTF-8 text (profiles are TOML)")])?;
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    parse_partial(&label, Some(canonical), &text)
}

/// The embedded default as a layer.
pub fn embedded_default() -> Layer {
    match parse_layer(EMBEDDED_LABEL, None, EMBEDDED_DEFAULT) {
        Ok(layer) => layer,
        // A test parses the shipped file, so this cannot happen in a
        // released build; fail closed with an empty (deny-all) layer.
        Err(_) => Layer {
            label: EMBEDDED_LABEL.to_string(),
            path: None,
            sha256: sha256_hex(EMBEDDED_DEFAULT.as_bytes()),
            name: None,
            description: None,
            extends: Vec::new(),
            rules: Rules::default(),
            managed: None,
            has_network_allow: false,
            has_network_cidr: false,
        },
    }
}

/// Parses and validates a document; every error reads `LABEL:LINE:COL: what`.
pub fn parse_layer(label: &str, path: Option<PathBuf>, text: &str) -> Result<Layer, Vec<String>> {
    match parse_partial(label, path, text)? {
        (layer, errors) if errors.is_empty() => Ok(layer),
        (_, errors) => Err(errors),
    }
}

/// Like [`parse_layer`], but a document whose structure parses yields its
/// layer (without the bad entries) along with the errors, so `policy
/// check` can go on to its `extends` and report everything at once.
pub fn parse_partial(
    label: &str,
    path: Option<PathBuf>,
    text: &str,
) -> Result<(Layer, Vec<String>), Vec<String>> {
    let (doc, readable, doc_errors) = lenient_doc(label, text);
    let table: toml::Table = toml::from_str(&readable).unwrap_or_default();
    let network_table = table.get("network").and_then(|n| n.as_table());
    let mut v = Validator {
        label,
        text,
        errors: doc_errors,
    };
    let mut rules = Rules::default();
    let fs = doc.filesystem;
    rules.read = v.paths(fs.read, false);
    rules.write = v.paths(fs.write, false);
    for (key, list) in [("read", &rules.read), ("write", &rules.write)] {
        for e in list {
            if let Some(why) = grant_conflict(Path::new(&e.value)) {
                v.errors
                    .push(format!("{}: filesystem.{key}: {why}", e.origin));
            }
        }
    }
    rules.deny = v.paths(fs.deny, true);
    for p in fs.protect {
        let s = p.get_ref().trim().trim_end_matches('/').to_string();
        if s.is_empty()
            || s.starts_with('/')
            || s.contains("${")
            || s.contains('*')
            || s.split('/').any(|c| c == ".." || c == "." || c.is_empty())
        {
            v.error(
                p.span().start,
                &format!(
                    "protect '{s}': give a path relative to each writable tree, e.g. '.git/info'"
                ),
            );
        } else {
            rules.protect.push(v.entry(p.span().start, s));
        }
    }
    v.network(doc.network, &mut rules);
    let mut names: Vec<(String, String)> = Vec::new();
    for c in doc.credentials {
        let pos = c.name.span().start;
        match c.validate(text) {
            Ok(spec) => {
                let origin = v.origin(pos);
                if let Some((_, first)) = names.iter().find(|(n, _)| *n == spec.name) {
                    v.error(
                        pos,
                        &format!("credential '{}' is already declared at {first}", spec.name),
                    );
                }
                names.push((spec.name.clone(), origin));
                rules.credentials.push(v.entry(pos, spec));
            }
            Err(e) => v.errors.push(format!("{label}:{e}")),
        }
    }
    v.limits(doc.limits, &mut rules);
    for p in doc.env.pass {
        if valid_env_name(p.get_ref()) {
            rules
                .env_pass
                .push(v.entry(p.span().start, p.get_ref().clone()));
        } else {
            v.error(
                p.span().start,
                &format!("env.pass: '{}' is not a variable name", p.get_ref()),
            );
        }
    }
    for (k, value) in doc.env.set {
        if !valid_env_name(k.get_ref()) {
            v.error(
                k.span().start,
                &format!("env.set: '{}' is not a variable name", k.get_ref()),
            );
        } else if value.contains('\0') {
            v.error(
                k.span().start,
                &format!("env.set.{}: the value contains NUL", k.get_ref()),
            );
        } else {
            rules
                .env_set
                .push(v.entry(k.span().start, (k.get_ref().clone(), value)));
        }
    }
    let extends: Vec<Entry<String>> = doc
        .profile
        .extends
        .iter()
        .map(|e| v.entry(e.span().start, e.get_ref().clone()))
        .collect();
    if doc.managed.is_some() && !extends.is_empty() {
        v.error(
            doc.profile.extends[0].span().start,
            "the managed policy extends nothing: it is one file an administrator reviews whole",
        );
    }
    let layer = Layer {
        label: label.to_string(),
        path,
        sha256: sha256_hex(text.as_bytes()),
        name: doc.profile.name,
        description: doc.profile.description,
        extends,
        rules,
        managed: doc.managed,
        has_network_allow: network_table.is_some_and(|n| n.contains_key("allow")),
        has_network_cidr: network_table.is_some_and(|n| n.contains_key("allow_cidr")),
    };
    let mut errors = v.errors;
    sort_by_position(&mut errors);
    Ok((layer, errors))
}

/// Most errors one document is worth reporting in one go.
const MAX_DOC_ERRORS: usize = 64;

/// Deserializes `text`, and where that fails records the error, blanks
/// what it points at and tries again, so `policy check` lists every
/// syntax and type error instead of the first. A syntax error blanks its
/// line; a type error its statement, or its whole table when it points at
/// a table header (an unknown `[filesys]`). Blanking keeps every byte
/// offset, so positions stay those of the file. Returns the document of
/// what remained, that text, and the errors; with any error the layer is
/// only for reporting (`parse_layer` refuses it).
fn lenient_doc(label: &str, text: &str) -> (ProfileDoc, String, Vec<String>) {
    let mut current = text.to_string();
    let mut errors = Vec::new();
    while errors.len() < MAX_DOC_ERRORS {
        let syntax = toml::from_str::<toml::Table>(&current).err();
        let failure = match &syntax {
            Some(e) => e.clone(),
            None => match toml::from_str::<ProfileDoc>(&current) {
                Ok(doc) => return (doc, current, errors),
                Err(e) => e,
            },
        };
        // Spans are byte offsets; never slice inside a character.
        let mut offset = failure.span().map(|s| {
            let mut o = s.start.min(current.len());
            while !current.is_char_boundary(o) {
                o -= 1;
            }
            o
        });
        let mut message = failure.message().trim_end().to_string();
        let mut range = None;
        if let (Some(_), Some(o)) = (&syntax, offset) {
            // The parser notices an unclosed `[` or `{` only at the next
            // statement; name the statement that left it open instead.
            if let Some(open) = unclosed_before(&current, o) {
                message = "unclosed '[' or '{': a ']' or '}' is missing".to_string();
                offset = Some(open.start);
                range = Some(open);
            }
        }
        let shown = match offset {
            Some(o) if text.is_char_boundary(o.min(text.len())) => text,
            _ => current.as_str(),
        };
        errors.push(format!("{label}:{}", at(shown, offset, &message)));
        let Some(offset) = offset else { break };
        let range = range.unwrap_or_else(|| {
            if syntax.is_some() {
                line_at(&current, offset)
            } else {
                statement_at(&current, offset)
            }
        });
        let blanked = blank(&current, range);
        if blanked == current {
            break;
        }
        current = blanked;
    }
    (ProfileDoc::default(), current, errors)
}

/// The byte range of the line holding `offset` (without its newline).
fn line_at(text: &str, offset: usize) -> std::ops::Range<usize> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    start..end
}

/// Whether a line starts a statement: a table header or `key =`.
fn starts_statement(line: &str) -> bool {
    let t = line.trim_start();
    if t.starts_with('[') {
        return true;
    }
    let key_end = if let Some(rest) = t.strip_prefix('"') {
        rest.find('"').map(|i| i + 2)
    } else if let Some(rest) = t.strip_prefix('\'') {
        rest.find('\'').map(|i| i + 2)
    } else {
        t.find(|c: char| !(c.is_ascii_alphanumeric() || "_-.".contains(c)))
    };
    match key_end {
        Some(end) if end > 0 => t[end..].trim_start().starts_with('='),
        _ => false,
    }
}

/// When the syntax error at `offset` is at the start of a statement and
/// the statement before it left a bracket open, that statement's lines
/// (from its first line to just before `offset`).
fn unclosed_before(text: &str, offset: usize) -> Option<std::ops::Range<usize>> {
    let line = line_at(text, offset);
    if !starts_statement(&text[line.clone()]) || text[line.start..offset].trim() != "" {
        return None;
    }
    let before = &text[..line.start];
    let mut starts: Vec<usize> = vec![0];
    starts.extend(
        before
            .match_indices('\n')
            .map(|(i, _)| i + 1)
            .filter(|&i| i < before.len()),
    );
    let start = starts.iter().rev().copied().find(|&s| {
        let end = before[s..].find('\n').map_or(before.len(), |e| s + e);
        starts_statement(&before[s..end])
    })?;
    let chunk = &text[start..line.start];
    let open = statements(chunk)
        .last()
        .is_some_and(|(r, _)| r.end == chunk.len() || chunk[r.end..].trim().is_empty())
        && depth_after(chunk) > 0;
    open.then(|| start..line.start.saturating_sub(1).max(start))
}

/// Brackets left open at the end of `text` (strings and comments skipped).
fn depth_after(text: &str) -> usize {
    let mut depth = 0usize;
    let mut in_str: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (in_str, c) {
            (Some('"'), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q || c == '\n' => in_str = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => in_str = Some(c),
            (None, '#') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    depth
}

/// The top-level statements of a (syntactically valid) document: each
/// `key = value` (however many lines its value spans) and each table
/// header, as byte ranges, with whether it is a header.
fn statements(text: &str) -> Vec<(std::ops::Range<usize>, bool)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut depth, mut start) = (0, 0usize, None::<(usize, bool)>);
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                let quote: &[u8] = if b == b'"' { b"\"\"\"" } else { b"'''" };
                let triple = bytes[i..].starts_with(quote);
                let close = if triple { quote } else { &quote[..1] };
                if start.is_none() {
                    start = Some((i, false));
                }
                let mut j = i + close.len();
                while j < bytes.len() {
                    if b == b'"' && bytes[j] == b'\\' {
                        j += 2;
                        continue;
                    }
                    if !triple && bytes[j] == b'\n' {
                        break;
                    }
                    if bytes[j..].starts_with(close) {
                        j += close.len();
                        break;
                    }
                    j += 1;
                }
                i = j;
                continue;
            }
            b'[' | b'{' => {
                if start.is_none() {
                    start = Some((i, b == b'['));
                }
                depth += 1;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' if depth == 0 || start.is_some_and(|(_, header)| header) => {
                if let Some((s, header)) = start.take() {
                    out.push((s..i, header));
                }
                depth = 0;
            }
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => {
                if start.is_none() {
                    start = Some((i, false));
                }
            }
        }
        i += 1;
    }
    if let Some((s, header)) = start {
        out.push((s..bytes.len(), header));
    }
    out
}

/// What a type error at `offset` takes out: its statement, or a header's
/// whole table (up to the next header).
fn statement_at(text: &str, offset: usize) -> std::ops::Range<usize> {
    let all = statements(text);
    let Some(k) = all.iter().rposition(|(r, _)| r.start <= offset) else {
        return line_at(text, offset);
    };
    let (range, header) = all[k].clone();
    if !header {
        return range;
    }
    let end = all[k + 1..]
        .iter()
        .find(|(_, h)| *h)
        .map_or(text.len(), |(r, _)| r.start);
    range.start..end
}

/// `text` with every byte of `range` but newlines made a space.
fn blank(text: &str, range: std::ops::Range<usize>) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for b in &mut bytes[range] {
        if *b != b'\n' {
            *b = b' ';
        }
    }
    // Only whole characters are blanked (ranges start and end at ASCII
    // or at line ends), so this stays UTF-8; if not, keep the text.
    String::from_utf8(bytes).unwrap_or_else(|_| text.to_string())
}

/// The `LABEL:LINE:COL: ` position an error starts with, if it has one:
/// the first `:LINE:COL:` in it.
pub fn error_position(e: &str) -> Option<(&str, usize, usize)> {
    for (i, _) in e.match_indices(':') {
        let mut parts = e[i + 1..].splitn(3, ':');
        if let (Some(l), Some(c), Some(_)) = (parts.next(), parts.next(), parts.next()) {
            if let (Ok(l), Ok(c)) = (l.parse(), c.parse()) {
                return Some((&e[..i], l, c));
            }
        }
    }
    None
}

/// Sorts errors by file (in order of first mention), then line and column;
/// errors without a position keep their place ahead of their file's.
pub fn sort_by_position(errors: &mut [String]) {
    let mut files: Vec<String> = Vec::new();
    for e in errors.iter() {
        let file = error_position(e).map_or(e.as_str(), |(f, _, _)| f);
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    errors.sort_by_key(|e| match error_position(e) {
        Some((f, l, c)) => (files.iter().position(|x| x == f), l, c),
        None => (files.iter().position(|x| x == e), 0, 0),
    });
}

struct Validator<'a> {
    label: &'a str,
    text: &'a str,
    errors: Vec<String>,
}

impl Validator<'_> {
    fn origin(&self, offset: usize) -> String {
        format!("{}:{}", self.label, at(self.text, Some(offset), ""))
            .trim_end_matches(": ")
            .to_string()
    }

    fn entry<T>(&self, offset: usize, value: T) -> Entry<T> {
        Entry {
            value,
            origin: self.origin(offset),
        }
    }

    fn error(&mut self, offset: usize, what: &str) {
        self.errors.push(format!(
            "{}:{}",
            self.label,
            at(self.text, Some(offset), what)
        ));
    }

    fn paths(&mut self, items: Vec<Spanned<String>>, glob_ok: bool) -> Vec<Entry<String>> {
        let mut out = Vec::new();
        for item in items {
            match path_template(item.get_ref(), glob_ok) {
                Ok(p) => out.push(self.entry(item.span().start, p)),
                Err(e) => self.error(item.span().start, &e),
            }
        }
        out
    }

    fn network(&mut self, raw: RawNetwork, rules: &mut Rules) {
        for a in &raw.allow {
            match DomainRule::parse(a.get_ref()) {
                Ok(r) => rules.allow.push(self.entry(a.span().start, r)),
                Err(e) => self.error(a.span().start, &e.to_string()),
            }
        }
        for d in &raw.deny {
            match DenyRule::parse(d.get_ref()) {
                Ok(r) => rules.net_deny.push(self.entry(d.span().start, r)),
                Err(e) => self.error(d.span().start, &e.to_string()),
            }
        }
        for c in &raw.allow_cidr {
            match Cidr::parse(c.get_ref()) {
                Ok(r) => rules.allow_cidr.push(self.entry(c.span().start, r)),
                Err(e) => self.error(c.span().start, &e.to_string()),
            }
        }
        let positions: Vec<usize> = raw.rules.iter().map(|r| r.host.span().start).collect();
        let ports_at = self.text.find("ports").unwrap_or(0);
        let rest = RawNetwork {
            allow: Vec::new(),
            deny: Vec::new(),
            allow_cidr: Vec::new(),
            ports: raw.ports,
            rules: raw.rules,
        };
        match rest.validate(self.text) {
            Ok(policy) => {
                if let Some(ports) = policy.ports {
                    rules.ports = Some(self.entry(ports_at, ports));
                }
                for (rule, pos) in policy.rules.into_iter().zip(positions) {
                    rules.host_rules.push(self.entry(pos, rule));
                }
            }
            Err(e) => self.errors.push(format!("{}:{e}", self.label)),
        }
    }

    fn limits(&mut self, raw: super::format::RawLimits, rules: &mut Rules) {
        let l = &mut rules.limits;
        if let Some(m) = raw.memory {
            match super::format::parse_memory(m.get_ref()) {
                Ok(b) if b >= 16 << 20 => l.memory = Some(self.entry(m.span().start, b)),
                Ok(_) => self.error(m.span().start, "limits.memory: at least 16M"),
                Err(e) => self.error(m.span().start, &format!("limits.memory: {e}")),
            }
        }
        if let Some(p) = raw.pids {
            if *p.get_ref() == 0 {
                self.error(p.span().start, "limits.pids: at least 1");
            } else {
                l.pids = Some(self.entry(p.span().start, *p.get_ref()));
            }
        }
        if let Some(c) = raw.cpu {
            let cpu = *c.get_ref();
            if cpu.is_finite() && cpu > 0.0 && cpu <= 4096.0 {
                l.cpu = Some(self.entry(c.span().start, cpu));
            } else {
                self.error(
                    c.span().start,
                    "limits.cpu: a positive number of CPUs, e.g. 2 or 0.5",
                );
            }
        }
        if let Some(n) = raw.nofile {
            if *n.get_ref() < 16 {
                self.error(n.span().start, "limits.nofile: at least 16");
            } else {
                l.nofile = Some(self.entry(n.span().start, *n.get_ref()));
            }
        }
        if let Some(f) = raw.fsize {
            match parse_size(f.get_ref()) {
                Ok(b) if b >= 1 << 20 => l.fsize = Some(self.entry(f.span().start, b)),
                Ok(_) => self.error(f.span().start, "limits.fsize: at least 1M"),
                Err(e) => self.error(f.span().start, &format!("limits.fsize: {e}")),
            }
        }
        if let Some(t) = raw.tmp_size {
            match parse_size(t.get_ref()) {
                Ok(b) if b >= 1 << 20 => l.tmp_size = Some(self.entry(t.span().start, b)),
                Ok(_) => self.error(t.span().start, "limits.tmp_size: at least 1M"),
                Err(e) => self.error(t.span().start, &format!("limits.tmp_size: {e}")),
            }
        }
        if let Some(t) = raw.timeout {
            match crate::cli::parse_duration(t.get_ref()) {
                Ok(d) => l.timeout = Some(self.entry(t.span().start, d)),
                Err(e) => self.error(t.span().start, &format!("limits.timeout: {e}")),
            }
        }
        if let Some(b) = raw.best_effort {
            l.best_effort = Some(self.entry(b.span().start, *b.get_ref()));
        }
    }
}

/// The directory under `/run` the sandbox builds itself (the egress socket
/// and CA bundle; `egress.rs` says where, a test holds them together).
pub const BUILT_BY_SANDBOX: &str = "/run/airlock";

/// Why `path` (a grant, expanded or literal) cannot be bound, if it
/// cannot: it is `/` or contains a directory the sandbox builds itself
/// (`/run/airlock`), and a host tree bound there leaves no room to build
/// it (a read-only bind refuses the `mkdir`; `/` also holds the `/bin`
/// and `/lib` links already). One message for `policy check` and `run`.
pub fn grant_conflict(path: &Path) -> Option<String> {
    let built = Path::new(BUILT_BY_SANDBOX);
    if path == Path::new("/") || built.starts_with(path) {
        return Some(format!(
            "'{}' contains {}, which the sandbox builds itself, so it cannot be granted \
             whole; grant the directories under it that the agent needs",
            path.display(),
            if path == Path::new("/") {
                "the whole view (/run/airlock, /tmp, /proc, /dev, the /bin and /lib links)"
                    .to_string()
            } else {
                built.display().to_string()
            }
        ));
    }
    // The sandbox mounts its own /proc and /dev over whatever was bound
    // there: a host path under them would be hidden, and Landlock's rule
    // for it found nothing (`ruleset ...: No such file or directory`).
    if let Some(own) = ["/proc", "/dev"].iter().find(|d| path.starts_with(d)) {
        return Some(format!(
            "'{}' is inside {own}, which the sandbox builds itself (its own, not the host's); \
             host paths there cannot be granted",
            path.display()
        ));
    }
    None
}

/// The path variables a template may start with.
pub const PATH_VARIABLES: &[&str] = &["${WORKSPACE}", "${HOME}", "${TMPDIR}"];

/// Validates and normalizes a path template: absolute, or starting with a
/// path variable; no `..`; `*` only in the last component and only where
/// `glob_ok` (deny entries).
pub fn path_template(raw: &str, glob_ok: bool) -> Result<String, String> {
    let s = raw.trim();
    let rest = match PATH_VARIABLES.iter().find(|v| s.starts_with(*v)) {
        Some(var) => {
            let rest = &s[var.len()..];
            if !(rest.is_empty() || rest.starts_with('/')) {
                return Err(format!("'{raw}': a variable is a whole path component"));
            }
            rest
        }
        None if s.starts_with('/') => s,
        None if s.starts_with('~') => {
            return Err(format!("'{raw}': write ${{HOME}} instead of '~'"));
        }
        None => {
            return Err(format!(
                "'{raw}': paths are absolute or start with ${{WORKSPACE}}, ${{HOME}} or ${{TMPDIR}}"
            ))
        }
    };
    if rest.contains("${") {
        return Err(format!(
            "'{raw}': unknown variable; use ${{WORKSPACE}}, ${{HOME}} or ${{TMPDIR}} at the start"
        ));
    }
    let components: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
    if components.iter().any(|c| *c == ".." || *c == ".") {
        return Err(format!("'{raw}': '.' and '..' are not allowed in paths"));
    }
    if let Some(i) = components.iter().position(|c| c.contains('*')) {
        if !glob_ok {
            return Err(format!("'{raw}': '*' is only allowed in deny entries"));
        }
        if i + 1 != components.len() {
            return Err(format!(
                "'{raw}': '*' is only allowed in the last component"
            ));
        }
        if components[i] == "*" {
            return Err(format!(
                "'{raw}': a bare '*' would deny everything listed; deny the directory instead"
            ));
        }
    }
    if s.contains('\0') {
        return Err(format!("'{raw}': NUL in path"));
    }
    let prefix = &s[..s.len() - rest.len()];
    let joined = components.join("/");
    Ok(match (prefix.is_empty(), joined.is_empty()) {
        (true, true) => "/".to_string(),
        (true, false) => format!("/{joined}"),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}/{joined}"),
    })
}

/// The layers of `specs` (names or paths) and everything they extend,
/// parents before children, each file once. Errors name the `extends`
/// entry that failed and the cycle, if any.
pub fn chain(specs: &[String]) -> Result<Vec<Layer>, Vec<String>> {
    let mut out: Vec<Layer> = Vec::new();
    let mut errors = Vec::new();
    for spec in specs {
        match resolve(spec, None) {
            Ok(path) => visit(&path, &mut Vec::new(), &mut out, &mut errors),
            Err(e) => errors.push(format!("--profile {spec}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The chain of one file as `policy check` sees it: every layer that
/// parsed (without its bad entries) and every error.
pub fn chain_of_file(path: &Path) -> (Vec<Layer>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    match std::fs::canonicalize(path) {
        Ok(p) => visit(&p, &mut Vec::new(), &mut out, &mut errors),
        Err(e) => errors.push(format!("{}: cannot read: {e}", path.display())),
    }
    (out, errors)
}

fn visit(path: &Path, stack: &mut Vec<PathBuf>, out: &mut Vec<Layer>, errors: &mut Vec<String>) {
    if out.iter().any(|l| l.path.as_deref() == Some(path)) {
        return;
    }
    let layer = match read_partial(path) {
        Ok((l, e)) => {
            errors.extend(e);
            l
        }
        Err(e) => {
            errors.extend(e);
            return;
        }
    };
    if layer.managed.is_some() && !stack.is_empty() {
        errors.push(format!(
            "{}: a managed policy cannot be extended by a profile",
            layer.label
        ));
        return;
    }
    stack.push(path.to_path_buf());
    let base = path.parent().map(Path::to_path_buf);
    for parent in &layer.extends {
        match resolve(&parent.value, base.as_deref()) {
            Ok(p) if stack.contains(&p) => {
                let mut cycle: Vec<String> = stack
                    [stack.iter().position(|s| *s == p).unwrap_or(0)..]
                    .iter()
                    .map(|s| s.display().to_string())
                    .collect();
                cycle.push(p.display().to_string());
                errors.push(format!(
                    "{}: extends cycle: {}",
                    parent.origin,
                    cycle.join(" -> ")
                ));
            }
            Ok(p) => visit(&p, stack, out, errors),
            Err(e) => errors.push(format!(
                "{}: extends '{}': {e}",
                parent.origin, parent.value
            )),
        }
    }
    stack.pop();
    out.push(layer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_templates_are_absolute_or_start_with_a_variable() {
        for (raw, glob, want) in [
            ("/usr", false, Ok("/usr")),
            ("/usr/", false, Ok("/usr")),
            ("${WORKSPACE}", false, Ok("${WORKSPACE}")),
            ("${HOME}//.ssh/", false, Ok("${HOME}/.ssh")),
            (
                "/etc/ssh/ssh_host_*_key",
                true,
                Ok("/etc/ssh/ssh_host_*_key"),
            ),
            (
                "/etc/ssh/ssh_host_*_key",
                false,
                Err("only allowed in deny"),
            ),
            ("/etc/*/x", true, Err("last component")),
            ("/etc/*", true, Err("bare '*'")),
            ("relative/path", false, Err("absolute")),
            ("~/.ssh", false, Err("${HOME} instead")),
            ("${HOMEDIR}/x", false, Err("absolute")),
            ("${HOME}x", false, Err("whole path component")),
            ("/x/${HOME}", false, Err("unknown variable")),
            ("${FOO}/x", false, Err("absolute")),
            ("/usr/../etc", false, Err("'..'")),
        ] {
            match (path_template(raw, glob), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{raw}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{raw}: {e}"),
                (got, w) => panic!("{raw}: got {got:?}, wanted {w:?}"),
            }
        }
    }

    #[test]
    fn every_syntax_and_type_error_is_listed_sorted_by_line() {
        for (text, want) in [
            (
                "[profile]\ncolour = \"red\"\n[filesystem]\nread = [\"/usr\", 3]\nwrite = \"x\"\ndeny = [\"rel\"]\n[filesys]\nread = [\"/x\"]\n[limits]\npids = \"many\"\n[env]\npass = [\"BAD NAME\"]\n",
                &[
                    "f:2:1: unknown field `colour`",
                    "f:4:17: invalid type: integer `3`",
                    "f:5:9: invalid type: string \"x\"",
                    "f:6:9: 'rel': paths are absolute",
                    "f:7:2: unknown field `filesys`",
                    "f:10:8: invalid type: string \"many\"",
                    "f:12:9: env.pass: 'BAD NAME'",
                ][..],
            ),
            (
                "[filesystem]\nread = [\"/usr\"\nwrite = [\"/x\"]\ndeny = \"open\n[limits]\ncpu = \"x\"\n",
                &[
                    "f:2:1: unclosed '[' or '{'",
                    "f:4:13: invalid basic string",
                    "f:6:7: invalid type: string \"x\", expected f64",
                ][..],
            ),
            (
                "[network]\nallow = [\n  \"a.example.com\",\n  7,\n]\nports = [\"x\"]\n",
                &[
                    "f:4:3: invalid type: integer `7`",
                    "f:6:10: invalid type: string \"x\"",
                ][..],
            ),
        ] {
            let errors = match parse_partial("f", None, text) {
                Ok((_, e)) => e,
                Err(e) => e,
            };
            assert_eq!(errors.len(), want.len(), "{errors:#?}");
            for (e, w) in errors.iter().zip(want) {
                assert!(e.starts_with(w), "{e:?} does not start with {w:?}: {errors:#?}");
            }
        }
    }

    #[test]
    fn broken_documents_never_panic_and_always_report() {
        let samples = [
            "",
            "[",
            "]]]\n[[[",
            "a = \"é\n",
            "[filesystem]\nread = [\"/ü\", \"ß\"\n[network]\nallow = [\"ü.example.com\"\n",
            "x = '''\nunterminated é",
            "x = \"\"\"\nπ\"\"\"\ny = [\n\n\n",
            "\n\n\n[limits]\npids = [1, 2\ncpu = {\n",
            "é = 1\n[é]\n\"é\" = [\n",
            "[[credentials]]\nname = 1\n[[credentials]]\nname = \"ok\"\nsource = 3\n",
        ];
        for text in samples {
            let errors = match parse_partial("f", None, text) {
                Ok((_, e)) => e,
                Err(e) => e,
            };
            assert!(
                text.is_empty() || !errors.is_empty(),
                "{text:?} has no error"
            );
            assert!(errors.len() <= MAX_DOC_ERRORS + 8, "{text:?}: {errors:#?}");
            for e in &errors {
                assert!(e.starts_with("f:"), "{text:?}: {e}");
            }
        }
    }

    #[test]
    fn grants_of_what_the_sandbox_builds_are_refused() {
        for (path, refused) in [
            ("/", true),
            ("/run", true),
            ("/run/airlock", true),
            ("/run/user", false),
            ("/proc/1", true),
            ("/dev/kvm", true),
            ("/devices", false),
            ("/home", false),
            ("/usr", false),
        ] {
            assert_eq!(grant_conflict(Path::new(path)).is_some(), refused, "{path}");
        }
        for inside in [
            crate::egress::INSIDE_SOCKET,
            crate::egress::INSIDE_CA_BUNDLE,
        ] {
            assert!(Path::new(inside).starts_with(BUILT_BY_SANDBOX), "{inside}");
        }
        let e = parse_layer("p.toml", None, "[filesystem]\nwrite = [\"/\"]\n").unwrap_err();
        assert!(
            e[0].starts_with("p.toml:2:10: filesystem.write: '/' contains the whole view"),
            "{e:?}"
        );
    }

    #[test]
    fn the_embedded_default_parses() {
        let layer = parse_layer(EMBEDDED_LABEL, None, EMBEDDED_DEFAULT).expect("valid");
        assert!(layer.rules.read.iter().any(|r| r.value == "/usr"));
        assert!(layer.rules.allow.is_empty());
    }
}
