//! Tests of the parts of cgroup handling that need no cgroup.

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
    let (namespace, rest) = me.split_once('-').unwrap();
    let (pid, started) = rest.split_once('-').unwrap();
    let started: u64 = started.parse().unwrap();
    assert!(!owner_is_running(&format!("{namespace}-{pid}-{}", started + 1)));
    assert!(
        owner_is_running(&format!(
            "{}-{pid}-{}",
            namespace.parse::<u64>().unwrap() + 1,
            started + 1
        )),
        "a worker of another pid namespace is never judged from here"
    );
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
