//! Reaching the broker again after it went away: one loop for every consumer of the fleet.

use std::future::Future;

use taskfleet_common::retry::Backoff;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{Consumer, Delivery, TransportError};

/// Calls `connect` until it succeeds, waiting a growing [`Backoff`] delay between tries and
/// logging each failure as "Cannot {what}; retrying.". `None` once `shutdown` is cancelled or
/// the transport is closed for good.
pub async fn until_connected<T, F, Fut>(what: &str, shutdown: &CancellationToken, mut connect: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TransportError>>,
{
    let mut backoff = Backoff::new();
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        let error = tokio::select! {
            _ = shutdown.cancelled() => return None,
            connected = connect() => match connected {
                Ok(value) => return Some(value),
                Err(TransportError::Closed) => return None,
                Err(error) => error,
            },
        };
        let delay = backoff.next_delay();
        warn!(%error, retry_in = ?delay, "Cannot {what}; retrying.");
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Consumes what `open` opens, handing each delivery to `handle`, and opens it again (after a
/// [`Backoff`] delay, see [`until_connected`]) when the consumer fails. Ends on `shutdown`,
/// when the transport is closed for good, or when `handle` returns false.
pub async fn consume_until<F, Fut, H, HFut>(what: &str, shutdown: &CancellationToken, mut open: F, mut handle: H)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Box<dyn Consumer>, TransportError>>,
    H: FnMut(Delivery) -> HFut,
    HFut: Future<Output = bool>,
{
    loop {
        let Some(mut consumer) = until_connected(what, shutdown, &mut open).await else {
            return;
        };
        loop {
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => return,
                delivery = consumer.recv() => delivery,
            };
            match delivery {
                Ok(delivery) => {
                    if !handle(delivery).await {
                        return;
                    }
                }
                Err(TransportError::Closed) => return,
                Err(error) => {
                    warn!(%error, "Lost the consumer to {what}; opening it again.");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn it_retries_until_the_transport_answers() {
        let tries = AtomicU32::new(0);
        let shutdown = CancellationToken::new();
        let connected = until_connected("reach the broker", &shutdown, || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(TransportError::Unavailable { reason: "down".into() }),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(connected, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn it_gives_up_when_the_transport_is_closed_or_on_shutdown() {
        let shutdown = CancellationToken::new();
        let closed = until_connected("reach the broker", &shutdown, || async {
            Err::<(), _>(TransportError::Closed)
        });
        assert_eq!(closed.await, None);
        shutdown.cancel();
        let stopped = until_connected("reach the broker", &shutdown, || async { Ok(1) });
        assert_eq!(stopped.await, None);
    }
}
