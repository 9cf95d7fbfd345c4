//! docs/controller.md is generated from `phantom-controller --help`; this test fails when they
//! drift. Regenerate with `PHANTOM_UPDATE_DOCS=1 cargo test -p phantom-controller --test docs`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn flag_reference_matches_the_help_output() {
    let out = Command::new(env!("CARGO_BIN_EXE_phantom-controller"))
        .arg("--help")
        // `[env: PHANTOM_X=value]` would show values set in the caller's environment, and the
        // default identity comes from HOSTNAME.
        .env_clear()
        .env("HOSTNAME", "phantom-controller-0")
        .output()
        .expect("phantom-controller --help");
    let expected = format!(
        "# phantom-controller\n\n<!-- Generated from `phantom-controller --help`; do not edit. Regenerate with\n     PHANTOM_UPDATE_DOCS=1 cargo test -p phantom-controller --test docs -->\n\nEvery flag can also be set through the environment variable shown with it. How the controller\nworks: [architecture](architecture.md#the-controller-controller); running it:\n[operations](operations.md#the-controller-webhook-configurations-and-the-circuit-breaker).\n\n```text\n{}```\n",
        String::from_utf8_lossy(&out.stdout)
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/controller.md");
    if std::env::var_os("PHANTOM_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &expected).expect("write docs/controller.md");
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "docs/controller.md drifted from `phantom-controller --help`; regenerate with PHANTOM_UPDATE_DOCS=1 cargo test -p phantom-controller --test docs"
    );
}
