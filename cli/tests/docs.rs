//! docs/cli.md is generated from `phantomctl --help`; this test fails when they drift.
//! Regenerate with `PHANTOM_UPDATE_DOCS=1 cargo test -p phantomctl --test docs`.

use std::path::PathBuf;
use std::process::Command;

const PAGES: &[&[&str]] = &[
    &[],
    &["policy"],
    &["policy", "lint"],
    &["policy", "test"],
    &["policy", "diff"],
    &["status"],
];

fn render() -> String {
    let mut doc = String::from(
        "# phantomctl\n\n<!-- Generated from `phantomctl --help`; do not edit. Regenerate with\n     PHANTOM_UPDATE_DOCS=1 cargo test -p phantomctl --test docs -->\n",
    );
    for args in PAGES {
        let out = Command::new(env!("CARGO_BIN_EXE_phantomctl"))
            .args(*args)
            .arg("--help")
            // `[env: PHANTOM_X=value]` would show values set in the caller's environment.
            .env_clear()
            .output()
            .expect("phantomctl --help");
        let title = std::iter::once("phantomctl")
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        doc.push_str(&format!(
            "\n## `{title}`\n\n```text\n{}```\n",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    doc
}

#[test]
fn cli_docs_match_the_help_output() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md");
    let expected = render();
    if std::env::var_os("PHANTOM_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &expected).expect("write docs/cli.md");
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "docs/cli.md drifted from `phantomctl --help`; regenerate with PHANTOM_UPDATE_DOCS=1 cargo test -p phantomctl --test docs"
    );
}
