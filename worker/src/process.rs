//! Executes a `run` task as a child process, never through a shell: its own process group and
//! (where the host allows) its own cgroup, started through the launcher under its limits;
//! per-attempt temp dir with `inputs.json` / `output.json`; an environment of only the task's
//! variables and the worker's allowed ones; bounded output tails; a wall-clock limit enforced
//! with SIGTERM, a grace period and SIGKILL to the whole tree; and what the attempt used.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use taskfleet_common::time::Millis;
use taskfleet_common::wire::{TaskMessage, WireAction};

use crate::execution::{now, timeout_of, Execution};
use crate::limits::cgroup::AttemptCgroup;
use crate::limits::launch::{self, Failure, EXEC_FAILED, SETUP_FAILED};
use crate::limits::{Enforcer, Prepared, RunAs};

use self::tail::Tail;
use self::verdict::{judge, spawn_failure};

/// The worker's variables a task sees unless the worker is told otherwise.
pub const DEFAULT_ENV_ALLOW: [&str; 3] = ["PATH", "HOME", "LANG"];

/// How often the CPU time of an attempt with a CPU-time limit is read.
const CPU_WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// How long readers may still take to drain the pipes after the process group is gone (a
/// process that left the group can hold them open forever).
const PIPE_DRAIN: Duration = Duration::from_millis(500);

/// How child processes are run.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessConfig {
    /// Time between SIGTERM and SIGKILL when a process is stopped.
    pub kill_grace: Duration,
    /// Bytes of standard output and of standard error kept (the last ones).
    pub tail_bytes: usize,
    /// Working directory of tasks; `None` inherits the worker's.
    pub work_dir: Option<PathBuf>,
    /// How tasks are put under their limits; `None` starts programs directly, and a task that
    /// asks for limits fails without running.
    pub enforcer: Option<Arc<Enforcer>>,
    /// The worker's environment variables a task sees (besides its own and `TASKFLEET_*`).
    pub env_allow: Vec<String>,
    /// The user tasks run as (a root worker's unprivileged user), in a fresh working directory
    /// of their own unless `work_dir` is set; `None` runs them as the worker's user.
    pub run_as: Option<RunAs>,
    /// The worker's name, which tasks see as `TASKFLEET_WORKER` (where they run).
    pub worker_name: String,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            kill_grace: Duration::from_secs(5),
            tail_bytes: 16 * 1024,
            work_dir: None,
            enforcer: None,
            env_allow: DEFAULT_ENV_ALLOW.iter().map(|name| name.to_string()).collect(),
            run_as: None,
            worker_name: String::new(),
        }
    }
}

/// Why a process stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Exited,
    TimedOut,
    Cancelled,
    /// The worker stopped it when its CPU time reached the limit.
    CpuTimeUsed,
}

/// Runs the `run` action of `task` as a child process and reports how it ended. Cancelling
/// `cancel` stops the process group (SIGTERM, grace, SIGKILL) with outcome `Cancelled`.
pub async fn run_process(task: &TaskMessage, config: &ProcessConfig, cancel: &CancellationToken) -> Execution {
    let started_at = now();
    let (argv, env) = match &task.action {
        WireAction::Run { argv, env } => (argv, env),
        WireAction::Handler { name, .. } => {
            return Execution::failed(false, format!("task runs handler `{name}`, not a program"), started_at);
        }
    };
    if argv.is_empty() {
        return Execution::failed(false, "the command is empty", started_at);
    }
    let dir = match tempfile::Builder::new().prefix("taskfleet-").tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            return Execution::failed(
                true,
                format!("could not create a temporary directory: {error}"),
                started_at,
            );
        }
    };
    let files = Files {
        inputs: dir.path().join("inputs.json"),
        output: dir.path().join("output.json"),
        launch_report: dir.path().join("launch-report.json"),
        home: dir.path().join("work"),
    };
    if let Some(user) = &config.run_as {
        if let Err(error) = hand_over(dir.path(), &files.home, user) {
            return Execution::failed(
                true,
                format!(
                    "could not prepare a working directory for user `{}`: {error}",
                    user.name
                ),
                started_at,
            );
        }
    }
    let mut execution = match write_inputs(&files.inputs, task).await {
        Ok(()) => run_in(task, argv, env, &files, config, cancel, started_at).await,
        Err(error) => Execution::failed(true, format!("could not write the task's inputs: {error}"), started_at),
    };
    // Removing the directory may take a while if the task left many files behind.
    let _ = tokio::task::spawn_blocking(move || dir.close()).await;
    execution.finished_at = now();
    execution
}

async fn write_inputs(path: &Path, task: &TaskMessage) -> io::Result<()> {
    let json = serde_json::to_vec(&task.inputs).map_err(io::Error::other)?;
    tokio::fs::write(path, json).await
}

/// The files through which a task receives its inputs and hands back its output.
struct Files {
    inputs: PathBuf,
    output: PathBuf,
    /// Where the launcher says why it could not start the program.
    launch_report: PathBuf,
    /// The fresh working directory of a task run as another user.
    home: PathBuf,
}

/// Makes the attempt's directory and a fresh working directory in it the user's.
fn hand_over(dir: &Path, home: &Path, user: &RunAs) -> io::Result<()> {
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(user.uid),
        nix::unistd::Gid::from_raw(user.gid),
    );
    std::fs::create_dir(home)?;
    for path in [dir, home] {
        nix::unistd::chown(path, Some(uid), Some(gid)).map_err(io::Error::from)?;
    }
    Ok(())
}

/// Sets up the limits of `task`'s attempt as `config` enforces them.
fn prepare(task: &TaskMessage, config: &ProcessConfig, files: &Files) -> Result<Prepared, String> {
    match &config.enforcer {
        Some(enforcer) => enforcer.prepare(&task.limits, config.run_as.as_ref(), files.launch_report.clone()),
        None if task.limits.is_none() => Ok(Prepared::direct()),
        None => Err(format!(
            "the task asks for limits ({}) but this worker cannot enforce them (it has no launcher)",
            task.limits.names().join(", ")
        )),
    }
}

/// Runs `argv` (not empty) with `files` set up.
async fn run_in(
    task: &TaskMessage,
    argv: &[String],
    env: &BTreeMap<String, String>,
    files: &Files,
    config: &ProcessConfig,
    cancel: &CancellationToken,
    started_at: Millis,
) -> Execution {
    let program = argv[0].as_str();
    let Prepared {
        launch: launcher,
        cgroup,
        cpu_time_ms,
    } = match prepare(task, config, files) {
        Ok(prepared) => prepared,
        Err(error) => return Execution::failed(true, error, started_at),
    };
    let mut command = match &launcher {
        Some((launcher, plan)) => Command::from(launch::command(launcher, plan, argv)),
        None => {
            let mut command = Command::new(program);
            command.args(&argv[1..]);
            command
        }
    };
    command.env_clear();
    for name in &config.env_allow {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .envs(env)
        .env("TASKFLEET_OUTPUT", &files.output)
        .env("TASKFLEET_INPUTS", &files.inputs)
        .env("TASKFLEET_WORKFLOW_ID", &task.workflow_id)
        .env("TASKFLEET_TASK", &task.task)
        .env("TASKFLEET_ATTEMPT", task.attempt.to_string())
        .env("TASKFLEET_WORKER", &config.worker_name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(user) = &config.run_as {
        if launcher.is_none() {
            // The standard library changes user in the child, before it executes the program.
            command.uid(user.uid).gid(user.gid);
        }
        command.env("HOME", &files.home).env("USER", &user.name);
        if config.work_dir.is_none() {
            command.current_dir(&files.home);
        }
    }
    if let Some(work_dir) = &config.work_dir {
        command.current_dir(work_dir);
    }
    let spawned = match (&cgroup, &launcher) {
        (Some(cgroup), None) => cgroup.spawn_inside(&mut command),
        _ => command.spawn(),
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => return spawn_failure(program, config.work_dir.as_deref(), &error, started_at),
    };
    let Some(pid) = child.id() else {
        return Execution::failed(
            true,
            format!("`{program}` exited before it could be watched"),
            started_at,
        );
    };
    // The group's id is the leader's pid, because of `process_group(0)`.
    let pgid = Pid::from_raw(pid as i32);
    let mut group = GroupGuard { pgid: Some(pgid) };

    let mut stdout_tail = Tail::new(config.tail_bytes);
    let mut stderr_tail = Tail::new(config.tail_bytes);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (status, ending) = {
        let reading = async { tokio::join!(stdout_tail.fill(stdout), stderr_tail.fill(stderr)) };
        let watch = cgroup.as_ref().zip(cpu_time_ms);
        let supervising = supervise(&mut child, pgid, timeout_of(task), watch, config.kill_grace, cancel);
        tokio::pin!(reading, supervising);
        let mut read_all = false;
        let ended = loop {
            tokio::select! {
                ended = &mut supervising => break ended,
                _ = &mut reading, if !read_all => read_all = true,
            }
        };
        // Whatever the task left running goes with it: its group, and all of its cgroup.
        signal_group(pgid, Signal::SIGKILL);
        if let Some(cgroup) = &cgroup {
            cgroup.kill_all();
        }
        if !read_all {
            let _ = tokio::time::timeout(PIPE_DRAIN, &mut reading).await;
        }
        ended
    };
    group.disarm();
    let accounting = cgroup.as_ref().map(AttemptCgroup::accounting).unwrap_or_default();
    match cgroup {
        Some(cgroup) if cgroup.is_empty() => drop(cgroup),
        // Removing waits for the killed processes to be gone.
        Some(cgroup) => drop(tokio::task::spawn_blocking(move || drop(cgroup)).await),
        None => {}
    }

    let mut execution = match status {
        Err(error) => Execution::failed(true, format!("could not wait for `{program}`: {error}"), started_at),
        Ok(status) if launcher.is_some() && matches!(status.code(), Some(SETUP_FAILED | EXEC_FAILED)) => {
            match Failure::read(&files.launch_report) {
                Some(failure) if failure.stage == "exec" => {
                    spawn_failure(program, config.work_dir.as_deref(), &failure.io_error(), started_at)
                }
                Some(failure) => Execution::failed(
                    true,
                    format!("could not put the task under its limits: {}", failure.message),
                    started_at,
                ),
                None => judge(task, status, ending, &accounting, &files.output)
                    .await
                    .into_execution(started_at, status),
            }
        }
        Ok(status) => judge(task, status, ending, &accounting, &files.output)
            .await
            .into_execution(started_at, status),
    };
    execution.stdout_tail = stdout_tail.into_string();
    execution.stderr_tail = stderr_tail.into_string();
    execution.peak_memory_bytes = accounting.peak_memory_bytes;
    execution.cpu_time_ms = accounting.cpu_time_ms;
    execution
}

/// Waits for the child to exit, stopping its group on timeout, cancellation, or once the
/// cgroup of `watch` used its CPU time.
async fn supervise(
    child: &mut Child,
    pgid: Pid,
    timeout: Option<Duration>,
    watch: Option<(&AttemptCgroup, u64)>,
    grace: Duration,
    cancel: &CancellationToken,
) -> (io::Result<ExitStatus>, Ending) {
    let deadline = async {
        match timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let cpu_used = async {
        let Some((cgroup, limit_ms)) = watch else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(CPU_WATCH_INTERVAL).await;
            if cgroup.cpu_time_ms().is_some_and(|used| used >= limit_ms) {
                return;
            }
        }
    };
    let ending = tokio::select! {
        biased;
        status = child.wait() => return (status, Ending::Exited),
        _ = cancel.cancelled() => Ending::Cancelled,
        _ = deadline => Ending::TimedOut,
        _ = cpu_used => {
            // CPU time is used up: there is no grace to give.
            signal_group(pgid, Signal::SIGKILL);
            if let Some((cgroup, _)) = watch {
                cgroup.kill_all();
            }
            return (child.wait().await, Ending::CpuTimeUsed);
        }
    };
    signal_group(pgid, Signal::SIGTERM);
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        return (status, ending);
    }
    signal_group(pgid, Signal::SIGKILL);
    if let Some((cgroup, _)) = watch {
        cgroup.kill_all();
    }
    (child.wait().await, ending)
}

/// Signals a process group; kills it when dropped while still armed, so no task outlives an
/// execution that was abandoned half-way.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, Signal::SIGKILL);
        }
    }
}

/// Sends `signal` to every process of the group `pgid`; a group that is gone is fine.
fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => {
            tracing::warn!(%error, pgid = pgid.as_raw(), ?signal, "Failed to signal a process group.")
        }
    }
}

mod tail;
#[cfg(test)]
mod tests;
mod verdict;
