//! One module per `taskfleet` subcommand.

pub mod bench;
pub mod run;
pub mod validate;

use std::path::Path;

use taskfleet_common::workflow::{parse_workflow, ValidateOptions, BUILTIN_HANDLERS};
use taskfleet_common::WorkflowSpec;

/// Reads and validates a workflow file; on problems, prints each to stderr.
pub(crate) fn load_workflow(path: &Path, options: &ValidateOptions) -> Result<(String, WorkflowSpec), LoadError> {
    let source = std::fs::read_to_string(path)
        .map_err(|error| LoadError::Unreadable(format!("cannot read {}: {error}", path.display())))?;
    match parse_workflow(&source, options) {
        Ok(spec) => Ok((source, spec)),
        Err(invalid) => {
            eprintln!("{}: {invalid}", path.display());
            Err(LoadError::Invalid)
        }
    }
}

/// Validation options for a workflow run by the built-in workers.
pub(crate) fn builtin_options(max_tasks: usize) -> ValidateOptions {
    ValidateOptions {
        known_handlers: Some(BUILTIN_HANDLERS.iter().map(|name| name.to_string()).collect()),
        max_tasks,
    }
}

/// Why a workflow file could not be used.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The file could not be read.
    Unreadable(String),
    /// The workflow has problems; they were printed.
    Invalid,
}

/// Writes data to stdout; a reader that went away (`| head`) is not an error.
pub(crate) fn write_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
