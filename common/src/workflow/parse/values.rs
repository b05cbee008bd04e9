//! Checking the values of a workflow's fields: commands, environments, priorities,
//! durations, retries, resources, estimates, features and pools. Each check reports its
//! problems to the [`Checker`] and returns what it could make of the value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::fields::Fields;
use super::Checker;
use crate::text::has_control;
use crate::units::{parse_duration, parse_size};

/// The smallest memory limit a task may ask for.
const MIN_MEMORY_LIMIT: u64 = 1024 * 1024;
use crate::workflow::{Action, Limits, PriorityClass, Resources, RetryPolicy, TaskSpec};

impl Checker<'_> {
    pub(super) fn argv(&mut self, task: Option<&str>, value: Value) -> Vec<String> {
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

    pub(super) fn env(&mut self, task: Option<&str>, field: &str, value: Value) -> BTreeMap<String, String> {
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

    /// `selector: {arch: arm64, zone: a}`: labels named like pools, values as text.
    /// Labels a task selects (`selector`) or prefers (`prefer`), by the field's name.
    pub(super) fn selector(&mut self, task: Option<&str>, name: &str, value: Value) -> BTreeMap<String, String> {
        let mut selector = BTreeMap::new();
        let Value::Object(map) = value else {
            self.problem(
                task,
                name,
                "must be a mapping of labels to values, such as {arch: arm64}",
            );
            return selector;
        };
        for (key, value) in map {
            let field = format!("{name}.{key}");
            if !is_valid_name(&key, 64) {
                self.problem(task, &field, "a label is named by 1 to 64 of A-Z a-z 0-9 _ . -");
                continue;
            }
            match scalar_to_string(value) {
                Some(text) if !text.is_empty() && text.len() <= 256 && !has_control(&text) => {
                    selector.insert(key, text);
                }
                _ => self.problem(
                    task,
                    &field,
                    "must be a string, number or boolean of at most 256 characters",
                ),
            }
        }
        selector
    }

    pub(super) fn priority(&mut self, task: Option<&str>, field: &str, value: Value) -> Option<PriorityClass> {
        let class = value.as_str().and_then(PriorityClass::parse);
        if class.is_none() {
            self.problem(task, field, format!("must be one of high, normal, low (got {value})"));
        }
        class
    }

    pub(super) fn duration(
        &mut self,
        task: Option<&str>,
        field: &str,
        value: Value,
        positive: bool,
    ) -> Option<Duration> {
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

    pub(super) fn retries(&mut self, task: Option<&str>, field: &str, value: Value) -> Option<RetryPolicy> {
        match value {
            Value::Number(number) => match number.as_u64() {
                Some(n) if n <= 1000 => Some(RetryPolicy::with_retries(n as u32)),
                _ => {
                    self.problem(task, field, "must be a whole number from 0 to 1000");
                    None
                }
            },
            Value::Object(map) => {
                let mut fields = Fields::new(map);
                let (max, backoff, max_backoff) =
                    (fields.take("max"), fields.take("backoff"), fields.take("max_backoff"));
                let mut policy = RetryPolicy::default();
                match max.map(|max| max.as_u64()) {
                    Some(Some(n)) if n <= 1000 => policy.max_retries = n as u32,
                    Some(_) => self.problem(task, &format!("{field}.max"), "must be a whole number from 0 to 1000"),
                    None => self.problem(task, &format!("{field}.max"), "missing (the number of retries)"),
                }
                if let Some(value) = backoff {
                    policy.backoff = self
                        .duration(task, &format!("{field}.backoff"), value, false)
                        .unwrap_or(policy.backoff);
                }
                match max_backoff {
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
                fields.finish(self, task, field);
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

    /// A size: a whole number of bytes or text such as `512Mi`.
    pub(super) fn size(&mut self, task: Option<&str>, field: &str, value: Value) -> Option<u64> {
        let parsed = match &value {
            Value::Number(number) => number
                .as_u64()
                .ok_or_else(|| "must be a whole number of bytes".to_string()),
            Value::String(text) => parse_size(text).map_err(|error| error.to_string()),
            _ => Err("must be a size such as 512Mi".to_string()),
        };
        parsed.map_err(|message| self.problem(task, field, message)).ok()
    }

    /// `limits: {memory: 64Mi, cpu: 2, cpu_time: 30s, pids: 100}`, each over `limits`.
    pub(super) fn limits(&mut self, task: Option<&str>, field: &str, value: Value, mut limits: Limits) -> Limits {
        let Value::Object(map) = value else {
            self.problem(
                task,
                field,
                "must be a mapping such as {memory: 512Mi, cpu_time: 30s, pids: 100}",
            );
            return limits;
        };
        let mut fields = Fields::new(map);
        let (memory, cpu, cpu_time, pids) = (
            fields.take("memory"),
            fields.take("cpu"),
            fields.take("cpu_time"),
            fields.take("pids"),
        );
        if let Some(value) = memory {
            match self.size(task, &format!("{field}.memory"), value) {
                Some(bytes) if bytes < MIN_MEMORY_LIMIT => self.problem(
                    task,
                    &format!("{field}.memory"),
                    format!("must be at least {MIN_MEMORY_LIMIT} bytes (1Mi): no program starts in less"),
                ),
                Some(bytes) => limits.memory_bytes = Some(bytes),
                None => {}
            }
        }
        if let Some(value) = cpu {
            match value.as_f64() {
                Some(cores) if cores.is_finite() && (0.01..=4096.0).contains(&cores) => limits.cpu = Some(cores),
                _ => self.problem(
                    task,
                    &format!("{field}.cpu"),
                    "must be a number of cores from 0.01 to 4096",
                ),
            }
        }
        if let Some(value) = cpu_time {
            if let Some(time) = self.duration(task, &format!("{field}.cpu_time"), value, true) {
                limits.cpu_time_ms = Some(u64::try_from(time.as_millis()).unwrap_or(u64::MAX).max(1));
            }
        }
        if let Some(value) = pids {
            match value.as_u64() {
                Some(pids) if (1..=u64::from(u32::MAX)).contains(&pids) => limits.pids = Some(pids as u32),
                _ => self.problem(
                    task,
                    &format!("{field}.pids"),
                    "must be a whole number of processes, at least 1",
                ),
            }
        }
        fields.finish(self, task, field);
        limits
    }

    pub(super) fn resources(
        &mut self,
        task: Option<&str>,
        field: &str,
        value: Value,
        mut resources: Resources,
    ) -> Resources {
        let Value::Object(map) = value else {
            self.problem(task, field, "must be a mapping such as {cpu: 1.5, memory: 512Mi}");
            return resources;
        };
        let mut fields = Fields::new(map);
        let (cpu, memory, gpu, slots) = (
            fields.take("cpu"),
            fields.take("memory"),
            fields.take("gpu"),
            fields.take("slots"),
        );
        if let Some(value) = cpu {
            match value.as_f64() {
                Some(cpu) if cpu.is_finite() && cpu > 0.0 => resources.cpu = cpu,
                _ => self.problem(task, &format!("{field}.cpu"), "must be a positive number of cores"),
            }
        }
        if let Some(value) = memory {
            if let Some(bytes) = self.size(task, &format!("{field}.memory"), value) {
                resources.memory = bytes;
            }
        }
        if let Some(value) = gpu {
            match value.as_u64() {
                Some(gpu) if gpu <= 1024 => resources.gpu = gpu as u32,
                _ => self.problem(
                    task,
                    &format!("{field}.gpu"),
                    "must be a whole number of GPUs from 0 to 1024",
                ),
            }
        }
        if let Some(value) = slots {
            match value.as_u64() {
                Some(slots) if (1..=1024).contains(&slots) => resources.slots = slots as u32,
                _ => self.problem(task, &format!("{field}.slots"), "must be a whole number from 1 to 1024"),
            }
        }
        // Any other name is a custom resource of the pool (`licenses: 2`).
        for (name, value) in fields.take_others() {
            let path = format!("{field}.{name}");
            if !is_valid_name(&name, 64) {
                self.problem(
                    task,
                    &path,
                    "a custom resource is named by 1 to 64 of A-Z a-z 0-9 _ . -",
                );
                continue;
            }
            match value.as_f64() {
                Some(amount) if amount.is_finite() && amount >= 0.0 => {
                    resources.custom.insert(name, amount);
                }
                _ => self.problem(
                    task,
                    &path,
                    "a custom resource is a non-negative number (cpu, memory, gpu and slots are the others)",
                ),
            }
        }
        fields.finish(self, task, field);
        resources
    }

    pub(super) fn estimate_by_worker(
        &mut self,
        task: Option<&str>,
        value: Value,
    ) -> Option<BTreeMap<String, Duration>> {
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

    pub(super) fn features(&mut self, task: Option<&str>, value: Value, features: &mut BTreeMap<String, f64>) {
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

    pub(super) fn pool(&mut self, task: Option<&str>, field: &str, value: Value) -> Option<Arc<str>> {
        match value {
            Value::String(name) if is_valid_name(&name, 64) => Some(self.intern_pool(&name)),
            _ => {
                self.problem(task, field, "must be a pool name (1 to 64 of A-Z a-z 0-9 _ . -)");
                None
            }
        }
    }

    pub(super) fn intern_pool(&mut self, name: &str) -> Arc<str> {
        self.pools
            .entry(name.to_string())
            .or_insert_with(|| Arc::from(name))
            .clone()
    }
}

pub(super) fn is_valid_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Bytes of the action as JSON on the wire.
pub(super) fn encoded_len(action: &Action) -> usize {
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

pub(super) fn closest_id<'t>(unknown: &str, tasks: &'t [TaskSpec]) -> Option<&'t str> {
    tasks
        .iter()
        .map(|task| (strsim::levenshtein(unknown, &task.id), task.id.as_str()))
        .filter(|&(distance, _)| distance <= (unknown.chars().count() / 3).max(1))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, id)| id)
}
