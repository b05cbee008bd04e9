//! The live fleet as the scheduler sees it through heartbeats: which workers exist, which
//! pools they serve, how many slots they offer, and which of them missed their lease.
//!
//! Pure state; the service feeds it heartbeats and the clock.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use taskfleet_common::api::WorkerStatus;
use taskfleet_common::wire::Heartbeat;
use taskfleet_common::Millis;

use crate::placement::WorkerModel;

mod requests;
pub use requests::{impossible_requests, why_no_worker_fits, Unmet};

/// Slowest and fastest relative speed the scheduler takes from a worker.
pub const MIN_SPEED: f64 = 0.001;
pub const MAX_SPEED: f64 = 1000.0;

/// What the engine is told of the fleet, in one piece (see `Engine::set_fleet`): the slots
/// offered to each pool, the groups of pools that draw on the same workers (with those
/// workers' slots counted once), and the workers themselves for placement-aware policies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetView {
    pub capacity: HashMap<String, usize>,
    pub shared_slots: Vec<(Vec<String>, usize)>,
    pub workers: Vec<WorkerModel>,
}

impl FleetView {
    /// A fleet of fixed `capacity` per pool, served by `workers` (workers in the scheduler's
    /// own process): pools share the slots of the workers they have in common.
    pub fn fixed(capacity: HashMap<String, usize>, workers: Vec<WorkerModel>) -> FleetView {
        let shared_slots = shared_slot_groups(
            workers
                .iter()
                .map(|worker| (worker.pools.as_slice(), worker.slots as usize)),
        );
        FleetView {
            capacity,
            shared_slots,
            workers,
        }
    }
}

/// Workers known from heartbeats.
#[derive(Debug)]
pub struct Fleet {
    workers: BTreeMap<String, WorkerStatus>,
    /// Workers that said goodbye, by when: they are no longer listed nor counted, and are
    /// reported lost one lease timeout later, so that attempts still recorded against them
    /// (sent to their own queue but never taken) run again once their last results are in.
    departed: BTreeMap<String, Millis>,
    /// A worker silent for longer than this is lost, and so are its attempts' leases.
    lease_timeout: Duration,
}

impl Fleet {
    pub fn new(lease_timeout: Duration) -> Fleet {
        Fleet {
            workers: BTreeMap::new(),
            departed: BTreeMap::new(),
            lease_timeout,
        }
    }

    /// Records a heartbeat; returns whether the slots offered per pool changed.
    pub fn on_heartbeat(&mut self, heartbeat: &Heartbeat, now: Millis) -> bool {
        if heartbeat.gone {
            self.departed.insert(heartbeat.worker.clone(), now);
            return self.workers.remove(&heartbeat.worker).is_some();
        }
        self.departed.remove(&heartbeat.worker);
        let info = WorkerStatus {
            name: heartbeat.worker.clone(),
            pools: heartbeat.pools.clone(),
            slots: heartbeat.slots,
            in_use: heartbeat.running.len() as u32,
            // A speed out of range is taken as the nearest sensible one (1 if unusable).
            speed: if heartbeat.speed.is_finite() && heartbeat.speed > 0.0 {
                heartbeat.speed.clamp(MIN_SPEED, MAX_SPEED)
            } else {
                1.0
            },
            draining: heartbeat.draining,
            first_seen_ms: self
                .workers
                .get(&heartbeat.worker)
                .map_or(now.0, |known| known.first_seen_ms),
            last_heartbeat_ms: now.0,
            lease_expires_ms: now.0.saturating_add(self.lease_timeout.as_millis() as u64),
            running: heartbeat.running.clone(),
            capacity: heartbeat.capacity.clone(),
            resources_in_use: heartbeat.in_use.clone(),
            labels: heartbeat.labels.clone(),
        };
        let changed = self.workers.get(&heartbeat.worker).is_none_or(|known| {
            known.pools != info.pools
                || known.slots != info.slots
                || known.draining != info.draining
                || known.speed != info.speed
                || known.capacity != info.capacity
                || known.labels != info.labels
        });
        self.workers.insert(heartbeat.worker.clone(), info);
        changed
    }

    /// Removes and returns the workers whose last heartbeat is older than the lease timeout,
    /// and those that said goodbye longer than the lease timeout ago.
    pub fn expire(&mut self, now: Millis) -> Vec<String> {
        let mut lost: Vec<String> = self
            .workers
            .values()
            .filter(|worker| now.since(Millis(worker.last_heartbeat_ms)) > self.lease_timeout)
            .map(|worker| worker.name.clone())
            .collect();
        for name in &lost {
            self.workers.remove(name);
        }
        let departed: Vec<String> = self
            .departed
            .iter()
            .filter(|(_, &at)| now.since(at) > self.lease_timeout)
            .map(|(name, _)| name.clone())
            .collect();
        for name in departed {
            self.departed.remove(&name);
            lost.push(name);
        }
        lost
    }

    /// What the engine is to know of this fleet.
    pub fn view(&self) -> FleetView {
        FleetView {
            capacity: self.capacity(),
            shared_slots: self.shared_slots(),
            workers: self.models(),
        }
    }

    /// Slots offered per pool by workers that take new tasks.
    pub fn capacity(&self) -> HashMap<String, usize> {
        let mut capacity: HashMap<String, usize> = HashMap::new();
        for worker in self.workers.values().filter(|worker| !worker.draining) {
            for pool in &worker.pools {
                *capacity.entry(pool.clone()).or_default() += worker.slots as usize;
            }
        }
        capacity
    }

    /// Groups of pools served by common workers (taking new tasks), each with the slots of its
    /// workers counted once.
    pub fn shared_slots(&self) -> Vec<(Vec<String>, usize)> {
        shared_slot_groups(
            self.workers
                .values()
                .filter(|worker| !worker.draining)
                .map(|worker| (worker.pools.as_slice(), worker.slots as usize)),
        )
    }

    /// The workers that take new tasks, as placement-aware policies see them.
    pub fn models(&self) -> Vec<WorkerModel> {
        self.workers
            .values()
            .filter(|worker| !worker.draining && worker.slots > 0)
            .map(|worker| {
                let pools: Vec<&str> = worker.pools.iter().map(String::as_str).collect();
                let model = WorkerModel::new(&worker.name, &pools, worker.slots, worker.speed)
                    .with_labels(worker.labels.clone());
                match &worker.capacity {
                    Some(capacity) => model.with_capacity(capacity.clone()),
                    None => model,
                }
            })
            .collect()
    }

    /// Every known worker, by name.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.workers.values().cloned().collect()
    }

    /// The lease timeout.
    pub fn lease_timeout(&self) -> Duration {
        self.lease_timeout
    }
}

/// Groups the pools of `workers` (each: the pools it serves, its slots) into sets connected
/// by a common worker, each with the slots of its workers counted once.
pub fn shared_slot_groups<'a, P: AsRef<str> + 'a>(
    workers: impl IntoIterator<Item = (&'a [P], usize)>,
) -> Vec<(Vec<String>, usize)> {
    // Union-find over pool names, joined through each worker's pools.
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut parent: Vec<usize> = Vec::new();
    let mut members: Vec<(usize, usize)> = Vec::new(); // (first pool of the worker, slots)
    fn root(parent: &mut [usize], mut at: usize) -> usize {
        while parent[at] != at {
            parent[at] = parent[parent[at]];
            at = parent[at];
        }
        at
    }
    for (pools, slots) in workers {
        let mut first = None;
        for pool in pools {
            let next = index.len();
            let id = *index.entry(pool.as_ref().to_string()).or_insert(next);
            if id == parent.len() {
                parent.push(id);
            }
            match first {
                None => first = Some(id),
                Some(first) => {
                    let (a, b) = (root(&mut parent, first), root(&mut parent, id));
                    parent[b] = a;
                }
            }
        }
        if let Some(first) = first {
            members.push((first, slots));
        }
    }
    let mut groups: BTreeMap<usize, (Vec<String>, usize)> = BTreeMap::new();
    let mut names: Vec<(&String, usize)> = index.iter().map(|(name, &id)| (name, id)).collect();
    names.sort();
    for (name, id) in names {
        let group = root(&mut parent, id);
        groups.entry(group).or_default().0.push(name.clone());
    }
    for (first, slots) in members {
        let group = root(&mut parent, first);
        groups.entry(group).or_default().1 += slots;
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use taskfleet_common::wire::{AttemptRef, WIRE_VERSION};

    use super::*;

    fn heartbeat(worker: &str, pools: &[&str], slots: u32, draining: bool) -> Heartbeat {
        Heartbeat {
            v: WIRE_VERSION,
            worker: worker.into(),
            pools: pools.iter().map(|pool| pool.to_string()).collect(),
            slots,
            speed: 1.0,
            running: vec![AttemptRef {
                workflow_id: "wf".into(),
                task_idx: 0,
                attempt: 1,
            }],
            draining,
            gone: false,
            at: Millis(0),
            capacity: Default::default(),
            in_use: Default::default(),
            labels: Default::default(),
        }
    }

    #[test]
    fn workers_serving_several_pools_are_counted_once_per_group() {
        let mut fleet = Fleet::new(Duration::from_secs(3));
        fleet.on_heartbeat(&heartbeat("a", &["etl", "default"], 4, false), Millis(0));
        fleet.on_heartbeat(&heartbeat("b", &["default"], 2, false), Millis(0));
        fleet.on_heartbeat(&heartbeat("c", &["gpu"], 1, false), Millis(0));
        fleet.on_heartbeat(&heartbeat("d", &["ml", "gpu"], 3, true), Millis(0));
        let mut groups = fleet.shared_slots();
        groups.sort();
        assert_eq!(
            groups,
            [
                (vec!["default".to_string(), "etl".to_string()], 6),
                (vec!["gpu".to_string()], 1),
            ],
            "a draining worker joins no group"
        );
    }

    #[test]
    fn capacity_follows_heartbeats_and_leases_expire() {
        let mut fleet = Fleet::new(Duration::from_secs(3));
        assert!(fleet.on_heartbeat(&heartbeat("a", &["default"], 4, false), Millis(1_000)));
        assert!(fleet.on_heartbeat(&heartbeat("b", &["default", "gpu"], 2, false), Millis(1_500)));
        assert!(
            !fleet.on_heartbeat(&heartbeat("a", &["default"], 4, false), Millis(2_000)),
            "nothing changed"
        );
        assert_eq!(
            fleet.capacity(),
            HashMap::from([("default".into(), 6), ("gpu".into(), 2)])
        );
        assert_eq!(fleet.workers()[0].first_seen_ms, 1_000);
        assert_eq!(fleet.workers()[0].in_use, 1);

        assert!(
            fleet.expire(Millis(4_500)).is_empty(),
            "b was seen 3s ago: not yet lost"
        );
        assert_eq!(fleet.expire(Millis(4_501)), vec!["b".to_string()]);
        assert_eq!(fleet.capacity(), HashMap::from([("default".into(), 4)]));

        assert!(
            fleet.on_heartbeat(&heartbeat("a", &["default"], 4, true), Millis(5_000)),
            "draining changes capacity"
        );
        assert!(fleet.capacity().is_empty());
        let mut goodbye = heartbeat("a", &["default"], 4, true);
        goodbye.gone = true;
        assert!(
            fleet.on_heartbeat(&goodbye, Millis(5_100)),
            "a worker that says goodbye leaves at once"
        );
        assert!(fleet.workers().is_empty());
        // Its attempts are given up one lease timeout later, once its last results are in.
        assert!(fleet.expire(Millis(8_100)).is_empty());
        assert_eq!(fleet.expire(Millis(8_101)), vec!["a".to_string()]);
        assert!(fleet.expire(Millis(20_000)).is_empty());
    }
}
