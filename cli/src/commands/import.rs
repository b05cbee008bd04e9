//! `taskfleet import wfformat INSTANCE.json`: a WfCommons WfFormat instance (a real run of a
//! Pegasus, Nextflow, Makeflow... workflow, or a synthetic one) as a taskfleet workflow plus
//! the runtimes that run took, for `taskfleet simulate --actual` and `--history`.
//!
//! Both layouts of the format are read: 1.5 and later (`workflow.specification.tasks` with
//! `parents` and `inputFiles`, `workflow.specification.files` with their sizes, and
//! `workflow.execution.tasks` with each `runtimeInSeconds`), and 1.4 and earlier
//! (`workflow.tasks`, each with its `runtimeInSeconds`, `parents` and `files`, inputs marked
//! `link: input`). Each task becomes a `noop` task of the same id (characters taskfleet ids do
//! not allow become `_`), with its parents as dependencies, its `kind` from its `category` or
//! its name (without a trailing `_ID0000001`-like number), and the total size of its input
//! files as the feature `input_bytes`. The runtimes file maps each task to its runtime and
//! carries the same features.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::EXIT_INVALID;

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub format: ImportFormat,
}

#[derive(Debug, Subcommand)]
pub enum ImportFormat {
    /// A WfCommons WfFormat instance (JSON, schema 1.0 to 1.6).
    Wfformat(WfformatArgs),
}

#[derive(Debug, Args)]
pub struct WfformatArgs {
    /// The instance file.
    pub instance: PathBuf,
    /// Where to write: PREFIX.workflow.json and PREFIX.actual.json [default: the instance's
    /// file name without its extension, in the current directory].
    #[arg(long, value_name = "PREFIX")]
    pub output: Option<PathBuf>,
}

/// A converted instance.
#[derive(Debug, PartialEq)]
pub struct Imported {
    pub workflow: Value,
    pub actual: Value,
    pub n_tasks: usize,
    pub n_dependencies: usize,
    pub kinds: usize,
    /// Tasks the instance gives no runtime for (they count as 0 s).
    pub without_runtime: usize,
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let ImportFormat::Wfformat(args) = args.format;
    let text =
        std::fs::read_to_string(&args.instance).with_context(|| format!("cannot read {}", args.instance.display()))?;
    let imported = match convert_wfformat(&text) {
        Ok(imported) => imported,
        Err(problem) => {
            eprintln!("{}: {problem}", args.instance.display());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let prefix = args.output.unwrap_or_else(|| {
        let stem = args.instance.file_stem().unwrap_or_default();
        PathBuf::from(stem)
    });
    let workflow_path = with_suffix(&prefix, ".workflow.json");
    let actual_path = with_suffix(&prefix, ".actual.json");
    for (path, value) in [(&workflow_path, &imported.workflow), (&actual_path, &imported.actual)] {
        let text = serde_json::to_string_pretty(value).context("encoding")? + "\n";
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "imported {} tasks ({} dependencies, {} kinds) into {} and their runtimes into {}",
        imported.n_tasks,
        imported.n_dependencies,
        imported.kinds,
        workflow_path.display(),
        actual_path.display()
    );
    if imported.without_runtime > 0 {
        println!(
            "note: {} tasks have no runtime in the instance and count as 0 s",
            imported.without_runtime
        );
    }
    println!(
        "replay it: taskfleet simulate {} --fleet FLEET.yaml --actual {}",
        workflow_path.display(),
        actual_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// One task as the instance describes it.
struct Task {
    id: String,
    name: String,
    category: Option<String>,
    parents: Vec<String>,
    input_bytes: Option<f64>,
    runtime: Option<f64>,
}

/// Converts a WfFormat instance; the error names what is wrong with it.
pub fn convert_wfformat(text: &str) -> Result<Imported, String> {
    let root: Value = serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
    let name = root["name"].as_str().unwrap_or("wfformat").to_string();
    let workflow = root
        .get("workflow")
        .ok_or("no `workflow` object: not a WfFormat instance")?;
    let tasks = if let Some(specification) = workflow.get("specification") {
        read_split(specification, workflow.get("execution"))?
    } else {
        read_inline(workflow)?
    };
    if tasks.is_empty() {
        return Err("the instance has no tasks".to_string());
    }
    // Ids as taskfleet allows them, unique; parents may name a task by id or (1.4) by name.
    let mut ids: HashMap<&str, String> = HashMap::new();
    let mut by_name: HashMap<&str, &str> = HashMap::new();
    let mut used = HashSet::new();
    for task in &tasks {
        let mut id = sanitize(&task.id);
        let base = id.clone();
        let mut n = 1;
        while !used.insert(id.clone()) {
            n += 1;
            id = format!("{base}_{n}");
        }
        if ids.insert(&task.id, id).is_some() {
            return Err(format!("task id `{}` appears twice", task.id));
        }
        by_name.entry(&task.name).or_insert(&task.id);
    }
    let mut out_tasks = Vec::with_capacity(tasks.len());
    let mut runtimes = Map::new();
    let mut features = Map::new();
    let mut kinds = HashSet::new();
    let mut n_dependencies = 0;
    let mut without_runtime = 0;
    for task in &tasks {
        let id = &ids[task.id.as_str()];
        let mut deps = Vec::with_capacity(task.parents.len());
        for parent in &task.parents {
            let parent_id = ids
                .get(parent.as_str())
                .or_else(|| by_name.get(parent.as_str()).map(|id| &ids[*id]))
                .ok_or_else(|| format!("task `{}` names parent `{parent}`, which is no task", task.id))?;
            if !deps.contains(parent_id) {
                deps.push(parent_id.clone());
            }
        }
        n_dependencies += deps.len();
        let kind = sanitize(task.category.as_deref().unwrap_or_else(|| kind_of(&task.name)));
        kinds.insert(kind.clone());
        let mut entry = json!({"id": id, "handler": "noop", "kind": kind});
        if !deps.is_empty() {
            entry["deps"] = json!(deps);
        }
        if let Some(bytes) = task.input_bytes {
            entry["features"] = json!({"input_bytes": bytes});
            features.insert(id.clone(), json!({"input_bytes": bytes}));
        }
        out_tasks.push(entry);
        if task.runtime.is_none() {
            without_runtime += 1;
        }
        runtimes.insert(id.clone(), json!(task.runtime.unwrap_or(0.0)));
    }
    Ok(Imported {
        workflow: json!({"name": sanitize(&name), "tasks": out_tasks}),
        actual: json!({"runtimes": runtimes, "features": features}),
        n_tasks: tasks.len(),
        n_dependencies,
        kinds: kinds.len(),
        without_runtime,
    })
}

/// 1.5 and later: the specification's tasks and files, the execution's runtimes.
fn read_split(specification: &Value, execution: Option<&Value>) -> Result<Vec<Task>, String> {
    let files: HashMap<&str, f64> = specification["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|file| Some((file["id"].as_str()?, file["sizeInBytes"].as_f64()?)))
        .collect();
    let runtimes: HashMap<&str, f64> = execution
        .and_then(|execution| execution["tasks"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|task| Some((task["id"].as_str()?, task["runtimeInSeconds"].as_f64()?)))
        .collect();
    let tasks = specification["tasks"]
        .as_array()
        .ok_or("`workflow.specification.tasks` is not a list")?;
    tasks
        .iter()
        .enumerate()
        .map(|(at, task)| {
            let id = string_field(task, "id", at)?;
            let inputs: Vec<&str> = task["inputFiles"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let input_bytes = (!inputs.is_empty()).then(|| inputs.iter().filter_map(|file| files.get(file)).sum());
            Ok(Task {
                runtime: runtimes.get(id.as_str()).copied(),
                name: task["name"].as_str().unwrap_or(&id).to_string(),
                category: task["category"].as_str().map(str::to_string),
                parents: names(&task["parents"]),
                input_bytes,
                id,
            })
        })
        .collect()
}

/// 1.4 and earlier: each task with its runtime, parents and files (`link: input`).
fn read_inline(workflow: &Value) -> Result<Vec<Task>, String> {
    let tasks = workflow["tasks"]
        .as_array()
        .or_else(|| workflow["jobs"].as_array())
        .ok_or("neither `workflow.specification.tasks` nor `workflow.tasks` is a list")?;
    tasks
        .iter()
        .enumerate()
        .map(|(at, task)| {
            let name = string_field(task, "name", at)?;
            let inputs: Vec<f64> = task["files"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|file| file["link"] == "input")
                .filter_map(|file| file["sizeInBytes"].as_f64().or_else(|| file["size"].as_f64()))
                .collect();
            Ok(Task {
                id: task["id"].as_str().unwrap_or(&name).to_string(),
                runtime: task["runtimeInSeconds"].as_f64().or_else(|| task["runtime"].as_f64()),
                category: task["category"].as_str().map(str::to_string),
                parents: names(&task["parents"]),
                input_bytes: (!inputs.is_empty()).then(|| inputs.iter().sum()),
                name,
            })
        })
        .collect()
}

fn string_field(task: &Value, field: &str, at: usize) -> Result<String, String> {
    task[field]
        .as_str()
        .filter(|value| !value.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("task #{} has no `{field}`", at + 1))
}

fn names(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// A task's kind from its name: without a trailing instance number (`individuals_ID0000001`
/// → `individuals`, `split_fasta_00000012` → `split_fasta`).
fn kind_of(name: &str) -> &str {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let trimmed = trimmed
        .strip_suffix("_ID")
        .or_else(|| trimmed.strip_suffix("ID"))
        .unwrap_or(trimmed);
    let trimmed = trimmed.trim_end_matches(['_', '-', '.']);
    if trimmed.is_empty() {
        name
    } else {
        trimmed
    }
}

/// `name` with the characters taskfleet names do not allow as `_`, cut to 128.
fn sanitize(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if clean.is_empty() {
        "_".to_string()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests;
