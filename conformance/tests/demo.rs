//! `make demo`'s story as a test: runs the real `phantom-demo` binary (which asserts every step:
//! the pod receives and rotates its secrets, the intruder is refused, etcd and every log are free
//! of the values, the deleted webhook configuration comes back) and checks that it completed.
//! Needs the node (root), like the node suite.

use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let skip = phantom_conformance::node::unsupported_reason();
    if let Some(reason) = &skip {
        eprintln!("phantom-conformance: SKIPPING the demo: {reason}");
    }
    let trial = Trial::test("make_demo_completes_every_step", || {
        let demo = phantom_conformance::bins::built("phantom-demo")
            .map_err(|e| Failed::from(e.to_string()))?;
        let out = Command::new(demo)
            .env("RUST_BACKTRACE", "0")
            .output()
            .map_err(|e| Failed::from(format!("running phantom-demo: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !stdout.contains("demo complete") {
            return Err(Failed::from(format!(
                "phantom-demo failed ({}):\n{stdout}\n{stderr}",
                out.status
            )));
        }
        let steps = stdout.lines().filter(|l| l.starts_with('[')).count();
        if steps != 11 {
            return Err(Failed::from(format!(
                "expected 11 steps, saw {steps}:\n{stdout}"
            )));
        }
        println!("{stdout}");
        Ok(())
    })
    .with_ignored_flag(skip.is_some());
    libtest_mimic::run(&args, vec![trial]).exit()
}
