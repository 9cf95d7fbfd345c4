//! Test-only helpers (a dev-dependency, never linked into a binary that ships).
//!
//! Generated artefacts — the CRD YAML, the rendered chart, the flag references in `docs/` — are
//! checked in so reviewers see them change in a pull request. Each has a test that regenerates
//! it in memory and compares it with [`check_generated`]; `make generate` runs those tests with
//! [`GENERATE_ENV`] set, and then they write the files instead of failing.

pub mod alloc;
pub mod bench;

use std::path::Path;
use std::process::Command;

/// Set (to anything) to make drift tests write what they generate.
pub const GENERATE_ENV: &str = "PHANTOM_GENERATE";

/// The comment every generated Markdown page starts with.
pub fn generated_notice(source: &str) -> String {
    format!("<!-- Generated from {source}; do not edit. Regenerate with `make generate`. -->")
}

/// Compares the checked-in `path` with `expected`; with [`GENERATE_ENV`] set, writes `expected`
/// first. The error names the file and the command that regenerates it.
pub fn check_generated(path: &Path, expected: &str) -> Result<(), String> {
    if std::env::var_os(GENERATE_ENV).is_some() {
        std::fs::write(path, expected)
            .map_err(|e| format!("writing the generated {}: {e}", path.display()))?;
    }
    let actual = std::fs::read_to_string(path).unwrap_or_default();
    if actual == expected {
        return Ok(());
    }
    let first_difference = actual
        .lines()
        .zip(expected.lines())
        .position(|(a, e)| a != e)
        .unwrap_or_else(|| actual.lines().count().min(expected.lines().count()));
    Err(format!(
        "{} drifted from what generates it (first difference at line {}); run `make generate` and commit the result",
        path.display(),
        first_difference + 1
    ))
}

/// [`check_generated`], panicking with its message.
#[track_caller]
pub fn assert_generated(path: &Path, expected: &str) {
    if let Err(why) = check_generated(path, expected) {
        panic!("{why}");
    }
}

/// `binary args… --help`, run with only `env` in its environment: clap prints
/// `[env: PHANTOM_X=value]` for variables set in the caller's environment, which would make the
/// output depend on it.
pub fn help(binary: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(binary)
        .args(args)
        .arg("--help")
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {binary} --help: {e}"));
    assert!(
        out.status.success(),
        "{binary} {args:?} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The argument vector `program fixed… --flag=value…` for a map of flags to values: binaries'
/// settings are unit-tested over such maps (as linkerd2-proxy tests its environment config).
pub fn argv(program: &str, fixed: &[&str], flags: &[(&str, &str)]) -> Vec<String> {
    std::iter::once(program.to_owned())
        .chain(fixed.iter().map(|f| (*f).to_owned()))
        .chain(
            flags
                .iter()
                .map(|(flag, value)| format!("--{flag}={value}")),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_reported_with_the_file_and_the_line() {
        let dir = std::env::temp_dir().join(format!("phantom-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("page.md");
        std::fs::write(&path, "a\nb\nc\n").expect("write");
        assert_eq!(check_generated(&path, "a\nb\nc\n"), Ok(()));
        let why = check_generated(&path, "a\nB\nc\n").expect_err("drift");
        assert!(
            why.contains("page.md") && why.contains("line 2") && why.contains("make generate"),
            "{why}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
