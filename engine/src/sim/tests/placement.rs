//! The placement's shortcuts (per-worker data-ready times, stopping at the fastest free
//! worker) against a brute-force scan of every worker, on random inputs.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use taskfleet_common::Millis;

use crate::placement::{ParentAt, WorkerId};
use crate::sim::fleet::SimWorker;
use crate::sim::placement::{place, Placement, PoolWorkers, Scratch};

/// Every worker of the pool with the slots free, by (end, rank).
fn brute_force(
    now: u64,
    pool: &PoolWorkers,
    free: &[u32],
    slots: u32,
    parents: &[ParentAt],
    runtime: &dyn Fn(usize) -> u64,
) -> Option<Placement> {
    let mut best: Option<((u64, u32), Placement)> = None;
    for &worker in &pool.by_speed {
        if free[worker] < slots {
            continue;
        }
        let ready = parents
            .iter()
            .map(|p| {
                p.end.0
                    + if p.worker.map(WorkerId::index) == Some(worker) {
                        0
                    } else {
                        p.transfer_ms
                    }
            })
            .max()
            .unwrap_or(0);
        let start = now.max(ready);
        let end = start + runtime(worker);
        let key = (end, pool.rank[worker]);
        if best.is_none_or(|(best_key, _)| key < best_key) {
            best = Some((key, Placement { worker, start, end }));
        }
    }
    best.map(|(_, placement)| placement)
}

#[test]
fn placement_matches_a_brute_force_scan() {
    let mut rng = StdRng::seed_from_u64(11);
    for case in 0..2000 {
        let n_workers = rng.gen_range(1..=12);
        let workers: Vec<SimWorker> = (0..n_workers)
            .map(|w| {
                let mut worker = SimWorker::new(
                    &format!("w{w}"),
                    rng.gen_range(1..=3),
                    rng.gen_range(1..=6) as f64 / 2.0,
                );
                if rng.gen_bool(0.2) {
                    worker.pools = vec!["other".to_string()];
                }
                worker
            })
            .collect();
        let pool = PoolWorkers::new(&workers, "default");
        let free: Vec<u32> = workers.iter().map(|w| rng.gen_range(0..=w.slots)).collect();
        let slots = rng.gen_range(1..=2);
        let now = rng.gen_range(0..1_000);
        let estimate = rng.gen_range(0..5_000) as f64;
        let named: Vec<usize> = (0..n_workers).filter(|_| rng.gen_bool(0.2)).collect();
        let own: Vec<u64> = (0..n_workers).map(|_| rng.gen_range(0..5_000)).collect();
        let runtime = |w: usize| {
            if named.contains(&w) {
                own[w]
            } else {
                (estimate / workers[w].speed).round() as u64
            }
        };
        let mut scratch = Scratch::new(n_workers);
        // Place a few tasks in a row with the same scratch, as the simulator does.
        for _ in 0..3 {
            let parents: Vec<ParentAt> = (0..rng.gen_range(0..6))
                .map(|_| ParentAt {
                    worker: Some(WorkerId::new(rng.gen_range(0..n_workers))),
                    end: Millis(rng.gen_range(0..2_000)),
                    transfer_ms: if rng.gen_bool(0.5) { rng.gen_range(0..3_000) } else { 0 },
                })
                .collect();
            let expected = brute_force(now, &pool, &free, slots, &parents, &runtime);
            let (buffer, named_buffer) = scratch.inputs();
            buffer.extend_from_slice(&parents);
            named_buffer.extend_from_slice(&named);
            let got = place(now, &pool, |worker| free[worker] >= slots, &mut scratch, runtime);
            assert_eq!(
                got, expected,
                "case {case}: parents {parents:?}, free {free:?}, named {named:?}"
            );
        }
    }
}
