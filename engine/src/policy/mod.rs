//! Scheduling policies: which ready task goes out next.
//!
//! A policy is a pure, in-memory priority structure over ready tasks. The engine pushes tasks
//! as they become ready and pops them when the fleet has capacity; the policy alone decides
//! the order. Policies that look at whole workflows (`srpt`, `rr`) also hear when a workflow
//! arrives and when its tasks end. Placement-aware policies (`mct`, `heft`, `cpop`) also choose
//! the worker, through [`crate::placement`]; here they only order the ready tasks. The live
//! scheduler, the simulator and the tests use the very same implementations;
//! `docs/policies.md` describes each.

mod by_workflow;
mod keyed;
mod priority;
mod rr;
mod srpt;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use taskfleet_common::{Millis, PriorityClass};

use crate::placement::{Batch, PlanKind};

pub use keyed::{FirstCome, HighestRank, Keyed, Order, ShortestFirst};
pub use priority::Priority;
pub use rr::RoundRobin;
pub use srpt::ShortestRemainingWork;

/// A task as the engine knows it: the index of its workflow in the engine and its index in the workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskRef {
    pub workflow_idx: u32,
    pub task_idx: u32,
}

impl TaskRef {
    /// Task `task_idx` of the workflow at `workflow_idx`.
    pub fn new(workflow_idx: u32, task_idx: u32) -> TaskRef {
        TaskRef { workflow_idx, task_idx }
    }
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
    /// Expected runtime in milliseconds: the declared estimate, or the configured prior.
    pub estimate_ms: u64,
    /// Worker slots the task takes.
    pub slots: u32,
    /// Its priority in its workflow's plan (`heft`, `cpop`), in milliseconds; 0 otherwise.
    pub rank: f64,
    /// In predictive mode, the share of Monte-Carlo samples of its workflow in which it lay
    /// on the chain that decided the end (0 to 1); 0 otherwise.
    pub criticality: f64,
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
    /// A workflow arrived, with the estimated work of its unfinished tasks.
    fn on_workflow_added(&mut self, _workflow_idx: u32, _workflow_seq: u64, _remaining_work_ms: u64) {}
    /// A task of the workflow ended for good (whatever its outcome).
    fn on_task_done(&mut self, _task: TaskRef, _estimate_ms: u64) {}
    /// The engine forgot the workflow.
    fn on_workflow_removed(&mut self, _workflow_idx: u32) {}
}

/// How long the local search may improve a plan, unless configured.
pub const DEFAULT_PLAN_SEARCH: Duration = Duration::from_millis(200);

/// Knobs shared by the policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Runtime assumed for a task without an estimate.
    pub default_estimate: Duration,
    /// `priority`: a task moves up one class after waiting this long, and one more for each
    /// further period, so nothing waits forever.
    pub aging: Duration,
    /// `rr`: the slot-time each workflow gets per turn.
    pub quantum: Duration,
    /// Planned policies: how long the local search may improve a workflow's plan (zero: the
    /// constructive plan as it is).
    pub plan_search: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            default_estimate: Duration::from_secs(1),
            aging: Duration::from_secs(60),
            quantum: Duration::from_secs(60),
            plan_search: DEFAULT_PLAN_SEARCH,
        }
    }
}

/// The policies a scheduler can be started with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PolicyKind {
    /// First come, first served: workflow submit order, then task ready order.
    #[default]
    Fcfs,
    /// Priority class, then weight, then first come first served; waiting tasks age upwards.
    Priority,
    /// Shortest estimated runtime first.
    Sjf,
    /// The workflow with the least estimated work left goes first (shortest remaining
    /// processing time, at workflow level).
    Srpt,
    /// Round robin across workflows by a quantum of slot-time (fair sharing).
    Rr,
    /// Minimum completion time: first come first served, each task to the worker where it
    /// would finish earliest given worker speed, load and where its inputs are; a task whose
    /// best worker holds all it may waits for it.
    Mct,
    /// `mct` skipping the workers that hold two tasks per slot (a task then goes to the best
    /// worker with room, however slow).
    MctBounded,
    /// Heterogeneous earliest finish time: each workflow planned when it arrives, by upward
    /// rank onto the worker where each task finishes earliest.
    Heft,
    /// Critical path on a processor: like `heft`, with the critical path kept on one worker.
    Cpop,
    /// Batch mapping: of the tasks whose parents are placed, the one that completes earliest
    /// on its best worker goes first, there.
    MinMin,
    /// Batch mapping: the task whose best completion is latest goes first.
    MaxMin,
    /// Batch mapping: the task that would lose most if denied its best worker goes first.
    Sufferage,
}

/// How a policy chooses workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Any worker of the pool takes the task (the pool's shared queue).
    Pool,
    /// The engine chooses the worker when it dispatches the task (`mct`); `wait_for_best`: a
    /// task whose best worker is full waits for it (`mct`, not `mct-bounded`).
    Online { wait_for_best: bool },
    /// The engine plans the whole workflow when it arrives (`heft`, `cpop`, `min-min`, ...).
    Planned(PlanKind),
}

impl PolicyKind {
    /// Every policy, as named on the command line.
    pub const ALL: [PolicyKind; 12] = [
        PolicyKind::Fcfs,
        PolicyKind::Priority,
        PolicyKind::Sjf,
        PolicyKind::Srpt,
        PolicyKind::Rr,
        PolicyKind::Mct,
        PolicyKind::MctBounded,
        PolicyKind::Heft,
        PolicyKind::Cpop,
        PolicyKind::MinMin,
        PolicyKind::MaxMin,
        PolicyKind::Sufferage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Fcfs => "fcfs",
            PolicyKind::Priority => "priority",
            PolicyKind::Sjf => "sjf",
            PolicyKind::Srpt => "srpt",
            PolicyKind::Rr => "rr",
            PolicyKind::Mct => "mct",
            PolicyKind::MctBounded => "mct-bounded",
            PolicyKind::Heft => "heft",
            PolicyKind::Cpop => "cpop",
            PolicyKind::MinMin => "min-min",
            PolicyKind::MaxMin => "max-min",
            PolicyKind::Sufferage => "sufferage",
        }
    }

    /// How the policy chooses workers.
    pub fn placement(self) -> Placement {
        match self {
            PolicyKind::Mct => Placement::Online { wait_for_best: true },
            PolicyKind::MctBounded => Placement::Online { wait_for_best: false },
            PolicyKind::Heft => Placement::Planned(PlanKind::Heft),
            PolicyKind::Cpop => Placement::Planned(PlanKind::Cpop),
            PolicyKind::MinMin => Placement::Planned(PlanKind::Batch(Batch::MinMin)),
            PolicyKind::MaxMin => Placement::Planned(PlanKind::Batch(Batch::MaxMin)),
            PolicyKind::Sufferage => Placement::Planned(PlanKind::Batch(Batch::Sufferage)),
            _ => Placement::Pool,
        }
    }

    /// A new, empty instance of the policy.
    pub fn build(self, config: &PolicyConfig) -> Box<dyn Policy> {
        match self {
            PolicyKind::Fcfs => Box::new(Keyed::fcfs("fcfs")),
            PolicyKind::Priority => Box::new(Priority::new(config.aging)),
            PolicyKind::Sjf => Box::new(Keyed::sjf()),
            PolicyKind::Srpt => Box::new(ShortestRemainingWork::default()),
            PolicyKind::Rr => Box::new(RoundRobin::new(config.quantum)),
            PolicyKind::Mct => Box::new(Keyed::fcfs("mct")),
            PolicyKind::MctBounded => Box::new(Keyed::fcfs("mct-bounded")),
            PolicyKind::Heft => Box::new(Keyed::ranked("heft")),
            PolicyKind::Cpop => Box::new(Keyed::ranked("cpop")),
            PolicyKind::MinMin => Box::new(Keyed::ranked("min-min")),
            PolicyKind::MaxMin => Box::new(Keyed::ranked("max-min")),
            PolicyKind::Sufferage => Box::new(Keyed::ranked("sufferage")),
        }
    }
}

/// Written and read by name, as on the command line (`"heft"`).
impl serde::Serialize for PolicyKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for PolicyKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
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
