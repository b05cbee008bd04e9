//! A cgroup per attempt, on cgroup v1 controllers, a cgroup v2 hierarchy, or both (hybrid
//! hosts: v1 controllers for the limits, the v2 hierarchy for `cgroup.kill`).
//!
//! Every worker process owns one directory per hierarchy, `<its own cgroup>/taskfleet/<pid>-<start
//! time>`, and puts each attempt in a child of it. A directory whose owner is no longer running
//! (a worker killed with SIGKILL) is swept when the next worker starts: what still runs in it is
//! killed and the directory removed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use taskfleet_common::limits::{Limit, Limits};

/// The scheduling period of a CPU quota.
const CPU_PERIOD_US: u64 = 100_000;
/// How long removing an attempt's cgroup waits for its killed processes to be gone.
const EMPTY_WAIT: Duration = Duration::from_secs(2);

/// What a controller does for an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Controller {
    Memory,
    Pids,
    Cpu,
    CpuAcct,
    Freezer,
}

impl Controller {
    const V1: [Controller; 5] = [
        Controller::Memory,
        Controller::Pids,
        Controller::Cpu,
        Controller::CpuAcct,
        Controller::Freezer,
    ];

    fn v1_name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::CpuAcct => "cpuacct",
            Controller::Freezer => "freezer",
        }
    }
}

/// One mounted hierarchy the worker can create cgroups in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// The worker's own directory in it, parent of its attempts' cgroups.
    pub(crate) base: PathBuf,
    /// The cgroup the worker process is in, where a thread that forked a task returns.
    pub(crate) home: PathBuf,
    /// `None` for the v2 hierarchy, else the v1 controllers mounted here.
    pub(crate) v1: Option<Vec<Controller>>,
    /// The v2 controllers enabled for the attempts' cgroups (`memory`, `pids`, `cpu`).
    pub(crate) v2_controllers: Vec<String>,
}

impl Hierarchy {
    fn has_v1(&self, controller: Controller) -> bool {
        self.v1
            .as_ref()
            .is_some_and(|controllers| controllers.contains(&controller))
    }

    fn has_v2(&self, controller: &str) -> bool {
        self.v1.is_none() && self.v2_controllers.iter().any(|name| name == controller)
    }
}

/// The cgroup hierarchies of this host the worker may use. Dropping it removes the worker's
/// directories (share it behind an `Arc`).
#[derive(Debug, PartialEq, Eq)]
pub struct Cgroups {
    pub(crate) hierarchies: Vec<Hierarchy>,
}

/// What the worker can do with cgroups here, for `taskfleet worker --check` and the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub memory: bool,
    pub pids: bool,
    pub cpu_quota: bool,
    pub cpu_time: bool,
    /// Killing a whole tree at once: `cgroup.kill` or the v1 freezer.
    pub atomic_kill: bool,
    /// Every hierarchy is v1, where one thread of the worker can enter an attempt's cgroup
    /// and fork the task there (no launcher needed).
    pub thread_placement: bool,
}

impl Cgroups {
    /// The hierarchies under `root` (usually `/sys/fs/cgroup`) in which this process may create
    /// its directory; `None` when there is none (not root, read-only, no cgroups).
    pub fn detect(root: &Path) -> Option<Cgroups> {
        let own = fs::read_to_string("/proc/self/cgroup").ok()?;
        let owner = owner_name()?;
        let mut hierarchies = Vec::new();
        if root.join("cgroup.controllers").is_file() {
            // Pure cgroup v2.
            if let Some(hierarchy) = v2_hierarchy(root, &own, &owner) {
                hierarchies.push(hierarchy);
            }
        } else {
            let mut mounted: Vec<(PathBuf, Vec<Controller>)> = Vec::new();
            for controller in Controller::V1 {
                let Some(dir) = v1_mount(root, controller) else {
                    continue;
                };
                match mounted.iter_mut().find(|(path, _)| *path == dir) {
                    Some((_, controllers)) => controllers.push(controller),
                    None => mounted.push((dir, vec![controller])),
                }
            }
            for (mount, controllers) in mounted {
                let Some(own_path) = v1_own_path(&own, controllers[0].v1_name()) else {
                    continue;
                };
                let home = mount.join(own_path.trim_start_matches('/'));
                if let Some(base) = make_base(&home.join("taskfleet"), &owner) {
                    hierarchies.push(Hierarchy {
                        base,
                        home,
                        v1: Some(controllers),
                        v2_controllers: Vec::new(),
                    });
                }
            }
            // The v2 hierarchy of a hybrid host only kills trees; the v1 freezer does that too
            // and, unlike v2, lets one thread of the worker enter a cgroup to fork a task there.
            let has_freezer = hierarchies.iter().any(|h: &Hierarchy| h.has_v1(Controller::Freezer));
            let unified = root.join("unified");
            if !has_freezer && unified.join("cgroup.procs").is_file() {
                if let Some(hierarchy) = v2_hierarchy(&unified, &own, &owner) {
                    hierarchies.push(hierarchy);
                }
            }
        }
        (!hierarchies.is_empty()).then_some(Cgroups { hierarchies })
    }

    /// What these hierarchies can enforce.
    pub fn capabilities(&self) -> Capabilities {
        let any = |check: &dyn Fn(&Hierarchy) -> bool| self.hierarchies.iter().any(check);
        Capabilities {
            memory: any(&|h| h.has_v1(Controller::Memory) || h.has_v2("memory")),
            pids: any(&|h| h.has_v1(Controller::Pids) || h.has_v2("pids")),
            cpu_quota: any(&|h| h.has_v1(Controller::Cpu) || h.has_v2("cpu")),
            cpu_time: any(&|h| h.has_v1(Controller::CpuAcct) || h.v1.is_none()),
            atomic_kill: any(&|h| {
                h.has_v1(Controller::Freezer) || (h.v1.is_none() && h.base.join("cgroup.kill").exists())
            }),
            thread_placement: self.hierarchies.iter().all(|h| h.v1.is_some()),
        }
    }

    /// The directories this worker owns, one per hierarchy.
    pub fn describe(&self) -> Vec<String> {
        self.hierarchies
            .iter()
            .map(|h| match &h.v1 {
                Some(controllers) => {
                    let names: Vec<&str> = controllers.iter().map(|c| c.v1_name()).collect();
                    format!("v1 {} at {}", names.join(","), h.base.display())
                }
                None if h.v2_controllers.is_empty() => format!("v2 (no controllers) at {}", h.base.display()),
                None => format!("v2 {} at {}", h.v2_controllers.join(","), h.base.display()),
            })
            .collect()
    }

    /// Kills what runs in the directories of workers that are gone, and removes them.
    pub fn sweep(&self) {
        for hierarchy in &self.hierarchies {
            let Some(parent) = hierarchy.base.parent() else {
                continue;
            };
            let Ok(entries) = fs::read_dir(parent) else { continue };
            for entry in entries.flatten() {
                let dir = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if dir == hierarchy.base || !dir.is_dir() || owner_is_running(&name) {
                    continue;
                }
                let mut killed = 0;
                for attempt in subdirs(&dir) {
                    killed += kill_procs(&attempt);
                    remove_when_empty(&attempt);
                }
                let _ = fs::remove_dir(&dir);
                info!(dir = %dir.display(), killed, "Swept the cgroups of a worker that is gone.");
            }
        }
    }

    /// A new cgroup in every hierarchy for one attempt, with `limits` set.
    pub(crate) fn create(&self, limits: &Limits) -> io::Result<AttemptCgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!("a{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let mut cgroup = AttemptCgroup { dirs: Vec::new() };
        for hierarchy in &self.hierarchies {
            let dir = hierarchy.base.join(&name);
            fs::create_dir(&dir).map_err(|error| annotate(error, &dir))?;
            cgroup.dirs.push((dir, hierarchy.clone()));
        }
        cgroup.set_limits(limits)?;
        Ok(cgroup)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for hierarchy in &self.hierarchies {
            let _ = fs::remove_dir(&hierarchy.base);
        }
    }
}

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

    fn set_limits(&self, limits: &Limits) -> io::Result<()> {
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

/// The v2 hierarchy at `mount`, with the worker's directory made and controllers enabled.
fn v2_hierarchy(mount: &Path, own: &str, owner: &str) -> Option<Hierarchy> {
    let own_path = own.lines().find_map(|line| line.strip_prefix("0::"))?;
    let own_dir = mount.join(own_path.trim_start_matches('/'));
    let wanted = ["memory", "pids", "cpu"];
    let available = fs::read_to_string(own_dir.join("cgroup.controllers")).unwrap_or_default();
    let available: Vec<&str> = available
        .split_whitespace()
        .filter(|name| wanted.contains(name))
        .collect();
    let top = own_dir.join("taskfleet");
    let base = make_base(&top, owner)?;
    let mut enabled = Vec::new();
    if !available.is_empty() {
        // Controllers reach a child only through every parent's subtree_control, and a cgroup
        // v2 that holds processes cannot hand them down (the root excepted). So the worker
        // first moves itself into a leaf of its own directory; that works where it is alone in
        // its cgroup (the one process of its container, or a delegated systemd unit).
        let enable: String = available.iter().map(|name| format!("+{name} ")).collect();
        let enable = enable.trim_end();
        let enable_chain = || {
            [own_dir.as_path(), top.as_path(), base.as_path()]
                .iter()
                .try_for_each(|dir| fs::write(dir.join("cgroup.subtree_control"), enable))
        };
        let moved_then_enabled = || {
            let leaf = base.join("supervisor");
            fs::create_dir_all(&leaf)?;
            fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())?;
            enable_chain()
        };
        match enable_chain().or_else(|_| moved_then_enabled()) {
            Ok(()) => enabled = available.iter().map(|name| name.to_string()).collect(),
            Err(error) => warn!(
                %error,
                dir = %own_dir.display(),
                "Cannot hand cgroup v2 controllers to tasks (the worker shares its cgroup): memory, \
                 pids and cpu limits fall back to rlimits."
            ),
        }
    }
    Some(Hierarchy {
        base,
        home: own_dir,
        v1: None,
        v2_controllers: enabled,
    })
}

/// Where a v1 controller is mounted under `root`, alone or with others (`cpu,cpuacct`).
fn v1_mount(root: &Path, controller: Controller) -> Option<PathBuf> {
    let name = controller.v1_name();
    let combined = match controller {
        Controller::Cpu | Controller::CpuAcct => Some("cpu,cpuacct"),
        _ => None,
    };
    let candidates = combined.into_iter().chain([name]);
    candidates
        .map(|dir| root.join(dir))
        .find(|dir| dir.join("cgroup.procs").is_file())
        .map(|dir| fs::canonicalize(&dir).unwrap_or(dir))
}

/// The worker's own cgroup in the v1 hierarchy of `controller`, from `/proc/self/cgroup`.
fn v1_own_path<'a>(own: &'a str, controller: &str) -> Option<&'a str> {
    own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|name| name == controller).then_some(path)
    })
}

/// Makes `top/<owner>`, the worker's directory; `None` when it cannot be made.
fn make_base(top: &Path, owner: &str) -> Option<PathBuf> {
    let base = top.join(owner);
    match fs::create_dir_all(&base) {
        Ok(()) => Some(base),
        Err(error) => {
            debug!(%error, dir = %base.display(), "Cannot create a cgroup here.");
            None
        }
    }
}

/// This process's directory name: its pid and start time, so a reused pid is not mistaken
/// for it.
fn owner_name() -> Option<String> {
    let pid = std::process::id();
    Some(format!("{pid}-{}", start_time(pid)?))
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last `)`.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the worker that named its directory `name` still runs.
fn owner_is_running(name: &str) -> bool {
    let Some((pid, started)) = name.split_once('-') else {
        return true;
    };
    let (Ok(pid), Ok(started)) = (pid.parse::<u32>(), started.parse::<u64>()) else {
        return true;
    };
    start_time(pid) == Some(started)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect()
}

/// Sends SIGKILL to every process listed in `dir`'s `cgroup.procs`; how many there were.
fn kill_procs(dir: &Path) -> usize {
    let Some(procs) = read(dir, "cgroup.procs") else {
        return 0;
    };
    let me = std::process::id() as i32;
    let pids: Vec<i32> = procs
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .filter(|&pid| pid != me)
        .collect();
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    pids.len()
}

/// Removes a cgroup once its processes are gone (they may take a moment to exit).
fn remove_when_empty(dir: &Path) {
    let deadline = Instant::now() + EMPTY_WAIT;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return,
            Err(error) if Instant::now() >= deadline => {
                warn!(%error, dir = %dir.display(), "Cannot remove an attempt's cgroup.");
                return;
            }
            Err(_) => {
                kill_procs(dir);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn read(dir: &Path, file: &str) -> Option<String> {
    fs::read_to_string(dir.join(file)).ok()
}

fn write(dir: &Path, file: &str, value: impl ToString) -> io::Result<()> {
    let path = dir.join(file);
    fs::write(&path, value.to_string()).map_err(|error| annotate(error, &path))
}

fn annotate(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// The number after `key` on its own line of a flat keyed file (`oom_kill 1`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_and_proc_lines_are_read() {
        assert_eq!(
            keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"),
            Some(2)
        );
        assert_eq!(keyed("max 0\n", "max"), Some(0));
        assert_eq!(keyed("usage_usec 1500\nuser_usec 1000\n", "usage_usec"), Some(1500));
        let own = "9:name=systemd:/\n4:memory:/jobs/a\n2:cpu,cpuacct:/x\n0::/";
        assert_eq!(v1_own_path(own, "memory"), Some("/jobs/a"));
        assert_eq!(v1_own_path(own, "cpuacct"), Some("/x"));
        assert_eq!(v1_own_path(own, "pids"), None);
    }

    #[test]
    fn a_running_owner_is_told_from_a_gone_one() {
        let me = owner_name().unwrap();
        assert!(owner_is_running(&me));
        let (pid, started) = me.split_once('-').unwrap();
        assert!(!owner_is_running(&format!(
            "{pid}-{}",
            started.parse::<u64>().unwrap() + 1
        )));
        assert!(
            owner_is_running("not-ours"),
            "a name taskfleet did not make is left alone"
        );
    }

    #[test]
    fn no_cgroups_under_a_directory_that_has_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Cgroups::detect(dir.path()), None);
    }
}
