//! docs/admission.md is generated from `phantom-admission --help`; this test fails when they
//! drift. Regenerate with `PHANTOM_UPDATE_DOCS=1 cargo test -p phantom-admission --test docs`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn flag_reference_matches_the_help_output() {
    let out = Command::new(env!("CARGO_BIN_EXE_phantom-admission"))
        .arg("--help")
        // `[env: PHANTOM_X=value]` would show values set in the caller's environment.
        .env_clear()
        .output()
        .expect("phantom-admission --help");
    let expected = format!(
        "# phantom-admission\n\n<!-- Generated from `phantom-admission --help`; do not edit. Regenerate with\n     PHANTOM_UPDATE_DOCS=1 cargo test -p phantom-admission --test docs -->\n\nEvery flag can also be set through the environment variable shown with it. How the webhook\nworks: [architecture](architecture.md#the-admission-webhook-admission); running it:\n[operations](operations.md#running-the-admission-webhook).\n\n```text\n{}```\n",
        String::from_utf8_lossy(&out.stdout)
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/admission.md");
    if std::env::var_os("PHANTOM_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &expected).expect("write docs/admission.md");
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "docs/admission.md drifted from `phantom-admission --help`; regenerate with PHANTOM_UPDATE_DOCS=1 cargo test -p phantom-admission --test docs"
    );
}
