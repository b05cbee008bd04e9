//! From workflow text (YAML or JSON, one schema) to a validated [`WorkflowSpec`].
//!
//! Validation walks the whole document and collects every problem instead of stopping at the
//! first, so a user fixes a file in one round.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{
    Action, Dep, InvalidWorkflow, PriorityClass, Problem, Resources, RetryPolicy, TaskSpec, ValidateOptions,
    WorkflowSpec,
};
use crate::dag::Dag;
use crate::document::load_document;
use crate::text::{has_control, printable};
use crate::units::{parse_duration, parse_size};
use crate::wire::MAX_ACTION_BYTES;

/// Most problems listed for one workflow; the rest are counted.
const MAX_PROBLEMS: usize = 200;
/// Most unknown dependencies for which the closest id is searched.
const MAX_SUGGESTIONS: usize = 50;
/// Longest workflow name.
const MAX_NAME_CHARS: usize = 256;

const WORKFLOW_FIELDS: &[&str] = &["name", "description", "defaults", "tasks"];
const DEFAULTS_FIELDS: &[&str] = &["priority", "retries", "timeout", "pool", "resources", "env"];
const TASK_FIELDS: &[&str] = &[
    "id",
    "description",
    "deps",
    "run",
    "handler",
    "args",
    "env",
    "priority",
    "weight",
    "estimate",
    "estimate_by_worker",
    "features",
    "resources",
    "timeout",
    "retries",
    "pool",
];
const RETRY_FIELDS: &[&str] = &["max", "backoff", "max_backoff"];
const RESOURCE_FIELDS: &[&str] = &["cpu", "memory", "slots"];
const DEP_FIELDS: &[&str] = &["task", "transfer"];

/// Parses and validates a workflow given as YAML or JSON text (see [`load_document`] for what
/// the text may hold).
pub fn parse_workflow(text: &str, options: &ValidateOptions) -> Result<WorkflowSpec, InvalidWorkflow> {
    let value = load_document(text).map_err(|error| single(Problem::workflow("", error.to_string())))?;
    parse_workflow_value(value, options)
}

/// Validates a workflow already parsed into a JSON value.
pub fn parse_workflow_value(value: Value, options: &ValidateOptions) -> Result<WorkflowSpec, InvalidWorkflow> {
    let mut checker = Checker {
        problems: Vec::new(),
        n_dropped: 0,
        options,
        pools: HashMap::new(),
    };
    let Value::Object(mut root) = value else {
        return Err(single(Problem::workflow(
            "",
            "a workflow must be a mapping with `name` and `tasks`",
        )));
    };
    let name = match root.remove("name") {
        Some(Value::String(name)) if has_control(&name) => {
            checker.push(Problem::workflow(
                "name",
                format!(
                    "`{}` holds control characters (escapes, NUL, line breaks), which a name must not",
                    printable(&name)
                ),
            ));
            String::new()
        }
        Some(Value::String(name)) if name.chars().count() > MAX_NAME_CHARS => {
            checker.push(Problem::workflow(
                "name",
                format!("is longer than {MAX_NAME_CHARS} characters"),
            ));
            String::new()
        }
        Some(Value::String(name)) if !name.trim().is_empty() => name,
        Some(_) => {
            checker.push(Problem::workflow("name", "must be a non-empty string"));
            String::new()
        }
        None => {
            checker.push(Problem::workflow("name", "missing (every workflow needs a name)"));
            String::new()
        }
    };
    let defaults = match root.remove("defaults") {
        Some(value) => checker.defaults(value),
        None => Defaults::default(),
    };
    let raw_tasks = match root.remove("tasks") {
        Some(Value::Array(tasks)) if !tasks.is_empty() => tasks,
        Some(Value::Array(_)) => {
            checker.push(Problem::workflow("tasks", "a workflow needs at least one task"));
            Vec::new()
        }
        Some(_) => {
            checker.push(Problem::workflow("tasks", "must be a list of tasks"));
            Vec::new()
        }
        None => {
            checker.push(Problem::workflow(
                "tasks",
                "missing (every workflow needs a list of tasks)",
            ));
            Vec::new()
        }
    };
    if let Some(description) = root.remove("description") {
        if !description.is_string() {
            checker.push(Problem::workflow("description", "must be a string"));
        }
    }
    checker.unknown_fields(None, "", root.keys(), WORKFLOW_FIELDS);
    if raw_tasks.len() > options.max_tasks {
        checker.push(Problem::workflow(
            "tasks",
            format!(
                "{} tasks is more than the limit of {}",
                raw_tasks.len(),
                options.max_tasks
            ),
        ));
    }

    let mut tasks = Vec::with_capacity(raw_tasks.len());
    let mut raw_deps = Vec::with_capacity(raw_tasks.len());
    for (position, raw) in raw_tasks.into_iter().enumerate() {
        let (task, deps) = checker.task(position, raw, &defaults);
        tasks.push(task);
        raw_deps.push(deps);
    }
    let parents = checker.resolve_deps(&tasks, raw_deps);
    for (task, deps) in tasks.iter_mut().zip(parents) {
        task.deps = deps;
    }
    let dag = match Dag::new(tasks.iter().map(|task| task.deps.iter().map(|dep| dep.task))) {
        Ok(dag) => Some(dag),
        Err(cycles) => {
            for cycle in cycles {
                let mut path: Vec<&str> = cycle.iter().map(|&idx| tasks[idx as usize].id.as_str()).collect();
                path.push(path[0]);
                checker.push(Problem::task(
                    path[0],
                    "deps",
                    format!("dependency cycle: {}", path.join(" -> ")),
                ));
            }
            None
        }
    };
    match (checker.finish(), dag) {
        (None, Some(dag)) => Ok(WorkflowSpec { name, tasks, dag }),
        (Some(invalid), _) => Err(invalid),
        (None, None) => unreachable!("a cyclic graph always adds a problem"),
    }
}

fn single(problem: Problem) -> InvalidWorkflow {
    InvalidWorkflow {
        problems: vec![problem],
    }
}

/// Values a task inherits unless it sets its own.
#[derive(Default)]
struct Defaults {
    priority: PriorityClass,
    retry: RetryPolicy,
    timeout: Option<Duration>,
    pool: Option<Arc<str>>,
    resources: Resources,
    env: BTreeMap<String, String>,
}

/// A dependency before ids are resolved: the id and the transfer cost.
struct RawDep {
    id: String,
    transfer_ms: u32,
}

struct Checker<'a> {
    problems: Vec<Problem>,
    n_dropped: usize,
    options: &'a ValidateOptions,
    /// Interned pool names, so a million tasks share a handful of strings.
    pools: HashMap<String, Arc<str>>,
}

impl Checker<'_> {
    fn push(&mut self, problem: Problem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.n_dropped += 1;
        }
    }

    fn finish(mut self) -> Option<InvalidWorkflow> {
        if self.problems.is_empty() {
            return None;
        }
        if self.n_dropped > 0 {
            self.problems.push(Problem::workflow(
                "",
                format!("... and {} more problems", self.n_dropped),
            ));
        }
        Some(InvalidWorkflow {
            problems: self.problems,
        })
    }

    fn problem(&mut self, task: Option<&str>, field: &str, message: impl Into<String>) {
        let problem = match task {
            Some(task) => Problem::task(task, field, message),
            None => Problem::workflow(field, message),
        };
        self.push(problem);
    }

    fn unknown_fields<'k>(
        &mut self,
        task: Option<&str>,
        prefix: &str,
        keys: impl Iterator<Item = &'k String>,
        expected: &[&str],
    ) {
        for key in keys {
            let field = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            let closest = expected
                .iter()
                .map(|candidate| (strsim::damerau_levenshtein(key, candidate), candidate))
                .filter(|&(distance, _)| distance <= 2)
                .min_by_key(|&(distance, _)| distance)
                .map(|(_, candidate)| candidate);
            let hint = match closest {
                Some(candidate) => format!(" (did you mean `{candidate}`?)"),
                None => String::new(),
            };
            self.problem(
                task,
                &field,
                format!("unknown field{hint}; expected one of: {}", expected.join(", ")),
            );
        }
    }

    fn defaults(&mut self, value: Value) -> Defaults {
        let mut defaults = Defaults::default();
        let Value::Object(mut map) = value else {
            self.problem(None, "defaults", "must be a mapping");
            return defaults;
        };
        if let Some(value) = map.remove("priority") {
            defaults.priority = self.priority(None, "defaults.priority", value).unwrap_or_default();
        }
        if let Some(value) = map.remove("retries") {
            defaults.retry = self.retries(None, "defaults.retries", value).unwrap_or_default();
        }
        if let Some(value) = map.remove("timeout") {
            defaults.timeout = self.duration(None, "defaults.timeout", value, true);
        }
        if let Some(value) = map.remove("pool") {
            defaults.pool = self.pool(None, "defaults.pool", value);
        }
        if let Some(value) = map.remove("resources") {
            defaults.resources = self.resources(None, "defaults.resources", value, Resources::default());
        }
        if let Some(value) = map.remove("env") {
            defaults.env = self.env(None, "defaults.env", value);
        }
        self.unknown_fields(None, "defaults", map.keys(), DEFAULTS_FIELDS);
        defaults
    }

    fn task(&mut self, position: usize, raw: Value, defaults: &Defaults) -> (TaskSpec, Vec<RawDep>) {
        let mut task = TaskSpec {
            id: format!("#{position}"),
            deps: Vec::new(),
            action: Action::Run {
                argv: Vec::new(),
                env: BTreeMap::new(),
            },
            priority: defaults.priority,
            weight: 0.0,
            estimate: None,
            estimate_by_worker: None,
            features: BTreeMap::new(),
            resources: defaults.resources,
            timeout: defaults.timeout,
            retry: defaults.retry,
            pool: defaults.pool.clone().unwrap_or_else(|| self.intern_pool("default")),
        };
        let Value::Object(mut map) = raw else {
            self.problem(
                Some(&task.id),
                "",
                "a task must be a mapping with `id` and `run` or `handler`",
            );
            return (task, Vec::new());
        };
        match map.remove("id") {
            Some(Value::String(id)) if is_valid_name(&id, 128) => task.id = id,
            Some(Value::String(id)) => self.problem(
                Some(&task.id),
                "id",
                format!("`{id}` is not a valid id (1 to 128 of A-Z a-z 0-9 _ . -)"),
            ),
            Some(_) => self.problem(Some(&task.id), "id", "must be a string"),
            None => self.problem(Some(&task.id), "id", "missing (every task needs an id)"),
        }
        let label = task.id.clone();
        let label = Some(label.as_str());
        let deps = match map.remove("deps") {
            Some(value) => self.deps(label, value),
            None => Vec::new(),
        };
        let mut env = defaults.env.clone();
        if let Some(value) = map.remove("env") {
            env.extend(self.env(label, "env", value));
        }
        let args = map.remove("args");
        if let Some(args) = &args {
            match args {
                // Numeric arguments describe the input (sizes, counts): runtime prediction
                // learns from them.
                Value::Object(map) => task.features.extend(
                    map.iter()
                        .filter_map(|(name, value)| Some((name.clone(), value.as_f64()?)))
                        .filter(|(_, value)| value.is_finite()),
                ),
                _ => self.problem(label, "args", "must be a mapping"),
            }
        }
        if let Some(value) = map.remove("features") {
            self.features(label, value, &mut task.features);
        }
        task.action = match (map.remove("run"), map.remove("handler")) {
            (Some(_), Some(_)) => {
                self.problem(label, "run", "a task has exactly one of `run` or `handler`, not both");
                task.action
            }
            (None, None) => {
                self.problem(
                    label,
                    "run",
                    "a task needs one of `run` (a command) or `handler` (a built-in)",
                );
                task.action
            }
            (Some(run), None) => Action::Run {
                argv: self.argv(label, run),
                env,
            },
            (None, Some(handler)) => {
                let args = args.unwrap_or(Value::Object(Map::new()));
                let name = self.handler(label, handler, &args);
                Action::Handler { name, args, env }
            }
        };
        let action_bytes = encoded_len(&task.action);
        if action_bytes > MAX_ACTION_BYTES {
            let field = match task.action {
                Action::Run { .. } => "run",
                Action::Handler { .. } => "args",
            };
            self.problem(
                label,
                field,
                format!(
                    "what the task runs takes {action_bytes} bytes (argv, args and env once expanded); \
                     a task may carry at most {MAX_ACTION_BYTES} (pass large data through files or a parent's output)"
                ),
            );
        }
        if let Some(value) = map.remove("priority") {
            task.priority = self.priority(label, "priority", value).unwrap_or(task.priority);
        }
        if let Some(value) = map.remove("weight") {
            match value.as_f64() {
                Some(weight) if weight.is_finite() => task.weight = weight,
                _ => self.problem(label, "weight", "must be a number"),
            }
        }
        if let Some(value) = map.remove("estimate") {
            task.estimate = self.duration(label, "estimate", value, false);
        }
        if let Some(value) = map.remove("estimate_by_worker") {
            task.estimate_by_worker = self.estimate_by_worker(label, value);
        }
        if let Some(value) = map.remove("resources") {
            task.resources = self.resources(label, "resources", value, task.resources);
        }
        if let Some(value) = map.remove("timeout") {
            task.timeout = self.duration(label, "timeout", value, true);
        }
        if let Some(value) = map.remove("retries") {
            task.retry = self.retries(label, "retries", value).unwrap_or(task.retry);
        }
        if let Some(value) = map.remove("pool") {
            if let Some(pool) = self.pool(label, "pool", value) {
                task.pool = pool;
            }
        }
        if map
            .remove("description")
            .is_some_and(|description| !description.is_string())
        {
            self.problem(label, "description", "must be a string");
        }
        self.unknown_fields(label, "", map.keys(), TASK_FIELDS);
        (task, deps)
    }

    fn deps(&mut self, task: Option<&str>, value: Value) -> Vec<RawDep> {
        let Value::Array(items) = value else {
            self.problem(task, "deps", "must be a list of task ids");
            return Vec::new();
        };
        let mut deps = Vec::with_capacity(items.len());
        for (position, item) in items.into_iter().enumerate() {
            let field = format!("deps[{position}]");
            match item {
                Value::String(id) => deps.push(RawDep { id, transfer_ms: 0 }),
                Value::Object(mut map) => {
                    let id = match map.remove("task") {
                        Some(Value::String(id)) => id,
                        _ => {
                            self.problem(task, &format!("{field}.task"), "must be the id of a task");
                            continue;
                        }
                    };
                    let transfer = match map.remove("transfer") {
                        Some(value) => self
                            .duration(task, &format!("{field}.transfer"), value, false)
                            .unwrap_or_default(),
                        None => Duration::ZERO,
                    };
                    self.unknown_fields(task, &field, map.keys(), DEP_FIELDS);
                    let transfer_ms = u32::try_from(transfer.as_millis()).unwrap_or(u32::MAX);
                    deps.push(RawDep { id, transfer_ms });
                }
                _ => self.problem(task, &field, "must be a task id or `{task: ID, transfer: DURATION}`"),
            }
        }
        deps
    }

    fn resolve_deps(&mut self, tasks: &[TaskSpec], raw_deps: Vec<Vec<RawDep>>) -> Vec<Vec<Dep>> {
        let mut index: HashMap<&str, u32> = HashMap::with_capacity(tasks.len());
        for (idx, task) in tasks.iter().enumerate() {
            if task.id.starts_with('#') {
                continue;
            }
            if let Some(&first) = index.get(task.id.as_str()) {
                self.problem(
                    Some(&task.id),
                    "id",
                    format!("duplicate id: tasks #{first} and #{idx} are both `{}`", task.id),
                );
            } else {
                index.insert(task.id.as_str(), idx as u32);
            }
        }
        let mut n_suggestions = 0;
        let mut resolved = Vec::with_capacity(raw_deps.len());
        for (task, deps) in tasks.iter().zip(raw_deps) {
            let mut parents: Vec<Dep> = Vec::with_capacity(deps.len());
            for dep in deps {
                match index.get(dep.id.as_str()) {
                    Some(&parent) if parents.iter().any(|seen| seen.task == parent) => {
                        self.problem(Some(&task.id), "deps", format!("`{}` is listed twice", dep.id));
                    }
                    Some(&parent) => parents.push(Dep {
                        task: parent,
                        transfer_ms: dep.transfer_ms,
                    }),
                    None => {
                        let hint = if n_suggestions < MAX_SUGGESTIONS {
                            n_suggestions += 1;
                            closest_id(&dep.id, tasks)
                                .map(|id| format!(" (did you mean `{id}`?)"))
                                .unwrap_or_default()
                        } else {
                            String::new()
                        };
                        self.problem(Some(&task.id), "deps", format!("unknown dependency `{}`{hint}", dep.id));
                    }
                }
            }
            resolved.push(parents);
        }
        resolved
    }

    fn argv(&mut self, task: Option<&str>, value: Value) -> Vec<String> {
        let items = match value {
            Value::Array(items) => items,
            Value::String(_) => {
                self.problem(task, "run", "must be a list of arguments such as [\"python3\", \"job.py\"]; commands never go through a shell (use [\"sh\", \"-c\", \"...\"] for one)");
                return Vec::new();
            }
            _ => {
                self.problem(task, "run", "must be a list of arguments");
                return Vec::new();
            }
        };
        if items.is_empty() {
            self.problem(
                task,
                "run",
                "must not be empty: the first argument is the program to run",
            );
        }
        let mut argv = Vec::with_capacity(items.len());
        for (position, item) in items.into_iter().enumerate() {
            match scalar_to_string(item) {
                Some(arg) if arg.contains('\0') => {
                    self.problem(task, &format!("run[{position}]"), "must not contain a NUL byte")
                }
                Some(arg) if position == 0 && arg.is_empty() => {
                    self.problem(task, "run[0]", "the program must not be empty")
                }
                Some(arg) => argv.push(arg),
                None => self.problem(task, &format!("run[{position}]"), "must be a string"),
            }
        }
        argv
    }

    fn handler(&mut self, task: Option<&str>, value: Value, args: &Value) -> String {
        let Value::String(name) = value else {
            self.problem(task, "handler", "must be the name of a handler");
            return String::new();
        };
        if let Some(known) = &self.options.known_handlers {
            if !known.iter().any(|known| known == &name) {
                self.problem(
                    task,
                    "handler",
                    format!("unknown handler `{name}` (known: {})", known.join(", ")),
                );
            }
        }
        match name.as_str() {
            "sleep" => match args.get("duration") {
                Some(duration) => {
                    self.duration(task, "args.duration", duration.clone(), false);
                }
                None => self.problem(task, "args.duration", "the `sleep` handler needs a duration"),
            },
            "fail" if args.get("message").is_some_and(|message| !message.is_string()) => {
                self.problem(task, "args.message", "must be a string");
            }
            _ => {}
        }
        name
    }

    fn env(&mut self, task: Option<&str>, field: &str, value: Value) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let Value::Object(map) = value else {
            self.problem(task, field, "must be a mapping of variable names to values");
            return env;
        };
        for (key, value) in map {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                self.problem(
                    task,
                    &format!("{field}.{key}"),
                    "is not a valid environment variable name",
                );
                continue;
            }
            match scalar_to_string(value) {
                Some(text) if !text.contains('\0') => {
                    env.insert(key, text);
                }
                _ => self.problem(task, &format!("{field}.{key}"), "must be a string, number or boolean"),
            }
        }
        env
    }

    fn priority(&mut self, task: Option<&str>, field: &str, value: Value) -> Option<PriorityClass> {
        let class = value.as_str().and_then(PriorityClass::parse);
        if class.is_none() {
            self.problem(task, field, format!("must be one of high, normal, low (got {value})"));
        }
        class
    }

    fn duration(&mut self, task: Option<&str>, field: &str, value: Value, positive: bool) -> Option<Duration> {
        let parsed = match &value {
            Value::Number(number) => number
                .as_f64()
                .ok_or_else(|| "invalid duration".to_string())
                .and_then(|seconds| parse_duration(&seconds.to_string()).map_err(|error| error.to_string())),
            Value::String(text) => parse_duration(text).map_err(|error| error.to_string()),
            _ => Err(format!("must be a duration such as 45s or 1h30m (got {value})")),
        };
        match parsed {
            Ok(duration) if positive && duration.is_zero() => {
                self.problem(task, field, "must be longer than zero");
                None
            }
            Ok(duration) => Some(duration),
            Err(message) => {
                self.problem(task, field, message);
                None
            }
        }
    }

    fn retries(&mut self, task: Option<&str>, field: &str, value: Value) -> Option<RetryPolicy> {
        match value {
            Value::Number(number) => match number.as_u64() {
                Some(n) if n <= 1000 => Some(RetryPolicy::with_retries(n as u32)),
                _ => {
                    self.problem(task, field, "must be a whole number from 0 to 1000");
                    None
                }
            },
            Value::Object(mut map) => {
                let mut policy = RetryPolicy::default();
                match map.remove("max").map(|max| max.as_u64()) {
                    Some(Some(n)) if n <= 1000 => policy.max_retries = n as u32,
                    Some(_) => self.problem(task, &format!("{field}.max"), "must be a whole number from 0 to 1000"),
                    None => self.problem(task, &format!("{field}.max"), "missing (the number of retries)"),
                }
                if let Some(value) = map.remove("backoff") {
                    policy.backoff = self
                        .duration(task, &format!("{field}.backoff"), value, false)
                        .unwrap_or(policy.backoff);
                }
                match map.remove("max_backoff") {
                    Some(value) => {
                        policy.max_backoff = self
                            .duration(task, &format!("{field}.max_backoff"), value, false)
                            .unwrap_or(policy.max_backoff.max(policy.backoff));
                    }
                    // Without a cap, the default cap never cuts below the first delay.
                    None => policy.max_backoff = policy.max_backoff.max(policy.backoff),
                }
                if policy.max_backoff < policy.backoff {
                    self.problem(
                        task,
                        &format!("{field}.max_backoff"),
                        "must not be shorter than `backoff`",
                    );
                }
                self.unknown_fields(task, field, map.keys(), RETRY_FIELDS);
                Some(policy)
            }
            _ => {
                self.problem(
                    task,
                    field,
                    "must be a number of retries or `{max, backoff, max_backoff}`",
                );
                None
            }
        }
    }

    fn resources(&mut self, task: Option<&str>, field: &str, value: Value, mut resources: Resources) -> Resources {
        let Value::Object(mut map) = value else {
            self.problem(task, field, "must be a mapping such as {cpu: 1.5, memory: 512Mi}");
            return resources;
        };
        if let Some(value) = map.remove("cpu") {
            match value.as_f64() {
                Some(cpu) if cpu.is_finite() && cpu > 0.0 => resources.cpu = cpu,
                _ => self.problem(task, &format!("{field}.cpu"), "must be a positive number of cores"),
            }
        }
        if let Some(value) = map.remove("memory") {
            let parsed = match &value {
                Value::Number(number) => number
                    .as_u64()
                    .ok_or_else(|| "must be a whole number of bytes".to_string()),
                Value::String(text) => parse_size(text).map_err(|error| error.to_string()),
                _ => Err("must be a size such as 512Mi".to_string()),
            };
            match parsed {
                Ok(bytes) => resources.memory = bytes,
                Err(message) => self.problem(task, &format!("{field}.memory"), message),
            }
        }
        if let Some(value) = map.remove("slots") {
            match value.as_u64() {
                Some(slots) if (1..=1024).contains(&slots) => resources.slots = slots as u32,
                _ => self.problem(task, &format!("{field}.slots"), "must be a whole number from 1 to 1024"),
            }
        }
        self.unknown_fields(task, field, map.keys(), RESOURCE_FIELDS);
        resources
    }

    fn estimate_by_worker(&mut self, task: Option<&str>, value: Value) -> Option<BTreeMap<String, Duration>> {
        let Value::Object(map) = value else {
            self.problem(
                task,
                "estimate_by_worker",
                "must be a mapping of worker names to durations",
            );
            return None;
        };
        let mut estimates = BTreeMap::new();
        for (worker, value) in map {
            if let Some(duration) = self.duration(task, &format!("estimate_by_worker.{worker}"), value, false) {
                estimates.insert(worker, duration);
            }
        }
        Some(estimates)
    }

    fn features(&mut self, task: Option<&str>, value: Value, features: &mut BTreeMap<String, f64>) {
        let Value::Object(map) = value else {
            self.problem(task, "features", "must be a mapping of names to numbers");
            return;
        };
        for (name, value) in map {
            match value.as_f64() {
                Some(number) if number.is_finite() => {
                    features.insert(name, number);
                }
                _ => self.problem(task, &format!("features.{name}"), "must be a number"),
            }
        }
    }

    fn pool(&mut self, task: Option<&str>, field: &str, value: Value) -> Option<Arc<str>> {
        match value {
            Value::String(name) if is_valid_name(&name, 64) => Some(self.intern_pool(&name)),
            _ => {
                self.problem(task, field, "must be a pool name (1 to 64 of A-Z a-z 0-9 _ . -)");
                None
            }
        }
    }

    fn intern_pool(&mut self, name: &str) -> Arc<str> {
        self.pools
            .entry(name.to_string())
            .or_insert_with(|| Arc::from(name))
            .clone()
    }
}

fn is_valid_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Bytes of the action as JSON on the wire.
fn encoded_len(action: &Action) -> usize {
    /// Counts what is written to it.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let written = match action {
        Action::Run { argv, env } => {
            serde_json::to_writer(&mut counter, argv).and_then(|()| serde_json::to_writer(&mut counter, env))
        }
        Action::Handler { name, args, env } => serde_json::to_writer(&mut counter, name)
            .and_then(|()| serde_json::to_writer(&mut counter, args))
            .and_then(|()| serde_json::to_writer(&mut counter, env)),
    };
    // Room for the field names around them.
    written.map_or(usize::MAX, |()| counter.0 + 64)
}

fn scalar_to_string(value: Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn closest_id<'t>(unknown: &str, tasks: &'t [TaskSpec]) -> Option<&'t str> {
    tasks
        .iter()
        .map(|task| (strsim::levenshtein(unknown, &task.id), task.id.as_str()))
        .filter(|&(distance, _)| distance <= (unknown.chars().count() / 3).max(1))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, id)| id)
}

#[cfg(test)]
mod tests;
