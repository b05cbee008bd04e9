//! The `taskfleet` command line: one binary for the whole system — the scheduler service and
//! its workers over a broker, the client commands that talk to them, and the embedded run,
//! validation, simulation and benchmarks on one machine. Data goes to stdout; progress, logs
//! and errors go to stderr.
//!
//! Exit codes: 0 when the workflow succeeded (or the command did its job), 1 when the
//! workflow failed, 2 for invalid input, usage, or a request the scheduler refused.

pub mod client;
pub mod commands;
pub mod embedded;
pub mod progress;
pub mod report;
pub mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A distributed task scheduler: workflows (DAGs of tasks) run on one machine, or by a
/// scheduler and a fleet of workers over RabbitMQ or Kafka.
#[derive(Debug, Parser)]
#[command(name = "taskfleet", version, long_about = None, after_help = OVERVIEW)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug); `TASKFLEET_LOG` takes a full filter.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log lines as text, or as one JSON object each (for log shippers).
    #[arg(long, env = "TASKFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Shown after the command list of `taskfleet --help`: the two ways to run.
const OVERVIEW: &str = "\
On one machine:
  taskfleet run workflow.yaml --workers 4

As a fleet (scheduler, store and HTTP API; any number of workers, on any machines):
  taskfleet scheduler --broker amqp://guest:guest@HOST:5672/%2f --db sqlite://state.sqlite
  taskfleet worker --broker amqp://guest:guest@HOST:5672/%2f --concurrency 8
  taskfleet submit workflow.yaml --wait
  taskfleet status ID | taskfleet cancel ID | taskfleet workers
  taskfleet list [--state failed] | taskfleet logs ID TASK
On Kafka instead of RabbitMQ: --broker kafka://HOST:9092[,HOST2:9092] on both services.

Policies: fcfs, priority, sjf, srpt, rr, mct, mct-bounded, heft, cpop, min-min, max-min,
sufferage (--policy); compare them with
`taskfleet simulate`. Every flag also reads from TASKFLEET_* variables or a --config file.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow on this machine: embedded scheduler, in-memory transport, N workers.
    Run(commands::run::RunArgs),
    /// Check a workflow file and print its shape, or every problem in it.
    Validate(commands::validate::ValidateArgs),
    /// Run the scheduler service: HTTP API, scheduling loop over the broker, store.
    Scheduler(commands::scheduler::SchedulerArgs),
    /// Run a worker of the fleet: consume tasks from the broker and execute them.
    Worker(Box<commands::worker::WorkerArgs>),
    /// Submit a workflow to a running scheduler (optionally following it to its end).
    Submit(commands::submit::SubmitArgs),
    /// Show a workflow's state and its tasks.
    Status(commands::status::StatusArgs),
    /// Cancel a workflow; its running tasks are stopped.
    Cancel(commands::cancel::CancelArgs),
    /// Run a failed or cancelled workflow again from its failures (`--task T`: one task).
    Retry(commands::retry::RetryArgs),
    /// List the live workers of the fleet.
    Workers(commands::workers::WorkersArgs),
    /// List workflows, newest first (filter by state, name, submission time).
    List(commands::list::ListArgs),
    /// Follow task state changes as they happen, for one workflow (until it ends) or the fleet.
    Events(commands::events::EventsArgs),
    /// Show the stdout and stderr tails of every attempt of a task.
    Logs(commands::logs::LogsArgs),
    /// Make API tokens (`taskfleet token new --scope read|write`).
    Token(commands::token::TokenArgs),
    /// Measure this machine next to baselines: workflow loading, embedded and whole-process
    /// runs, policies, placement and (with --broker) the fleet over RabbitMQ.
    Bench(commands::bench::BenchArgs),
    /// Simulate workflows on a described fleet with the real engine and policies: makespan,
    /// flow times, utilization, fairness; compare policies; draw a Gantt chart.
    Simulate(commands::simulate::SimulateArgs),
    /// Turn a workflow trace of another system into a taskfleet workflow and the runtimes it
    /// took (`taskfleet import wfformat INSTANCE.json`), to replay with `simulate --actual`.
    Import(commands::import::ImportArgs),
}

impl Cli {
    /// Parses the command line (exiting with usage on an error), with each service setting's
    /// default shown in its help, taken from the settings' own defaults.
    pub fn parse_documented() -> Cli {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let command = Cli::command()
            .mut_subcommand("scheduler", |command| {
                settings::document_defaults(command, &settings::SchedulerSettings::default())
            })
            .mut_subcommand("worker", |command| {
                settings::document_defaults(command, &settings::WorkerSettings::default())
            });
        Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|error| error.exit())
    }
}

/// Exit code for a workflow that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for invalid input or usage.
pub const EXIT_INVALID: u8 = 2;

/// Runs the command and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run::run(args).await,
            Command::Validate(args) => commands::validate::run(args),
            Command::Scheduler(args) => commands::scheduler::run(args).await,
            Command::Worker(args) => commands::worker::run(*args).await,
            Command::Submit(args) => commands::submit::run(args).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Cancel(args) => commands::cancel::run(args).await,
            Command::Retry(args) => commands::retry::run(args).await,
            Command::Events(args) => commands::events::run(args).await,
            Command::Workers(args) => commands::workers::run(args).await,
            Command::List(args) => commands::list::run(args).await,
            Command::Logs(args) => commands::logs::run(args).await,
            Command::Token(args) => commands::token::run(args),
            Command::Bench(args) => commands::bench::run(args).await,
            Command::Simulate(args) => commands::simulate::run(args),
            Command::Import(args) => commands::import::run(args),
        }
    });
    // Workers may still be reaping child processes; do not wait for them forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!(
                "error: {}",
                taskfleet_common::text::printable_lines(&format!("{error:#}"))
            );
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr; the default shows warnings and errors only, so progress stays readable.
pub fn init_tracing(verbose: u8, format: LogFormat) {
    // The AMQP client reports every closed channel, and its I/O thread the runtime's end, as
    // errors, and its promise library warns of every promise dropped at shutdown: taskfleet
    // logs what matters of a lost connection itself. `TASKFLEET_LOG=lapin=debug` shows them.
    const QUIET: [&str; 2] = ["lapin", "pinky_swear"];
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let asked = std::env::var("TASKFLEET_LOG").ok();
    let mut directives = asked.clone().unwrap_or_else(|| default.to_string());
    if verbose < 2 {
        for crate_name in QUIET {
            if !directives.contains(crate_name) {
                directives.push_str(&format!(",{crate_name}=off"));
            }
        }
    }
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // Colours only for a terminal: log files and collectors get plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overview_names_every_policy() {
        let listed = OVERVIEW.split("Policies:").nth(1).expect("a policy line");
        for kind in taskfleet_engine::policy::PolicyKind::ALL {
            assert!(
                listed.contains(kind.as_str()),
                "{} missing from the overview",
                kind.as_str()
            );
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
