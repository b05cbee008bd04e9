//! A task's dependencies: read as ids (with their transfer costs), then resolved to task
//! indices once every id is known, naming unknown, repeated and duplicate ids.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::fields::Fields;
use super::values::closest_id;
use super::{Checker, MAX_SUGGESTIONS};
use crate::workflow::{Dep, TaskSpec};

/// A dependency before ids are resolved: the id and the transfer cost.
pub(super) struct RawDep {
    pub(super) id: String,
    pub(super) transfer_ms: u32,
}

impl Checker<'_> {
    pub(super) fn deps(&mut self, task: Option<&str>, value: Value) -> Vec<RawDep> {
        let Value::Array(items) = value else {
            self.problem(task, "deps", "must be a list of task ids");
            return Vec::new();
        };
        let mut deps = Vec::with_capacity(items.len());
        for (position, item) in items.into_iter().enumerate() {
            // Named only when there is something to say about it.
            let field = || format!("deps[{position}]");
            match item {
                Value::String(id) => deps.push(RawDep { id, transfer_ms: 0 }),
                Value::Object(map) => {
                    let field = field();
                    let mut fields = Fields::new(map);
                    let (id, transfer) = (fields.take("task"), fields.take("transfer"));
                    let id = match id {
                        Some(Value::String(id)) => id,
                        _ => {
                            self.problem(task, &format!("{field}.task"), "must be the id of a task");
                            continue;
                        }
                    };
                    let transfer = match transfer {
                        Some(value) => self
                            .duration(task, &format!("{field}.transfer"), value, false)
                            .unwrap_or_default(),
                        None => Duration::ZERO,
                    };
                    fields.finish(self, task, &field);
                    let transfer_ms = u32::try_from(transfer.as_millis()).unwrap_or(u32::MAX);
                    deps.push(RawDep { id, transfer_ms });
                }
                _ => self.problem(task, &field(), "must be a task id or `{task: ID, transfer: DURATION}`"),
            }
        }
        deps
    }

    pub(super) fn resolve_deps(&mut self, tasks: &[TaskSpec], raw_deps: Vec<Vec<RawDep>>) -> Vec<Vec<Dep>> {
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
}
