//! `sandbox policy show`: the effective policy after `extends`, flags and
//! the managed policy, in its canonical form, with the files it came from
//! and its hash (the `policy_hash` of the plan and the audit log).

use serde_json::json;

use super::merge::Effective;

/// The human form: comments with the sources and the hash, then TOML.
pub fn render(eff: &Effective) -> String {
    let mut out = String::from("# Effective policy, built from (in order):\n");
    for s in &eff.sources {
        out.push_str(&format!(
            "#   {:<8} {}  sha256:{}\n",
            s.role, s.label, s.sha256
        ));
    }
    out.push_str(&format!("# policy_hash = sha256:{}\n\n", eff.hash()));
    match toml::to_string(&eff.canonical()) {
        Ok(t) => out.push_str(&t),
        Err(e) => out.push_str(&format!("# cannot render as TOML: {e}\n")),
    }
    out
}

/// The machine form.
pub fn render_json(eff: &Effective) -> String {
    let sources: Vec<_> = eff
        .sources
        .iter()
        .map(|s| json!({ "file": s.label, "sha256": s.sha256, "role": s.role }))
        .collect();
    json!({ "policy_hash": eff.hash(), "sources": sources, "policy": eff.canonical() }).to_string()
}
