//! The `taskfleet` command: parse the command line, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = taskfleet_cli::Cli::parse();
    taskfleet_cli::init_tracing(cli.verbose);
    taskfleet_cli::main(cli)
}
