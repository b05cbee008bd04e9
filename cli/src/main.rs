//! The `taskfleet` command: parse the command line, set up logging, run the command.

use std::process::ExitCode;

/// mimalloc: workflow loading allocates millions of small objects; it is about twice as fast
/// as the system allocator at that and keeps the peak lower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The worker starts each task's program through its own binary, which puts itself under
    // the task's limits and then becomes the program.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|arg| arg == taskfleet_worker::limits::launch::LAUNCH_ARG)
    {
        let code = taskfleet_worker::limits::launch::launch(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if let Err(error) = taskfleet_cli::settings::secrets_from_files() {
        eprintln!("error: {error}");
        return ExitCode::from(taskfleet_cli::EXIT_INVALID);
    }
    let cli = taskfleet_cli::Cli::parse_documented();
    taskfleet_cli::init_tracing(cli.verbose, cli.log_format);
    taskfleet_cli::main(cli)
}
