//! `sandbox policy check FILE...`: validates profiles (and managed
//! policies) the way a security team's CI wants it: every error with file,
//! line and column, a non-zero exit if there is any.

use std::path::{Path, PathBuf};

use super::load::{self, Layer};
use super::managed;
use super::merge::{lint, CliLayer, Effective};

/// The errors of one file (empty when valid), each file's sorted by line
/// and column. A profile is checked with its whole `extends` chain on top
/// of the embedded default and, when `managed` is given, against that
/// managed policy (its ownership is not checked here: this is a lint, not
/// enforcement).
pub fn check_file(path: &Path, managed: Option<&Layer>) -> Vec<String> {
    let mut errors = unsorted(path, managed);
    load::sort_by_position(&mut errors);
    errors
}

/// The errors of [`check_file`], in the order they were found.
fn unsorted(path: &Path, managed: Option<&Layer>) -> Vec<String> {
    let (chain, mut errors) = load::chain_of_file(path);
    if !errors.is_empty() || chain.last().is_some_and(|l| l.managed.is_some()) {
        errors.extend(chain.iter().flat_map(|l| lint(&l.rules)));
        return errors;
    }
    let mut layers = vec![load::embedded_default()];
    layers.extend(chain);
    let mut eff = match Effective::merge(&layers, &CliLayer::default()) {
        Ok(e) => e,
        Err(e) => return e,
    };
    match managed {
        // Grants are compared with the managed denies as `run` does, for
        // the current directory as the workspace.
        Some(m) => match managed::enforce(&mut eff, m, &CliLayer::default()) {
            Ok(()) => managed::check_grants(&eff, &super::path_vars(None)),
            Err(e) => e,
        },
        None => Vec::new(),
    }
}

/// Runs the command; prints `FILE: ok` or each error; exit 1 on any error.
pub fn main(files: &[PathBuf], managed_path: Option<&Path>) -> u8 {
    let managed = match managed_path.map(load::read_layer) {
        Some(Ok(m)) => Some(m),
        Some(Err(errors)) => {
            for e in errors {
                eprintln!("{e}");
            }
            return 1;
        }
        None => None,
    };
    let mut failed = false;
    for f in files {
        let errors = check_file(f, managed.as_ref());
        if errors.is_empty() {
            let about = load::read_layer(f)
                .ok()
                .and_then(|l| match (l.name, l.description) {
                    (Some(n), Some(d)) => Some(format!(" ({n}: {d})")),
                    (Some(n), None) => Some(format!(" ({n})")),
                    _ => None,
                })
                .unwrap_or_default();
            println!("{}: ok{about}", f.display());
        } else {
            failed = true;
            for e in errors {
                eprintln!("{e}");
            }
        }
    }
    u8::from(failed)
}
