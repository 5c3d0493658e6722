//! The error a sandbox layer reports when it cannot be applied.
//!
//! Every failure names the layer (`namespaces`, `mounts`, `landlock`, ...) so
//! the user knows which part of the isolation could not be built, and the
//! message says why and, where we know it, how to fix it.

use std::fmt;

/// A layer of isolation that could not be applied. `sandbox run` refuses to
/// start when it sees one: nothing runs half-sandboxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError {
    /// The layer that failed, e.g. `"landlock"`.
    pub layer: &'static str,
    /// What failed and how to fix it.
    pub message: String,
}

impl SetupError {
    /// A failure of `layer` described by `message`.
    pub fn new(layer: &'static str, message: impl Into<String>) -> Self {
        Self {
            layer,
            message: message.into(),
        }
    }

    /// A failure of `layer` while doing `what`, caused by `err`.
    pub fn io(layer: &'static str, what: impl fmt::Display, err: impl fmt::Display) -> Self {
        Self::new(layer, format!("{what}: {err}"))
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.layer, self.message)
    }
}

impl std::error::Error for SetupError {}
