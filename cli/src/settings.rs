//! Configuration of the long-running commands (`taskfleet scheduler`, `taskfleet worker`):
//! defaults, then a TOML file (`--config` or `TASKFLEET_CONFIG`), then environment variables
//! (`TASKFLEET_*`), then command-line flags, each overriding the one before. `--dump-config`
//! prints the effective result as TOML.

use std::path::Path;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use taskfleet_transport::DEFAULT_AMQP_URL;

/// The scheduler service's settings (see `taskfleet scheduler --help` for each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// Broker URL (`amqp://user:password@host:port/vhost`).
    pub broker: String,
    /// Store URL: `sqlite://PATH` (or a plain path), `sqlite::memory:` for a throwaway store.
    pub db: String,
    /// Address of the HTTP API.
    pub listen: String,
    /// Prefix of every queue and exchange name.
    pub prefix: String,
    /// Scheduling policy: `fcfs`, `priority`, `sjf`, `srpt` or `rr`.
    pub policy: String,
    /// `priority`: a waiting task moves up a class after this long (and again after each period).
    pub aging: String,
    /// `rr`: the slot-time each workflow gets per turn.
    pub quantum: String,
    /// Runtime assumed for tasks without an `estimate` (`sjf`, `srpt`, `rr`).
    pub default_estimate: String,
    /// Policies use runtimes learned from finished attempts instead of declared estimates.
    pub predictive: bool,
    /// A worker silent for this long loses its running attempts, which run again elsewhere.
    pub lease_timeout: String,
    /// Tasks released beyond the fleet's free slots.
    pub prefetch_margin: usize,
    /// Most tasks a workflow may have.
    pub max_tasks: usize,
    /// Largest workflow accepted through the API.
    pub max_body: String,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            broker: DEFAULT_AMQP_URL.to_string(),
            db: "sqlite://taskfleet.sqlite".to_string(),
            listen: "127.0.0.1:8080".to_string(),
            prefix: "taskfleet".to_string(),
            policy: "priority".to_string(),
            aging: "60s".to_string(),
            quantum: "60s".to_string(),
            default_estimate: "1s".to_string(),
            predictive: false,
            lease_timeout: "10s".to_string(),
            prefetch_margin: 16,
            max_tasks: taskfleet_common::workflow::DEFAULT_MAX_TASKS,
            max_body: "64Mi".to_string(),
        }
    }
}

/// A worker's settings (see `taskfleet worker --help` for each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct WorkerSettings {
    pub broker: String,
    pub prefix: String,
    /// Pools whose tasks this worker runs.
    pub pools: Vec<String>,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Relative speed announced to placement-aware policies (`mct`, `heft`, `cpop`).
    pub speed: f64,
    /// Name in heartbeats and results; empty means `<hostname>-<pid>`.
    pub name: String,
    /// Time between SIGTERM and SIGKILL when a task is stopped.
    pub kill_grace: String,
    /// How long running tasks may take to finish after SIGTERM.
    pub drain_timeout: String,
    pub heartbeat_interval: String,
    /// Working directory of task processes; empty inherits the worker's.
    pub work_dir: String,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            broker: DEFAULT_AMQP_URL.to_string(),
            prefix: "taskfleet".to_string(),
            pools: vec!["default".to_string()],
            concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            speed: 1.0,
            name: String::new(),
            kill_grace: "5s".to_string(),
            drain_timeout: "30s".to_string(),
            heartbeat_interval: "1s".to_string(),
            work_dir: String::new(),
        }
    }
}

/// Defaults overridden by the TOML file at `path`, if any.
pub fn load<T: Default + DeserializeOwned>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// The settings as TOML, for `--dump-config`.
pub fn dump<T: Serialize>(settings: &T) -> anyhow::Result<String> {
    toml::to_string(settings).context("cannot print the configuration")
}

/// Replaces `target` with `value` when one was given (flag or environment variable).
pub fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_override_defaults_and_flags_override_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheduler.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:9000\"\nlease-timeout = \"30s\"\n").unwrap();
        let mut settings: SchedulerSettings = load(Some(&path)).unwrap();
        assert_eq!(settings.listen, "0.0.0.0:9000");
        assert_eq!(settings.lease_timeout, "30s");
        assert_eq!(settings.prefix, "taskfleet", "unset keys keep their defaults");
        set(&mut settings.listen, Some("127.0.0.1:1".to_string()));
        set(&mut settings.prefix, None);
        assert_eq!(
            (settings.listen.as_str(), settings.prefix.as_str()),
            ("127.0.0.1:1", "taskfleet")
        );
        let dumped: SchedulerSettings = toml::from_str(&dump(&settings).unwrap()).unwrap();
        assert_eq!(dumped, settings);

        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let error = format!("{:#}", load::<SchedulerSettings>(Some(&path)).unwrap_err());
        assert!(error.contains("unknown field `lisen`"), "{error}");
    }
}
