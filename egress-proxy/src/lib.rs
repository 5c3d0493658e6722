//! The egress proxy: the sandbox's only way out (domain allowlists, credential
//! injection, audit log). A stub until its milestone; `sandbox run` gives the
//! sandbox no network at all until then.
