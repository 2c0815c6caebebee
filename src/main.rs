//! The `burstgate` command: `run` (the gateway), `policy check|explain|test|schema` and `simulate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use burstgate::policy::{self, Ledger, PodView, explain};

/// A multi-cloud bursting gateway for Kubernetes.
#[derive(Parser)]
#[command(name = "burstgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: register the virtual node and run every pod bound to it.
    Run(Box<burstgate::config::RunConfig>),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Replay a workload through the policy on a virtual clock and report what it would do.
    Simulate {
        /// Policy directory.
        #[arg(long, default_value = "policies")]
        policy: PathBuf,
        /// Workload file (pods arriving over time).
        #[arg(long, default_value = "examples/workloads/burst.yaml")]
        workload: PathBuf,
        /// Where report.json and the SVG chart go.
        #[arg(long, default_value = "simulate-out")]
        out: PathBuf,
        /// Random seed for cold starts (runs with the same seed are identical).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate every policy file in DIR; prints file:line: field: problem and exits 1 on any.
    Check {
        /// Policy directory.
        dir: PathBuf,
    },
    /// Decide for one pod manifest and show every target's verdict.
    Explain {
        /// Policy directory.
        #[arg(long, default_value = "policies")]
        policy: PathBuf,
        /// Pod manifest (YAML).
        pod: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Run the policy test files in DIR/tests/*.yaml against the policy in DIR.
    Test {
        /// Policy directory.
        dir: PathBuf,
    },
    /// Print the JSON Schema of a policy file (published at policies/schema.json).
    Schema,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(config) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let ran = runtime.block_on(burstgate::gateway::run(*config));
            // Whatever is still running was given up (drained, or fenced out by the leader
            // election): the process ends now, waiting for no task.
            runtime.shutdown_background();
            ran?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check { dir }) => Ok(policy_check(&dir)),
        Command::Policy(PolicyCommand::Explain {
            policy: dir,
            pod,
            output,
        }) => policy_explain(&dir, &pod, output),
        Command::Policy(PolicyCommand::Test { dir }) => policy_test(&dir),
        Command::Policy(PolicyCommand::Schema) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&policy::model::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            policy: dir,
            workload,
            out,
            seed,
            quiet,
        } => simulate(&dir, &workload, &out, seed, quiet),
    }
}

/// `policy check`: a one-line summary, or every problem and failure.
fn policy_check(dir: &Path) -> ExitCode {
    match policy::load_dir(dir) {
        Ok(p) => {
            println!(
                "{}: ok ({} files, {} targets, {} rules, {} budgets, hash {})",
                dir.display(),
                p.files.len(),
                p.targets.len(),
                p.rules.len(),
                p.budgets.len(),
                p.hash
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `policy explain`: decide for one pod on an empty ledger and print every target's verdict.
fn policy_explain(dir: &Path, pod: &Path, output: Format) -> anyhow::Result<ExitCode> {
    let policy = load(dir)?;
    let (pod, view) = read_pod(pod)?;
    let exclusions = policy::testing::feature_exclusions(&policy, &pod);
    let decision = Ledger::new(&policy).place(&policy, &view, &exclusions);
    // What the pod would run without where it runs at all (a provider that ignores a feature).
    let ignored = burstgate::provider::kit::ignored(&policy, &pod, |t| {
        Some(burstgate::provider::kit::declared(t.provider))
    });
    match output {
        Format::Text => {
            print!("{}", explain::table(&policy, &decision));
            for (target, uses) in &ignored {
                println!(
                    "note: on {target} the pod runs without: {}",
                    uses.join(", ")
                );
            }
            for t in &policy.targets {
                if let Some(limits) = burstgate::provider::kit::kubectl::limits(t.provider) {
                    println!("kubectl on {} ({}): {limits}", t.name, t.provider);
                }
            }
        }
        Format::Json => {
            let mut json = explain::to_json(&policy, &decision);
            json["runsWithout"] = serde_json::json!(
                ignored
                    .iter()
                    .map(|(t, uses)| (t.clone(), serde_json::json!(uses)))
                    .collect::<serde_json::Map<_, _>>()
            );
            json["kubectlLimits"] = serde_json::json!(
                policy
                    .targets
                    .iter()
                    .filter_map(|t| Some((
                        t.name.clone(),
                        serde_json::json!(burstgate::provider::kit::kubectl::limits(t.provider)?)
                    )))
                    .collect::<serde_json::Map<_, _>>()
            );
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `policy test`: run DIR/tests/*.yaml; failure when any case fails.
fn policy_test(dir: &Path) -> anyhow::Result<ExitCode> {
    let policy = load(dir)?;
    let report = burstgate::policy::testing::run_dir(&policy, &dir.join("tests"))?;
    print!("{report}");
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `simulate`: replay the workload, print the table, write the report and chart into `out`.
fn simulate(
    dir: &Path,
    workload: &Path,
    out: &Path,
    seed: u64,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let policy = load(dir)?;
    let report = burstgate::simulate::run_file(&policy, workload, seed, !quiet)?;
    print!("{}", report.table());
    report
        .write(out)
        .with_context(|| format!("writing the report into {}", out.display()))?;
    println!(
        "report: {}  chart: {}",
        out.join("report.json").display(),
        out.join("running.svg").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn load(dir: &Path) -> anyhow::Result<policy::Policy> {
    policy::load_dir(dir).map_err(|e| anyhow::anyhow!("policy {} is invalid:\n{e}", dir.display()))
}

fn read_pod(path: &Path) -> anyhow::Result<(k8s_openapi::api::core::v1::Pod, PodView)> {
    burstgate::policy::testing::read_pod_file(path).map_err(|e| anyhow::anyhow!("{e}"))
}
