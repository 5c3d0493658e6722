//! The profile file as written (TOML): `[profile]`, `[filesystem]`,
//! `[network]`, `[[credentials]]`, `[limits]`, `[env]` and, in the managed
//! policy only, `[managed]`. The `[network]` and `[[credentials]]` tables are
//! the egress proxy's own types, so a sidecar and `sandbox run` read one
//! format. Every entry keeps its position (`toml::Spanned`), so a bad one is
//! reported as `FILE:LINE:COLUMN: what`.

use std::collections::BTreeMap;

use egress_proxy::config::{RawCredential, RawNetwork};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// One profile (or managed policy) document.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "airlock profile")]
pub struct ProfileDoc {
    /// Name, description and the profiles this one builds on.
    #[serde(default)]
    pub profile: RawMeta,
    /// What the agent may see and write.
    #[serde(default)]
    pub filesystem: RawFilesystem,
    /// Where the agent may connect (through the egress proxy).
    #[serde(default)]
    pub network: RawNetwork,
    /// Secrets the proxy applies on the agent's behalf.
    #[serde(default)]
    pub credentials: Vec<RawCredential>,
    /// Resource limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// The agent's environment.
    #[serde(default)]
    pub env: RawEnv,
    /// Managed policy only: what users may still change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<RawManaged>,
}

/// `[profile]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMeta {
    /// A short name (informational; profiles are found by file name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the profile is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Profiles applied before this one: names, or paths relative to this file.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub extends: Vec<Spanned<String>>,
}

/// `[filesystem]`. Paths are absolute or start with `${WORKSPACE}`,
/// `${HOME}` (the host's) or `${TMPDIR}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFilesystem {
    /// Visible read-only (and executable).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub read: Vec<Spanned<String>>,
    /// Visible read-write (the workspace always is).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub write: Vec<Spanned<String>>,
    /// Never visible, even inside a granted path. A `*` in the last
    /// component matches within that one directory (`/etc/ssh/ssh_host_*_key`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub deny: Vec<Spanned<String>>,
    /// More paths, relative to every writable tree, that the agent may not
    /// create or change (added to the always-protected `.git/hooks`,
    /// `.git/config`, shell rc files, `.vscode`, `.idea`, `.envrc`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub protect: Vec<Spanned<String>>,
}

/// `[limits]`. Sizes are bytes or a number with `K`, `M`, `G`, `T` (powers
/// of 1024); durations as `--timeout` takes them (`30s`, `5m`, `1h`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Memory of the whole sandbox (cgroup `memory.max`), e.g. `"4G"`, or a
    /// share of this host's RAM such as `"50%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub memory: Option<Spanned<String>>,
    /// Maximum number of processes and threads (cgroup `pids.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<u64>")]
    pub pids: Option<Spanned<u64>>,
    /// CPUs' worth of time (cgroup `cpu.max`), e.g. `1.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<f64>")]
    pub cpu: Option<Spanned<f64>>,
    /// Open files per process (`RLIMIT_NOFILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<u64>")]
    pub nofile: Option<Spanned<u64>>,
    /// Largest file a process may write (`RLIMIT_FSIZE`), e.g. `"2G"`;
    /// beyond it the write fails with EFBIG (and SIGXFSZ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub fsize: Option<Spanned<String>>,
    /// Size of the private `/tmp`, e.g. `"512M"` (default 1G).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub tmp_size: Option<Spanned<String>>,
    /// Wall-clock limit, e.g. `"30m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// Run anyway when this host cannot enforce `memory`, `pids` or `cpu`
    /// (no usable cgroup controller): a warning instead of an error.
    /// Default false: a limit that cannot be applied stops the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<bool>")]
    pub best_effort: Option<Spanned<bool>>,
}

/// `[env]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEnv {
    /// Host variables passed through when set.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub pass: Vec<Spanned<String>>,
    /// Variables set to a value (path variables are expanded).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub set: BTreeMap<Spanned<String>, String>,
}

/// `[managed]`: only in the managed policy.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawManaged {
    /// May `--allow`, `--deny`, `--allow-cidr`, `--allow-port` be used (default true)?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_cli_network: Option<bool>,
    /// May `--env` be used (default true)?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_cli_env: Option<bool>,
}

/// The JSON Schema of [`ProfileDoc`], as checked in at `profiles/schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(ProfileDoc);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Parses a size: bytes, or a number with `K`, `M`, `G`, `T` (optionally
/// followed by `iB` or `B`), powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (number, scale) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let scale: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("'{s}' is not a size (e.g. 512M, 4G)")),
            };
            (&t[..i], scale)
        }
        _ => (t, 1),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512M, 4G)"))?;
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("'{s}': a size must be positive"));
    }
    Ok(bytes as u64)
}

/// Parses `limits.memory`: a size ([`parse_size`]) or a percentage of
/// this host's RAM (`"50%"`, 1 to 100), rounded down to whole MiB.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    match s.trim().strip_suffix('%') {
        Some(p) => {
            let share = p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| *p > 0.0 && *p <= 100.0)
                .ok_or_else(|| format!("'{s}': a share of RAM is 1% to 100%"))?;
            let total = host_ram().ok_or_else(|| format!("'{s}': cannot read this host's RAM"))?;
            Ok(share_of(total, share))
        }
        None => parse_size(s),
    }
}

/// `share` percent of `total` bytes, rounded down to whole MiB.
fn share_of(total: u64, share: f64) -> u64 {
    let bytes = (total as f64 * share / 100.0) as u64;
    bytes & !((1 << 20) - 1)
}

/// The host's RAM in bytes (sysinfo(2): one call, no file to parse).
/// Debug builds honour `AIRLOCK_TEST_RAM` (a size), so tests can fill the
/// default's share of RAM without taking half the CI machine's memory.
fn host_ram() -> Option<u64> {
    #[cfg(debug_assertions)]
    if let Some(v) = std::env::var("AIRLOCK_TEST_RAM")
        .ok()
        .and_then(|v| parse_size(&v).ok())
    {
        return Some(v);
    }
    // SAFETY: sysinfo only fills the zeroed struct it is given.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable sysinfo struct.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return None;
    }
    (info.totalram as u64).checked_mul(u64::from(info.mem_unit.max(1)))
}

/// Renders bytes the way [`parse_size`] reads them, exactly.
pub fn format_size(bytes: u64) -> String {
    for (unit, scale) in [
        ("T", 1u64 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        for (text, want) in [
            ("1024", Some(1024)),
            ("512M", Some(512 << 20)),
            ("4G", Some(4 << 30)),
            ("4GiB", Some(4 << 30)),
            ("1.5K", Some(1536)),
            ("2t", Some(2 << 40)),
            ("0", None),
            ("-1G", None),
            ("lots", None),
            ("4X", None),
        ] {
            assert_eq!(parse_size(text).ok(), want, "{text}");
        }
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(share_of(8 << 30, 50.0), 4 << 30);
        assert_eq!(share_of((8 << 30) + 12345, 50.0), 4 << 30);
        assert_eq!(share_of(3 << 20, 50.0), 1 << 20);
        let ram = host_ram().expect("RAM");
        assert_eq!(parse_memory("100%").ok(), Some(share_of(ram, 100.0)));
        assert_eq!(parse_memory("4G").ok(), Some(4 << 30));
        for bad in ["0%", "101%", "-5%", "half%", "%"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(1000), "1000");
    }

    #[test]
    fn the_checked_in_schema_matches_the_format() {
        let checked_in = include_str!("../../../profiles/schema.json");
        assert!(
            checked_in == schema_json(),
            "profiles/schema.json is stale: run `sandbox policy schema > profiles/schema.json`"
        );
    }
}
