//! From workflow text (YAML or JSON, one schema) to a validated [`WorkflowSpec`].
//!
//! Validation walks the whole document and collects every problem instead of stopping at the
//! first, so a user fixes a file in one round.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

mod deps;
mod fields;
mod values;

use self::deps::RawDep;
use self::fields::Fields;
use self::values::{encoded_len, is_valid_name};
use super::{
    builtins, Action, InvalidWorkflow, Limits, PriorityClass, Problem, Resources, RetryPolicy, TaskSpec,
    ValidateOptions, WorkflowSpec,
};
use crate::dag::Dag;
use crate::document::load_document;
use crate::text::{has_control, printable};
use crate::units::format_bytes;
use crate::wire::MAX_ACTION_BYTES;

/// Most problems listed for one workflow; the rest are counted.
const MAX_PROBLEMS: usize = 200;
/// Most unknown dependencies for which the closest id is searched.
const MAX_SUGGESTIONS: usize = 50;
/// Longest workflow name.
const MAX_NAME_CHARS: usize = 256;

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
    let Value::Object(root) = value else {
        return Err(single(Problem::workflow(
            "",
            "a workflow must be a mapping with `name` and `tasks`",
        )));
    };
    let mut root = Fields::new(root);
    let (name, description, tenant, defaults, tasks) = (
        root.take("name"),
        root.take("description"),
        root.take("tenant"),
        root.take("defaults"),
        root.take("tasks"),
    );
    let tenant = match tenant {
        None => None,
        Some(Value::String(tenant)) if is_valid_name(&tenant, 128) => Some(tenant),
        Some(_) => {
            checker.push(Problem::workflow(
                "tenant",
                "must be a name of 1 to 128 of A-Z a-z 0-9 _ . -",
            ));
            None
        }
    };
    let name = match name {
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
    let defaults = match defaults {
        Some(value) => checker.defaults(value),
        None => Defaults::default(),
    };
    let raw_tasks = match tasks {
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
    if description.is_some_and(|description| !description.is_string()) {
        checker.push(Problem::workflow("description", "must be a string"));
    }
    root.finish(&mut checker, None, "");
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
        (None, Some(dag)) => Ok(WorkflowSpec {
            name,
            tenant,
            tasks,
            dag,
        }),
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
    limits: Limits,
    env: BTreeMap<String, String>,
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

    fn defaults(&mut self, value: Value) -> Defaults {
        let mut defaults = Defaults::default();
        let Value::Object(map) = value else {
            self.problem(None, "defaults", "must be a mapping");
            return defaults;
        };
        let mut fields = Fields::new(map);
        if let Some(value) = fields.take("priority") {
            defaults.priority = self.priority(None, "defaults.priority", value).unwrap_or_default();
        }
        if let Some(value) = fields.take("retries") {
            defaults.retry = self.retries(None, "defaults.retries", value).unwrap_or_default();
        }
        if let Some(value) = fields.take("timeout") {
            defaults.timeout = self.duration(None, "defaults.timeout", value, true);
        }
        if let Some(value) = fields.take("pool") {
            defaults.pool = self.pool(None, "defaults.pool", value);
        }
        if let Some(value) = fields.take("resources") {
            defaults.resources = self.resources(None, "defaults.resources", value, Resources::default());
        }
        if let Some(value) = fields.take("limits") {
            defaults.limits = self.limits(None, "defaults.limits", value, Limits::default());
        }
        if let Some(value) = fields.take("env") {
            defaults.env = self.env(None, "defaults.env", value);
        }
        fields.finish(self, None, "defaults");
        defaults
    }

    fn task(&mut self, position: usize, raw: Value, defaults: &Defaults) -> (TaskSpec, Vec<RawDep>) {
        // The id is filled in last: until then problems name the task by `label`.
        let mut task = TaskSpec {
            id: String::new(),
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
            resources: defaults.resources.clone(),
            timeout: defaults.timeout,
            limits: defaults.limits,
            retry: defaults.retry,
            pool: defaults.pool.clone().unwrap_or_else(|| self.intern_pool("default")),
            selector: BTreeMap::new(),
            prefer: BTreeMap::new(),
            kind: None,
        };
        let Value::Object(map) = raw else {
            task.id = format!("#{position}");
            self.problem(
                Some(&task.id),
                "",
                "a task must be a mapping with `id` and `run` or `handler`",
            );
            return (task, Vec::new());
        };
        // Every field a task has, each named once: checked below, in this order.
        let mut fields = Fields::new(map);
        let (id, description, kind, deps, run, handler, args, env) = (
            fields.take("id"),
            fields.take("description"),
            fields.take("kind"),
            fields.take("deps"),
            fields.take("run"),
            fields.take("handler"),
            fields.take("args"),
            fields.take("env"),
        );
        let (priority, weight, estimate, estimate_by_worker) = (
            fields.take("priority"),
            fields.take("weight"),
            fields.take("estimate"),
            fields.take("estimate_by_worker"),
        );
        let (features, resources, limits, timeout, retries, pool, selector, prefer) = (
            fields.take("features"),
            fields.take("resources"),
            fields.take("limits"),
            fields.take("timeout"),
            fields.take("retries"),
            fields.take("pool"),
            fields.take("selector"),
            fields.take("prefer"),
        );
        let id = match id {
            Some(Value::String(id)) if is_valid_name(&id, 128) => id,
            other => {
                // A task without a usable id is named by its position.
                let position = format!("#{position}");
                let problem = match other {
                    Some(Value::String(id)) => format!("`{id}` is not a valid id (1 to 128 of A-Z a-z 0-9 _ . -)"),
                    Some(_) => "must be a string".to_string(),
                    None => "missing (every task needs an id)".to_string(),
                };
                self.problem(Some(&position), "id", problem);
                position
            }
        };
        let label = Some(id.as_str());
        let deps = match deps {
            Some(value) => self.deps(label, value),
            None => Vec::new(),
        };
        let mut env_vars = defaults.env.clone();
        if let Some(value) = env {
            env_vars.extend(self.env(label, "env", value));
        }
        let env = env_vars;
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
        if let Some(value) = features {
            self.features(label, value, &mut task.features);
        }
        task.action = match (run, handler) {
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
        if let Some(value) = priority {
            task.priority = self.priority(label, "priority", value).unwrap_or(task.priority);
        }
        if let Some(value) = weight {
            match value.as_f64() {
                Some(weight) if weight.is_finite() => task.weight = weight,
                _ => self.problem(label, "weight", "must be a number"),
            }
        }
        if let Some(value) = estimate {
            task.estimate = self.duration(label, "estimate", value, false);
        }
        if let Some(value) = estimate_by_worker {
            task.estimate_by_worker = self.estimate_by_worker(label, value);
        }
        if let Some(value) = resources {
            task.resources = self.resources(label, "resources", value, std::mem::take(&mut task.resources));
        }
        if let Some(value) = limits {
            task.limits = self.limits(label, "limits", value, task.limits);
        }
        // The memory a task asks for is also the most it may use, unless it says otherwise.
        match task.limits.memory_bytes {
            None if task.resources.memory > 0 => task.limits.memory_bytes = Some(task.resources.memory),
            Some(limit) if limit < task.resources.memory => self.problem(
                label,
                "limits.memory",
                format!(
                    "{} is less than the {} the task asks for in resources.memory",
                    format_bytes(limit),
                    format_bytes(task.resources.memory)
                ),
            ),
            _ => {}
        }
        if let Some(value) = timeout {
            task.timeout = self.duration(label, "timeout", value, true);
        }
        if let Some(value) = retries {
            task.retry = self.retries(label, "retries", value).unwrap_or(task.retry);
        }
        if let Some(value) = pool {
            if let Some(pool) = self.pool(label, "pool", value) {
                task.pool = pool;
            }
        }
        if let Some(value) = selector {
            task.selector = self.selector(label, "selector", value);
        }
        if let Some(value) = prefer {
            task.prefer = self.selector(label, "prefer", value);
        }
        if description.is_some_and(|description| !description.is_string()) {
            self.problem(label, "description", "must be a string");
        }
        match kind {
            None => {}
            Some(Value::String(kind)) if is_valid_name(&kind, 128) => task.kind = Some(kind),
            Some(_) => self.problem(label, "kind", "must be a name: 1 to 128 of A-Z a-z 0-9 _ . -"),
        }
        fields.finish(self, label, "");
        task.id = id;
        (task, deps)
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
        for (field, message) in builtins::args_problems(&name, args) {
            self.problem(task, field, message);
        }
        name
    }
}

#[cfg(test)]
mod tests;
