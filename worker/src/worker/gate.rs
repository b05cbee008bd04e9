//! Admission on the worker: an attempt starts only once the memory, GPUs and custom resources
//! it asks for fit in what the running attempts leave of the worker's capacity, in the order
//! the attempts arrived (a large request is not overtaken forever by small ones). CPUs are
//! shared in time and are not gated; slots already bound how many attempts run.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use taskfleet_common::resources::{ResourceSet, Shortfall};
use tokio::sync::Notify;

/// The worker's resources, handed to attempts in arrival order.
pub(crate) struct Gate {
    capacity: ResourceSet,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    free: ResourceSet,
    /// Tickets of the attempts waiting, first come first.
    waiting: VecDeque<u64>,
    next_ticket: u64,
}

impl Gate {
    /// A gate over `capacity` (its CPUs are not gated).
    pub(crate) fn new(capacity: &ResourceSet) -> Gate {
        let capacity = ResourceSet {
            cpu: 0.0,
            ..capacity.clone()
        };
        Gate {
            state: Mutex::new(State {
                free: capacity.clone(),
                waiting: VecDeque::new(),
                next_ticket: 0,
            }),
            capacity,
            changed: Notify::new(),
        }
    }

    /// Waits until `request` fits and takes it; what it took returns when the [`Admitted`]
    /// is dropped. A request larger than the whole capacity never fits: `Err` says what it
    /// lacks, at once.
    pub(crate) async fn admit(self: &Arc<Self>, request: &ResourceSet) -> Result<Admitted, Shortfall> {
        let request = ResourceSet {
            cpu: 0.0,
            ..request.clone()
        };
        if let Some(shortfall) = request.shortfall(&self.capacity) {
            return Err(shortfall);
        }
        let ticket = {
            let mut state = self.state.lock().expect("gate lock");
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting.push_back(ticket);
            ticket
        };
        let mut waiting = Waiting {
            gate: self,
            ticket: Some(ticket),
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock().expect("gate lock");
                if state.waiting.front() == Some(&ticket) && request.shortfall(&state.free).is_none() {
                    state.waiting.pop_front();
                    state.free.sub(&request);
                    waiting.ticket = None;
                    drop(state);
                    // The next in line may fit too.
                    self.changed.notify_waiters();
                    return Ok(Admitted {
                        gate: Arc::clone(self),
                        request,
                    });
                }
            }
            notified.await;
        }
    }
}

/// A place in line; leaving it (an attempt cancelled while it waits) lets the next one on.
struct Waiting<'g> {
    gate: &'g Gate,
    ticket: Option<u64>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.gate
                .state
                .lock()
                .expect("gate lock")
                .waiting
                .retain(|&t| t != ticket);
            self.gate.changed.notify_waiters();
        }
    }
}

/// What an admitted attempt holds, given back when it is dropped.
pub(crate) struct Admitted {
    gate: Arc<Gate>,
    request: ResourceSet,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.state.lock().expect("gate lock").free.add(&self.request);
        self.gate.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn memory(gib: u64) -> ResourceSet {
        ResourceSet {
            cpu: 1.0,
            memory_bytes: gib << 30,
            ..ResourceSet::default()
        }
    }

    #[tokio::test]
    async fn requests_wait_for_room_in_arrival_order() {
        let gate = Arc::new(Gate::new(&memory(4)));
        let first = gate.admit(&memory(3)).await.unwrap();
        // The large one waits for the first; the small one behind it waits too, in line.
        let large = tokio::spawn({
            let gate = gate.clone();
            async move { gate.admit(&memory(4)).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let small = tokio::spawn({
            let gate = gate.clone();
            async move { gate.admit(&memory(1)).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!large.is_finished() && !small.is_finished());
        drop(first);
        large.await.unwrap().unwrap();
        small.await.unwrap().unwrap();
        assert!(gate.admit(&memory(5)).await.is_err(), "more than the whole capacity");
        // CPUs are not gated.
        let _many: Vec<Admitted> = admit_cpu_heavy(&gate, 8).await;
    }

    async fn admit_cpu_heavy(gate: &Arc<Gate>, n: usize) -> Vec<Admitted> {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(
                gate.admit(&ResourceSet {
                    cpu: 4.0,
                    ..ResourceSet::default()
                })
                .await
                .unwrap(),
            );
        }
        held
    }

    #[tokio::test]
    async fn leaving_the_line_lets_the_next_one_on() {
        let gate = Arc::new(Gate::new(&memory(2)));
        let held = gate.admit(&memory(2)).await.unwrap();
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.admit(&memory(2)).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.abort();
        let _ = waiting.await;
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), gate.admit(&memory(1)))
            .await
            .expect("not stuck behind a cancelled waiter")
            .unwrap();
    }
}
