//! Enforcing a task's limits on its whole process tree: a cgroup per attempt where the host
//! lets the worker make them (cgroup v1, v2, or the hybrid of both), rlimits where it does not.
//! No code of a task ever runs outside its limits: on cgroup v1 the worker thread that forks
//! the task enters the attempt's cgroup first, so the child is born in it; otherwise the task's
//! program is started by the [launcher](launch), which joins the cgroup and sets its rlimits
//! before it executes the program.

pub mod cgroup;
pub mod launch;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use taskfleet_common::limits::Limits;

use self::cgroup::AttemptCgroup;
pub use self::cgroup::{Capabilities, Cgroups};
use self::launch::Plan;

/// Which mechanism a worker uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// cgroups when the host allows, else rlimits.
    #[default]
    Auto,
    /// rlimits only: memory as address space, CPU time per process, processes per user.
    Rlimit,
    /// No limits: a task that asks for one fails without running.
    Off,
}

impl Mode {
    pub const NAMES: [&'static str; 3] = ["auto", "rlimit", "off"];

    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "auto" => Some(Mode::Auto),
            "rlimit" => Some(Mode::Rlimit),
            "off" => Some(Mode::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        Mode::NAMES[self as usize]
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Mode, String> {
        Mode::parse(text).ok_or_else(|| format!("unknown limits mode `{text}` (use {})", Mode::NAMES.join(", ")))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a worker puts its tasks under their limits.
#[derive(Debug, PartialEq)]
pub struct Enforcer {
    /// The program that starts tasks under their limits (the `taskfleet` binary).
    launcher: PathBuf,
    cgroups: Option<Arc<Cgroups>>,
    mode: Mode,
}

impl Enforcer {
    /// The enforcer of `mode`, starting tasks through `launcher`, with cgroups found under
    /// `cgroup_root` (in `Auto` mode). Sweeps what crashed workers left in the cgroups.
    pub fn new(mode: Mode, launcher: PathBuf, cgroup_root: &Path) -> Enforcer {
        let cgroups = match mode {
            Mode::Auto => Cgroups::detect(cgroup_root).map(Arc::new),
            Mode::Rlimit | Mode::Off => None,
        };
        if let Some(cgroups) = &cgroups {
            cgroups.sweep();
        }
        Enforcer {
            launcher,
            cgroups,
            mode,
        }
    }

    /// The enforcer of the running `taskfleet` binary, which is also the launcher.
    pub fn for_this_binary(mode: Mode, cgroup_root: &Path) -> std::io::Result<Enforcer> {
        Ok(Enforcer::new(mode, std::env::current_exe()?, cgroup_root))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The cgroups in use, if any.
    pub fn cgroups(&self) -> Option<&Cgroups> {
        self.cgroups.as_deref()
    }

    /// What is enforced here, and how, one line per limit: for `taskfleet worker --check` and
    /// the start-up log.
    pub fn report(&self) -> Report {
        let caps = self.cgroups.as_ref().map(|cgroups| cgroups.capabilities());
        let by = |cgroup: bool, cgroup_how: &'static str, rlimit_how: &'static str| -> &'static str {
            match self.mode {
                Mode::Off => "not enforced (limits are off)",
                _ if cgroup => cgroup_how,
                _ => rlimit_how,
            }
        };
        let memory = caps.is_some_and(|c| c.memory);
        let pids = caps.is_some_and(|c| c.pids);
        let quota = caps.is_some_and(|c| c.cpu_quota);
        let cpu_time = caps.is_some_and(|c| c.cpu_time);
        let tree = caps.is_some_and(|c| c.atomic_kill);
        let lines = vec![
            (
                "memory",
                by(
                    memory,
                    "cgroup (the whole tree; OOM kill reported; peak measured)",
                    "rlimit RLIMIT_AS (address space per process; allocations fail)",
                ),
            ),
            (
                "cpu",
                by(quota, "cgroup CPU quota", "not enforced (needs a cpu cgroup)"),
            ),
            (
                "cpu_time",
                by(
                    cpu_time,
                    "cgroup CPU accounting (the whole tree; measured)",
                    "rlimit RLIMIT_CPU (per process)",
                ),
            ),
            (
                "pids",
                by(
                    pids,
                    "cgroup pids.max (the whole tree)",
                    "rlimit RLIMIT_NPROC (per user; ignored for root)",
                ),
            ),
            ("timeout", "SIGTERM, then SIGKILL after the grace period"),
            (
                "tree kill",
                by(
                    tree,
                    "cgroup (also processes that left the process group)",
                    "process group (a setsid daemon escapes)",
                ),
            ),
        ];
        let mechanism = match (&self.cgroups, self.mode) {
            (_, Mode::Off) => "off".to_string(),
            (Some(cgroups), _) => format!("cgroups: {}", cgroups.describe().join("; ")),
            (None, _) => "rlimits (no cgroup this worker may create)".to_string(),
        };
        Report { mechanism, lines }
    }

    /// Sets up the limits of one attempt: its cgroup, if any, and what the launcher does
    /// (which includes becoming `user`, where the launcher runs).
    pub(crate) fn prepare(&self, limits: &Limits, user: Option<&RunAs>, report: PathBuf) -> Result<Prepared, String> {
        if self.mode == Mode::Off {
            if limits.is_none() {
                return Ok(Prepared::direct());
            }
            return Err(format!(
                "the task asks for limits ({}) but this worker runs with limits off",
                limits.names().join(", ")
            ));
        }
        let caps = self.cgroups.as_ref().map(|cgroups| cgroups.capabilities());
        let cgroup = match &self.cgroups {
            Some(cgroups) => Some(
                cgroups
                    .create(limits)
                    .map_err(|error| format!("cannot create the attempt's cgroup: {error}"))?,
            ),
            None => None,
        };
        let has = |check: fn(&Capabilities) -> bool| caps.is_some_and(check);
        if limits.cpu.is_some() && !has(|c| c.cpu_quota) {
            return Err("the task asks for a CPU quota (limits.cpu) but this worker has no cpu cgroup".to_string());
        }
        let plan = Plan {
            join: cgroup.as_ref().map(AttemptCgroup::procs_files).unwrap_or_default(),
            address_space: limits.memory_bytes.filter(|_| !has(|c| c.memory)),
            cpu_seconds: limits
                .cpu_time_ms
                .filter(|_| !has(|c| c.cpu_time))
                .map(|ms| ms.div_ceil(1000)),
            processes: limits.pids.filter(|_| !has(|c| c.pids)).map(u64::from),
            user: user.map(|user| (user.uid, user.gid)),
            report,
        };
        // A v1 cgroup is entered by the thread that forks the task: no launcher is needed
        // unless rlimits must be set in the child, or a v2 cgroup must be joined by it.
        let needs_launcher = plan.address_space.is_some()
            || plan.cpu_seconds.is_some()
            || plan.processes.is_some()
            || (cgroup.is_some() && !has(|c| c.thread_placement));
        Ok(Prepared {
            launch: needs_launcher.then(|| (self.launcher.clone(), plan)),
            cgroup,
            cpu_time_ms: limits.cpu_time_ms.filter(|_| has(|c| c.cpu_time)),
        })
    }
}

/// The unprivileged user a root worker runs tasks as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// The user named `name`, for a worker running as root.
    pub fn lookup(name: &str) -> Result<RunAs, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err(format!("only a worker running as root can run tasks as `{name}`"));
        }
        let user = nix::unistd::User::from_name(name)
            .map_err(|error| format!("cannot look up user `{name}`: {error}"))?
            .ok_or_else(|| format!("there is no user `{name}` on this host"))?;
        if user.uid.is_root() {
            return Err(format!("`{name}` is root: name an unprivileged user"));
        }
        Ok(RunAs {
            name: name.to_string(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }
}

/// What is enforced and how.
#[derive(Clone, Debug)]
pub struct Report {
    pub mechanism: String,
    pub lines: Vec<(&'static str, &'static str)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "limits: {}", self.mechanism)?;
        for (limit, how) in &self.lines {
            writeln!(f, "  {limit:<10} {how}")?;
        }
        Ok(())
    }
}

/// One attempt's limits, set up.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The launcher and its plan; `None` starts the program directly.
    pub(crate) launch: Option<(PathBuf, Plan)>,
    /// The attempt's cgroup: its tree is killed and its usage read through it.
    pub(crate) cgroup: Option<AttemptCgroup>,
    /// A CPU-time limit the worker watches in the cgroup.
    pub(crate) cpu_time_ms: Option<u64>,
}

impl Prepared {
    /// No limits and no launcher: the program starts directly.
    pub(crate) fn direct() -> Prepared {
        Prepared {
            launch: None,
            cgroup: None,
            cpu_time_ms: None,
        }
    }
}
