//! `phantomctl`: Phantom's command line. Offline policy work for platform teams: lint policies,
//! run policy test suites, and show how a policy change changes decisions (for pull requests);
//! and `status`, what Phantom does in a cluster right now.

mod diff;
mod lint;
mod load;
mod status;
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use phantom_policies::wasm::PluginHost;
use phantom_policies::{Modules, ObjectErrors, PolicySet, Sources};

#[derive(Parser, Debug)]
#[command(name = "phantomctl", version, about = "Phantom's command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Work with PhantomPolicy, SecretBinding and AttestationRequirement files offline.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// What Phantom does in the cluster (KUBECONFIG): leader, webhooks, circuit breaker, policies'
    /// Ready conditions, pods admitted without Phantom; exit 1 when something needs attention.
    Status {
        /// Namespace of the controller (its Lease, Secrets, published policy set).
        #[arg(long, env = "PHANTOM_NAMESPACE", default_value = "phantom-system")]
        namespace: String,
        /// Name of the controller's Lease.
        #[arg(long, env = "PHANTOM_LEASE", default_value = "phantom-controller")]
        lease: String,
        /// Name of the MutatingWebhookConfiguration.
        #[arg(
            long,
            env = "PHANTOM_MUTATING_WEBHOOK",
            default_value = "phantom-injector"
        )]
        mutating_webhook: String,
        /// Name of the ValidatingWebhookConfiguration.
        #[arg(
            long,
            env = "PHANTOM_VALIDATING_WEBHOOK",
            default_value = "phantom-validator"
        )]
        validating_webhook: String,
        /// Name of the published policy set's ConfigMap.
        #[arg(
            long,
            env = "PHANTOM_PUBLISHED_POLICY_SET",
            default_value = "phantom-policy-set"
        )]
        published_set: String,
        /// Name of the admission serving Secret, whose decision-seal key lets `status` check the
        /// seals of pods' decision records (skipped, and said so, when it cannot be read).
        #[arg(
            long,
            env = "PHANTOM_SERVING_SECRET",
            default_value = "phantom-webhook-tls"
        )]
        serving_secret: String,
        /// Namespace label (key=value) that enables Phantom.
        #[arg(long, env = "PHANTOM_ENABLE_LABEL", default_value = "phantom.dev/inject=enabled", value_parser = phantom_crds::wellknown::parse_label)]
        enable_label: (String, String),
        #[arg(long, value_enum, default_value_t = StatusOutput::Text, env = "PHANTOM_STATUS_OUTPUT")]
        output: StatusOutput,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum StatusOutput {
    Text,
    Json,
}

fn cluster_status(target: status::Target, json: bool) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("no Kubernetes configuration ({e}): set KUBECONFIG or run in a pod")
        })?;
        let report = status::gather(&client, &target).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.render());
        }
        Ok(report.problems().is_empty())
    })
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Compile policies and print every error with its field and position, and a warning for
    /// each canary key that fails on common pods (refusing them); exit 1 on errors.
    Lint {
        /// YAML files or directories.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run policy test suites (`*.test.yaml`) and print a pass/fail table; exit 1 on failures.
    Test {
        /// A suite file or a directory searched for `*.test.yaml`.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// The decisions that change between two versions of the policies, over a corpus of manifests.
    Diff {
        /// The old policies: a directory, or a git revision (then `--head`'s path at that revision).
        #[arg(long, env = "PHANTOM_DIFF_BASE")]
        base: String,
        /// The new policies: a directory.
        #[arg(long, env = "PHANTOM_DIFF_HEAD")]
        head: PathBuf,
        /// Pods, workloads and Namespaces to decide on.
        #[arg(long, env = "PHANTOM_DIFF_RESOURCES")]
        resources: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Markdown, env = "PHANTOM_DIFF_OUTPUT")]
        output: Output,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Output {
    Markdown,
    Json,
}

/// Compiles with module paths resolved relative to `base_dir`; returns what compiled and the
/// errors of what did not.
fn compile(
    sources: &Sources,
    base_dir: Option<PathBuf>,
) -> anyhow::Result<(PolicySet, Vec<ObjectErrors>)> {
    let modules = Modules {
        base_dir,
        ..Modules::default()
    };
    Ok(PolicySet::compile(sources, &PluginHost::new()?, &modules))
}

/// Compiles and fails unless every object compiles (`what` names the set in the message).
fn compile_all(
    what: &str,
    sources: &Sources,
    base_dir: Option<PathBuf>,
) -> anyhow::Result<PolicySet> {
    let modules = Modules {
        base_dir,
        ..Modules::default()
    };
    PolicySet::compile_all(sources, &PluginHost::new()?, &modules).map_err(|e| {
        anyhow::anyhow!("{e}the {what} policies must compile first (`phantomctl policy lint`)")
    })
}

fn base_dir(path: &std::path::Path) -> Option<PathBuf> {
    if path.is_dir() {
        Some(path.to_owned())
    } else {
        path.parent().map(ToOwned::to_owned)
    }
}

fn lint(files: &[PathBuf]) -> anyhow::Result<bool> {
    let loaded = load::Loaded::from_paths(files)?;
    let (set, errors) = compile(&loaded.sources, files.first().and_then(|f| base_dir(f)))?;
    for e in &errors {
        print!("{e}");
    }
    let total = loaded.sources.policies.len()
        + loaded.sources.bindings.len()
        + loaded.sources.requirements.len();
    for warning in lint::canary_key_warnings(&set) {
        println!("{warning}");
    }
    if errors.is_empty() {
        println!("ok: {total} object(s) compile; policy set {}", set.digest());
    } else {
        println!("{} of {total} object(s) do not compile", errors.len());
    }
    Ok(errors.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(PolicyCommand::Lint { files }) => lint(&files),
        Command::Policy(PolicyCommand::Test { path }) => suite::run(&path),
        Command::Policy(PolicyCommand::Diff {
            base,
            head,
            resources,
            output,
        }) => diff::run(&base, &head, &resources, output == Output::Json),
        Command::Status {
            namespace,
            lease,
            mutating_webhook,
            validating_webhook,
            published_set,
            serving_secret,
            enable_label,
            output,
        } => cluster_status(
            status::Target {
                namespace,
                lease,
                mutating: mutating_webhook,
                validating: validating_webhook,
                published_set,
                serving_secret,
                enable_label,
            },
            output == StatusOutput::Json,
        ),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("phantomctl: {e:#}");
            ExitCode::from(2)
        }
    }
}
