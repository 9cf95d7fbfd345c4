//! docs/runtime-proxy.md is generated from `phantom-proxy --help` and `phantom-exec --help`; this
//! test fails when they drift. Regenerate with
//! `PHANTOM_UPDATE_DOCS=1 cargo test -p phantom-runtime-proxy --test docs`.

use std::path::PathBuf;
use std::process::Command;

fn help(binary: &str) -> String {
    let out = Command::new(binary)
        .arg("--help")
        // `[env: PHANTOM_X=value]` would show values set in the caller's environment.
        .env_clear()
        .output()
        .expect("--help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn flag_reference_matches_the_help_output() {
    let expected = format!(
        "# phantom-proxy and phantom-exec\n\n<!-- Generated from `--help`; do not edit. Regenerate with\n     PHANTOM_UPDATE_DOCS=1 cargo test -p phantom-runtime-proxy --test docs -->\n\nAdmission sets these variables on the injected containers (see\n[architecture](architecture.md#the-injected-pod)); set them yourself only to run the binaries\nby hand. Every flag can also be set through the environment variable shown with it.\n\n## phantom-proxy\n\n```text\n{}```\n\n## phantom-exec\n\n```text\n{}```\n",
        help(env!("CARGO_BIN_EXE_phantom-proxy")),
        help(env!("CARGO_BIN_EXE_phantom-exec")),
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/runtime-proxy.md");
    if std::env::var_os("PHANTOM_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &expected).expect("write docs/runtime-proxy.md");
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "docs/runtime-proxy.md drifted from the binaries' --help; regenerate with PHANTOM_UPDATE_DOCS=1 cargo test -p phantom-runtime-proxy --test docs"
    );
}
