//! One environment per test binary: a `harness = false` test's `main` calls [`run`] with its
//! cases; the environment starts once, the cases run in parallel against it (each in its own
//! namespace), each with a deadline, and the environment is torn down before the process exits,
//! also when cases fail or panic. Output and flags are libtest's (`cargo test -- NAME`, `--list`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};

use crate::{Env, EnvOptions};

type CaseFn =
    dyn Fn(Arc<Env>) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync;

/// A named test case run against the shared environment.
pub struct Case {
    name: &'static str,
    run: Arc<CaseFn>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

impl Case {
    pub fn new<F, Fut>(name: &'static str, f: F) -> Self
    where
        F: Fn(Arc<Env>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self {
            name,
            run: Arc::new(move |env| Box::pin(f(env))),
        }
    }
}

/// Deadline of one case; `PHANTOM_CASE_TIMEOUT_SECS` overrides the default of 180 s.
fn case_timeout() -> Duration {
    let secs = std::env::var("PHANTOM_CASE_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    Duration::from_secs(secs)
}

/// Starts the environment, runs `cases` against it, tears it down, and exits with libtest's code.
pub fn run(options: EnvOptions, cases: Vec<Case>) -> ! {
    crate::init_logging(true);
    let args = Arguments::from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    // Listing needs no environment, and a node cannot run everywhere: skip, saying why.
    let skip = options.node.then(crate::node::unsupported_reason).flatten();
    if let Some(reason) = &skip {
        eprintln!("phantom-conformance: SKIPPING every case of this suite: {reason}");
    }
    let env = if args.list || skip.is_some() {
        Err("not started".to_owned())
    } else {
        runtime
            .block_on(Env::start_with(options))
            .map(Arc::new)
            .map_err(|e| e.to_string())
    };
    if let Ok(env) = &env {
        eprintln!(
            "phantom-conformance: environment ready in {:.1?} ({})",
            env.started_in(),
            env.dir().display()
        );
    }

    let timeout = case_timeout();
    let trials = cases
        .into_iter()
        .map(|case| {
            let env = env.clone();
            let handle = runtime.handle().clone();
            let skipped = skip.is_some();
            Trial::test(case.name, move || {
                let env = env.map_err(|e| {
                    Failed::from(format!("the test environment did not start: {e}"))
                })?;
                let run = (case.run)(env.clone());
                let outcome =
                    handle.block_on(async move { tokio::time::timeout(timeout, run).await });
                match outcome {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(Failed::from(format!("{e:?}{}", processes_note(&env)))),
                    Err(_) => Err(Failed::from(format!(
                        "timed out after {timeout:?} (PHANTOM_CASE_TIMEOUT_SECS raises it){}",
                        processes_note(&env)
                    ))),
                }
            })
            .with_ignored_flag(skipped)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Tear down before exiting (`exit` skips destructors). The runtime goes first: it stops the
    // tasks suites left running (a shared webhook's watches), which would otherwise retry
    // against an API server that is already gone.
    drop(runtime);
    drop(env);
    conclusion.exit()
}

fn processes_note(env: &Env) -> String {
    match env.check_processes() {
        Ok(()) => String::new(),
        Err(e) => format!("\nnote: an environment process died: {e}"),
    }
}
