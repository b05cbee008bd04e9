//! The validated workflow model: what a workflow file means once every field has been checked.
//!
//! [`parse_workflow`] turns YAML or JSON text into a [`WorkflowSpec`] or the full list of
//! [`Problem`]s; nothing runs until a workflow has passed it.

pub mod builtins;
mod parse;
mod problem;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use parse::{parse_workflow, parse_workflow_value};
pub use problem::{write_problems, InvalidWorkflow, Problem};

use crate::dag::Dag;
pub use crate::limits::Limits;
use crate::resources::ResourceSet;

pub use builtins::BUILTIN_HANDLERS;

/// Default cap on the number of tasks in one workflow.
pub const DEFAULT_MAX_TASKS: usize = 1_000_000;

/// Knobs of validation that depend on where the workflow is going to run.
#[derive(Clone, Debug)]
pub struct ValidateOptions {
    /// Most tasks a workflow may have.
    pub max_tasks: usize,
    /// Handler names the fleet knows; `None` accepts any name (workers may register their own).
    pub known_handlers: Option<Vec<String>>,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            max_tasks: DEFAULT_MAX_TASKS,
            known_handlers: None,
        }
    }
}

/// A validated workflow: a named DAG of tasks.
#[derive(Clone, Debug)]
pub struct WorkflowSpec {
    /// The workflow's name, as given in the file.
    pub name: String,
    /// Who the workflow runs for, for capacity reserved per tenant (`tenant: acme`).
    pub tenant: Option<String>,
    /// Tasks in file order; a task's index here is its identity inside the workflow.
    pub tasks: Vec<TaskSpec>,
    /// The dependency graph over task indices (validated acyclic).
    pub dag: Dag,
}

/// One validated task.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// Unique id within the workflow (`[A-Za-z0-9_.-]{1,128}`).
    pub id: String,
    /// Indices of the tasks this one waits for, with their data-transfer costs.
    pub deps: Vec<Dep>,
    /// What to execute.
    pub action: Action,
    /// Priority class.
    pub priority: PriorityClass,
    /// Orders tasks within a class: higher first.
    pub weight: f64,
    /// Declared expected runtime.
    pub estimate: Option<Duration>,
    /// Declared runtime per named worker (for heterogeneous fleets).
    pub estimate_by_worker: Option<BTreeMap<String, Duration>>,
    /// Numbers describing the input (from `features`, and the numeric values of `args`), from
    /// which runtime prediction learns how runtime grows.
    pub features: BTreeMap<String, f64>,
    /// Requested resources.
    pub resources: Resources,
    /// Wall-clock limit of one attempt.
    pub timeout: Option<Duration>,
    /// What the worker enforces on one attempt (memory defaults to `resources.memory`).
    pub limits: Limits,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Worker pool the task runs in.
    pub pool: Arc<str>,
    /// Labels a worker must carry to run the task (`{arch: arm64}`).
    pub selector: BTreeMap<String, String>,
    /// Labels the task would rather have (`{zone: a}`): among the workers where it fits, one
    /// carrying more of them is chosen.
    pub prefer: BTreeMap<String, String>,
    /// What the task does (`bowtie2-build`), whatever its id: runtimes are learned per kind,
    /// so a task never seen before gets the runtime its kind has shown.
    pub kind: Option<String>,
}

impl TaskSpec {
    /// The runtime the task declares: its `estimate`, else its fastest `estimate_by_worker`.
    pub fn declared_estimate(&self) -> Option<Duration> {
        self.estimate
            .or_else(|| self.estimate_by_worker.as_ref()?.values().min().copied())
    }
}

/// A dependency edge: the parent's index and the cost of moving its output to another worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dep {
    /// Index of the parent task.
    pub task: u32,
    /// Transfer cost in milliseconds, paid when parent and child run on different workers.
    pub transfer_ms: u32,
}

/// What a task executes.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// A child process: argv (never through a shell) and extra environment.
    Run {
        argv: Vec<String>,
        env: BTreeMap<String, String>,
    },
    /// An in-process handler by name, with its JSON arguments.
    Handler {
        name: String,
        args: serde_json::Value,
        env: BTreeMap<String, String>,
    },
}

/// The three priority classes; each has its own queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PriorityClass {
    High,
    #[default]
    Normal,
    Low,
}

impl PriorityClass {
    /// Every class, most urgent first.
    pub const ALL: [PriorityClass; 3] = [PriorityClass::High, PriorityClass::Normal, PriorityClass::Low];

    /// The class's name as written in workflow files and queue names.
    pub fn as_str(self) -> &'static str {
        match self {
            PriorityClass::High => "high",
            PriorityClass::Normal => "normal",
            PriorityClass::Low => "low",
        }
    }

    /// 0 for high, 1 for normal, 2 for low.
    pub fn rank(self) -> usize {
        self as usize
    }

    /// Parses `high`, `normal` or `low`.
    pub fn parse(text: &str) -> Option<PriorityClass> {
        PriorityClass::ALL.into_iter().find(|class| class.as_str() == text)
    }
}

/// Resources a task asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    /// CPU cores (fractions allowed).
    pub cpu: f64,
    /// Memory in bytes, 0 when unspecified.
    pub memory: u64,
    /// Whole GPUs.
    pub gpu: u32,
    /// Worker slots taken while running.
    pub slots: u32,
    /// Named resources of the pool (`licenses: 2`), by name.
    pub custom: BTreeMap<String, f64>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: 1.0,
            memory: 0,
            gpu: 0,
            slots: 1,
            custom: BTreeMap::new(),
        }
    }
}

impl Resources {
    /// What the task asks a worker for (slots aside).
    pub fn request(&self) -> ResourceSet {
        ResourceSet {
            cpu: self.cpu,
            memory_bytes: self.memory,
            gpu: self.gpu,
            custom: self.custom.clone(),
        }
    }
}

/// When and how often a failed attempt is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Cap on the delay.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The backoff used when a workflow gives only a number of retries.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
    /// The cap used when a workflow gives only a number of retries.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(300);

    /// `max_retries` retries with the default backoff.
    pub fn with_retries(max_retries: u32) -> Self {
        RetryPolicy {
            max_retries,
            backoff: Self::DEFAULT_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::with_retries(0)
    }
}

impl WorkflowSpec {
    /// The index of the task with this id.
    pub fn task_index(&self, id: &str) -> Option<usize> {
        self.tasks.iter().position(|task| task.id == id)
    }

    /// Summary figures for `taskfleet validate`: depth and the critical path by `estimate`
    /// (for a task with only `estimate_by_worker`, its fastest).
    pub fn summary(&self) -> WorkflowSummary {
        let estimates: Vec<u64> = self
            .tasks
            .iter()
            .map(|task| {
                task.declared_estimate()
                    .map_or(0, |estimate| estimate.as_millis() as u64)
            })
            .collect();
        let critical = self.dag.critical_path(&estimates);
        WorkflowSummary {
            n_tasks: self.tasks.len(),
            n_edges: self.dag.n_edges(),
            depth: self.dag.depth(),
            n_roots: self.dag.roots().count(),
            critical_path: critical
                .path
                .iter()
                .map(|&idx| self.tasks[idx as usize].id.clone())
                .collect(),
            critical_path_length: Duration::from_millis(critical.length),
            n_without_estimate: self
                .tasks
                .iter()
                .filter(|task| task.declared_estimate().is_none())
                .count(),
        }
    }
}

/// Figures describing a workflow's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowSummary {
    pub n_tasks: usize,
    pub n_edges: usize,
    /// Tasks on the longest chain.
    pub depth: usize,
    pub n_roots: usize,
    /// Task ids on the path with the largest sum of estimates.
    pub critical_path: Vec<String>,
    pub critical_path_length: Duration,
    /// Tasks that count as zero on the critical path for want of an estimate.
    pub n_without_estimate: usize,
}
