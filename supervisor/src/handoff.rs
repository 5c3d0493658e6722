//! Handing the proxy ports from init to the session proxy. Init binds
//! `127.0.0.1:3128` and `:1080` inside the sandbox's network namespace and
//! passes the listening sockets to the supervisor over a Unix socketpair
//! (`SCM_RIGHTS`); the session proxy then accepts the agent's connections
//! itself. The sockets stay in the sandbox's namespace (a socket belongs to
//! the namespace it was created in), so nothing outside can reach them,
//! and bytes take one hop instead of two (no relay).
//!
//! With a sidecar proxy (`--egress-socket`, `--egress-control`) they go to
//! the supervisor too, whose relay (`relay.rs`) connects each one to the
//! sidecar's socket with the supervisor's ids: a root-owned `0660` socket
//! is out of reach of init's unprivileged ones.

use std::io::{IoSlice, IoSliceMut};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use crate::error::SetupError;

/// The two ends: (supervisor's, init's).
pub fn pair() -> Result<(OwnedFd, OwnedFd), SetupError> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| SetupError::io("network", "socketpair for the proxy ports", e))
}

/// Init's side: sends the listening sockets.
pub fn send(channel: &OwnedFd, listeners: &[TcpListener]) -> Result<(), SetupError> {
    let fds: Vec<RawFd> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(&[1u8])];
    sendmsg::<()>(channel.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map(drop)
        .map_err(|e| SetupError::io("network", "hand the proxy ports to the supervisor", e))
}

/// The supervisor's side: receives the listening sockets, or none if init
/// failed before sending them (its end then closes).
pub fn receive(channel: &OwnedFd) -> Vec<TcpListener> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let Ok(msg) = recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in our table for
                    // us; nothing else owns it.
                    out.push(TcpListener::from(unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
    }
    out
}
