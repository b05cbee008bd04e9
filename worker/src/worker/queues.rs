//! Which queues a worker consumes, and taking deliveries from them most urgent first.

use std::future::poll_fn;
use std::task::Poll;

use taskfleet_common::PriorityClass;
use taskfleet_transport::{Consumer, Delivery, TransportError};

use super::{Shared, WorkerConfig};

/// The worker's own queue (tasks a placement-aware policy sent to it) first, then the pools'
/// queues, most urgent class first, so scanning in order takes high before normal before low.
pub(super) fn task_queues(config: &WorkerConfig) -> Vec<String> {
    std::iter::once(config.queues.worker(&config.name))
        .chain(PriorityClass::ALL.iter().flat_map(|class| {
            config
                .pools
                .iter()
                .map(|pool| config.queues.tasks(pool, class.as_str()))
        }))
        .collect()
}

/// Declares the worker's queues and consumes its task queues, most urgent class first.
pub(super) async fn connect(
    shared: &Shared,
    config: &WorkerConfig,
    task_queues: &[String],
    prefetch: u16,
) -> Result<Vec<Box<dyn Consumer>>, TransportError> {
    let mut declared = task_queues.to_vec();
    declared.push(config.queues.results());
    declared.push(config.queues.dead_letters());
    shared.transport.declare(&declared).await?;
    // One prefetch for all the task queues: the worker holds no more deliveries than it has
    // slots, whichever queues they come from.
    shared.transport.consume_group(task_queues, prefetch).await
}

/// The next delivery, taking the first consumer's (the most urgent class) when several have
/// one ready. Cancellation-safe as long as the consumers' `recv` is.
pub(super) async fn next_delivery(consumers: &mut [Box<dyn Consumer>]) -> Result<Delivery, TransportError> {
    for consumer in consumers.iter_mut() {
        if let Some(delivery) = consumer.try_recv() {
            return delivery;
        }
    }
    let mut receiving: Vec<_> = consumers.iter_mut().map(|consumer| consumer.recv()).collect();
    poll_fn(|cx| {
        for recv in receiving.iter_mut() {
            if let Poll::Ready(delivery) = recv.as_mut().poll(cx) {
                return Poll::Ready(delivery);
            }
        }
        Poll::Pending
    })
    .await
}
