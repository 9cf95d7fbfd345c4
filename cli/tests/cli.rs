//! `phantomctl` as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(p)
}

fn phantomctl(args: &[&str]) -> (i32, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_phantomctl"))
        .args(args)
        .output()
        .expect("run phantomctl");
    (
        status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    )
}

fn path(p: &str) -> String {
    data(p).display().to_string()
}

#[test]
fn lint_accepts_good_policies_and_shows_the_digest() {
    let (code, out) = phantomctl(&["policy", "lint", &path("policies")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok: 2 object(s) compile; policy set sha256:"),
        "{out}"
    );
}

#[test]
fn lint_reports_the_field_and_position_and_fails() {
    let (code, out) = phantomctl(&["policy", "lint", &path("broken")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("PhantomPolicy broken: spec.rules.validations[0].expression:"),
        "{out}"
    );
    assert!(out.contains("(line 1, column"), "{out}");
}

#[test]
fn test_runs_suites_and_prints_a_table() {
    let (code, out) = phantomctl(&["policy", "test", &path("payments.test.yaml")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("a pod without team label is refused") && out.contains("3 passed, 0 failed"),
        "{out}"
    );
}

#[test]
fn test_fails_on_a_wrong_expectation() {
    let dir = tempfile::tempdir().expect("tempdir");
    for d in ["policies", "resources"] {
        let to = dir.path().join(d);
        std::fs::create_dir(&to).expect("mkdir");
        for f in std::fs::read_dir(data(d)).expect("read") {
            let f = f.expect("entry").path();
            std::fs::copy(&f, to.join(f.file_name().expect("name"))).expect("copy");
        }
    }
    let suite = dir.path().join("wrong.test.yaml");
    std::fs::copy(data("failing.test.yaml.txt"), &suite).expect("copy suite");
    let (code, out) = phantomctl(&["policy", "test", &suite.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL")
            && out.contains("allowed: expected true, got false")
            && out.contains(
                "refused by payments/team-label: pods that receive secrets need a team label"
            )
            && out.contains("0 passed, 1 failed"),
        "{out}"
    );
}

#[test]
fn diff_shows_the_decisions_that_change_as_markdown_and_json() {
    let args = [
        "policy",
        "diff",
        "--base",
        &path("policies"),
        "--head",
        &path("policies-v2"),
        "--resources",
        &path("resources"),
    ];
    let (code, out) = phantomctl(&args);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("over 3 resource(s): **1 decision(s) change**"),
        "{out}"
    );
    assert!(out.contains("| `shop/Deployment/web` | inject sidecar via payments | denied (payments/no-latest: pin image tags) |"), "{out}");
    let (code, out) = phantomctl(&[&args[..], &["--output", "json"]].concat());
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(report["changes"].as_array().map(Vec::len), Some(1));
    assert_ne!(report["base_digest"], report["head_digest"]);
}

#[test]
fn help_documents_every_subcommand() {
    let (code, out) = phantomctl(&["policy", "--help"]);
    assert_eq!(code, 0);
    for sub in ["lint", "test", "diff"] {
        assert!(out.contains(sub), "{out}");
    }
}

#[test]
fn diff_takes_the_base_from_a_git_revision() {
    let repo = tempfile::tempdir().expect("tempdir");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(repo.path())
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q"]);
    let policies = repo.path().join("policies");
    std::fs::create_dir(&policies).expect("mkdir");
    std::fs::copy(
        data("policies/payments.yaml"),
        policies.join("payments.yaml"),
    )
    .expect("copy");
    git(&["add", "."]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.invalid",
        "commit",
        "-qm",
        "base",
    ]);
    // The working tree gets the stricter version; the base is the committed one.
    std::fs::copy(
        data("policies-v2/payments.yaml"),
        policies.join("payments.yaml"),
    )
    .expect("copy");
    let out = Command::new(env!("CARGO_BIN_EXE_phantomctl"))
        .args([
            "policy",
            "diff",
            "--base",
            "HEAD",
            "--head",
            "policies",
            "--resources",
            &path("resources"),
        ])
        .current_dir(repo.path())
        .output()
        .expect("run phantomctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("**1 decision(s) change**") && text.contains("payments/no-latest"),
        "{text}"
    );
}

#[test]
fn the_shipped_examples_lint_clean_and_a_fragile_canary_key_is_warned_about() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/examples");
    // The dry-run example loads its plugin from a ConfigMap, which offline lint cannot read.
    let payments = format!("{examples}/phantompolicy-payments.yaml");
    let (code, out) = phantomctl(&["policy", "lint", &payments]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("warning:"),
        "examples are what users copy: {out}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let fragile = std::fs::read_to_string(&payments)
        .expect("the example")
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("key:") {
                "      key: \"object.metadata.labels['app.kubernetes.io/name']\"".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let file = dir.path().join("fragile.yaml");
    std::fs::write(&file, fragile).expect("write");
    let (code, out) = phantomctl(&["policy", "lint", &file.display().to_string()]);
    assert_eq!(code, 0, "a warning does not fail the lint: {out}");
    assert!(
        out.contains("warning: PhantomPolicy payments-injection: spec.injection.canary.key fails on a Deployment's pod"),
        "{out}"
    );
}
