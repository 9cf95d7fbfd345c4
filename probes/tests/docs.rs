//! docs/preflight.md is generated from `phantom-preflight --help`; this test fails when they
//! drift. Regenerate with `PHANTOM_UPDATE_DOCS=1 cargo test -p phantom-probes --test docs`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn flag_reference_matches_the_help_output() {
    let out = Command::new(env!("CARGO_BIN_EXE_phantom-preflight"))
        .arg("--help")
        // `[env: PHANTOM_X=value]` would show values set in the caller's environment.
        .env_clear()
        .output()
        .expect("phantom-preflight --help");
    let expected = format!(
        "# phantom-preflight\n\n<!-- Generated from `phantom-preflight --help`; do not edit. Regenerate with\n     PHANTOM_UPDATE_DOCS=1 cargo test -p phantom-probes --test docs -->\n\nEvery flag can also be set through the environment variable shown with it. The chart runs it as a Job; what each\ncheck means and what to do when it fails: [operations](operations.md#pre-flight-check).\n\n```text\n{}```\n",
        String::from_utf8_lossy(&out.stdout)
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/preflight.md");
    if std::env::var_os("PHANTOM_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &expected).expect("write docs/preflight.md");
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "docs/preflight.md drifted from `phantom-preflight --help`; regenerate with PHANTOM_UPDATE_DOCS=1 cargo test -p phantom-probes --test docs"
    );
}
