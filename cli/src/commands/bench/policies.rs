//! The policy benchmark: how many dispatch decisions per second each policy makes with a
//! large ready set, next to the baseline of a plain FIFO queue of the same tasks.

use std::collections::VecDeque;
use std::time::Instant;

use taskfleet_common::{Millis, PriorityClass};
use taskfleet_scheduler::policy::{PolicyConfig, PolicyKind, ReadyTask, TaskRef};

/// Pushes `n_ready` tasks from `n_workflows` workflows into each policy, then pops them all.
pub(super) fn bench_policies(n_ready: usize, n_workflows: usize) {
    println!("policies: {n_ready} ready tasks from {n_workflows} workflows, all popped");
    let tasks: Vec<ReadyTask> = (0..n_ready)
        .map(|idx| {
            let workflow = (idx % n_workflows) as u32;
            ReadyTask {
                task: TaskRef {
                    workflow_slot: workflow,
                    task_idx: idx as u32,
                },
                workflow_seq: u64::from(workflow),
                ready_seq: idx as u64,
                ready_at: Millis(idx as u64 / 100),
                class: PriorityClass::ALL[idx % 3],
                weight: (idx % 7) as f64,
                estimate_ms: 100 + (idx as u64 * 7919) % 100_000,
                slots: 1,
                rank: (idx as u64 * 104_729 % 1_000_000) as f64,
            }
        })
        .collect();
    let started = Instant::now();
    let mut fifo: VecDeque<TaskRef> = VecDeque::with_capacity(n_ready);
    for task in &tasks {
        fifo.push_back(task.task);
    }
    let mut n_popped = 0;
    while fifo.pop_front().is_some() {
        n_popped += 1;
    }
    let rate = n_popped as f64 / started.elapsed().as_secs_f64();
    println!("  baseline: FIFO queue            {rate:>12.0} decisions/s");
    let config = PolicyConfig::default();
    for kind in PolicyKind::ALL {
        let mut policy = kind.build(&config);
        let started = Instant::now();
        for workflow in 0..n_workflows as u32 {
            policy.on_workflow_added(workflow, u64::from(workflow), 1_000_000 + u64::from(workflow) * 1_000);
        }
        for task in &tasks {
            policy.push(*task);
        }
        let mut n_popped = 0;
        while policy.pop(Millis(1_000_000)).is_some() {
            n_popped += 1;
        }
        let rate = n_popped as f64 / started.elapsed().as_secs_f64();
        println!("  {:<31} {rate:>12.0} decisions/s (push and pop)", kind.as_str());
    }
}
