//! Scheduling policies: which ready task goes out next.
//!
//! A policy is a pure, in-memory priority structure over ready tasks. The engine pushes tasks
//! as they become ready and pops them when the fleet has capacity; the policy alone decides
//! the order. The live scheduler and the tests use the very same implementations.

mod fcfs;
mod priority;

use std::fmt;
use std::str::FromStr;

use taskfleet_common::{Millis, PriorityClass};

pub use fcfs::Fcfs;
pub use priority::Priority;

/// A task as the engine knows it: its workflow's slot and its index in the workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskRef {
    pub workflow_slot: u32,
    pub task_idx: u32,
}

/// A task in the ready set, with what policies order by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadyTask {
    pub task: TaskRef,
    /// Submit order of the workflow (smaller = submitted earlier).
    pub workflow_seq: u64,
    /// Order in which tasks became ready (smaller = earlier), across workflows.
    pub ready_seq: u64,
    pub ready_at: Millis,
    pub class: PriorityClass,
    /// Higher goes first within a class.
    pub weight: f64,
    /// Expected runtime in milliseconds, if known.
    pub estimate_ms: Option<u64>,
}

/// Orders ready tasks.
pub trait Policy: Send + Sync {
    /// The policy's name as given on the command line.
    fn name(&self) -> &'static str;
    /// Adds a ready task.
    fn push(&mut self, task: ReadyTask);
    /// Removes and returns the task to dispatch next.
    fn pop(&mut self, now: Millis) -> Option<TaskRef>;
    /// Number of tasks held.
    fn len(&self) -> usize;
    /// Whether no task is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The policies a scheduler can be started with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PolicyKind {
    /// First come, first served: workflow submit order, then task ready order.
    #[default]
    Fcfs,
    /// Priority class, then weight, then first come first served.
    Priority,
}

impl PolicyKind {
    /// Every policy, as named on the command line.
    pub const ALL: [PolicyKind; 2] = [PolicyKind::Fcfs, PolicyKind::Priority];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Fcfs => "fcfs",
            PolicyKind::Priority => "priority",
        }
    }

    /// A new, empty instance of the policy.
    pub fn build(self) -> Box<dyn Policy> {
        match self {
            PolicyKind::Fcfs => Box::new(Fcfs::default()),
            PolicyKind::Priority => Box::new(Priority::default()),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PolicyKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = PolicyKind::ALL.iter().map(|kind| kind.as_str()).collect();
                format!("unknown policy `{text}` (known: {})", known.join(", "))
            })
    }
}

#[cfg(test)]
mod tests;
