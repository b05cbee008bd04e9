//! A cgroup per attempt, on cgroup v1 controllers, a cgroup v2 hierarchy, or both (hybrid
//! hosts: v1 controllers for the limits, the v2 hierarchy for `cgroup.kill`).
//!
//! Every worker process owns one directory per hierarchy, `<its own cgroup>/taskfleet/<pid
//! namespace>-<pid>-<start time>`, and puts each attempt in a child of it. A directory whose owner is no longer running
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

use taskfleet_common::limits::Limits;

mod attempt;
#[cfg(test)]
mod tests;

pub(crate) use self::attempt::{Accounting, AttemptCgroup};

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
    pub(super) fn has_v1(&self, controller: Controller) -> bool {
        self.v1
            .as_ref()
            .is_some_and(|controllers| controllers.contains(&controller))
    }

    pub(super) fn has_v2(&self, controller: &str) -> bool {
        self.v1.is_none() && self.v2_controllers.iter().any(|name| name == controller)
    }
}

/// The cgroup hierarchies of this host the worker may use. Dropping it removes the worker's
/// directories (share it behind an `Arc`).
#[derive(Debug, PartialEq, Eq)]
pub struct Cgroups {
    pub(crate) hierarchies: Vec<Hierarchy>,
    /// What they can enforce, found once (every attempt asks).
    capabilities: Capabilities,
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
        if hierarchies.is_empty() {
            return None;
        }
        let capabilities = capabilities_of(&hierarchies);
        Some(Cgroups {
            hierarchies,
            capabilities,
        })
    }

    /// What these hierarchies can enforce.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
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
        let mut cgroup = AttemptCgroup::empty();
        for hierarchy in &self.hierarchies {
            let dir = hierarchy.base.join(&name);
            fs::create_dir(&dir).map_err(|error| annotate(error, &dir))?;
            cgroup.add(dir, hierarchy.clone());
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

/// What `hierarchies` can enforce.
fn capabilities_of(hierarchies: &[Hierarchy]) -> Capabilities {
    let any = |check: &dyn Fn(&Hierarchy) -> bool| hierarchies.iter().any(check);
    Capabilities {
        memory: any(&|h| h.has_v1(Controller::Memory) || h.has_v2("memory")),
        pids: any(&|h| h.has_v1(Controller::Pids) || h.has_v2("pids")),
        cpu_quota: any(&|h| h.has_v1(Controller::Cpu) || h.has_v2("cpu")),
        cpu_time: any(&|h| h.has_v1(Controller::CpuAcct) || h.v1.is_none()),
        atomic_kill: any(&|h| h.has_v1(Controller::Freezer) || (h.v1.is_none() && h.base.join("cgroup.kill").exists())),
        thread_placement: hierarchies.iter().all(|h| h.v1.is_some()),
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

/// This process's directory name: its pid namespace, pid and start time (`4026531836-42-9001`),
/// so a reused pid is not mistaken for it, and a worker of another pid namespace (another
/// container sharing the host's cgroups) is never judged by a pid that means nothing here.
fn owner_name() -> Option<String> {
    let pid = std::process::id();
    Some(format!("{}-{pid}-{}", pid_namespace()?, start_time(pid)?))
}

/// The inode of this process's pid namespace (`pid:[4026531836]` as a number).
fn pid_namespace() -> Option<u64> {
    let link = fs::read_link("/proc/self/ns/pid").ok()?;
    let link = link.to_str()?;
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last `)`.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the worker that named its directory `name` may still run: it does, or it is of
/// another pid namespace (or not named by taskfleet), where this process cannot tell.
fn owner_is_running(name: &str) -> bool {
    let mut parts = name.splitn(3, '-').map(str::parse::<u64>);
    let (Some(Ok(namespace)), Some(Ok(pid)), Some(Ok(started))) = (parts.next(), parts.next(), parts.next()) else {
        return true;
    };
    if pid_namespace() != Some(namespace) {
        return true;
    }
    let Ok(pid) = u32::try_from(pid) else { return true };
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
pub(super) fn kill_procs(dir: &Path) -> usize {
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
pub(super) fn remove_when_empty(dir: &Path) {
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

pub(super) fn read(dir: &Path, file: &str) -> Option<String> {
    fs::read_to_string(dir.join(file)).ok()
}

pub(super) fn write(dir: &Path, file: &str, value: impl ToString) -> io::Result<()> {
    let path = dir.join(file);
    fs::write(&path, value.to_string()).map_err(|error| annotate(error, &path))
}

fn annotate(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// The number after `key` on its own line of a flat keyed file (`oom_kill 1`).
pub(super) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}
