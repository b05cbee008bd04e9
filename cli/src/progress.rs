//! Live progress on stderr: a bar of finished tasks and the count of tasks in each state.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use taskfleet_common::state::TaskState;
use taskfleet_scheduler::service::WorkflowProgress;

/// A progress bar for one workflow; draws nothing when stderr is not a terminal.
pub struct ProgressDisplay {
    bar: ProgressBar,
}

impl ProgressDisplay {
    pub fn new(n_tasks: usize) -> ProgressDisplay {
        let bar = ProgressBar::with_draw_target(Some(n_tasks as u64), ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("static template is valid")
                .progress_chars("=> "),
        );
        ProgressDisplay { bar }
    }

    /// Shows the latest counts.
    pub fn update(&self, progress: &WorkflowProgress) {
        let n_finished: usize = TaskState::ALL
            .iter()
            .filter(|state| state.is_terminal())
            .map(|&state| progress.counts[state as usize])
            .sum();
        self.bar.set_position(n_finished as u64);
        self.bar.set_message(counts_line(progress));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `running 4 · ready 10 · succeeded 80 · failed 1`: every state with at least one task.
pub fn counts_line(progress: &WorkflowProgress) -> String {
    TaskState::ALL
        .iter()
        .filter(|&&state| progress.counts[state as usize] > 0)
        .map(|&state| format!("{state} {}", progress.counts[state as usize]))
        .collect::<Vec<_>>()
        .join(" · ")
}
