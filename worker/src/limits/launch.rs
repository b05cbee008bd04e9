//! The launcher: the worker's own binary, run as `taskfleet __launch PLAN -- PROGRAM ARGS...`,
//! which joins the attempt's cgroups, sets its rlimits and becomes the task's user, and only
//! then executes the task's program in its place. So no code of the task ever runs outside its
//! limits, without `unsafe` code between `fork` and `exec` in the worker.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::resource::{setrlimit, Resource};
use serde::{Deserialize, Serialize};

/// The first argument that makes the binary a launcher.
pub const LAUNCH_ARG: &str = "__launch";

/// Exit code of a launcher that could not put the task under its limits.
pub(crate) const SETUP_FAILED: i32 = 125;
/// Exit code of a launcher that could not execute the program.
pub(crate) const EXEC_FAILED: i32 = 127;

/// What the launcher does before it executes the program.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Plan {
    /// `cgroup.procs` files to write the launcher's pid to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) join: Vec<PathBuf>,
    /// Address space in bytes (`RLIMIT_AS`), where no memory cgroup does it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) address_space: Option<u64>,
    /// CPU seconds (`RLIMIT_CPU`), where no cgroup counts CPU time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cpu_seconds: Option<u64>,
    /// Processes of the user (`RLIMIT_NPROC`; ignored for root), where no pids cgroup does it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) processes: Option<u64>,
    /// The user and group to become, after the cgroups are joined and the rlimits set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<(u32, u32)>,
    /// Where to write why the program could not be started.
    pub(crate) report: PathBuf,
}

/// Why a launcher exited before the program ran, as written to [`Plan::report`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Failure {
    /// `setup` (cgroups, rlimits) or `exec`.
    pub(crate) stage: String,
    /// The OS error number, when there is one.
    pub(crate) errno: Option<i32>,
    pub(crate) message: String,
}

impl Failure {
    /// Reads the report a launcher left, if it left one.
    pub(crate) fn read(path: &Path) -> Option<Failure> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// The error as the worker would have seen it from starting the program itself.
    pub(crate) fn io_error(&self) -> io::Error {
        match self.errno {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::other(self.message.clone()),
        }
    }
}

/// The command that runs `argv` under `plan` through `launcher`.
pub(crate) fn command(launcher: &Path, plan: &Plan, argv: &[String]) -> Command {
    let mut command = Command::new(launcher);
    let plan = serde_json::to_string(plan).expect("a plan serializes");
    command.arg(LAUNCH_ARG).arg(plan).arg("--").args(argv);
    command
}

/// Runs the launcher with the arguments after [`LAUNCH_ARG`]; returns only on failure, with
/// the exit code to end with.
pub fn launch(args: &[OsString]) -> i32 {
    let (plan, argv) = match args {
        [plan, separator, argv @ ..] if separator == "--" && !argv.is_empty() => (plan, argv),
        _ => {
            eprintln!("taskfleet {LAUNCH_ARG}: usage: PLAN -- PROGRAM [ARGS...] (run by the worker, not by hand)");
            return 2;
        }
    };
    let plan: Plan = match plan.to_str().map(serde_json::from_str) {
        Some(Ok(plan)) => plan,
        _ => {
            eprintln!("taskfleet {LAUNCH_ARG}: the plan is not valid");
            return 2;
        }
    };
    if let Err(error) = set_up(&plan) {
        return fail(&plan.report, "setup", &error, SETUP_FAILED);
    }
    // `exec` returns only if it failed.
    let error = Command::new(&argv[0]).args(&argv[1..]).exec();
    fail(&plan.report, "exec", &error, EXEC_FAILED)
}

fn set_up(plan: &Plan) -> io::Result<()> {
    let pid = std::process::id().to_string();
    for procs in &plan.join {
        std::fs::write(procs, &pid)
            .map_err(|error| io::Error::new(error.kind(), format!("cannot join {}: {error}", procs.display())))?;
    }
    let limits = [
        (Resource::RLIMIT_AS, plan.address_space.map(|bytes| (bytes, bytes))),
        // SIGXCPU at the soft limit, SIGKILL a second later.
        (
            Resource::RLIMIT_CPU,
            plan.cpu_seconds.map(|seconds| (seconds, seconds + 1)),
        ),
        (Resource::RLIMIT_NPROC, plan.processes.map(|count| (count, count))),
    ];
    for (resource, limit) in limits {
        if let Some((soft, hard)) = limit {
            setrlimit(resource, soft, hard).map_err(|errno| {
                io::Error::new(
                    io::Error::from(errno).kind(),
                    format!("cannot set {resource:?}: {errno}"),
                )
            })?;
        }
    }
    if let Some((uid, gid)) = plan.user {
        let fail = |what: &str, errno: nix::errno::Errno| {
            io::Error::new(io::Error::from(errno).kind(), format!("cannot {what}: {errno}"))
        };
        nix::unistd::setgroups(&[]).map_err(|errno| fail("drop supplementary groups", errno))?;
        nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)).map_err(|errno| fail("become the task's group", errno))?;
        nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).map_err(|errno| fail("become the task's user", errno))?;
    }
    Ok(())
}

fn fail(report: &Path, stage: &str, error: &io::Error, code: i32) -> i32 {
    let failure = Failure {
        stage: stage.to_string(),
        errno: error.raw_os_error(),
        message: error.to_string(),
    };
    if let Ok(json) = serde_json::to_vec(&failure) {
        let _ = std::fs::write(report, json);
    }
    code
}
