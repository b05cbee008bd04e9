//! A taskfleet installation made of real processes: one `taskfleet scheduler` and any number
//! of `taskfleet worker`s, on the real broker, under a queue prefix of their own, stopped
//! when dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use crate::{taskfleet, wait_for};

/// The broker the tests use: `AMQP_ADDR`, or the local RabbitMQ.
pub fn amqp_url() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// A scheduler and its workers.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub prefix: String,
    pub broker: String,
    pub api: String,
    scheduler_flags: Vec<String>,
    n_scheduler_starts: usize,
    scheduler: Child,
    /// The first scheduler's API (`api` is the one the CLI talks to).
    scheduler_api: String,
    /// More schedulers on the same store and queues, by name, with their APIs.
    more_schedulers: BTreeMap<String, (Child, String)>,
    workers: BTreeMap<String, Child>,
    /// Every worker ever started, whose own queues are deleted at the end.
    worker_names: Vec<String>,
    /// The API token the CLI sends (`TASKFLEET_TOKEN`), for a scheduler with a tokens file.
    pub token: Option<String>,
}

impl Fleet {
    /// Starts a scheduler (with `extra` flags) on a free port and waits for its API. Its store
    /// is a SQLite file in the fleet's directory unless `extra` has a `--db`.
    pub fn start(broker: &str, extra: &[&str]) -> Fleet {
        let dir = tempfile::tempdir().expect("temp dir");
        let prefix = format!("tf-it-{:012x}", rand::random::<u64>() >> 16);
        let db = format!("sqlite://{}", dir.path().join("state.sqlite").display());
        let mut flags: Vec<String> = ["--broker", broker, "--prefix", &prefix]
            .iter()
            .map(|flag| flag.to_string())
            .collect();
        // A SQLite file of the fleet's own, unless the caller names a store.
        if !extra.contains(&"--db") {
            flags.extend(["--db".to_string(), db]);
        }
        flags.extend(extra.iter().map(|flag| flag.to_string()));
        let (scheduler, api) = start_scheduler(dir.path(), &flags, "scheduler");
        Fleet {
            dir,
            prefix,
            broker: broker.to_string(),
            api: api.clone(),
            scheduler_flags: flags,
            n_scheduler_starts: 1,
            scheduler,
            scheduler_api: api,
            more_schedulers: BTreeMap::new(),
            workers: BTreeMap::new(),
            worker_names: Vec::new(),
            token: None,
        }
    }

    /// Kills the scheduler with SIGKILL and starts it again on the same store and queues.
    pub fn restart_scheduler(&mut self) {
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
        self.n_scheduler_starts += 1;
        let log = format!("scheduler-{}", self.n_scheduler_starts);
        let (scheduler, api) = start_scheduler(self.dir.path(), &self.scheduler_flags, &log);
        self.scheduler = scheduler;
        self.api = api.clone();
        self.scheduler_api = api;
    }

    /// Starts another scheduler named `name` on the same store and queues (with a shared
    /// store, a standby while another leads), logging to `<name>.log`.
    pub fn add_scheduler(&mut self, name: &str) {
        self.add_scheduler_on(name, None);
    }

    /// Like [`Fleet::add_scheduler`], with its store at `db` (the same database by another
    /// way, e.g. not through a proxy) when given.
    pub fn add_scheduler_on(&mut self, name: &str, db: Option<&str>) {
        let mut flags = self.scheduler_flags.clone();
        if let Some(db) = db {
            if let Some(at) = flags.iter().position(|flag| flag == "--db") {
                flags[at + 1] = db.to_string();
            }
        }
        flags.extend(["--name".to_string(), name.to_string()]);
        let started = start_scheduler(self.dir.path(), &flags, name);
        self.more_schedulers.insert(name.to_string(), started);
    }

    /// The process of the scheduler `name` (`scheduler` for the first).
    fn scheduler_process(&mut self, name: &str) -> &mut Child {
        match name {
            "scheduler" => &mut self.scheduler,
            other => &mut self.more_schedulers.get_mut(other).expect("a scheduler of that name").0,
        }
    }

    /// The API address of the scheduler `name` (`scheduler` for the first).
    pub fn api_of(&self, name: &str) -> String {
        match name {
            "scheduler" => self.scheduler_api.clone(),
            other => self
                .more_schedulers
                .get(other)
                .expect("a scheduler of that name")
                .1
                .clone(),
        }
    }

    /// Makes the CLI talk to the scheduler `name` from now on.
    pub fn talk_to(&mut self, name: &str) {
        self.api = self.api_of(name);
    }

    /// Sends `signal` to the scheduler `name`'s process (SIGSTOP pauses it, SIGKILL kills it).
    pub fn signal_scheduler(&mut self, name: &str, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.scheduler_process(name).id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the scheduler");
    }

    /// Sends SIGTERM to the scheduler `name` and waits until it exits.
    pub fn terminate_scheduler(&mut self, name: &str, timeout: Duration) -> std::process::ExitStatus {
        self.signal_scheduler(name, nix::sys::signal::Signal::SIGTERM);
        let child = self.scheduler_process(name);
        let mut status = None;
        wait_for(&format!("scheduler {name} to exit after SIGTERM"), timeout, || {
            status = child.try_wait().expect("poll the scheduler");
            status.is_some()
        });
        status.expect("the scheduler exited")
    }

    /// `GET /readyz` of the scheduler `name`: its status code and body.
    pub fn readyz(&self, name: &str) -> (u16, serde_json::Value) {
        crate::http_get(&self.api_of(name), "/readyz")
    }

    /// Sends SIGTERM to a worker and waits (at most `timeout`) for it to exit.
    pub fn terminate_worker(&mut self, name: &str, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.workers.remove(name).expect("a worker of that name");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal the worker");
        let mut status = None;
        wait_for(&format!("worker {name} to exit after SIGTERM"), timeout, || {
            status = child.try_wait().expect("poll the worker");
            status.is_some()
        });
        status.expect("the worker exited")
    }

    /// Starts a worker named `name` with `extra` flags.
    ///
    /// Workers log at `info` to `<name>.log` in the fleet's directory.
    pub fn add_worker(&mut self, name: &str, extra: &[&str]) {
        let log = self.dir.path().join(format!("{name}.log"));
        let child = taskfleet()
            .args([
                "worker",
                "--broker",
                &self.broker,
                "--prefix",
                &self.prefix,
                "--name",
                name,
            ])
            .args(["--heartbeat-interval", "200ms"])
            .args(extra)
            .env("TASKFLEET_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("worker log"))
            .spawn()
            .expect("start a worker");
        self.workers.insert(name.to_string(), child);
        self.worker_names.push(name.to_string());
    }

    /// Waits until the scheduler lists `n` live workers.
    pub fn wait_for_workers(&self, n: usize) {
        wait_for(&format!("{n} workers to register"), Duration::from_secs(30), || {
            let output = self.cli(&["workers", "--json"]);
            serde_json::from_slice::<serde_json::Value>(&output.stdout)
                .ok()
                .and_then(|workers| {
                    workers
                        .as_array()
                        .map(|list| list.iter().filter(|w| w["draining"] == false).count())
                })
                == Some(n)
        });
    }

    /// Sends `signal` to a worker's process alone (SIGSTOP pauses it as a partition would: it
    /// neither heartbeats nor hears anything; SIGCONT lets it go on).
    pub fn signal_worker(&self, name: &str, signal: nix::sys::signal::Signal) {
        let child = self.workers.get(name).expect("a worker of that name");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the worker");
    }

    /// Kills a worker with SIGKILL: it gets no chance to finish or hand anything back.
    pub fn kill_worker(&mut self, name: &str) {
        let mut child = self.workers.remove(name).expect("a worker of that name");
        child.kill().expect("kill the worker");
        child.wait().expect("reap the worker");
    }

    /// Waits until a task of the workflow is running on `worker`.
    pub fn wait_until_running_on(&self, workflow_id: &str, worker: &str) {
        wait_for(&format!("{worker} to run a task"), Duration::from_secs(20), || {
            let status = self.status(workflow_id);
            status["tasks"].as_array().is_some_and(|tasks| {
                tasks
                    .iter()
                    .any(|task| task["worker"] == worker && task["state"] == "running")
            })
        });
    }

    /// Runs `taskfleet ARGS --server <this scheduler>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut command = taskfleet();
        command
            .args(args)
            .env("TASKFLEET_SERVER", format!("http://{}", self.api))
            .env_remove("TASKFLEET_TOKEN");
        if let Some(token) = &self.token {
            command.env("TASKFLEET_TOKEN", token);
        }
        command.output().expect("run taskfleet")
    }

    /// Submits a workflow file without waiting; returns its id.
    pub fn submit(&self, workflow: &Path) -> String {
        let output = self.cli(&["submit", workflow.to_str().expect("utf-8 path")]);
        assert!(
            output.status.success(),
            "submit failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// `taskfleet status ID --json`.
    pub fn status(&self, workflow_id: &str) -> serde_json::Value {
        crate::json_report(&self.cli(&["status", workflow_id, "--json"]))
    }

    /// Waits until the workflow is no longer running; returns its status.
    pub fn wait_for_end(&self, workflow_id: &str, timeout: Duration) -> serde_json::Value {
        let mut status = serde_json::Value::Null;
        wait_for(&format!("workflow {workflow_id} to end"), timeout, || {
            status = self.status(workflow_id);
            status["state"] != "running"
        });
        status
    }

    /// How many attempts of the workflow the store records as succeeded.
    pub fn recorded_successes(&self, workflow_id: &str) -> i64 {
        let db = rusqlite::Connection::open(self.db_path()).expect("open the store");
        db.query_row(
            "SELECT count(*) FROM attempts WHERE workflow_id = ?1 AND outcome = 'succeeded'",
            [workflow_id],
            |row| row.get(0),
        )
        .expect("count succeeded attempts")
    }

    /// Writes a workflow file into the fleet's directory.
    pub fn workflow(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write workflow");
        path
    }

    /// The scheduler's store, for checks the API does not expose.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("state.sqlite")
    }

    /// A process's log, for failure messages.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    pub fn dir_path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let schedulers = self.more_schedulers.values_mut().map(|(child, _)| child);
        for child in self
            .workers
            .values_mut()
            .chain(std::iter::once(&mut self.scheduler))
            .chain(schedulers)
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        // On a thread of its own: the fleet may be dropped inside a test's async runtime.
        let (broker, prefix) = (self.broker.clone(), self.prefix.clone());
        let workers = std::mem::take(&mut self.worker_names);
        let _ = std::thread::spawn(move || delete_queues(&broker, &prefix, &workers)).join();
    }
}

/// Starts `taskfleet scheduler FLAGS` on a free port, logging to `<log>.log`; returns it
/// with its API address once it listens.
fn start_scheduler(dir: &Path, flags: &[String], log: &str) -> (Child, String) {
    let log = dir.join(format!("{log}.log"));
    let scheduler = taskfleet()
        .arg("scheduler")
        .args(flags)
        .args(["--listen", "127.0.0.1:0"])
        .env("TASKFLEET_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("scheduler log"))
        .spawn()
        .expect("start the scheduler");
    let mut api = String::new();
    wait_for("the scheduler's API address", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        match text
            .lines()
            .find_map(|line| line.strip_prefix("taskfleet scheduler: API on http://"))
        {
            Some(address) => {
                api = address.trim().to_string();
                true
            }
            None => false,
        }
    });
    (scheduler, api)
}

/// The transport of `broker` (RabbitMQ or Kafka, as its URL says), connected, as the
/// services under `names` use it.
pub async fn connect_transport(
    broker: &str,
    names: &taskfleet_transport::queues::QueueNames,
) -> Result<std::sync::Arc<dyn taskfleet_transport::Transport>, taskfleet_transport::TransportError> {
    use taskfleet_transport::{AmqpConfig, AmqpTransport, KafkaTransport};
    if broker.starts_with("kafka://") {
        return Ok(std::sync::Arc::new(
            KafkaTransport::connect(crate::kafka::config(), names).await?,
        ));
    }
    Ok(std::sync::Arc::new(
        AmqpTransport::connect(AmqpConfig::new(broker), names).await?,
    ))
}

/// Deletes the queues and exchanges (or topics) a fleet under `prefix` declares (default
/// pool), so test runs do not pile up on the broker.
fn delete_queues(broker: &str, prefix: &str, workers: &[String]) {
    use taskfleet_transport::queues::QueueNames;
    use taskfleet_transport::{AmqpConfig, AmqpTransport, KafkaTransport, Transport};
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let names = QueueNames::new(prefix);
        if broker.starts_with("kafka://") {
            if let Ok(transport) = KafkaTransport::connect(crate::kafka::config(), &names).await {
                let _ = transport.delete_topics().await;
            }
            return;
        }
        // The local broker itself, not the proxy a test may have put before it.
        let Ok(transport) = AmqpTransport::connect(AmqpConfig::new(amqp_url()), &names).await else {
            return;
        };
        let mut queues = vec![names.results(), names.submit(), names.dead_letters()];
        for class in ["high", "normal", "low"] {
            queues.push(names.tasks("default", class));
        }
        queues.extend(workers.iter().map(|worker| names.worker(worker)));
        let _ = transport.declare(&queues).await;
        for topic in [names.heartbeats(), names.control()] {
            let _ = transport.subscribe(&topic).await;
        }
        let _ = transport.delete_topology().await;
        transport.close().await;
    });
}
