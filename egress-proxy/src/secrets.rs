//! Secrets, on the proxy's side only: read from their sources at startup
//! (fail closed: a missing secret is an error naming the credential), held
//! in a type whose `Debug` never shows the value, and searched for in
//! outgoing requests so they only go where they are bound.

use std::fmt;
use std::process::{Command, Stdio};

use crate::credentials::{Apply, CredentialSpec, SecretSource};
use crate::scrub;

/// A secret value. `Debug` and `Display` print a redaction marker.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for injection only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A credential whose secret could not be read.
#[derive(Debug, thiserror::Error)]
#[error("credential '{name}': {why}")]
pub struct SecretError {
    /// The credential.
    pub name: String,
    /// What went wrong (never the value).
    pub why: String,
}

/// A credential ready for use.
#[derive(Debug, Clone)]
pub struct Credential {
    /// What the profile declared.
    pub spec: CredentialSpec,
    /// The secret.
    pub secret: Secret,
    /// The placeholder the sandbox sees, for placeholder credentials.
    pub placeholder: Option<String>,
}

/// Reads `spec`'s secret. `env` looks variables up (the supervisor passes
/// its own environment; tests pass a table).
pub fn load(
    spec: &CredentialSpec,
    env: &dyn Fn(&str) -> Option<String>,
    placeholder: Option<&String>,
) -> Result<Credential, SecretError> {
    let fail = |why: String| SecretError {
        name: spec.name.clone(),
        why,
    };
    let raw = match &spec.source {
        SecretSource::Env(var) => {
            env(var).ok_or_else(|| fail(format!("environment variable {var} is not set")))?
        }
        SecretSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?,
        SecretSource::Command(argv) => {
            let out = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .map_err(|e| fail(format!("cannot run {}: {e}", argv[0])))?;
            if !out.status.success() {
                return Err(fail(format!("{} exited with {}", argv[0], out.status)));
            }
            String::from_utf8(out.stdout)
                .map_err(|_| fail(format!("{} printed a non-UTF-8 secret", argv[0])))?
        }
    };
    let value = raw.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(fail("the secret is empty".into()));
    }
    if value.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(fail("the secret contains control characters".into()));
    }
    let placeholder = match &spec.apply {
        Apply::Placeholder { .. } => Some(placeholder.cloned().unwrap_or_else(|| {
            format!(
                "airlock-placeholder-{}-{}",
                spec.name,
                crate::new_session_id()
            )
        })),
        Apply::Header { .. } => None,
    };
    Ok(Credential {
        spec: spec.clone(),
        secret: Secret::new(value),
        placeholder,
    })
}

impl Credential {
    /// The raw values a leak check looks for: the secret and the
    /// placeholder, if any.
    pub fn needles(&self) -> scrub::Matcher {
        scrub::Matcher::new(
            std::iter::once(self.secret.expose().as_bytes().to_vec())
                .chain(self.placeholder.iter().map(|p| p.as_bytes().to_vec())),
        )
    }
}

/// All of a session's credentials.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    list: Vec<Credential>,
    /// Every secret's encodings, built once at load.
    scrub: std::sync::Arc<scrub::Matcher>,
}

impl Credentials {
    /// Loads every spec, failing on the first missing secret. Placeholder
    /// credentials use the placeholder given for their name (the one the
    /// sandbox was told), or a fresh random one.
    pub fn load_all(
        specs: &[CredentialSpec],
        env: &dyn Fn(&str) -> Option<String>,
        placeholders: &std::collections::HashMap<String, String>,
    ) -> Result<Self, SecretError> {
        let list: Vec<Credential> = specs
            .iter()
            .map(|s| load(s, env, placeholders.get(&s.name)))
            .collect::<Result<_, _>>()?;
        let scrub = std::sync::Arc::new(scrub::Matcher::new(
            list.iter()
                .flat_map(|c| scrub::encodings(c.secret.expose().as_bytes())),
        ));
        Ok(Self { list, scrub })
    }

    /// Every credential.
    pub fn all(&self) -> &[Credential] {
        &self.list
    }

    /// Whether any credential exists.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Credentials bound to `host`.
    pub fn bound_to<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Credential> + 'a {
        self.list.iter().filter(move |c| c.spec.bound_to(host))
    }

    /// Whether `host` carries any credential (and so is intercepted).
    pub fn any_bound_to(&self, host: &str) -> bool {
        self.bound_to(host).next().is_some()
    }

    /// The first credential whose secret or placeholder appears in
    /// `haystack`, in any decoded form and any case (see `scrub.rs`),
    /// although it is not bound to `host`.
    pub fn leaked_to(&self, host: &str, haystack: &[u8]) -> Option<&Credential> {
        let off_host: Vec<&Credential> = self
            .list
            .iter()
            .filter(|c| !c.spec.bound_to(host))
            .collect();
        if off_host.is_empty() || haystack.is_empty() {
            return None;
        }
        let views = scrub::decoded_views(haystack);
        off_host
            .into_iter()
            .find(|c| views.iter().any(|v| c.needles().found_in(v)))
    }

    /// The first credential whose secret or placeholder is spelled in the
    /// host name `name` (any case, dots removed so a needle split across
    /// labels is whole again, or in any decoded form). Names are checked
    /// before any lookup: a DNS query is itself a way out.
    pub fn leaked_in_name(&self, name: &str) -> Option<&Credential> {
        let joined = scrub::undotted(name);
        self.list.iter().find(|c| {
            c.needles().found_in(&joined) || scrub::found_decoded(&c.needles(), name.as_bytes())
        })
    }

    /// Every secret in every common encoding, for scrubbing what flows back
    /// to the sandbox.
    pub fn scrub_matcher(&self) -> std::sync::Arc<scrub::Matcher> {
        self.scrub.clone()
    }

    /// (needle, replacement) pairs that scrub every secret and placeholder,
    /// in each common encoding, from text bound for the audit log (which
    /// also redacts any string in which a decoded form still shows one).
    pub fn redactions(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for c in &self.list {
            let mut add = |value: &str, marker: String| {
                for e in scrub::encodings(value.as_bytes()) {
                    if let Ok(e) = String::from_utf8(e) {
                        out.push((e, marker.clone()));
                    }
                }
            };
            add(c.secret.expose(), format!("[credential:{}]", c.spec.name));
            if let Some(p) = &c.placeholder {
                add(p, format!("[placeholder:{}]", c.spec.name));
            }
        }
        // Longest first, so an encoding is replaced before a shorter form
        // inside it.
        out.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        out
    }

    /// `(variable, placeholder)` for the sandbox's environment.
    pub fn placeholder_env(&self) -> Vec<(String, String)> {
        self.list
            .iter()
            .filter_map(|c| match (&c.spec.apply, &c.placeholder) {
                (Apply::Placeholder { env, .. }, Some(p)) => Some((env.clone(), p.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Byte-substring search (secrets are short; requests are bounded).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyPolicy;

    fn specs() -> Vec<CredentialSpec> {
        ProxyPolicy::from_toml(
            r#"
[[credentials]]
name = "gh"
source = { env = "GH_TOKEN" }
hosts = ["api.github.com"]
inject = { header = "Authorization", value = "Bearer {secret}" }
[[credentials]]
name = "llm"
source = { command = ["printf", "sk-llm-value\n"] }
hosts = ["api.anthropic.com"]
placeholder = { env = "ANTHROPIC_API_KEY" }
"#,
        )
        .expect("valid")
        .credentials
    }

    #[test]
    fn secrets_load_from_env_and_commands_and_never_print() {
        let env = |k: &str| (k == "GH_TOKEN").then(|| "ghp_value".to_string());
        let c = Credentials::load_all(&specs(), &env, &Default::default()).expect("load");
        assert_eq!(c.all()[0].secret.expose(), "ghp_value");
        assert_eq!(c.all()[1].secret.expose(), "sk-llm-value");
        assert!(!format!("{c:?}").contains("ghp_value"));
        let env_vars = c.placeholder_env();
        assert_eq!(env_vars.len(), 1);
        assert_eq!(env_vars[0].0, "ANTHROPIC_API_KEY");
        assert!(!env_vars[0].1.contains("sk-llm-value"));
    }

    #[test]
    fn a_missing_secret_names_the_credential_not_the_value() {
        let err = Credentials::load_all(&specs(), &|_| None, &Default::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "credential 'gh': environment variable GH_TOKEN is not set"
        );
    }

    #[test]
    fn leaks_are_found_only_off_their_hosts() {
        let env = |_: &str| Some("ghp_value".to_string());
        let c = Credentials::load_all(&specs(), &env, &Default::default()).expect("load");
        let ph = c.placeholder_env()[0].1.clone();
        assert!(c.leaked_to("api.github.com", b"Bearer ghp_value").is_none());
        assert_eq!(
            c.leaked_to("evil.example.com", b"x=ghp_value")
                .map(|c| c.spec.name.as_str()),
            Some("gh")
        );
        assert_eq!(
            c.leaked_to("api.github.com", ph.as_bytes())
                .map(|c| c.spec.name.as_str()),
            Some("llm")
        );
        assert!(c.leaked_to("api.anthropic.com", ph.as_bytes()).is_none());
    }
}
