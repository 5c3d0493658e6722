//! The command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// airlock: run an agent's command inside kernel isolation whose only way
/// out is an egress proxy.
#[derive(Debug, Parser)]
#[command(name = "sandbox", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `sandbox run` alone. `sandbox run ...` is parsed with this: clap builds
/// the parser of every subcommand it knows before it parses, and on the
/// few milliseconds of a sandbox start the others cost a measurable tenth
/// of one. A test holds it to parse and document `run` exactly as [`Cli`].
#[derive(Debug, Parser)]
#[command(name = "sandbox", version, about)]
struct RunCli {
    #[command(subcommand)]
    command: RunOnly,
}

#[derive(Debug, Subcommand)]
enum RunOnly {
    /// Run CMD sandboxed: `sandbox run [OPTIONS] -- CMD [ARGS...]`.
    Run(Box<RunArgs>),
}

/// Parses the process's command line.
pub fn parse() -> Result<Command, clap::Error> {
    parse_from(std::env::args_os())
}

fn parse_from<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, clap::Error> {
    let args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|a| a == "run") {
        return RunCli::try_parse_from(args).map(|c| match c.command {
            RunOnly::Run(a) => Command::Run(a),
        });
    }
    Cli::try_parse_from(args).map(|c| c.command)
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run CMD sandboxed: `sandbox run [OPTIONS] -- CMD [ARGS...]`.
    Run(Box<RunArgs>),
    /// Report what this host supports and whether `sandbox run` works here.
    Doctor,
    /// Check, show, explain and learn profiles.
    #[command(subcommand)]
    Policy(Box<PolicyCommand>),
    /// Run the escape battery inside a real sandbox on this host and print
    /// probe, expected, observed, pass/fail; exit 1 on any failure.
    Selftest {
        /// A JSON report (with kernel version and Landlock ABI) instead.
        #[arg(long)]
        json: bool,
    },
    /// The prober `selftest` runs inside the sandbox (internal).
    #[command(name = "__probe", hide = true)]
    Probe {
        /// Probe names (see probes.rs).
        #[arg(required = true, allow_hyphen_values = true)]
        names: Vec<String>,
    },
    /// Verify, summarize and read audit logs.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// `sandbox audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of audit logs: a modified, deleted, reordered or
    /// inserted line is named by its position; exit 1 on any problem.
    Verify {
        /// Also require every session's seal to verify with this Ed25519
        /// public key (SPKI PEM).
        #[arg(long, value_name = "FILE")]
        pubkey: Option<PathBuf>,
        /// Audit log files (JSON lines, ECS or OCSF).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Per session and per destination: requests, bytes, denials,
    /// credentials used.
    Summary {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Audit log files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Human-readable lines for a terminal.
    Tail {
        /// Keep reading as lines are appended.
        #[arg(long, short)]
        follow: bool,
        /// The audit log [default: the default audit log].
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

/// `sandbox policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate profile files (with their `extends`); every error with
    /// FILE:LINE:COL; exit 1 on any.
    Check {
        /// Also check them against this managed policy (ownership not checked).
        #[arg(long, value_name = "PATH")]
        managed: Option<PathBuf>,
        /// Profile or managed-policy files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the effective policy (after extends, flags and the managed
    /// policy), the files it came from, and its SHA-256.
    Show {
        /// Which profiles and flags.
        #[command(flatten)]
        select: SelectArgs,
        /// JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the profile format.
    Schema,
    /// Say whether a path or URL would be reachable, and by which rule.
    Explain {
        /// Which profiles and flags.
        #[command(flatten)]
        select: SelectArgs,
        /// A host path, as the agent would name it.
        #[arg(
            long,
            value_name = "PATH",
            conflicts_with = "url",
            required_unless_present = "url"
        )]
        path: Option<PathBuf>,
        /// An http(s) URL.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The request method, for hosts with method/path rules.
        #[arg(long, default_value = "GET")]
        method: String,
    },
    /// Turn the denials in an audit log into a `[network] allow` list to review.
    Suggest {
        /// The audit log (JSON lines).
        #[arg(value_name = "AUDIT.jsonl")]
        audit: PathBuf,
    },
}

/// The options that select a policy, shared by `policy show` and `explain`.
#[derive(Debug, Clone, clap::Args)]
pub struct SelectArgs {
    /// A profile name or file, applied over the default (repeatable, in order).
    #[arg(long, value_name = "NAME|PATH")]
    pub profile: Vec<String>,
    /// The managed policy, where /etc/airlock/managed.toml does not exist.
    #[arg(long, value_name = "PATH")]
    pub managed: Option<PathBuf>,
    /// The workspace `${WORKSPACE}` stands for (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// As `sandbox run --allow`.
    #[arg(long, value_name = "PATTERN")]
    pub allow: Vec<String>,
    /// As `sandbox run --deny`.
    #[arg(long, value_name = "PATTERN")]
    pub deny: Vec<String>,
    /// As `sandbox run --allow-cidr`.
    #[arg(long, value_name = "CIDR")]
    pub allow_cidr: Vec<String>,
    /// As `sandbox run --allow-port`.
    #[arg(long, value_name = "PORT")]
    pub allow_port: Vec<u16>,
    /// As `sandbox run --env`.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// As `sandbox run --timeout`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// Options of `sandbox run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A profile name or file, applied over the default (repeatable, in
    /// order; see `sandbox policy show`).
    #[arg(long, value_name = "NAME|PATH")]
    pub profile: Vec<String>,
    /// The managed policy, where /etc/airlock/managed.toml does not exist
    /// (also AIRLOCK_MANAGED_POLICY); honoured only if root owns it and
    /// nobody else can write it.
    #[arg(long, value_name = "PATH")]
    pub managed: Option<PathBuf>,
    /// The directory the agent may write (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Pass NAME from the host environment, or set NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// Kill the whole sandbox after this long (e.g. 30, 30s, 5m, 1h); exit 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// After a SIGINT/SIGTERM is forwarded, kill the whole sandbox if it is
    /// still running this long later (as `timeout -k`); exit 137. A second
    /// SIGINT/SIGTERM within 5s kills it at once either way.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub kill_after: Option<Duration>,
    /// Host uid the agent runs as (root only; default 65534).
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// Host gid the agent runs as (root only; default 65534).
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
    /// Allow a destination: `api.example.com`, `*.example.com` (subdomains
    /// only), or `host:PORT` (repeatable). Nothing is allowed by default.
    #[arg(long, value_name = "PATTERN")]
    pub allow: Vec<String>,
    /// Deny a destination pattern; a deny always wins (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub deny: Vec<String>,
    /// Allow dialling addresses in CIDR even though they are not public
    /// (loopback, private...), and IP literals inside it (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub allow_cidr: Vec<String>,
    /// Allow PORT for entries without one, besides 80 and 443 (repeatable).
    #[arg(long, value_name = "PORT")]
    pub allow_port: Vec<u16>,
    /// `enforce` (default), or `report`: destinations the allowlist would
    /// refuse go through and are logged as `report:<reason>`, to learn a
    /// profile with `sandbox policy suggest` (the SSRF guard, method/path
    /// rules and credential rules still apply).
    #[arg(long, value_name = "MODE", default_value = "enforce")]
    pub network_mode: String,
    /// Use the egress proxy already listening on this socket (a sidecar
    /// running `egress-proxy serve`) instead of starting one.
    #[arg(long, value_name = "PATH")]
    pub egress_socket: Option<PathBuf>,
    /// Ask a shared sidecar (`egress-proxy serve --control unix:PATH`) for a
    /// socket of this session's own, so its audit events name this session.
    #[arg(long, value_name = "PATH", conflicts_with = "egress_socket")]
    pub egress_control: Option<PathBuf>,
    /// `full` (default) or `landlock-only`: the explicitly named degraded
    /// mode for hosts without user namespaces (no namespaces; Landlock ABI 6,
    /// seccomp and dropped capabilities only; network only through the
    /// egress socket). Recorded in session.start. See docs/KUBERNETES.md.
    #[arg(long, value_name = "MODE", default_value = "full")]
    pub isolation: String,
    /// Where audit events go: a FILE (appended, 0600), `stdout`, `stderr`,
    /// `unix:PATH` or `unixgram:PATH` (a local shipper) [default:
    /// /var/log/airlock/audit.jsonl as root, else
    /// ~/.local/state/airlock/audit.jsonl].
    #[arg(long, value_name = "SINK")]
    pub audit_log: Option<String>,
    /// `ecs` (Elastic Common Schema, default) or `ocsf`.
    #[arg(long, value_name = "FORMAT")]
    pub audit_format: Option<String>,
    /// Seal the session's audit chain with this Ed25519 key (PKCS#8 PEM),
    /// held outside the sandbox.
    #[arg(long, value_name = "FILE")]
    pub audit_sign_key: Option<PathBuf>,
    /// Keep the network open if the audit sink fails (default: refuse new
    /// connections).
    #[arg(long)]
    pub audit_best_effort: bool,
    /// Flush the audit file to disk at least this often (besides session
    /// end), e.g. 1s, 500ms [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub audit_fsync_interval: Option<Duration>,
    /// Also trust this CA (PEM) for the proxy's own TLS to upstreams
    /// (private CAs; repeatable).
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Vec<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Parses `30`, `30s`, `1.5s`, `500ms`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 30, 30s, 5m, 1h)"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("'{s}': the timeout must be positive"));
    }
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("'{s}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    fn full(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(args).map(|c| c.command)
    }

    #[test]
    fn run_is_parsed_as_the_full_cli_parses_it() {
        for args in [
            &["sandbox", "run", "--", "true"][..],
            &[
                "sandbox",
                "run",
                "--allow",
                "example.com",
                "--timeout",
                "5s",
                "--",
                "sh",
                "-c",
                "x",
            ],
            &[
                "sandbox",
                "run",
                "--profile",
                "p.toml",
                "--env",
                "A=1",
                "--",
                "env",
            ],
        ] {
            let fast = parse_from(args.iter().map(OsString::from)).expect("parses");
            let slow = full(args).expect("parses");
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{args:?}");
        }
    }

    #[test]
    fn run_help_and_errors_read_as_with_the_full_cli() {
        for args in [
            &["sandbox", "run", "--help"][..],
            &["sandbox", "run", "--no-such-flag", "--", "true"],
            &["sandbox", "run", "--timeout", "soon", "--", "true"],
            &["sandbox", "run"],
        ] {
            let fast = parse_from(args.iter().map(OsString::from)).expect_err("no command");
            let slow = full(args).expect_err("no command");
            assert_eq!(fast.kind(), slow.kind(), "{args:?}");
            assert_eq!(fast.to_string(), slow.to_string(), "{args:?}");
        }
    }

    #[test]
    fn other_subcommands_still_parse() {
        let doctor = parse_from(["sandbox", "doctor"].map(OsString::from)).expect("parses");
        assert!(matches!(doctor, Command::Doctor));
    }
}
