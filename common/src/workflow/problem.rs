//! Validation problems: each names the task and field it is about.

use std::fmt;

use crate::text::printable;

/// One thing wrong with a workflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Id (or position, when the id itself is bad) of the task concerned, if any.
    pub task: Option<String>,
    /// Dotted path of the field concerned, e.g. `retries.backoff`.
    pub field: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl Problem {
    pub(crate) fn workflow(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            task: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn task(task: impl Into<String>, field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            task: Some(task.into()),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Shown with control characters escaped: problems quote what the file said, and are printed
/// to terminals.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (field, message) = (printable(&self.field), printable(&self.message));
        match (&self.task, field.is_empty()) {
            (Some(task), false) => write!(f, "task `{}`, field `{field}`: {message}", printable(task)),
            (Some(task), true) => write!(f, "task `{}`: {message}", printable(task)),
            (None, false) => write!(f, "field `{field}`: {message}"),
            (None, true) => write!(f, "{message}"),
        }
    }
}

/// A workflow that failed validation, with every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InvalidWorkflow {
    pub problems: Vec<Problem>,
}

impl fmt::Display for InvalidWorkflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_problems(f, "workflow", &self.problems)
    }
}

/// Writes `invalid WHAT (N problems)` and one indented line per problem: how every file
/// taskfleet reads reports its problems.
pub fn write_problems(f: &mut fmt::Formatter<'_>, what: &str, problems: &[impl fmt::Display]) -> fmt::Result {
    let n = problems.len();
    write!(f, "invalid {what} ({n} problem{})", if n == 1 { "" } else { "s" })?;
    for problem in problems {
        write!(f, "\n  - {problem}")?;
    }
    Ok(())
}
