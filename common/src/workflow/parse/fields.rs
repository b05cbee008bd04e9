//! [`Fields`]: the fields of one mapping of a workflow file, each taken by name exactly once by
//! the code that checks it. What is left once the checks are done is unknown, and the names
//! that were taken are the ones expected: the list in an "unknown field" problem is made by
//! the same code that reads the fields, so the two cannot disagree.

use serde_json::{Map, Value};

use super::Checker;

/// The most fields a mapping of a workflow file has (a task has 16).
const MAX_FIELDS: usize = 24;

/// The fields of a mapping being checked.
pub(super) struct Fields {
    map: Map<String, Value>,
    /// The names taken so far, in a fixed array: a workflow has a mapping per task, and this
    /// costs no allocation per task.
    known: [&'static str; MAX_FIELDS],
    n_known: usize,
}

impl Fields {
    pub(super) fn new(map: Map<String, Value>) -> Fields {
        Fields {
            map,
            known: [""; MAX_FIELDS],
            n_known: 0,
        }
    }

    /// The field `name`, if given; `name` is a field this mapping knows.
    pub(super) fn take(&mut self, name: &'static str) -> Option<Value> {
        debug_assert!(self.n_known < MAX_FIELDS, "a mapping of more than {MAX_FIELDS} fields");
        if let Some(slot) = self.known.get_mut(self.n_known) {
            *slot = name;
            self.n_known += 1;
        }
        self.map.remove(name)
    }

    /// Takes every field not taken yet whose name is not within two edits of a known one (a
    /// likely typo, left for [`Fields::finish`] to report): the open-ended part of a mapping.
    pub(super) fn take_others(&mut self) -> Vec<(String, Value)> {
        let known = &self.known[..self.n_known];
        let names: Vec<String> = self
            .map
            .keys()
            .filter(|key| known.iter().all(|name| strsim::damerau_levenshtein(key, name) > 2))
            .cloned()
            .collect();
        names
            .into_iter()
            .filter_map(|name| self.map.remove(&name).map(|value| (name, value)))
            .collect()
    }

    /// Reports every field that was given but not taken, with the closest known name, as a
    /// problem of `task` under the dotted path `prefix`.
    pub(super) fn finish(self, checker: &mut Checker<'_>, task: Option<&str>, prefix: &str) {
        let known = &self.known[..self.n_known];
        for key in self.map.keys() {
            let field = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            let closest = known
                .iter()
                .map(|candidate| (strsim::damerau_levenshtein(key, candidate), candidate))
                .filter(|&(distance, _)| distance <= 2)
                .min_by_key(|&(distance, _)| distance)
                .map(|(_, candidate)| candidate);
            let hint = match closest {
                Some(candidate) => format!(" (did you mean `{candidate}`?)"),
                None => String::new(),
            };
            checker.problem(
                task,
                &field,
                format!("unknown field{hint}; expected one of: {}", known.join(", ")),
            );
        }
    }
}
