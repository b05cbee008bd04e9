//! Publishing what attempts report (`started`, `finished`) to the results queue: events of
//! all running attempts go out together, packed into few messages, and each attempt hears
//! whether its event was confirmed.

use std::sync::Arc;

use bytes::Bytes;
use taskfleet_common::wire::{encode, pack_worker_events, WorkerEvent};
use taskfleet_transport::{Outgoing, Transport, TransportError};
use tokio::sync::{mpsc, oneshot};

use super::Shared;

/// Publishes an event to the results queue and waits for its confirm. Events of all running
/// attempts go out together: while one batch is being confirmed the next one gathers.
pub(super) async fn publish(shared: &Shared, event: &WorkerEvent) -> Result<(), TransportError> {
    let (confirmed, confirmation) = oneshot::channel();
    shared
        .events
        .send((Bytes::from(encode(event)), confirmed))
        .map_err(|_| TransportError::Closed)?;
    confirmation.await.unwrap_or(Err(TransportError::Closed))
}

/// Most events published in one batch.
const MAX_EVENT_BATCH: usize = 256;
/// Most bytes of events packed into one results message (a single larger event goes alone).
const MAX_PACKED_BYTES: usize = 1 << 20;

/// Publishes queued events in batches until every sender is gone, telling each event's
/// attempt how its publish went.
pub(super) async fn publish_batches(
    transport: Arc<dyn Transport>,
    queue: String,
    mut pending: mpsc::UnboundedReceiver<(Bytes, oneshot::Sender<Result<(), TransportError>>)>,
) {
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_EVENT_BATCH {
            match pending.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        // The events go together, packed into as few messages as their size allows.
        let mut messages = Vec::new();
        let mut start = 0;
        while start < batch.len() {
            let mut end = start + 1;
            let mut size = batch[start].0.len();
            while end < batch.len() && size + batch[end].0.len() < MAX_PACKED_BYTES {
                size += batch[end].0.len();
                end += 1;
            }
            let payload = match end - start {
                1 => batch[start].0.clone(),
                _ => Bytes::from(pack_worker_events(
                    batch[start..end].iter().map(|(payload, _)| &payload[..]),
                )),
            };
            messages.push(Outgoing::new(queue.clone(), payload));
            start = end;
        }
        let outcome = transport.publish(messages).await;
        for (_, confirmed) in batch {
            let result = match &outcome {
                Ok(()) => Ok(()),
                Err(TransportError::Closed) => Err(TransportError::Closed),
                Err(TransportError::Rejected { reason }) => Err(TransportError::Rejected { reason: reason.clone() }),
                Err(TransportError::Unavailable { reason }) => {
                    Err(TransportError::Unavailable { reason: reason.clone() })
                }
            };
            let _ = confirmed.send(result);
        }
    }
}
