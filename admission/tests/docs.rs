//! docs/admission.md is generated from the `--help` of phantom-admission; this test fails when they drift
//! (`make generate` rewrites it).

use std::path::PathBuf;

use phantom_testkit::{assert_generated, generated_notice, help};

#[test]
fn flag_reference_matches_the_help_output() {
    let expected = format!(
        "# phantom-admission\n\n{}\n\nEvery flag can also be set through the environment variable shown with it. How the webhook\nworks: [architecture](architecture.md#the-admission-webhook-admission); running it:\n[operations](operations.md#running-the-admission-webhook).\n\n```text\n{}```\n",
        generated_notice("`phantom-admission --help`"),
        help(env!("CARGO_BIN_EXE_phantom-admission"), &[], &[]),
    );
    assert_generated(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/admission.md"),
        &expected,
    );
}
