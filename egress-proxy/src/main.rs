//! `egress-proxy serve`: the proxy as its own long-lived process, for
//! sidecar deployments (`sandbox run --egress-socket PATH` connects to it).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use egress_proxy::audit::{Format, Options, SinkSpec};
use egress_proxy::ca::SessionCa;
use egress_proxy::config::ProxyPolicy;
use egress_proxy::credentials::Apply;
use egress_proxy::proxy::Interception;
use egress_proxy::secrets::Credentials;
use egress_proxy::{new_session_id, AuditLog, Limits, Proxy};
use std::sync::Arc;

/// airlock's egress proxy.
#[derive(Debug, Parser)]
#[command(name = "egress-proxy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve sandboxes on a Unix socket until SIGTERM or SIGINT.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Where to listen: `unix:PATH`.
    #[arg(long, value_name = "unix:PATH")]
    listen: String,
    /// TOML policy file; its `[network]` and `[[credentials]]` tables are used.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Where audit events go: a FILE, `stdout` (default), `stderr`,
    /// `unix:PATH` or `unixgram:PATH`.
    #[arg(long, value_name = "SINK", default_value = "stdout")]
    audit_log: String,
    /// `ecs` (default) or `ocsf`.
    #[arg(long, value_name = "FORMAT", default_value = "ecs")]
    audit_format: String,
    /// Permissions of the socket (octal); who may connect.
    #[arg(long, value_name = "MODE", default_value = "660")]
    socket_mode: String,
    /// Also trust this CA (PEM) for TLS to upstreams (repeatable).
    #[arg(long, value_name = "FILE")]
    upstream_ca: Vec<PathBuf>,
    /// Write the CA that signs intercepted connections here (PEM), for the
    /// sandboxes to trust. Needed when the policy has credentials or rules.
    #[arg(long, value_name = "FILE")]
    ca_cert_out: Option<PathBuf>,
    /// Maximum concurrent connections.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let Command::Serve(args) = cli.command;
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egress-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let Some(path) = args.listen.strip_prefix("unix:").map(PathBuf::from) else {
        bail!("--listen {}: expected unix:PATH", args.listen);
    };
    let ProxyPolicy {
        network: policy,
        credentials: specs,
    } = ProxyPolicy::from_file(&args.policy)?;
    if let Some(c) = specs
        .iter()
        .find(|c| matches!(c.apply, Apply::Placeholder { .. }))
    {
        bail!(
            "credential '{}': placeholder credentials need the session proxy of `sandbox run` \
             (the sandbox must learn the placeholder); use inject = {{ header, value }} in a sidecar",
            c.name
        );
    }
    let mode = u32::from_str_radix(&args.socket_mode, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .with_context(|| {
            format!(
                "--socket-mode {}: expected octal, e.g. 660",
                args.socket_mode
            )
        })?;
    let session = new_session_id();
    let interception = if specs.is_empty() && policy.rules.is_empty() {
        None
    } else {
        let credentials =
            Credentials::load_all(&specs, &|v| std::env::var(v).ok(), &Default::default())?;
        let ca = SessionCa::generate(&session)?;
        let Some(out) = &args.ca_cert_out else {
            bail!(
                "the policy intercepts TLS (credentials or rules): pass --ca-cert-out FILE so \
                 sandboxes can trust the proxy's CA"
            );
        };
        std::fs::write(out, ca.cert_pem()).with_context(|| format!("write {}", out.display()))?;
        Some(Interception {
            credentials,
            ca: std::sync::Arc::new(ca),
            upstream_tls: egress_proxy::tls::upstream_config(&args.upstream_ca)?,
        })
    };
    let redactions = interception
        .as_ref()
        .map(|i| i.credentials.redactions())
        .unwrap_or_default();
    let format = match args.audit_format.as_str() {
        "ecs" => Format::Ecs,
        "ocsf" => Format::Ocsf,
        other => bail!("--audit-format {other}: expected ecs or ocsf"),
    };
    let options = Options {
        format,
        fsync_interval: Some(Duration::from_secs(1)),
        ..Options::default()
    };
    let audit = Arc::new(
        AuditLog::open_with(&SinkSpec::parse(&args.audit_log), &session, options)
            .with_context(|| format!("audit sink {}", args.audit_log))?
            .with_redactions(redactions),
    );
    audit.record_value(serde_json::json!({
        "event": { "kind": "event", "category": ["process", "session"], "type": ["start"], "action": "session.start", "outcome": "success" },
        "airlock": { "session": { "nonce": audit.nonce() }, "egress": { "proxy": "sidecar", "socket": path.display().to_string() } },
    }));
    // A stale socket from a previous run is replaced; any other file is not.
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    listener.set_nonblocking(true)?;
    let limits = Limits {
        max_connections: args.max_connections.max(1),
        ..Limits::default()
    };
    let proxy = Proxy::with_interception(policy, limits, audit.clone(), interception);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            let _ = tx.send(true);
        });
        eprintln!("egress-proxy: listening on {}", path.display());
        proxy.serve(listener, Vec::new(), rx, Duration::from_secs(5)).await;
        audit.record_value(serde_json::json!({
            "event": { "kind": "event", "category": ["process", "session"], "type": ["end"], "action": "session.end", "outcome": "success" },
        }));
        audit.sync();
        let _ = std::fs::remove_file(&path);
        Ok::<(), std::io::Error>(())
    })?;
    Ok(())
}
