//! Configuration of the long-running commands (`taskfleet scheduler`, `taskfleet worker`), as
//! one typed value per service: defaults, then a TOML file (`--config` or `TASKFLEET_CONFIG`),
//! then environment variables (`TASKFLEET_*`), then command-line flags, each overriding the
//! one before. Every value is parsed into its type where it is read (a bad duration in the
//! file, the environment or a flag is an error naming it), and the whole is checked once
//! ([`SchedulerSettings::check`], [`WorkerSettings::check`]). Each field's default is declared
//! once, in `Default`; the help text shows it from there ([`document_defaults`]).
//! `--dump-config` prints the effective result as TOML.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use taskfleet_common::units::{ByteSize, HumanDuration};
use taskfleet_common::wire::{is_valid_worker_name, MAX_WORKER_SLOTS, WORKER_NAME_RULE};
use taskfleet_engine::fleet::{MAX_SPEED, MIN_SPEED};
use taskfleet_engine::packing::{PackingKind, Reservation};
use taskfleet_engine::policy::PolicyKind;
use taskfleet_transport::DEFAULT_AMQP_URL;
pub use taskfleet_worker::limits::Mode as LimitsMode;
use taskfleet_worker::DEFAULT_ENV_ALLOW;

/// The scheduler service's settings (see `taskfleet scheduler --help` for each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SchedulerSettings {
    pub broker: BrokerUrl,
    pub db: StoreUrl,
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    pub prefix: Prefix,
    pub policy: PolicyKind,
    /// `priority`: a waiting task moves up a class after this long (and again after each period).
    pub aging: HumanDuration,
    /// `rr`: the slot-time each workflow gets per turn.
    pub quantum: HumanDuration,
    /// Runtime assumed for tasks without an `estimate` (`sjf`, `srpt`, `rr`).
    pub default_estimate: HumanDuration,
    /// Policies use runtimes learned from finished attempts instead of declared estimates.
    pub predictive: bool,
    /// With `predictive`, planned policies follow each workflow's plan worker by worker instead
    /// of ranking by it and placing each task when it is dispatched.
    pub static_plans: bool,
    /// Planned policies (`heft`, `cpop`, `min-min`, `max-min`, `sufferage`): how long a local
    /// search may improve each workflow's plan (0s: the plan as the heuristic made it).
    pub plan_search: HumanDuration,
    /// A worker silent for this long loses its running attempts, which run again elsewhere.
    pub lease_timeout: HumanDuration,
    /// Tasks released beyond the fleet's free slots.
    pub prefetch_margin: usize,
    /// How a task that asks for resources chooses among the workers where it fits.
    pub packing: PackingKind,
    /// Capacity kept for a priority class or tenant (`high:gpu=25%`), lent while idle.
    pub reserve: Vec<Reservation>,
    /// Most tasks a workflow may have.
    pub max_tasks: usize,
    /// Largest workflow accepted through the API or the submit queue.
    pub max_body: ByteSize,
    /// This scheduler's name in logs, `/readyz` and the leader's lease (default: the host
    /// name and process id).
    pub name: Option<String>,
    /// With a shared (PostgreSQL) store: how long the leader's lease lasts unless renewed; a
    /// standby takes over once it lapses.
    pub leader_lease: HumanDuration,
    /// The API's tokens file (`taskfleet token new` prints its lines); without one the API
    /// serves only on a loopback address.
    pub api_tokens: Option<std::path::PathBuf>,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            broker: BrokerUrl::default(),
            db: StoreUrl("sqlite://taskfleet.sqlite".to_string()),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            prefix: Prefix::default(),
            policy: PolicyKind::Priority,
            aging: HumanDuration(std::time::Duration::from_secs(60)),
            quantum: HumanDuration(std::time::Duration::from_secs(60)),
            default_estimate: HumanDuration(std::time::Duration::from_secs(1)),
            predictive: false,
            static_plans: false,
            plan_search: HumanDuration(taskfleet_engine::policy::DEFAULT_PLAN_SEARCH),
            lease_timeout: HumanDuration(std::time::Duration::from_secs(10)),
            prefetch_margin: 16,
            packing: PackingKind::default(),
            reserve: Vec::new(),
            max_tasks: taskfleet_common::workflow::DEFAULT_MAX_TASKS,
            max_body: ByteSize(64 << 20),
            name: None,
            leader_lease: HumanDuration(std::time::Duration::from_secs(10)),
            api_tokens: None,
        }
    }
}

impl SchedulerSettings {
    /// Checks what types alone cannot.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.lease_timeout.0.is_zero(),
            "lease-timeout must be longer than zero"
        );
        anyhow::ensure!(
            self.leader_lease.0 >= std::time::Duration::from_millis(300),
            "leader-lease must be at least 300ms (it is renewed every third of it)"
        );
        anyhow::ensure!(self.max_tasks > 0, "max-tasks must be at least 1");
        anyhow::ensure!(self.max_body.0 > 0, "max-body must be at least 1 byte");
        Ok(())
    }
}

/// A worker's settings (see `taskfleet worker --help` for each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct WorkerSettings {
    pub broker: BrokerUrl,
    pub prefix: Prefix,
    /// Pools whose tasks this worker runs.
    pub pools: Vec<String>,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Relative speed announced to placement-aware policies (`mct`, `heft`, `cpop`).
    pub speed: f64,
    /// Name in heartbeats and results; empty means `<hostname>-<pid>`.
    pub name: String,
    /// Time between SIGTERM and SIGKILL when a task is stopped.
    pub kill_grace: HumanDuration,
    /// How long running tasks may take to finish after SIGTERM.
    pub drain_timeout: HumanDuration,
    pub heartbeat_interval: HumanDuration,
    /// Working directory of task processes; empty inherits the worker's.
    pub work_dir: String,
    /// How task limits are enforced: `auto` (cgroups where the host allows, else rlimits),
    /// `rlimit`, or `off` (a task that asks for a limit fails without running).
    pub limits: LimitsMode,
    /// Where the cgroup hierarchies are mounted.
    pub cgroup_root: String,
    /// The worker's environment variables a task sees, besides its own `env` and `TASKFLEET_*`.
    pub env_allow: Vec<String>,
    /// The unprivileged user a root worker runs tasks as, each in a fresh working directory
    /// (unless `work-dir` is set); empty runs them as the worker's own user.
    pub run_as: String,
    /// CPUs offered to tasks; 0 means what the machine has.
    pub cpus: f64,
    /// Memory offered to tasks; 0 means what the machine (or the worker's cgroup) has.
    pub memory: ByteSize,
    /// GPUs offered to tasks; unset means what `nvidia-smi` reports.
    pub gpus: Option<u32>,
    /// Labels tasks select (`arch = "arm64"`).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Custom resources offered (`licenses = 2`).
    pub resources: std::collections::BTreeMap<String, f64>,
    /// Where to serve this worker's Prometheus metrics (`/metrics`); none unless set.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            broker: BrokerUrl::default(),
            prefix: Prefix::default(),
            pools: vec!["default".to_string()],
            concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            speed: 1.0,
            name: String::new(),
            kill_grace: HumanDuration(std::time::Duration::from_secs(5)),
            drain_timeout: HumanDuration(std::time::Duration::from_secs(30)),
            heartbeat_interval: HumanDuration(std::time::Duration::from_secs(1)),
            work_dir: String::new(),
            limits: LimitsMode::default(),
            cgroup_root: DEFAULT_CGROUP_ROOT.to_string(),
            env_allow: DEFAULT_ENV_ALLOW.iter().map(|name| name.to_string()).collect(),
            run_as: String::new(),
            cpus: 0.0,
            memory: ByteSize(0),
            gpus: None,
            labels: Default::default(),
            resources: Default::default(),
            metrics_listen: None,
        }
    }
}

impl WorkerSettings {
    /// Checks what types alone cannot.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=MAX_WORKER_SLOTS as usize).contains(&self.concurrency),
            "concurrency must be from 1 to {MAX_WORKER_SLOTS}, not {}",
            self.concurrency
        );
        anyhow::ensure!(
            is_valid_worker_name(&self.name),
            "invalid worker name {:?}: {WORKER_NAME_RULE}",
            self.name
        );
        anyhow::ensure!(
            self.speed.is_finite() && self.speed > 0.0,
            "speed must be a positive number, not {}",
            self.speed
        );
        anyhow::ensure!(
            (MIN_SPEED..=MAX_SPEED).contains(&self.speed),
            "speed must be from {MIN_SPEED} to {MAX_SPEED}, not {}",
            self.speed
        );
        anyhow::ensure!(!self.pools.is_empty(), "a worker needs at least one pool");
        anyhow::ensure!(
            !self.heartbeat_interval.0.is_zero(),
            "heartbeat-interval must be longer than zero"
        );
        anyhow::ensure!(!self.cgroup_root.is_empty(), "cgroup-root must name a directory");
        Ok(())
    }
}

/// Where cgroup hierarchies are mounted on Linux.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Declares a settings value read from text, checked by `check` when it is parsed.
macro_rules! text_setting {
    ($(#[$doc:meta])* $name:ident, $default:expr, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(pub String);

        impl Default for $name {
            fn default() -> Self {
                $name($default.to_string())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(text).map(|()| $name(text.to_string()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

text_setting!(
    /// The broker's URL: `amqp://user:password@host:port/vhost` (or `amqps://`) for RabbitMQ,
    /// `kafka://host:port[,host:port…][?option=value&…]` for Kafka.
    BrokerUrl,
    DEFAULT_AMQP_URL,
    |url| {
        if url.starts_with("amqp://") || url.starts_with("amqps://") {
            Ok(())
        } else if url.starts_with("kafka://") {
            taskfleet_transport::KafkaConfig::from_url(url).map(|_| ())
        } else {
            Err(format!(
                "unsupported broker URL `{url}`: use amqp://user:password@host:port/vhost or kafka://host:port"
            ))
        }
    }
);

text_setting!(
    /// Where the scheduler keeps its state: `sqlite://PATH` (or a plain path) on one
    /// machine, `postgres://USER@HOST/DB` for a database schedulers can share, or
    /// `sqlite::memory:` for a throwaway store.
    StoreUrl,
    "sqlite://taskfleet.sqlite",
    |url| {
        if url.is_empty() {
            return Err("the store must not be empty: use sqlite://PATH or postgres://USER@HOST/DB".to_string());
        }
        match url.split_once("://") {
            None | Some(("sqlite" | "postgres" | "postgresql", _)) => Ok(()),
            Some(_) => Err(format!(
                "unsupported store `{url}`: use sqlite://PATH or postgres://USER@HOST/DB"
            )),
        }
    }
);

text_setting!(
    /// The prefix of every queue and exchange name: 1 to 64 of `A-Z a-z 0-9 _ . -`.
    Prefix,
    "taskfleet",
    |prefix| {
        let valid = (1..=64).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(())
        } else {
            Err(format!("invalid prefix `{prefix}`: 1 to 64 of A-Z a-z 0-9 _ . -"))
        }
    }
);

/// What every service's command line has: where the broker is, the names on it, the
/// configuration file, and `--dump-config`.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// Broker URL: amqp://user:password@host:port/vhost (RabbitMQ) or kafka://host:port[,host:port] (Kafka).
    #[arg(long, env = "TASKFLEET_BROKER")]
    pub broker: Option<BrokerUrl>,
    /// Prefix of queue and exchange names.
    #[arg(long, env = "TASKFLEET_PREFIX")]
    pub prefix: Option<Prefix>,
    /// TOML file with any of these settings (kebab-case keys).
    #[arg(long, env = "TASKFLEET_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub dump_config: bool,
}

impl ServiceArgs {
    /// The settings of the file (or the defaults), with the broker and prefix given here.
    pub fn load<T: Service>(self) -> anyhow::Result<T> {
        let mut settings: T = load(self.config.as_deref())?;
        let (broker, prefix) = settings.connection();
        set(broker, self.broker);
        set(prefix, self.prefix);
        Ok(settings)
    }
}

/// The settings of a service that talks to the broker.
pub trait Service: Default + DeserializeOwned {
    /// The broker and the prefix of its queue names.
    fn connection(&mut self) -> (&mut BrokerUrl, &mut Prefix);
}

impl Service for SchedulerSettings {
    fn connection(&mut self) -> (&mut BrokerUrl, &mut Prefix) {
        (&mut self.broker, &mut self.prefix)
    }
}

impl Service for WorkerSettings {
    fn connection(&mut self) -> (&mut BrokerUrl, &mut Prefix) {
        (&mut self.broker, &mut self.prefix)
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
    let mut value = toml::Value::try_from(settings).context("cannot print the configuration")?;
    redact_passwords(&mut value);
    toml::to_string(&value).context("cannot print the configuration")
}

/// Every URL among `value`'s strings with its password replaced by `***`, so that printed
/// settings never show a secret.
fn redact_passwords(value: &mut toml::Value) {
    match value {
        toml::Value::String(text) => *text = redact_url_password(text),
        toml::Value::Array(items) => items.iter_mut().for_each(redact_passwords),
        toml::Value::Table(table) => table.iter_mut().for_each(|(_, item)| redact_passwords(item)),
        _ => {}
    }
}

/// `scheme://user:secret@host/...` as `scheme://user:***@host/...`; anything else unchanged.
pub fn redact_url_password(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_string();
    };
    let rest = &text[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_string();
    };
    let Some((user, _)) = rest[..at].split_once(':') else {
        return text.to_string();
    };
    format!("{}{user}:***{}", &text[..scheme_end + 3], &rest[at..])
}

/// Settings that hold secrets may come from files instead: `TASKFLEET_BROKER_FILE`,
/// `TASKFLEET_DB_FILE` and `TASKFLEET_TOKEN_FILE` name a file whose content (one trailing
/// newline dropped) is the value, so that the secret stays out of `docker inspect` and the
/// process environment's listings.
pub const SECRET_VARIABLES: [&str; 3] = ["TASKFLEET_BROKER", "TASKFLEET_DB", "TASKFLEET_TOKEN"];

/// Reads each `VAR_FILE` of [`SECRET_VARIABLES`] into `VAR`, before the command line is
/// parsed. Setting both is an error, and so is a file that cannot be read.
pub fn secrets_from_files() -> Result<(), String> {
    for variable in SECRET_VARIABLES {
        let file_variable = format!("{variable}_FILE");
        let Some(path) = std::env::var_os(&file_variable) else {
            continue;
        };
        if std::env::var_os(variable).is_some() {
            return Err(format!("set {variable} or {file_variable}, not both"));
        }
        let text = std::fs::read_to_string(&path).map_err(|error| {
            format!(
                "cannot read {file_variable}={}: {error}",
                std::path::Path::new(&path).display()
            )
        })?;
        let value = text
            .strip_suffix('\n')
            .map(|text| text.strip_suffix('\r').unwrap_or(text))
            .unwrap_or(&text);
        std::env::set_var(variable, value);
    }
    Ok(())
}

/// Replaces `target` with `value` when one was given (flag or environment variable).
pub fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

/// Adds `[default: …]`, taken from `defaults`, to the help of each argument of `command`
/// named like a settings key, so that no default is written twice.
pub fn document_defaults(command: clap::Command, defaults: &impl Serialize) -> clap::Command {
    let Ok(toml::Value::Table(table)) = toml::Value::try_from(defaults) else {
        return command;
    };
    let ids: Vec<String> = command.get_arguments().map(|arg| arg.get_id().to_string()).collect();
    ids.into_iter().fold(command, |command, id| {
        let key = id.replace('_', "-");
        let shown = match table.get(&key) {
            Some(toml::Value::String(text)) if !text.is_empty() => text.clone(),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map_or_else(|| item.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(","),
            Some(toml::Value::String(_)) | Some(toml::Value::Boolean(_)) | None => return command,
            Some(other) => other.to_string(),
        };
        command.mut_arg(&id, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [default: {shown}]"))
        })
    })
}

#[cfg(test)]
mod tests;
