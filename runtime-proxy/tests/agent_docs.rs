//! docs/agent.md is generated from `phantom-agent --help` (built with the `agent` feature); this
//! test fails when they drift (`make generate` rewrites it).

use std::path::PathBuf;

use phantom_testkit::{assert_generated, generated_notice, help};

#[test]
fn flag_reference_matches_the_help_output() {
    let expected = format!(
        "# phantom-agent\n\n{}\n\nThe node agent of injection mode `daemonset` (see [architecture](architecture.md#the-node-agent)\nand [operations](operations.md#injection-mode-daemonset)). Every flag can also be set through the\nenvironment variable shown with it.\n\n```text\n{}```\n",
        generated_notice("`phantom-agent --help`"),
        help(env!("CARGO_BIN_EXE_phantom-agent"), &[], &[]),
    );
    assert_generated(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/agent.md"),
        &expected,
    );
}
