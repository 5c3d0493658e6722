//! The TOML tables the proxy reads, as written: `[network]` and
//! `[[credentials]]`. The same types are embedded in the supervisor's
//! profile format, so a sidecar (`egress-proxy serve --policy FILE`) and
//! `sandbox run --profile` read one format. Every entry keeps its position,
//! so a bad one is reported as `LINE:COLUMN: what`.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::credentials::{valid_env_name, valid_header_name, Apply, CredentialSpec, SecretSource};
use crate::policy::{at, Cidr, DenyRule, DomainRule, HostRule, NetworkPolicy, PolicyFileError};

/// `[network]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// Allowed destinations: `example.com`, `*.example.com`, `host:PORT`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub allow: Vec<Spanned<String>>,
    /// Denied destinations; a deny always wins.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub deny: Vec<Spanned<String>>,
    /// Non-public address ranges that may be dialled (e.g. `10.0.0.0/8`).
    /// Allowing a range allows everything in it: an IP literal inside it is
    /// tunnelled opaquely, and `rules` (which are by name) do not apply.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub allow_cidr: Vec<Spanned<String>>,
    /// Ports for entries without one (default `[80, 443]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    /// Method/path rules. A host with rules is reachable only where the
    /// proxy sees every request: plain HTTP (checked per request), HTTPS
    /// (intercepted with the session CA); SOCKS5 to it is refused.
    #[serde(default)]
    pub rules: Vec<RawHostRule>,
}

/// `[[network.rules]]`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHostRule {
    /// The host the rule is for (it must also be allowed).
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    /// Allowed methods (empty: any).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Allowed paths, in RFC 3986 normal form; a trailing `*` makes a
    /// prefix (empty: any). Requests are matched in normal form.
    #[serde(default)]
    pub paths: Vec<String>,
}

/// `[[credentials]]`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    /// Name, as logged.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Exactly one of `env`, `file`, `command`.
    pub source: RawSource,
    /// Hosts the secret may go to.
    #[schemars(with = "Vec<String>")]
    pub hosts: Vec<Spanned<String>>,
    /// Header injection: `{ header = "Authorization", value = "Bearer {secret}" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject: Option<RawInject>,
    /// Placeholder in the sandbox's environment: `{ env = "GITHUB_TOKEN", headers = ["Authorization"] }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<RawPlaceholder>,
}

/// `source = { env = ".." }` / `{ file = ".." }` / `{ command = [..] }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// Environment variable of the supervisor or sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// File holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Command printing the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

/// `inject = { header, value }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawInject {
    /// Header name.
    pub header: String,
    /// Value with `{secret}`.
    pub value: String,
}

/// `placeholder = { env, headers }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPlaceholder {
    /// The variable the sandbox sees (holding a random placeholder).
    pub env: String,
    /// The request headers the placeholder is swapped in (default
    /// `["Authorization"]`); anywhere else it is refused as a leak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
}

/// What the proxy enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyPolicy {
    /// Destinations.
    pub network: NetworkPolicy,
    /// Credentials.
    pub credentials: Vec<CredentialSpec>,
}

impl ProxyPolicy {
    /// Reads `[network]` and `[[credentials]]` from a policy file (other
    /// tables belong to the supervisor and are ignored here).
    pub fn from_file(path: &Path) -> Result<Self, PolicyFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyFileError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::from_toml(&text).map_err(|message| PolicyFileError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses a whole policy document; errors read `LINE:COLUMN: what`.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Document {
            #[serde(default)]
            network: RawNetwork,
            #[serde(default)]
            credentials: Vec<RawCredential>,
        }
        let doc = toml::from_str::<Document>(text)
            .map_err(|e| at(text, e.span().map(|s| s.start), e.message()))?;
        let network = doc.network.validate(text)?;
        let credentials = doc
            .credentials
            .into_iter()
            .map(|c| c.validate(text))
            .collect::<Result<Vec<_>, _>>()?;
        let mut names: Vec<&str> = credentials.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("credential '{}' is declared twice", w[0]));
        }
        Ok(Self {
            network,
            credentials,
        })
    }
}

fn each<T>(
    text: &str,
    items: Vec<Spanned<String>>,
    parse: fn(&str) -> Result<T, crate::policy::PatternError>,
) -> Result<Vec<T>, String> {
    items
        .into_iter()
        .map(|item| {
            parse(item.get_ref()).map_err(|e| at(text, Some(item.span().start), &e.to_string()))
        })
        .collect()
}

impl RawNetwork {
    /// Validates every entry; `text` is the document, for positions.
    pub fn validate(self, text: &str) -> Result<NetworkPolicy, String> {
        if let Some(ports) = &self.ports {
            if ports.contains(&0) {
                return Err(at(text, text.find("ports"), "port 0 is not a port"));
            }
        }
        let mut rules = Vec::new();
        for r in self.rules {
            let pos = Some(r.host.span().start);
            let host =
                DomainRule::parse(r.host.get_ref()).map_err(|e| at(text, pos, &e.to_string()))?;
            if r.methods
                .iter()
                .any(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()))
            {
                return Err(at(text, pos, "methods are words like GET or POST"));
            }
            if r.paths.iter().any(|p| !p.starts_with('/')) {
                return Err(at(text, pos, "paths start with '/'"));
            }
            // Requests are matched in normal form, so a rule written in
            // another form would never match what it seems to say.
            if let Some(p) = r.paths.iter().find(|p| {
                let prefix = p.strip_suffix('*').unwrap_or(p);
                !crate::reqpath::is_normal(prefix)
            }) {
                let prefix = p.strip_suffix('*').unwrap_or(p);
                let hint = match crate::reqpath::normalize(prefix) {
                    Ok(n) => format!("write it as '{n}'"),
                    Err(e) => e.to_string(),
                };
                return Err(at(
                    text,
                    pos,
                    &format!("path '{p}' is not in normal form (RFC 3986): {hint}"),
                ));
            }
            rules.push(HostRule {
                host,
                methods: r.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                paths: r.paths,
            });
        }
        Ok(NetworkPolicy {
            allow: each(text, self.allow, DomainRule::parse)?,
            deny: each(text, self.deny, DenyRule::parse)?,
            allow_cidr: each(text, self.allow_cidr, Cidr::parse)?,
            ports: self.ports,
            rules,
            report_only: false,
        })
    }
}

impl RawCredential {
    /// Validates one credential; errors point at its name.
    pub fn validate(self, text: &str) -> Result<CredentialSpec, String> {
        let pos = Some(self.name.span().start);
        let name = self.name.into_inner();
        let err = |what: String| at(text, pos, &format!("credential '{name}': {what}"));
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err("names use letters, digits, '-' and '_'".into()));
        }
        let source = match (self.source.env, self.source.file, self.source.command) {
            (Some(e), None, None) if valid_env_name(&e) => SecretSource::Env(e),
            (Some(e), None, None) => return Err(err(format!("'{e}' is not a variable name"))),
            (None, Some(f), None) if f.is_absolute() => SecretSource::File(f),
            (None, Some(f), None) => {
                return Err(err(format!("source file {} must be absolute", f.display())))
            }
            (None, None, Some(c)) if !c.is_empty() => SecretSource::Command(c),
            _ => {
                return Err(err(
                    "source needs exactly one of env, file or command (non-empty)".into(),
                ))
            }
        };
        if self.hosts.is_empty() {
            return Err(err("hosts is empty: name where the secret may go".into()));
        }
        let mut hosts = Vec::new();
        for h in self.hosts {
            let hpos = Some(h.span().start);
            let rule =
                DomainRule::parse(h.get_ref()).map_err(|e| at(text, hpos, &e.to_string()))?;
            if rule.port.is_some() {
                return Err(at(text, hpos, "credential hosts take no port"));
            }
            hosts.push(rule);
        }
        let apply = match (self.inject, self.placeholder) {
            (Some(i), None) => {
                if !valid_header_name(&i.header) {
                    return Err(err(format!("'{}' is not a header name", i.header)));
                }
                if i.value.matches("{secret}").count() != 1 {
                    return Err(err("inject.value must contain {secret} exactly once".into()));
                }
                Apply::Header {
                    name: i.header,
                    template: i.value,
                }
            }
            (None, Some(p)) if valid_env_name(&p.env) => {
                let headers = p
                    .headers
                    .unwrap_or_else(|| vec!["Authorization".to_string()]);
                if headers.is_empty() {
                    return Err(err(
                        "placeholder.headers is empty: name the header it goes in".into(),
                    ));
                }
                if let Some(bad) = headers.iter().find(|h| !valid_header_name(h)) {
                    return Err(err(format!("'{bad}' is not a header name")));
                }
                Apply::Placeholder {
                    env: p.env,
                    headers: headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
                }
            }
            (None, Some(p)) => return Err(err(format!("'{}' is not a variable name", p.env))),
            _ => return Err(err("give exactly one of inject or placeholder".into())),
        };
        Ok(CredentialSpec {
            name,
            source,
            hosts,
            apply,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_and_errors_name_their_position() {
        let ok = r#"
[[credentials]]
name = "github"
source = { env = "GITHUB_TOKEN" }
hosts = ["api.github.com", "github.com"]
inject = { header = "Authorization", value = "Bearer {secret}" }

[[credentials]]
name = "anthropic"
source = { file = "/run/secrets/anthropic" }
hosts = ["api.anthropic.com"]
placeholder = { env = "ANTHROPIC_API_KEY" }
"#;
        let p = ProxyPolicy::from_toml(ok).expect("valid");
        assert_eq!(p.credentials.len(), 2);
        assert!(p.credentials[0].bound_to("api.github.com"));
        assert!(!p.credentials[0].bound_to("evil.example.com"));

        for (bad, want) in [
            (
                "[[credentials]]\nname = \"x\"\nsource = { env = \"A\", file = \"/f\" }\nhosts = [\"a.example.com\"]\ninject = { header = \"A\", value = \"{secret}\" }\n",
                "2:8: credential 'x': source needs exactly one",
            ),
            (
                "[[credentials]]\nname = \"x\"\nsource = { env = \"A\" }\nhosts = [\"*\"]\ninject = { header = \"A\", value = \"{secret}\" }\n",
                "4:10:",
            ),
            (
                "[[credentials]]\nname = \"x\"\nsource = { env = \"A\" }\nhosts = [\"a.example.com\"]\ninject = { header = \"A\", value = \"no placeholder\" }\n",
                "exactly once",
            ),
            (
                "[[credentials]]\nname = \"x\"\nsource = { env = \"A\" }\nhosts = [\"a.example.com\"]\n",
                "exactly one of inject or placeholder",
            ),
            (
                "[[credentials]]\nname = \"x\"\nsource = { env = \"A\" }\nhosts = [\"a.example.com\"]\nplaceholder = { env = \"A\" }\nextra = 1\n",
                "6:1:",
            ),
        ] {
            let e = ProxyPolicy::from_toml(bad).unwrap_err();
            assert!(e.contains(want), "{e}\nwanted {want}");
        }
    }

    #[test]
    fn host_rules_admit_methods_and_paths() {
        let p = ProxyPolicy::from_toml(
            "[network]\nallow = [\"api.example.com\"]\n[[network.rules]]\nhost = \"api.example.com\"\nmethods = [\"get\"]\npaths = [\"/v1/*\", \"/health\"]\n",
        )
        .expect("valid");
        let r = &p.network.rules[0];
        assert!(r.admits("GET", "/v1/messages"));
        assert!(r.admits("GET", "/health"));
        assert!(!r.admits("GET", "/health/x"));
        assert!(!r.admits("POST", "/v1/messages"));
        assert!(!r.admits("GET", "/admin"));
    }
}
