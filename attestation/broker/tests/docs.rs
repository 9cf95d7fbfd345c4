//! docs/broker.md is generated from the `--help` of phantom-broker; this test fails when they
//! drift (`make generate` rewrites it).

use std::path::PathBuf;

use phantom_testkit::{assert_generated, generated_notice, help};

#[test]
fn flag_reference_matches_the_help_output() {
    let expected = format!(
        "# phantom-broker\n\n{}\n\nEvery flag can also be set through the environment variable shown with it. How the broker\ndecides: [architecture](architecture.md#attested-key-release-attestation); running it:\n[operations](operations.md#running-the-attestation-broker).\n\n```text\n{}```\n",
        generated_notice("`phantom-broker --help`"),
        help(env!("CARGO_BIN_EXE_phantom-broker"), &[], &[]),
    );
    assert_generated(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/broker.md"),
        &expected,
    );
}
