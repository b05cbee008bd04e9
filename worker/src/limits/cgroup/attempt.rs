//! One attempt's cgroups: their limits, the thread that forks the task into them, the kill of
//! the whole tree, and what the attempt used.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::warn;

use taskfleet_common::limits::{Limit, Limits};

use super::{keyed, kill_procs, read, remove_when_empty, write, Controller, Hierarchy};

/// The scheduling period of a CPU quota.
const CPU_PERIOD_US: u64 = 100_000;

/// What an attempt used and which limit stopped it, read from its cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Accounting {
    pub(crate) peak_memory_bytes: Option<u64>,
    pub(crate) cpu_time_ms: Option<u64>,
    /// The kernel's OOM killer killed a process of the attempt.
    pub(crate) oom_killed: bool,
    /// A fork or clone failed because of the process limit.
    pub(crate) pids_hit: bool,
}

impl Accounting {
    /// The limit that explains a failed attempt, if any.
    pub(crate) fn limit_hit(&self) -> Option<Limit> {
        if self.oom_killed {
            Some(Limit::Memory)
        } else if self.pids_hit {
            Some(Limit::Pids)
        } else {
            None
        }
    }
}

/// One attempt's cgroups, one per hierarchy. Dropping it kills what still runs in them and
/// removes them.
#[derive(Debug)]
pub(crate) struct AttemptCgroup {
    dirs: Vec<(PathBuf, Hierarchy)>,
}

impl AttemptCgroup {
    /// No cgroup yet: [`AttemptCgroup::add`] one per hierarchy.
    pub(super) fn empty() -> AttemptCgroup {
        AttemptCgroup { dirs: Vec::new() }
    }

    pub(super) fn add(&mut self, dir: PathBuf, hierarchy: Hierarchy) {
        self.dirs.push((dir, hierarchy));
    }
    /// The `cgroup.procs` files a process writes its pid to, to join the attempt.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(dir, _)| dir.join("cgroup.procs")).collect()
    }

    /// Starts `command` from a thread that entered this cgroup first (cgroup v1 only), so the
    /// child is in it from its first instruction; the thread goes back home afterwards.
    pub(crate) fn spawn_inside(&self, command: &mut tokio::process::Command) -> io::Result<tokio::process::Child> {
        let tid = nix::unistd::gettid().to_string();
        let mut entered = Vec::new();
        let result = (|| {
            for (dir, hierarchy) in &self.dirs {
                write(dir, "tasks", &tid)?;
                entered.push(hierarchy);
            }
            command.spawn()
        })();
        for hierarchy in entered {
            if let Err(error) = write(&hierarchy.home, "tasks", &tid) {
                // A thread left behind would keep the cgroup from being removed; say so loudly.
                warn!(%error, "A worker thread could not leave a task's cgroup.");
            }
        }
        result
    }

    pub(super) fn set_limits(&self, limits: &Limits) -> io::Result<()> {
        for (dir, hierarchy) in &self.dirs {
            if let Some(bytes) = limits.memory_bytes {
                if hierarchy.has_v1(Controller::Memory) {
                    write(dir, "memory.limit_in_bytes", bytes)?;
                    // Swap counts too where the kernel accounts for it (it must come second).
                    if dir.join("memory.memsw.limit_in_bytes").exists() {
                        write(dir, "memory.memsw.limit_in_bytes", bytes)?;
                    }
                } else if hierarchy.has_v2("memory") {
                    write(dir, "memory.max", bytes)?;
                    if dir.join("memory.swap.max").exists() {
                        write(dir, "memory.swap.max", 0)?;
                    }
                }
            }
            if let Some(pids) = limits.pids {
                if hierarchy.has_v1(Controller::Pids) || hierarchy.has_v2("pids") {
                    write(dir, "pids.max", pids)?;
                }
            }
            if let Some(cores) = limits.cpu {
                let quota = ((cores * CPU_PERIOD_US as f64).round() as u64).max(1000);
                if hierarchy.has_v1(Controller::Cpu) {
                    write(dir, "cpu.cfs_period_us", CPU_PERIOD_US)?;
                    write(dir, "cpu.cfs_quota_us", quota)?;
                } else if hierarchy.has_v2("cpu") {
                    write(dir, "cpu.max", format!("{quota} {CPU_PERIOD_US}"))?;
                }
            }
        }
        Ok(())
    }

    /// CPU time used so far by the attempt's processes, in milliseconds.
    pub(crate) fn cpu_time_ms(&self) -> Option<u64> {
        self.dirs.iter().find_map(|(dir, hierarchy)| {
            if hierarchy.has_v1(Controller::CpuAcct) {
                let nanos: u64 = read(dir, "cpuacct.usage")?.trim().parse().ok()?;
                Some(nanos / 1_000_000)
            } else if hierarchy.v1.is_none() {
                let usec = keyed(&read(dir, "cpu.stat")?, "usage_usec")?;
                Some(usec / 1000)
            } else {
                None
            }
        })
    }

    /// What the attempt used, and the limits it ran into.
    pub(crate) fn accounting(&self) -> Accounting {
        let mut accounting = Accounting {
            cpu_time_ms: self.cpu_time_ms(),
            ..Accounting::default()
        };
        for (dir, hierarchy) in &self.dirs {
            if hierarchy.has_v1(Controller::Memory) {
                accounting.peak_memory_bytes =
                    read(dir, "memory.max_usage_in_bytes").and_then(|text| text.trim().parse().ok());
                accounting.oom_killed |= read(dir, "memory.oom_control")
                    .and_then(|text| keyed(&text, "oom_kill"))
                    .is_some_and(|kills| kills > 0);
            } else if hierarchy.has_v2("memory") {
                accounting.peak_memory_bytes = read(dir, "memory.peak").and_then(|text| text.trim().parse().ok());
                accounting.oom_killed |= read(dir, "memory.events")
                    .and_then(|text| keyed(&text, "oom_kill"))
                    .is_some_and(|kills| kills > 0);
            }
            if hierarchy.has_v1(Controller::Pids) || hierarchy.has_v2("pids") {
                accounting.pids_hit |= read(dir, "pids.events")
                    .and_then(|text| keyed(&text, "max"))
                    .is_some_and(|hits| hits > 0);
            }
        }
        accounting
    }

    /// Whether no process is left in the attempt's cgroup.
    pub(crate) fn is_empty(&self) -> bool {
        self.dirs
            .first()
            .is_none_or(|(dir, _)| read(dir, "cgroup.procs").is_some_and(|procs| procs.trim().is_empty()))
    }

    /// Kills every process of the attempt, including those that left its process group.
    pub(crate) fn kill_all(&self) {
        if self.is_empty() {
            return;
        }
        // cgroup v2 kills the whole tree in one write, even processes forking meanwhile.
        for (dir, hierarchy) in &self.dirs {
            if hierarchy.v1.is_none() && fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                return;
            }
        }
        // The v1 freezer stops the tree first, so that nothing forks between listing and killing.
        let freezer = self.dirs.iter().find(|(_, h)| h.has_v1(Controller::Freezer));
        if let Some((dir, _)) = freezer {
            if fs::write(dir.join("freezer.state"), "FROZEN").is_ok() {
                let deadline = Instant::now() + Duration::from_millis(200);
                while read(dir, "freezer.state").is_some_and(|state| state.trim() == "FREEZING")
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                kill_procs(dir);
                let _ = fs::write(dir.join("freezer.state"), "THAWED");
                return;
            }
        }
        // Otherwise, kill what is listed until nothing is.
        if let Some((dir, _)) = self.dirs.first() {
            for _ in 0..100 {
                if kill_procs(dir) == 0 {
                    break;
                }
            }
        }
    }
}

impl Drop for AttemptCgroup {
    fn drop(&mut self) {
        self.kill_all();
        for (dir, _) in &self.dirs {
            remove_when_empty(dir);
        }
    }
}
