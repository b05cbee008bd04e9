//! Simulator tests: small cases computed by hand (`exact`), and random DAGs on random fleets
//! under every policy, checked for a valid schedule (`property`), and the placement against a
//! brute-force scan (`placement`).

mod etc;
mod exact;
mod optimal;
mod placement;
mod policies;
mod prediction;
mod property;

use std::sync::Arc;
use std::time::Duration;

use taskfleet_common::workflow::{parse_workflow, ValidateOptions};

use super::{FleetSpec, SimWorker, SimWorkflow};

/// A workflow from YAML, submitted at `submit_s` seconds.
fn workflow(yaml: &str, submit_s: u64) -> SimWorkflow {
    let spec = parse_workflow(yaml, &ValidateOptions::default()).unwrap_or_else(|invalid| panic!("{invalid}"));
    SimWorkflow {
        spec: Arc::new(spec),
        submit: Duration::from_secs(submit_s),
    }
}

/// A fleet of pool `default` workers: (name, slots, speed).
fn fleet(workers: &[(&str, u32, f64)]) -> FleetSpec {
    FleetSpec {
        workers: workers
            .iter()
            .map(|&(name, slots, speed)| SimWorker::new(name, slots, speed))
            .collect(),
    }
}
