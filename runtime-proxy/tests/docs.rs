//! docs/runtime-proxy.md is generated from the `--help` of phantom-proxy and phantom-exec; this test fails when they drift
//! (`make generate` rewrites it).

use std::path::PathBuf;

use phantom_testkit::{assert_generated, generated_notice, help};

#[test]
fn flag_reference_matches_the_help_output() {
    let expected = format!(
        "# phantom-proxy and phantom-exec\n\n{}\n\nAdmission sets these variables on the injected containers (see\n[architecture](architecture.md#the-injected-pod)); set them yourself only to run the binaries\nby hand. Every flag can also be set through the environment variable shown with it.\n\n## phantom-proxy\n\n```text\n{}```\n\n## phantom-exec\n\n```text\n{}```\n",
        generated_notice("`phantom-proxy --help` and `phantom-exec --help`"),
        help(env!("CARGO_BIN_EXE_phantom-proxy"), &[], &[]),
        help(env!("CARGO_BIN_EXE_phantom-exec"), &[], &[]),
    );
    assert_generated(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/runtime-proxy.md"),
        &expected,
    );
}
