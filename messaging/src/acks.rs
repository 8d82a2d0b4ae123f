//! Acknowledgements settled in batches: a finished message's id is queued without I/O (so the
//! asyncio thread does not wait for, or wake, anything but this queue) and a task of the
//! messaging runtime sends what is queued in one request (Redis `XACK` with many ids, SQS
//! `DeleteMessageBatch`). The batch is what queued within [`LINGER`] of the first ack, or
//! while the previous request was under way: acks that trickle in (one handler finishing at a
//! time) still leave together.
//!
//! At-least-once is kept: an id is queued only after its handler finished, and an ack that is
//! lost (the worker killed before the flush, a request that kept failing) only means the
//! broker delivers the message again. `flush` sends everything queued so far and returns once
//! the broker answered — called on close (drain/SIGTERM) and by whatever could otherwise see
//! the message redelivered (the Redis stream's reclaim).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::Result;

/// Sends one batch of ids to the broker.
pub(crate) type SendFn = dyn Fn(Vec<String>) -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync;

/// Tries of one batch before it is given up (its messages are then delivered again).
const TRIES: u32 = 3;
/// How long the first queued ack waits for others. Short beside any redelivery timeout (an
/// SQS visibility of at least a second, a stream's `claim_idle`), and nobody waits on it.
pub(crate) const LINGER: Duration = Duration::from_millis(5);

pub(crate) struct AckQueue {
    pending: Mutex<Vec<String>>,
    wake: Notify,
    /// Held while a batch is taken and sent, so `flush` returns only after what was queued
    /// before it reached the broker, whichever task sent it.
    sending: tokio::sync::Mutex<()>,
    send: Box<SendFn>,
    what: &'static str,
}

impl AckQueue {
    /// A queue and its sender task (aborted when the returned handle is dropped).
    pub(crate) fn start(what: &'static str, send: Box<SendFn>) -> (Arc<Self>, Flusher) {
        let q = Arc::new(Self {
            pending: Mutex::new(Vec::new()),
            wake: Notify::new(),
            sending: tokio::sync::Mutex::new(()),
            send,
            what,
        });
        let task = crate::runtime().spawn({
            let q = q.clone();
            async move {
                loop {
                    q.wake.notified().await;
                    tokio::time::sleep(LINGER).await;
                    q.flush().await;
                }
            }
        });
        (q, Flusher(task))
    }

    /// Queue `id` (its handler finished); no I/O.
    pub(crate) fn push(&self, id: String) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).push(id);
        // A stored permit if the task is busy sending: it comes back for this one right after.
        self.wake.notify_one();
    }

    /// Everything queued, taken out (the caller sends it, holding `sending`).
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Give `ids` back to the queue (their request failed before they were sent).
    pub(crate) fn restore(&self, mut ids: Vec<String>) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        ids.append(&mut p);
        *p = ids;
    }

    /// Lock out the sender task while the caller sends ids taken with [`take`](Self::take).
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.sending.lock().await
    }

    /// Send everything queued so far; returns once the broker answered (or the tries ran out:
    /// those messages will be delivered again).
    pub(crate) async fn flush(&self) {
        let _one = self.sending.lock().await;
        let ids = self.take();
        if ids.is_empty() {
            return;
        }
        let n = ids.len();
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=TRIES {
            match (self.send)(ids.clone()).await {
                Ok(()) => return,
                Err(e) if attempt == TRIES => {
                    tracing::warn!(
                        "{}: acknowledging {n} message(s) failed {TRIES} times, they will be delivered again: {e}",
                        self.what
                    );
                }
                Err(e) => {
                    tracing::debug!("{}: acknowledging {n} message(s) failed, retrying: {e}", self.what);
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

/// The sender task of an [`AckQueue`], stopped with its consumer.
pub(crate) struct Flusher(tokio::task::JoinHandle<()>);

impl Drop for Flusher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn acks_queued_during_a_request_leave_together_and_flush_waits_for_them() {
        let calls = Arc::new(Mutex::new(Vec::<usize>::new()));
        let started = Arc::new(AtomicUsize::new(0));
        let send: Box<SendFn> = {
            let (calls, started) = (calls.clone(), started.clone());
            Box::new(move |ids: Vec<String>| {
                let (calls, started) = (calls.clone(), started.clone());
                Box::pin(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    calls.lock().unwrap().push(ids.len());
                    Ok(())
                })
            })
        };
        crate::runtime().block_on(async {
            let (q, _task) = AckQueue::start("test", send);
            for i in 0..10 {
                q.push(i.to_string()); // within the linger of the first: one request
            }
            while started.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            for i in 10..50 {
                q.push(i.to_string()); // while that request is under way: the next one
            }
            q.flush().await;
            let calls = calls.lock().unwrap().clone();
            assert_eq!(calls, vec![10, 40]);
        });
    }

    #[test]
    fn a_failing_batch_is_tried_again() {
        let tries = Arc::new(AtomicUsize::new(0));
        let send: Box<SendFn> = {
            let tries = tries.clone();
            Box::new(move |_ids: Vec<String>| {
                let tries = tries.clone();
                Box::pin(async move {
                    if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err(crate::Error::Unavailable("down".into()))
                    } else {
                        Ok(())
                    }
                })
            })
        };
        crate::runtime().block_on(async {
            let (q, _task) = AckQueue::start("test", send);
            q.push("a".into());
            q.flush().await;
            assert_eq!(tries.load(Ordering::SeqCst), 2);
        });
    }
}
