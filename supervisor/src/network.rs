//! The sandbox's network namespace: only `lo`, brought up by init so the
//! in-sandbox relays (and local tools) can use 127.0.0.1.

use crate::error::SetupError;

/// Sets IFF_UP on `lo` with the classic ioctl (no netlink needed).
pub fn loopback_up() -> Result<(), SetupError> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| SetupError::io("network", "socket for loopback setup", e))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: `req` is a valid ifreq naming "lo" and outlives both calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(SetupError::io(
                "network",
                "read lo flags",
                std::io::Error::last_os_error(),
            ));
        }
        let up = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if req.ifr_ifru.ifru_flags & up == up {
            return Ok(());
        }
        req.ifr_ifru.ifru_flags |= up;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(SetupError::io(
                "network",
                "bring lo up",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}
