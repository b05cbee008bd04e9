//! Fleet files for the simulator: the workers, their pools, slots and relative speed.
//!
//! ```yaml
//! workers:
//!   - {name: big, pools: [default], slots: 1, speed: 2.0, cpu: 16, memory: 64Gi}
//!   - {name: small, slots: 1, count: 8}   # eight identical workers: small-1 .. small-8
//!   - {name: gpu, slots: 4, gpu: 2, resources: {licenses: 2}, labels: {zone: b}}
//! ```
//!
//! Defaults: `pools: [default]`, `slots: 1`, `speed: 1.0`, `count: 1`. The text (YAML or JSON)
//! is read into a JSON value and checked by hand, so every problem names its field and all of
//! them are reported at once. A worker with `cpu`, `memory`, `gpu` or custom `resources` is
//! offered to the tasks that ask for resources as the live scheduler does
//! ([`crate::packing`]): such a task goes where its request fits in what is left (a task larger
//! than every worker of its pool is refused up front). CPUs and memory a worker leaves out are
//! not counted; GPUs and custom resources it leaves out it does not have.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde_json::{Map, Value};
use taskfleet_common::resources::ResourceSet;
use taskfleet_common::units::parse_size;

const ROOT_FIELDS: &[&str] = &["name", "description", "workers"];
const WORKER_FIELDS: &[&str] = &[
    "name",
    "pools",
    "slots",
    "speed",
    "cpu",
    "memory",
    "gpu",
    "resources",
    "labels",
    "count",
];
/// Most workers one entry may stand for.
const MAX_COUNT: u64 = 100_000;
/// Most slots one worker may offer.
const MAX_SLOTS: u64 = 100_000;

/// A simulated fleet: every worker, with `count` already expanded.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetSpec {
    pub workers: Vec<SimWorker>,
}

/// One simulated worker.
#[derive(Clone, Debug, PartialEq)]
pub struct SimWorker {
    /// Unique name: the entry's name, or `name-1` .. `name-N` for an entry with `count: N`.
    pub name: String,
    /// The entry's name, which `estimate_by_worker` keys refer to.
    pub base: String,
    pub pools: Vec<String>,
    /// Tasks (by their `resources.slots`) it runs at once.
    pub slots: u32,
    /// Relative speed: a task with estimate `e` runs `e / speed` here.
    pub speed: f64,
    pub cpu: Option<f64>,
    /// Memory in bytes.
    pub memory: Option<u64>,
    pub gpu: Option<u32>,
    /// Custom resources it offers (`licenses: 2`).
    pub custom: BTreeMap<String, f64>,
    /// Labels tasks select or prefer.
    pub labels: BTreeMap<String, String>,
}

impl SimWorker {
    /// A worker of pool `default` (for tests and programs building fleets in code).
    pub fn new(name: &str, slots: u32, speed: f64) -> SimWorker {
        SimWorker {
            name: name.to_string(),
            base: name.to_string(),
            pools: vec!["default".to_string()],
            slots,
            speed,
            cpu: None,
            memory: None,
            gpu: None,
            custom: BTreeMap::new(),
            labels: BTreeMap::new(),
        }
    }

    /// What it offers tasks that ask for resources: CPUs and memory the file leaves out are
    /// not counted (unlimited); GPUs and custom resources it leaves out are not offered.
    pub fn capacity(&self) -> ResourceSet {
        ResourceSet {
            cpu: self.cpu.unwrap_or(f64::INFINITY),
            memory_bytes: self.memory.unwrap_or(u64::MAX),
            gpu: self.gpu.unwrap_or(0),
            custom: self.custom.clone(),
        }
    }
}

impl FleetSpec {
    /// Slots over all workers.
    pub fn total_slots(&self) -> u64 {
        self.workers.iter().map(|worker| u64::from(worker.slots)).sum()
    }
}

/// A fleet file with problems, every one of them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InvalidFleet {
    /// Each names the field concerned, e.g. ``field `workers[1].speed`: must be a positive number``.
    pub problems: Vec<String>,
}

impl fmt::Display for InvalidFleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        taskfleet_common::workflow::write_problems(f, "fleet", &self.problems)
    }
}

/// Parses and checks a fleet given as YAML or JSON text.
pub fn parse_fleet(text: &str) -> Result<FleetSpec, InvalidFleet> {
    let value = taskfleet_common::document::load_document(text).map_err(|error| single(error.to_string()))?;
    parse_fleet_value(value)
}

/// Checks a fleet already parsed into a JSON value.
pub fn parse_fleet_value(value: Value) -> Result<FleetSpec, InvalidFleet> {
    let Value::Object(mut root) = value else {
        return Err(single("a fleet must be a mapping with `workers`".to_string()));
    };
    let mut problems = Vec::new();
    for field in ["name", "description"] {
        if root.remove(field).is_some_and(|value| !value.is_string()) {
            problems.push(problem(field, "must be a string"));
        }
    }
    let entries = match root.remove("workers") {
        Some(Value::Array(entries)) if !entries.is_empty() => entries,
        Some(Value::Array(_)) => {
            problems.push(problem("workers", "a fleet needs at least one worker"));
            Vec::new()
        }
        Some(_) => {
            problems.push(problem("workers", "must be a list of workers"));
            Vec::new()
        }
        None => {
            problems.push(problem("workers", "missing (a fleet is a list of workers)"));
            Vec::new()
        }
    };
    unknown_fields(&mut problems, "", &root, ROOT_FIELDS);
    let mut workers = Vec::new();
    let mut names = HashSet::new();
    for (position, entry) in entries.into_iter().enumerate() {
        let prefix = format!("workers[{position}]");
        let Some((worker, count)) = worker_entry(&mut problems, &prefix, entry) else {
            continue;
        };
        let expanded: Vec<String> = if count == 1 {
            vec![worker.name.clone()]
        } else {
            (1..=count).map(|k| format!("{}-{k}", worker.name)).collect()
        };
        for name in expanded {
            if !names.insert(name.clone()) {
                problems.push(problem(
                    &format!("{prefix}.name"),
                    format!("duplicate worker name `{name}`"),
                ));
                continue;
            }
            workers.push(SimWorker { name, ..worker.clone() });
        }
    }
    if problems.is_empty() {
        Ok(FleetSpec { workers })
    } else {
        Err(InvalidFleet { problems })
    }
}

/// One entry of `workers`, with its count; `None` (problems recorded) if it is unusable.
fn worker_entry(problems: &mut Vec<String>, prefix: &str, entry: Value) -> Option<(SimWorker, u64)> {
    let Value::Object(mut map) = entry else {
        problems.push(problem(prefix, "a worker must be a mapping with a `name`"));
        return None;
    };
    let n_before = problems.len();
    let field = |name: &str| format!("{prefix}.{name}");
    let name = match map.remove("name") {
        Some(Value::String(name)) if is_valid_name(&name) => name,
        Some(_) => {
            problems.push(problem(
                &field("name"),
                "must be a name (1 to 128 of A-Z a-z 0-9 _ . -)",
            ));
            String::new()
        }
        None => {
            problems.push(problem(&field("name"), "missing (every worker needs a name)"));
            String::new()
        }
    };
    let pools = match map.remove("pools") {
        None => vec!["default".to_string()],
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut pools = Vec::new();
            for (k, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(pool) if is_valid_name(&pool) => pools.push(pool),
                    _ => problems.push(problem(&field(&format!("pools[{k}]")), "must be a pool name")),
                }
            }
            pools
        }
        Some(_) => {
            problems.push(problem(&field("pools"), "must be a non-empty list of pool names"));
            Vec::new()
        }
    };
    let slots = positive_integer(problems, &field("slots"), map.remove("slots"), MAX_SLOTS).unwrap_or(1);
    let count = positive_integer(problems, &field("count"), map.remove("count"), MAX_COUNT).unwrap_or(1);
    let speed = match map.remove("speed") {
        None => 1.0,
        Some(value) => match value.as_f64() {
            Some(speed) if speed.is_finite() && speed > 0.0 => speed,
            _ => {
                problems.push(problem(
                    &field("speed"),
                    format!("must be a positive number (got {value})"),
                ));
                1.0
            }
        },
    };
    let cpu = map.remove("cpu").and_then(|value| match value.as_f64() {
        Some(cpu) if cpu.is_finite() && cpu > 0.0 => Some(cpu),
        _ => {
            problems.push(problem(
                &field("cpu"),
                format!("must be a positive number (got {value})"),
            ));
            None
        }
    });
    let memory = map.remove("memory").and_then(|value| {
        let parsed = match &value {
            Value::String(text) => parse_size(text).map_err(|error| error.to_string()),
            Value::Number(number) => number
                .as_u64()
                .ok_or_else(|| "must be a whole number of bytes".to_string()),
            _ => Err("must be a size such as 64Gi".to_string()),
        };
        parsed
            .map_err(|message| problems.push(problem(&field("memory"), message)))
            .ok()
    });
    let gpu = map.remove("gpu").and_then(|value| match value.as_u64() {
        Some(gpu) if gpu <= u64::from(u32::MAX) => Some(gpu as u32),
        _ => {
            problems.push(problem(&field("gpu"), format!("must be a whole number (got {value})")));
            None
        }
    });
    let mut custom = BTreeMap::new();
    match map.remove("resources") {
        None => {}
        Some(Value::Object(resources)) => {
            for (name, value) in resources {
                match value.as_f64() {
                    Some(amount) if amount.is_finite() && amount >= 0.0 && is_valid_name(&name) => {
                        custom.insert(name, amount);
                    }
                    _ => problems.push(problem(
                        &field(&format!("resources.{name}")),
                        format!("must be a number of at least 0 (got {value})"),
                    )),
                }
            }
        }
        Some(other) => problems.push(problem(
            &field("resources"),
            format!("must be a mapping of custom resources to amounts, such as {{licenses: 2}} (got {other})"),
        )),
    }
    let mut labels = BTreeMap::new();
    match map.remove("labels") {
        None => {}
        Some(Value::Object(given)) => {
            for (label, value) in given {
                let text = match value {
                    Value::String(text) => Some(text),
                    Value::Number(number) => Some(number.to_string()),
                    Value::Bool(flag) => Some(flag.to_string()),
                    _ => None,
                };
                match text {
                    Some(text) if is_valid_name(&label) => {
                        labels.insert(label, text);
                    }
                    _ => problems.push(problem(
                        &field(&format!("labels.{label}")),
                        "must be a string, number or boolean",
                    )),
                }
            }
        }
        Some(other) => problems.push(problem(
            &field("labels"),
            format!("must be a mapping of labels to values, such as {{zone: a}} (got {other})"),
        )),
    }
    unknown_fields(problems, prefix, &map, WORKER_FIELDS);
    if problems.len() > n_before {
        return None;
    }
    let worker = SimWorker {
        base: name.clone(),
        name,
        pools,
        slots: slots as u32,
        speed,
        cpu,
        memory,
        gpu,
        custom,
        labels,
    };
    Some((worker, count))
}

fn positive_integer(problems: &mut Vec<String>, field: &str, value: Option<Value>, max: u64) -> Option<u64> {
    let value = value?;
    match value.as_u64() {
        Some(n) if (1..=max).contains(&n) => Some(n),
        _ => {
            problems.push(problem(
                field,
                format!("must be a whole number from 1 to {max} (got {value})"),
            ));
            None
        }
    }
}

fn unknown_fields(problems: &mut Vec<String>, prefix: &str, map: &Map<String, Value>, expected: &[&str]) {
    for key in map.keys() {
        let field = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        problems.push(problem(
            &field,
            format!("unknown field; expected one of: {}", expected.join(", ")),
        ));
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn problem(field: &str, message: impl fmt::Display) -> String {
    format!("field `{field}`: {message}")
}

fn single(message: String) -> InvalidFleet {
    InvalidFleet {
        problems: vec![message],
    }
}

#[cfg(test)]
mod tests;
