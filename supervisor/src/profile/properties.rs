//! Property tests for the profile loader and `policy explain --url` under
//! random input: neither panics, whatever the text. A few thousand cases
//! in CI; `scripts/bench fuzz` runs them with `PROPTEST_CASES` in the
//! millions.

use proptest::prelude::*;

use super::explain;
use super::load::{embedded_default, parse_layer};
use super::merge::{CliLayer, Effective};

/// CI's case count unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 2000;
    }
    c.failure_persistence = None;
    c
}

/// TOML-ish text: the profile format's sections and keys with random
/// values, or noise.
fn toml_text() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("[network]"),
        Just("[[network.rules]]"),
        Just("[filesystem]"),
        Just("[limits]"),
        Just("[env]"),
        Just("[profile]"),
        Just("[[credentials]]"),
        Just("[managed]"),
    ];
    let key = prop_oneof![
        Just("allow"),
        Just("deny"),
        Just("allow_cidr"),
        Just("ports"),
        Just("host"),
        Just("methods"),
        Just("paths"),
        Just("read"),
        Just("write"),
        Just("protect"),
        Just("name"),
        Just("extends"),
        Just("memory"),
        Just("pids"),
        Just("timeout"),
        Just("tmp_size"),
        Just("set"),
        Just("pass"),
        Just("source"),
        Just("hosts"),
        Just("inject"),
        Just("placeholder"),
    ];
    let value = prop_oneof![
        "\"[ -~]{0,20}\"",
        "-?[0-9]{1,12}",
        "\"[0-9]{1,20}[KMGTkmgt]?\"",
        "\"[0-9]{1,10}[smhd]\"",
        "\\[(\"[a-z0-9.*:/%${}A-Z_-]{0,16}\", ){0,3}\\]",
        "\\{ [a-z]{1,6} = \"[a-z{}]{0,8}\" \\}",
        Just("true".to_string()),
    ];
    prop_oneof![
        prop::collection::vec((section, prop::collection::vec((key, value), 0..4)), 0..5).prop_map(
            |sections| {
                let mut s = String::new();
                for (sec, kvs) in sections {
                    s.push_str(sec);
                    s.push('\n');
                    for (k, v) in kvs {
                        s.push_str(&format!("{k} = {v}\n"));
                    }
                }
                s
            }
        ),
        "[\\[\\]a-z_=\" .,{}\n0-9*/:$-]{0,120}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// The loader refuses bad profiles with errors, never a panic; a
    /// profile it accepts merges (or is refused) without panicking either.
    #[test]
    fn profile_loader_survives_random_toml(text in toml_text()) {
        if let Ok(layer) = parse_layer("fuzz.toml", None, &text) {
            let _ = Effective::merge(&[embedded_default(), layer], &CliLayer::default());
        }
    }

    /// `policy explain --url` answers or refuses any string.
    #[test]
    fn explain_url_survives_random_urls(
        url in prop_oneof![
            "(https?|ftp|)://[a-zA-Z0-9.:\\[\\]@%-]{0,30}(/[a-zA-Z0-9.%;/?#-]{0,30})?",
            any::<String>(),
        ],
        method in "[A-Z]{0,7}",
    ) {
        let eff = Effective::merge(&[embedded_default()], &CliLayer::default())
            .expect("the default profile");
        let _ = explain::url(&eff, &url, &method);
    }
}
