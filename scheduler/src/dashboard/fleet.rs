//! The fleet's pages: the workers (slots, speed, what each runs, its last heartbeat) and the
//! queues (what waits in each pool and class, on the broker and in the scheduler, and the
//! dead letters).

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::Extension;
use maud::{html, Markup};
use taskfleet_common::wire::DeadLetter;
use taskfleet_common::workflow::PriorityClass;

use super::{gantt, segment, PageError, Section, Viewer};
use crate::api::auth::Scope;
use crate::api::{ApiError, ApiState};
use crate::service::now;

/// Dead letters the queues page shows, and how much of each message.
const SHOWN_DEAD_LETTERS: usize = 50;
const PREVIEW_BYTES: usize = 200;

pub(super) async fn workers(
    State(state): State<ApiState>,
    scope: Option<Extension<Scope>>,
) -> Result<Markup, PageError> {
    let viewer = Viewer::of(scope);
    let fleet = state.scheduler.fleet();
    let mut task_ids: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for attempt in fleet.iter().flat_map(|worker| &worker.running) {
        if !task_ids.contains_key(attempt.workflow_id.as_str()) {
            let ids =
                (state.store.task_ids(&attempt.workflow_id).await).map_err(|error| ApiError::Internal(error.into()))?;
            task_ids.insert(&attempt.workflow_id, ids);
        }
    }
    let now = now().0;
    let body = html! {
        div #workers hx-get="/ui/workers" hx-select="#workers" hx-swap="outerHTML" hx-trigger="every 3s" {
            div.heading {
                h1 { "Workers" }
                p.muted { (fleet.len()) " live · " (fleet.iter().map(|worker| worker.in_use).sum::<u32>()) " of " (fleet.iter().map(|worker| worker.slots).sum::<u32>()) " slots in use" }
            }
            @if fleet.is_empty() {
                p.muted { "No worker has sent a heartbeat. Start one with " code { "taskfleet worker" } "." }
            } @else {
                table.workers {
                    thead { tr { th { "Worker" } th { "Pools" } th { "Slots" } th { "Speed" } th { "Running" } th { "Last heartbeat" } th { "Lease lapses" } } }
                    tbody {
                        @for worker in &fleet {
                            tr data-worker=(worker.name) {
                                td { (worker.name) @if worker.draining { " " span.badge data-state="cancelled" { "draining" } } }
                                td { (worker.pools.join(", ")) }
                                td {
                                    span.meter { span style={"width:" (percent(worker.in_use, worker.slots)) "%"} {} }
                                    " " (worker.in_use) "/" (worker.slots)
                                }
                                td { (format!("{:.2}", worker.speed)) }
                                td {
                                    @for attempt in &worker.running {
                                        @let id = task_ids.get(attempt.workflow_id.as_str()).and_then(|ids| ids.get(attempt.task_idx as usize));
                                        @match id {
                                            Some(task) => a href={"/ui/workflows/" (segment(&attempt.workflow_id)) "/tasks/" (segment(task))} { (task) " #" (attempt.attempt) },
                                            None => a href={"/ui/workflows/" (segment(&attempt.workflow_id))} { "task " (attempt.task_idx) " #" (attempt.attempt) },
                                        }
                                        " "
                                    }
                                }
                                td { (gantt::elapsed(now.saturating_sub(worker.last_heartbeat_ms))) " ago" }
                                td { "in " (gantt::elapsed(worker.lease_expires_ms.saturating_sub(now))) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(super::page("Workers", Some(Section::Workers), viewer, &state, body))
}

fn percent(used: u32, slots: u32) -> u32 {
    (used.min(slots) * 100).checked_div(slots).unwrap_or(0)
}

pub(super) async fn queues(
    State(state): State<ApiState>,
    scope: Option<Extension<Scope>>,
) -> Result<Markup, PageError> {
    let viewer = Viewer::of(scope);
    let fleet = state.scheduler.fleet();
    let loads = state
        .metrics
        .as_ref()
        .map(|metrics| metrics.pool_loads())
        .unwrap_or_default();
    let mut pools: BTreeSet<String> = loads.iter().map(|load| load.pool.to_string()).collect();
    pools.extend(fleet.iter().flat_map(|worker| worker.pools.iter().cloned()));
    pools.insert("default".to_string());
    let depth = |queue: String| {
        let broker = state.broker.clone();
        async move {
            match broker {
                None => Err("no broker".to_string()),
                Some(broker) => broker
                    .transport
                    .queue_len(&queue)
                    .await
                    .map_err(|error| error.to_string()),
            }
        }
    };
    let names = state
        .broker
        .as_ref()
        .map(|broker| broker.queues.clone())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for pool in &pools {
        let mut depths = Vec::new();
        for class in PriorityClass::ALL {
            depths.push(depth(names.tasks(pool, class.as_str())).await);
        }
        let load = loads.iter().find(|load| *load.pool == **pool);
        let serving = (fleet.iter())
            .filter(|worker| !worker.draining && worker.pools.iter().any(|served| served == pool))
            .count();
        rows.push((pool, depths, load, serving));
    }
    let results = depth(names.results()).await;
    let submit = depth(names.submit()).await;
    let dead = depth(names.dead_letters()).await;
    let letters = match &state.broker {
        None => Err("no broker".to_string()),
        Some(broker) => (broker.transport.peek(&names.dead_letters(), SHOWN_DEAD_LETTERS).await)
            .map(|payloads| {
                payloads
                    .iter()
                    .map(|payload| DeadLetter::decode(payload))
                    .collect::<Vec<_>>()
            })
            .map_err(|error| error.to_string()),
    };
    let body = html! {
        div #queues hx-get="/ui/queues" hx-select="#queues" hx-swap="outerHTML" hx-trigger="every 3s" {
            div.heading { h1 { "Queues" } }
            table.queues {
                thead {
                    tr { th { "Pool" } th { "Ready (scheduler)" } th { "In flight" } th { "Slots" } th { "Live workers" }
                        @for class in PriorityClass::ALL { th { "Queue " (class.as_str()) } } }
                }
                tbody {
                    @for (pool, depths, load, serving) in &rows {
                        tr data-pool=(pool) {
                            td { (pool) }
                            td { (load.map_or(0, |load| load.ready)) }
                            td { (load.map_or(0, |load| load.in_flight)) }
                            td { (load.map_or(0, |load| load.capacity)) }
                            td {
                                (serving)
                                @if *serving == 0 && load.is_some_and(|load| load.ready > 0) { " " span.problem { "no live worker serves this pool" } }
                            }
                            @for found in depths { td { (shown(found)) } }
                        }
                    }
                }
            }
            p.muted { "Ready tasks wait in the scheduler until a slot frees; a queue holds what was sent and not yet taken by a worker." }
            h2 { "Other queues" }
            table.queues {
                tbody {
                    tr { td { code { (names.results()) } } td { "results from workers" } td { (shown(&results)) } }
                    tr { td { code { (names.submit()) } } td { "workflows published to the broker" } td { (shown(&submit)) } }
                    tr data-queue="dead" { td { code { (names.dead_letters()) } } td { "dead letters: unusable messages, each with its reason" } td { (shown(&dead)) } }
                }
            }
            h2 { "Dead letters" }
            (dead_letters(&letters))
        }
    };
    Ok(super::page("Queues", Some(Section::Queues), viewer, &state, body))
}

/// The oldest dead letters, with where each came from and why it was set aside.
fn dead_letters(letters: &Result<Vec<Option<DeadLetter>>, String>) -> Markup {
    html! {
        @match letters {
            Err(error) => p.muted { "Cannot show them: " (error) "." },
            Ok(letters) if letters.is_empty() => p.muted { "None." },
            Ok(letters) => {
                p.muted { "The oldest " (letters.len()) ", left in the queue." }
                table.dead-letters {
                    thead { tr { th { "From" } th { "Why" } th { "Message" } } }
                    tbody {
                        @for letter in letters {
                            @match letter {
                                Some(letter) => tr {
                                    td { code { (letter.source_queue) } }
                                    td.problem { (letter.reason) }
                                    td { code.preview { (preview(&letter.payload)) }
                                        @if let Some(truncated) = &letter.truncated { " " span.muted { "(" (truncated.size) " bytes, sha256 " (truncated.sha256) ")" } } }
                                },
                                None => tr { td colspan="3" .muted { "A message that is not a dead letter taskfleet wrote." } },
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The first bytes of a message, as text.
fn preview(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(&payload[..payload.len().min(PREVIEW_BYTES)]);
    let mut shown: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if payload.len() > PREVIEW_BYTES {
        shown.push('…');
    }
    shown
}

fn shown(depth: &Result<usize, String>) -> Markup {
    match depth {
        Ok(n) => html! { (n) },
        Err(error) => html! { span.muted title=(error) { "?" } },
    }
}
