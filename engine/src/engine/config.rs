//! The engine's configuration: the policy and its knobs, predictive mode, the prefetch margin,
//! packing and reservations.

use std::time::Duration;

use crate::packing::{PackingKind, Reservation};
use crate::policy::{PolicyConfig, PolicyKind};

/// How the engine behaves.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub policy: PolicyKind,
    /// The policy's knobs (runtime prior, aging, quantum).
    pub policy_config: PolicyConfig,
    /// Policies see runtimes predicted from history instead of declared estimates.
    pub predictive: bool,
    /// Planned policies rank each workflow's tasks when it arrives but place each task only
    /// when it is dispatched, where it would complete earliest given what has actually
    /// happened (`heft` as a dynamic list scheduler); otherwise each worker follows its plan.
    /// The scheduler's `--predictive` sets it unless told `--static-plans`.
    pub dynamic_plans: bool,
    /// After a restart, how long attempts that were out wait for their worker to report them
    /// (and be adopted) before they are dispatched again; zero dispatches them at once.
    pub adoption_grace: Duration,
    /// Tasks dispatched beyond the fleet's free slots, so workers never wait for the scheduler.
    pub prefetch_margin: usize,
    /// The margin is at most the fleet's slots. Over a broker, tasks waiting in a queue
    /// cannot be overtaken by a later, more urgent one, so a small fleet must keep few of
    /// them; a transport that hands queued tasks out in class order (in memory) need not.
    pub margin_capped_by_slots: bool,
    /// Seed of the retry jitter.
    pub jitter_seed: u64,
    /// How tasks that ask for resources choose among the workers where they fit.
    pub packing: PackingKind,
    /// Capacity kept for priority classes or tenants.
    pub reservations: Vec<Reservation>,
    /// Keep each ended attempt for [`Engine::take_ended`] (a service's metrics); off, nothing
    /// piles up for an owner that never takes them (the simulator).
    pub record_ended: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            policy: PolicyKind::Fcfs,
            policy_config: PolicyConfig::default(),
            predictive: false,
            dynamic_plans: false,
            adoption_grace: Duration::ZERO,
            prefetch_margin: 16,
            margin_capped_by_slots: true,
            jitter_seed: 0x5eed,
            packing: PackingKind::default(),
            reservations: Vec::new(),
            record_ended: false,
        }
    }
}
