//! The capability layer: the sandbox's processes hold no capabilities at
//! all, in any set, and cannot regain them (`no_new_privs`, empty bounding
//! set), so setuid binaries and file capabilities grant nothing.

use ::caps::CapSet;

use crate::error::SetupError;

const LAYER: &str = "capabilities";

/// Drops every capability from the bounding, ambient, inheritable,
/// effective and permitted sets, sets `no_new_privs`, then checks that all
/// five sets really are empty.
///
/// The bounding set goes first: dropping from it needs CAP_SETPCAP, which
/// the effective set still holds at that point.
pub fn drop_all() -> Result<(), SetupError> {
    for cap in ::caps::all() {
        // SAFETY: PR_CAPBSET_DROP takes a capability number, nothing else.
        let rc =
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap.index() as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // EINVAL: a capability newer than this kernel (not in its set).
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(SetupError::io(
                    LAYER,
                    format!("drop {cap} from bounding set"),
                    err,
                ));
            }
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointer arguments.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(SetupError::io(
            LAYER,
            "clear the ambient set",
            std::io::Error::last_os_error(),
        ));
    }
    ::caps::clear(None, CapSet::Inheritable)
        .and_then(|()| ::caps::clear(None, CapSet::Effective))
        .and_then(|()| ::caps::clear(None, CapSet::Permitted))
        .map_err(|e| SetupError::io(LAYER, "clear the capability sets", e))?;
    set_no_new_privs()?;
    verify_empty()
}

/// The opposite of [`drop_all`], for the selftest's weakened runs only
/// (debug builds): every permitted capability becomes inheritable and
/// ambient, so the agent keeps them across execve.
pub fn pass_all_to_agent() {
    let Ok(permitted) = ::caps::read(None, CapSet::Permitted) else {
        return;
    };
    let _ = ::caps::set(None, CapSet::Inheritable, &permitted);
    for cap in permitted {
        let _ = ::caps::raise(None, CapSet::Ambient, cap);
    }
}

/// Sets `no_new_privs`: execve can never grant privileges again.
pub fn set_no_new_privs() -> Result<(), SetupError> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| SetupError::io(LAYER, "set no_new_privs", e))
}

/// Checks all five sets, as the kernel reports them in
/// `/proc/thread-self/status` (one read), or set by set where that file
/// cannot be read.
fn verify_empty() -> Result<(), SetupError> {
    if let Ok(status) = crate::procfs::read("/proc/thread-self/status") {
        return verify_status(&status);
    }
    for set in [
        CapSet::Bounding,
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        let held = ::caps::read(None, set)
            .map_err(|e| SetupError::io(LAYER, format!("read {set:?}"), e))?;
        if let Some(cap) = held.iter().next() {
            return Err(SetupError::new(
                LAYER,
                format!("{cap} is still in the {set:?} set after dropping everything"),
            ));
        }
    }
    Ok(())
}

/// Every `Cap*:` line of a status file must be all zeros, and all five
/// must be there.
fn verify_status(status: &str) -> Result<(), SetupError> {
    let mut seen = 0;
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if !matches!(key, "CapInh" | "CapPrm" | "CapEff" | "CapBnd" | "CapAmb") {
            continue;
        }
        seen += 1;
        let value = value.trim();
        if value.is_empty() || value.bytes().any(|b| b != b'0') {
            return Err(SetupError::new(
                LAYER,
                format!("{key} is {value} after dropping everything"),
            ));
        }
    }
    if seen != 5 {
        return Err(SetupError::new(
            LAYER,
            "the status file does not list all five capability sets",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::verify_status;

    const EMPTY: &str = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
                         CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n\
                         CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";

    #[test]
    fn empty_sets_pass() {
        assert!(verify_status(EMPTY).is_ok());
    }

    #[test]
    fn any_held_capability_fails() {
        let bnd = EMPTY.replace("CapBnd:\t0000000000000000", "CapBnd:\t0000000000000400");
        assert!(verify_status(&bnd)
            .unwrap_err()
            .to_string()
            .contains("CapBnd"));
    }

    #[test]
    fn a_missing_set_fails() {
        let no_amb = EMPTY.replace("CapAmb:\t0000000000000000\n", "");
        assert!(verify_status(&no_amb).is_err());
    }
}
