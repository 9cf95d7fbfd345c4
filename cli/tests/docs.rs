//! docs/cli.md is generated from `phantomctl --help`; this test fails when they drift
//! (`make generate` rewrites it).

use std::path::PathBuf;

use phantom_testkit::{assert_generated, generated_notice, help};

const PAGES: &[&[&str]] = &[
    &[],
    &["policy"],
    &["policy", "lint"],
    &["policy", "test"],
    &["policy", "diff"],
    &["status"],
];

fn render() -> String {
    let mut doc = format!(
        "# phantomctl\n\n{}\n",
        generated_notice("`phantomctl --help`")
    );
    for args in PAGES {
        let title = std::iter::once("phantomctl")
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        doc.push_str(&format!(
            "\n## `{title}`\n\n```text\n{}```\n",
            help(env!("CARGO_BIN_EXE_phantomctl"), args, &[])
        ));
    }
    doc
}

#[test]
fn cli_docs_match_the_help_output() {
    assert_generated(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md"),
        &render(),
    );
}
