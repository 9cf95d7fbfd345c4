//! docs/controller.md is generated from the `--help` of phantom-controller; this test fails when they drift
//! (`make generate` rewrites it).

use std::path::PathBuf;

use phantom_testkit::{assert_generated, generated_notice, help};

#[test]
fn flag_reference_matches_the_help_output() {
    // The default identity comes from HOSTNAME.
    let help = help(
        env!("CARGO_BIN_EXE_phantom-controller"),
        &[],
        &[("HOSTNAME", "phantom-controller-0")],
    );
    let expected = format!(
        "# phantom-controller\n\n{}\n\nEvery flag can also be set through the environment variable shown with it. How the controller\nworks: [architecture](architecture.md#the-controller-controller); running it:\n[operations](operations.md#the-controller-webhook-configurations-and-the-circuit-breaker).\n\n```text\n{help}```\n",
        generated_notice("`phantom-controller --help`"),
    );
    assert_generated(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/controller.md"),
        &expected,
    );
}
