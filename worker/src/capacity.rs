//! What this machine offers to tasks: CPUs, memory (the smaller of the machine's and the
//! worker's own memory cgroup limit) and GPUs (where `nvidia-smi` reports them).

use std::path::Path;
use std::process::{Command, Stdio};

use taskfleet_common::resources::ResourceSet;

/// The resources of this machine, as far as the worker can tell.
pub fn detect() -> ResourceSet {
    ResourceSet {
        cpu: std::thread::available_parallelism().map_or(1, usize::from) as f64,
        memory_bytes: memory_bytes().unwrap_or(0),
        gpu: gpus(),
        custom: Default::default(),
    }
}

fn memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let total = total_kib * 1024;
    Some(cgroup_memory_limit().map_or(total, |limit| limit.min(total)))
}

/// The memory limit of the cgroup the worker runs in, v1 or v2, when it has one.
fn cgroup_memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        let file = if controllers.split(',').any(|name| name == "memory") {
            Path::new("/sys/fs/cgroup/memory")
                .join(path)
                .join("memory.limit_in_bytes")
        } else if controllers.is_empty() {
            Path::new("/sys/fs/cgroup").join(path).join("memory.max")
        } else {
            return None;
        };
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
}

fn gpus() -> u32 {
    let output = Command::new("nvidia-smi")
        .arg("-L")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.starts_with("GPU "))
            .count() as u32,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_has_cpus_and_memory() {
        let found = super::detect();
        assert!(found.cpu >= 1.0);
        assert!(found.memory_bytes > 64 * 1024 * 1024, "{found:?}");
    }
}
