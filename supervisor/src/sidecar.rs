//! `sandbox run --egress-control PATH`: a socket of its own from a shared
//! `egress-proxy serve --control` sidecar (protocol in the proxy's
//! `control.rs`). The plan already names `SESSION_DIR/egress.sock` as the
//! socket to mount; here, at run time, the supervisor asks the sidecar for
//! a socket in this session's name and points that name at it. The control
//! connection stays open for the whole session: when the supervisor exits
//! (or dies), the sidecar removes the socket.

use egress_proxy::control::{self, SandboxSocket};

use crate::error::SetupError;
use crate::plan::SandboxPlan;

/// Opens this session's socket on the sidecar, if the plan uses one.
/// Fails closed: no socket, no run.
pub fn open(plan: &SandboxPlan) -> Result<Option<SandboxSocket>, SetupError> {
    let Some(control) = &plan.egress.sidecar_control else {
        return Ok(None);
    };
    let socket = control::open(control, &plan.session_id).map_err(|e| {
        SetupError::new(
            "network",
            format!(
                "--egress-control {}: {e}; is `egress-proxy serve --control unix:{}` running \
                 and is its socket writable by this user?",
                control.display(),
                control.display()
            ),
        )
    })?;
    let link = &plan.egress.host_socket;
    std::os::unix::fs::symlink(&socket.path, link).map_err(|e| {
        SetupError::io(
            "network",
            format!("link {} to {}", link.display(), socket.path.display()),
            e,
        )
    })?;
    Ok(Some(socket))
}
