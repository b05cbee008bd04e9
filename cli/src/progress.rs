//! Live progress on stderr: on a terminal, a bar of finished tasks and the count of tasks in
//! each state; elsewhere (a log, a CI job), the same as a plain line every few seconds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use taskfleet_common::api::FleetEvent;
use taskfleet_common::state::TaskState;
use taskfleet_scheduler::service::WorkflowProgress;

/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Progress of one workflow.
pub struct ProgressDisplay {
    bar: ProgressBar,
    n_tasks: usize,
    /// When stderr is not a terminal: when the last plain line was printed.
    plain: Option<Mutex<Instant>>,
    started: Instant,
}

impl ProgressDisplay {
    pub fn new(n_tasks: usize) -> ProgressDisplay {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let target = if terminal {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(n_tasks as u64), target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("static template is valid")
                .progress_chars("=> "),
        );
        let now = Instant::now();
        ProgressDisplay {
            bar,
            n_tasks,
            plain: (!terminal).then(|| Mutex::new(now)),
            started: now,
        }
    }

    /// Shows the latest counts, with `extra` (the predicted end, what decides it) after them.
    pub fn update_with(&self, progress: &WorkflowProgress, extra: &str) {
        let n_finished = finished(progress);
        let mut message = counts_line(progress);
        if !extra.is_empty() {
            message = format!("{message} · {extra}");
        }
        self.bar.set_position(n_finished as u64);
        if let Some(plain) = &self.plain {
            let mut last = plain.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.elapsed() >= PLAIN_EVERY {
                *last = Instant::now();
                eprintln!(
                    "[{}] {n_finished}/{} finished · {message}",
                    taskfleet_common::units::format_duration(Duration::from_secs(self.started.elapsed().as_secs())),
                    self.n_tasks
                );
            }
        }
        self.bar.set_message(message);
    }

    /// Shows the latest counts.
    pub fn update(&self, progress: &WorkflowProgress) {
        self.update_with(progress, "");
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The tasks of one workflow running now, as its event stream tells them.
#[derive(Clone, Debug, Default)]
pub struct RunningTasks {
    by_idx: BTreeMap<u32, String>,
    /// How many run in all, when only some are named.
    total: Option<usize>,
}

/// Running tasks named in a progress line; the rest are counted.
const NAMED: usize = 3;

impl RunningTasks {
    /// Starts from tasks known to run now.
    pub fn with(running: impl IntoIterator<Item = (u32, String)>) -> RunningTasks {
        RunningTasks {
            by_idx: running.into_iter().collect(),
            total: None,
        }
    }

    /// Some of the `total` tasks running now, named.
    pub fn sampled(named: impl IntoIterator<Item = (u32, String)>, total: usize) -> RunningTasks {
        RunningTasks {
            by_idx: named.into_iter().collect(),
            total: Some(total),
        }
    }

    /// Follows one event of `workflow_id`'s stream; others are ignored.
    pub fn apply(&mut self, workflow_id: &str, event: &FleetEvent) {
        if let FleetEvent::Task(task) = event {
            if task.workflow_id != workflow_id {
                return;
            }
            if task.state == TaskState::Running {
                self.by_idx.insert(task.task_idx, task.task.clone());
            } else {
                self.by_idx.remove(&task.task_idx);
            }
        }
    }

    /// Forgets every task: after events were missed, the names come back as tasks start.
    pub fn clear(&mut self) {
        self.by_idx.clear();
    }

    /// `running: load, join, report +2`, or nothing while none runs.
    pub fn line(&self) -> String {
        if self.by_idx.is_empty() {
            return String::new();
        }
        let named: Vec<&str> = self.by_idx.values().take(NAMED).map(String::as_str).collect();
        let more = self.total.unwrap_or(self.by_idx.len()).saturating_sub(named.len());
        let names = taskfleet_common::text::printable(&named.join(", ")).into_owned();
        match more {
            0 => format!("running: {names}"),
            more => format!("running: {names} +{more}"),
        }
    }
}

fn finished(progress: &WorkflowProgress) -> usize {
    TaskState::ALL
        .iter()
        .filter(|state| state.is_terminal())
        .map(|&state| progress.counts[state as usize])
        .sum()
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

#[cfg(test)]
mod tests {
    use taskfleet_common::api::TaskEvent;

    use super::*;

    fn event(workflow_id: &str, task_idx: u32, state: TaskState) -> FleetEvent {
        FleetEvent::Task(TaskEvent {
            workflow_id: workflow_id.into(),
            task: format!("t{task_idx}"),
            task_idx,
            state,
            attempt: 1,
            at_ms: 0,
        })
    }

    #[test]
    fn the_running_tasks_are_named_as_they_start_and_end() {
        let mut running = RunningTasks::with([(9, "seeded".to_string())]);
        assert_eq!(running.line(), "running: seeded");
        for idx in 0..4 {
            running.apply("wf", &event("wf", idx, TaskState::Running));
        }
        // Another workflow's tasks are not this one's.
        running.apply("wf", &event("other", 6, TaskState::Running));
        assert_eq!(running.line(), "running: t0, t1, t2 +2");
        for idx in [0, 1, 2, 3, 9] {
            running.apply("wf", &event("wf", idx, TaskState::Succeeded));
        }
        assert_eq!(running.line(), "");
        running.apply("wf", &event("wf", 4, TaskState::Running));
        running.clear();
        assert_eq!(running.line(), "", "forgotten after missed events");
        let sampled = RunningTasks::sampled([(1, "b".to_string()), (0, "a".to_string())], 40);
        assert_eq!(sampled.line(), "running: a, b +38");
    }
}
