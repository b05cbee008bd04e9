//! What a worker enforces on one attempt besides its wall-clock `timeout`, and the reasons an
//! attempt ends when it crosses one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Limits on one attempt's whole process tree. `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory in bytes (swap included where the host accounts for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// A quota of cores: 1.5 is one and a half cores' time in each scheduling period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// CPU time of all processes together, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    /// Processes and threads alive at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

impl Limits {
    /// No limit at all.
    pub fn is_none(&self) -> bool {
        *self == Limits::default()
    }

    /// Each limit of `self`, else the one of `fallback`.
    pub fn or(self, fallback: Limits) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes.or(fallback.memory_bytes),
            cpu: self.cpu.or(fallback.cpu),
            cpu_time_ms: self.cpu_time_ms.or(fallback.cpu_time_ms),
            pids: self.pids.or(fallback.pids),
        }
    }

    /// The names of the limits set, for messages (`memory, pids`).
    pub fn names(&self) -> Vec<&'static str> {
        let set = [
            (self.memory_bytes.is_some(), "memory"),
            (self.cpu.is_some(), "cpu"),
            (self.cpu_time_ms.is_some(), "cpu_time"),
            (self.pids.is_some(), "pids"),
        ];
        set.into_iter().filter(|(set, _)| *set).map(|(_, name)| name).collect()
    }
}

/// The limit an attempt crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// The tree used more memory than allowed and the kernel's OOM killer stopped it.
    Memory,
    /// The tree used more CPU time than allowed.
    Cpu,
    /// The tree tried to start more processes than allowed.
    Pids,
}

impl Limit {
    /// The reason as shown in status, the API and the store: `memory_limit_exceeded`, ...
    pub fn reason(self) -> &'static str {
        match self {
            Limit::Memory => "memory_limit_exceeded",
            Limit::Cpu => "cpu_limit_exceeded",
            Limit::Pids => "pids_limit_exceeded",
        }
    }

    /// Reads a [`Limit::reason`] back.
    pub fn from_reason(text: &str) -> Option<Limit> {
        [Limit::Memory, Limit::Cpu, Limit::Pids]
            .into_iter()
            .find(|limit| limit.reason() == text)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_limit_wins_over_the_default_one_field_at_a_time() {
        let task = Limits {
            memory_bytes: Some(64),
            ..Limits::default()
        };
        let defaults = Limits {
            memory_bytes: Some(1024),
            pids: Some(10),
            ..Limits::default()
        };
        let merged = task.or(defaults);
        assert_eq!(merged.memory_bytes, Some(64));
        assert_eq!(merged.pids, Some(10));
        assert_eq!(merged.names(), ["memory", "pids"]);
        assert!(Limits::default().is_none());
        assert!(!merged.is_none());
    }

    #[test]
    fn reasons_read_back() {
        for limit in [Limit::Memory, Limit::Cpu, Limit::Pids] {
            assert_eq!(Limit::from_reason(limit.reason()), Some(limit));
        }
        assert_eq!(Limit::from_reason("timed_out"), None);
    }
}
