//! Requests no worker could ever meet: checked when a workflow is submitted, against the
//! capacities the fleet's workers announce.

use std::collections::BTreeMap;

use taskfleet_common::api::WorkerStatus;
use taskfleet_common::resources::{ResourceSet, Shortfall};
use taskfleet_common::workflow::Problem;
use taskfleet_common::WorkflowSpec;

/// Why no worker of a pool could run a task, and the field of the task it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmet {
    /// `selector` (no worker carries the labels) or `resources` (none has room).
    pub field: &'static str,
    pub message: String,
}

/// A problem for each task whose request is larger than what any worker of its pool offers
/// in all (so it would wait forever). Pools without a worker that announces its capacity are
/// not judged: their workers may still come.
pub fn impossible_requests(spec: &WorkflowSpec, fleet: &[WorkerStatus]) -> Vec<Problem> {
    let mut problems = Vec::new();
    // Tasks of a workflow mostly share their pool, request and selector: judge each new
    // combination once.
    type Seen<'s> = (&'s str, ResourceSet, &'s BTreeMap<String, String>, Option<Unmet>);
    let mut last: Option<Seen<'_>> = None;
    for task in &spec.tasks {
        let request = task.resources.request();
        let verdict = match &last {
            Some((pool, seen, selector, verdict))
                if *pool == &*task.pool && *seen == request && **selector == task.selector =>
            {
                verdict.clone()
            }
            _ => {
                let verdict = why_no_worker_fits(&task.pool, &request, &task.selector, fleet);
                last = Some((&task.pool, request, &task.selector, verdict.clone()));
                verdict
            }
        };
        if let Some(unmet) = verdict {
            problems.push(Problem {
                task: Some(task.id.clone()),
                field: unmet.field.to_string(),
                message: unmet.message,
            });
        }
    }
    problems
}

/// Why no worker of `pool` could run a task of `request` and `selector`, if none could: no
/// worker of the pool carries the labels, or none of those that announce a capacity has room
/// (`None` when the pool has no worker yet, or none that announces a capacity).
pub fn why_no_worker_fits(
    pool: &str,
    request: &ResourceSet,
    selector: &BTreeMap<String, String>,
    fleet: &[WorkerStatus],
) -> Option<Unmet> {
    let in_pool: Vec<&WorkerStatus> = fleet
        .iter()
        .filter(|worker| worker.pools.iter().any(|served| served == pool))
        .collect();
    let selected: Vec<&WorkerStatus> = in_pool
        .iter()
        .copied()
        .filter(|worker| {
            selector
                .iter()
                .all(|(label, value)| worker.labels.get(label) == Some(value))
        })
        .collect();
    if !in_pool.is_empty() && selected.is_empty() {
        let wanted: Vec<String> = selector
            .iter()
            .map(|(label, value)| format!("{label}={value}"))
            .collect();
        return Some(Unmet {
            field: "selector",
            message: format!(
                "no worker of pool `{pool}` has the labels {} it selects",
                wanted.join(", ")
            ),
        });
    }
    let offers: Vec<(&str, &ResourceSet)> = selected
        .iter()
        .filter_map(|worker| Some((worker.name.as_str(), worker.capacity.as_ref()?)))
        .collect();
    if offers.is_empty() {
        return None;
    }
    let mut closest: Option<(f64, &str, Shortfall)> = None;
    for (name, capacity) in offers {
        let shortfall = request.shortfall(capacity)?;
        let missing = (shortfall.requested - shortfall.offered) / shortfall.requested.max(f64::MIN_POSITIVE);
        if closest.as_ref().is_none_or(|(least, _, _)| missing < *least) {
            closest = Some((missing, name, shortfall));
        }
    }
    let (_, name, shortfall) = closest?;
    Some(Unmet {
        field: "resources",
        message: format!("no worker of pool `{pool}` could ever run it; the closest, {name}, falls short: {shortfall}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskfleet_common::workflow::{parse_workflow, ValidateOptions};

    fn worker(name: &str, pool: &str, cpu: f64, memory_gib: u64) -> WorkerStatus {
        WorkerStatus {
            name: name.into(),
            pools: vec![pool.into()],
            slots: 4,
            in_use: 0,
            speed: 1.0,
            draining: false,
            first_seen_ms: 0,
            last_heartbeat_ms: 0,
            lease_expires_ms: 0,
            running: Vec::new(),
            capacity: Some(ResourceSet {
                cpu,
                memory_bytes: memory_gib << 30,
                ..ResourceSet::default()
            }),
            resources_in_use: None,
            labels: Default::default(),
        }
    }

    fn spec(text: &str) -> WorkflowSpec {
        parse_workflow(text, &ValidateOptions::default()).unwrap()
    }

    #[test]
    fn a_task_larger_than_every_worker_of_its_pool_is_named_with_what_it_lacks() {
        let spec = spec(
            "name: big\ntasks:\n  - {id: fits, handler: noop, resources: {cpu: 8, memory: 16Gi}}\n  - {id: huge, handler: noop, resources: {cpu: 2, memory: 64Gi}}\n  - {id: also, handler: noop, resources: {cpu: 2, memory: 64Gi}}\n  - {id: elsewhere, handler: noop, pool: gpu, resources: {memory: 1Ti}}\n",
        );
        let fleet = [worker("small", "default", 2.0, 4), worker("big", "default", 8.0, 32)];
        let problems: Vec<String> = impossible_requests(&spec, &fleet)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "task `huge`, field `resources`: no worker of pool `default` could ever run it; the closest, big, falls short: memory: asks for 64 GiB, 32 GiB more than the 32 GiB offered",
                "task `also`, field `resources`: no worker of pool `default` could ever run it; the closest, big, falls short: memory: asks for 64 GiB, 32 GiB more than the 32 GiB offered",
            ],
            "a pool with no announced worker is not judged"
        );
    }

    #[test]
    fn a_selector_no_worker_of_the_pool_matches_is_named() {
        let spec = spec(
            "name: arm\ntasks:\n  - {id: arm, handler: noop, selector: {arch: arm64}}\n  - {id: any, handler: noop}\n  - {id: big-arm, handler: noop, selector: {arch: x86_64}, resources: {memory: 64Gi}}\n",
        );
        let mut x86 = worker("x86", "default", 8.0, 32);
        x86.labels.insert("arch".into(), "x86_64".into());
        let problems: Vec<String> = impossible_requests(&spec, &[x86])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "task `arm`, field `selector`: no worker of pool `default` has the labels arch=arm64 it selects",
                "task `big-arm`, field `resources`: no worker of pool `default` could ever run it; the closest, x86, falls short: memory: asks for 64 GiB, 32 GiB more than the 32 GiB offered",
            ]
        );
    }

    #[test]
    fn a_request_must_fit_one_worker_not_the_pool_in_pieces() {
        let spec = spec("name: split\ntasks:\n  - {id: t, handler: noop, resources: {cpu: 8, memory: 32Gi}}\n");
        let fleet = [worker("cpus", "default", 16.0, 4), worker("ram", "default", 2.0, 64)];
        assert_eq!(impossible_requests(&spec, &fleet).len(), 1);
    }
}
