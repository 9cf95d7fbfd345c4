//! docs/preflight.md is generated from the `--help` of phantom-preflight; this test fails when they drift
//! (`make generate` rewrites it).

use std::path::PathBuf;

use phantom_testkit::{assert_generated, generated_notice, help};

#[test]
fn flag_reference_matches_the_help_output() {
    let expected = format!(
        "# phantom-preflight\n\n{}\n\nEvery flag can also be set through the environment variable shown with it. The chart runs it as a Job; what each\ncheck means and what to do when it fails: [operations](operations.md#pre-flight-check).\n\n```text\n{}```\n",
        generated_notice("`phantom-preflight --help`"),
        help(env!("CARGO_BIN_EXE_phantom-preflight"), &[], &[]),
    );
    assert_generated(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/preflight.md"),
        &expected,
    );
}

#[test]
fn guard_flag_reference_matches_the_help_output() {
    let expected = format!(
        "# phantom-guard\n\n{}\n\nEvery flag can also be set through the environment variable shown with it. What the guard detects and how it\nruns: [architecture](architecture.md#the-memory-access-guard-probes).\n\n```text\n{}```\n",
        generated_notice("`phantom-guard --help`"),
        help(env!("CARGO_BIN_EXE_phantom-guard"), &[], &[]),
    );
    assert_generated(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/guard.md"),
        &expected,
    );
}
