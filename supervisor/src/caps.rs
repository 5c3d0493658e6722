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
        if let Err(e) = ::caps::drop(None, CapSet::Bounding, cap) {
            // Capabilities newer than this kernel are not in its bounding set.
            if ::caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                return Err(SetupError::io(
                    LAYER,
                    format!("drop {cap} from bounding set"),
                    e,
                ));
            }
        }
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        ::caps::clear(None, set).map_err(|e| SetupError::io(LAYER, format!("clear {set:?}"), e))?;
    }
    set_no_new_privs()?;
    verify_empty()
}

/// Sets `no_new_privs`: execve can never grant privileges again.
pub fn set_no_new_privs() -> Result<(), SetupError> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| SetupError::io(LAYER, "set no_new_privs", e))
}

fn verify_empty() -> Result<(), SetupError> {
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
