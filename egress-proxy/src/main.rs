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
    /// A socket shared by every client: `unix:PATH` (connections are told
    /// apart by `SO_PEERCRED` only).
    #[arg(long, value_name = "unix:PATH")]
    listen: Option<String>,
    /// A control socket, `unix:DIR/control.sock`: each `sandbox run
    /// --egress-control` gets its own socket in DIR, and every event from
    /// it names the sandbox's session (see `control.rs`).
    #[arg(long, value_name = "unix:PATH")]
    control: Option<String>,
    /// Serve Prometheus metrics (`/metrics`) and readiness (`/ready`) on
    /// this TCP address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// On SIGTERM/SIGINT: stop accepting, let open connections finish for
    /// at most this many seconds, then cut them.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    drain_timeout: u64,
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

fn unix_path(flag: &str, value: &Option<String>) -> Result<Option<PathBuf>> {
    match value {
        None => Ok(None),
        Some(v) => match v.strip_prefix("unix:") {
            Some(p) if !p.is_empty() => Ok(Some(PathBuf::from(p))),
            _ => bail!("{flag} {v}: expected unix:PATH"),
        },
    }
}

/// Binds a Unix socket, replacing a stale socket but no other file.
fn bind_socket(path: &std::path::Path, mode: u32) -> Result<std::os::unix::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("remove {}", path.display()))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn serve(args: ServeArgs) -> Result<()> {
    let listen = unix_path("--listen", &args.listen)?;
    let control = unix_path("--control", &args.control)?;
    if listen.is_none() && control.is_none() {
        bail!("nothing to serve: pass --listen unix:PATH, --control unix:PATH, or both");
    }
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
    let sockets: Vec<String> = listen
        .iter()
        .chain(control.iter())
        .map(|p| p.display().to_string())
        .collect();
    audit.record_value(serde_json::json!({
        "event": { "kind": "event", "category": ["process", "session"], "type": ["start"], "action": "session.start", "outcome": "success" },
        "airlock": { "session": { "nonce": audit.nonce() }, "egress": {
            "proxy": "sidecar",
            "socket": listen.as_ref().map(|p| p.display().to_string()),
            "control": control.as_ref().map(|p| p.display().to_string()),
        } },
    }));
    let listener = listen
        .as_deref()
        .map(|p| bind_socket(p, mode))
        .transpose()?;
    let control_listener = control
        .as_deref()
        .map(|p| bind_socket(p, mode))
        .transpose()?;
    let control_dir = control
        .as_deref()
        .and_then(|p| p.parent())
        .map(|d| {
            if d.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                d
            }
        })
        .map(std::path::Path::to_path_buf);
    let limits = Limits {
        max_connections: args.max_connections.max(1),
        ..Limits::default()
    };
    let proxy = Proxy::with_interception(policy, limits, audit.clone(), interception);
    let metrics_listener = match args.metrics {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("--metrics {addr}: listen"))?,
        ),
        None => None,
    };
    let drain = Duration::from_secs(args.drain_timeout);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(async move {
        // `stop`: no new connections (SIGTERM). `cut`: end the open ones
        // (the drain deadline). `done`: the metrics endpoint may go.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(l) = listener {
            let l = tokio::net::UnixListener::from_std(l)?;
            tasks.spawn(proxy.clone().accept_until(l, stop_rx.clone(), cut_rx.clone(), None));
        }
        if let (Some(l), Some(dir)) = (control_listener, control_dir) {
            let l = tokio::net::UnixListener::from_std(l)?;
            let config = egress_proxy::control::ControlConfig { dir, mode };
            tasks.spawn(egress_proxy::control::serve(
                l,
                proxy.clone(),
                config,
                stop_rx.clone(),
                cut_rx.clone(),
            ));
        }
        if let Some(l) = metrics_listener {
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            let p = proxy.clone();
            tokio::spawn(egress_proxy::metrics::serve_http(
                l,
                proxy.metrics.clone(),
                move || p.active_connections(),
                done_rx,
            ));
        }
        proxy.metrics.set_ready(true);
        eprintln!("egress-proxy: listening on {}", sockets.join(", "));
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        // Draining: not ready, no new connections, open ones may finish.
        proxy.metrics.set_draining();
        let _ = stop_tx.send(true);
        let open_at_signal = proxy.active_connections();
        eprintln!("egress-proxy: draining {open_at_signal} connection(s), at most {}s", drain.as_secs());
        let drained = proxy.drain(drain).await;
        let cut = proxy.active_connections();
        let _ = cut_tx.send(true);
        if !drained {
            // Give the cut connections a moment to write their lines.
            proxy.drain(Duration::from_secs(2)).await;
        }
        while tasks.join_next().await.is_some() {}
        audit.record_value(serde_json::json!({
            "event": { "kind": "event", "category": ["process", "session"], "type": ["end"], "action": "session.end", "outcome": "success" },
            "airlock": { "egress": { "drain": {
                "open_at_signal": open_at_signal,
                "cut_at_deadline": if drained { 0 } else { cut },
                "timeout_seconds": drain.as_secs(),
            } } },
        }));
        audit.sync();
        let _ = done_tx.send(true);
        for p in listen.iter().chain(control.iter()) {
            let _ = std::fs::remove_file(p);
        }
        Ok::<(), std::io::Error>(())
    })?;
    Ok(())
}
