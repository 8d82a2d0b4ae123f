//! Access records on their way to Python's `cello.access` logger.
//!
//! A record is made on an I/O thread after each response, but logging it needs the loop
//! thread. Waking that thread once per record (or per batch) made the access log cost a
//! wake-up and a GIL hand-over per batch, and with sync handlers on the I/O thread the two
//! threads passed the GIL back and forth (session 9: 35k req/s against 52k). So records wait
//! here: the loop thread takes them whenever it drains anyway, and a timer wakes it at most
//! [`FLUSH_AFTER`] after the first record nobody has taken yet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cello_server::service::AccessRecord;

use crate::runtime::lock;

/// Wakes the loop thread to take the records (the runtime queues a `Job::FlushAccess`).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// The longest a record waits for the loop thread when nothing else wakes it.
pub const FLUSH_AFTER: Duration = Duration::from_millis(50);

/// Records not yet taken by the loop thread.
pub struct AccessBuffer {
    records: Mutex<Vec<AccessRecord>>,
    /// A flush is scheduled and not yet taken by the loop thread.
    armed: AtomicBool,
    wake: Wake,
}

impl AccessBuffer {
    /// A buffer whose scheduled flushes call `wake`.
    pub fn new(wake: Wake) -> Self {
        Self {
            records: Mutex::default(),
            armed: AtomicBool::new(false),
            wake,
        }
    }

    /// Keep `rec`; schedule a flush unless one is pending.
    pub fn push(&self, rec: AccessRecord) {
        lock(&self.records).push(rec);
        if self.armed.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let wake = self.wake.clone();
                handle.spawn(async move {
                    tokio::time::sleep(FLUSH_AFTER).await;
                    wake();
                });
            }
            // Off the I/O runtime (not expected): no timer to wait on, wake now.
            Err(_) => (self.wake)(),
        }
    }

    /// The scheduled flush arrived (loop thread): a record pushed from now on schedules
    /// another. Called before [`AccessBuffer::take`], so no record is left without one.
    pub fn flushed(&self) {
        self.armed.store(false, Ordering::Release);
    }

    /// Every record so far (loop thread).
    pub fn take(&self) -> Vec<AccessRecord> {
        std::mem::take(&mut *lock(&self.records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn record() -> AccessRecord {
        AccessRecord {
            method: http::Method::GET,
            target: "/".into(),
            version: http::Version::HTTP_11,
            status: 200,
            size: Some(2),
            duration: Duration::from_micros(10),
            peer: None,
            trace: None,
            request_id: None,
        }
    }

    fn counted() -> (AccessBuffer, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        (
            AccessBuffer::new(Arc::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            })),
            wakes,
        )
    }

    /// Records ride on one wake-up: the first schedules the flush, the rest do not, and the
    /// flush arrives within `FLUSH_AFTER`.
    #[test]
    fn one_timer_wakes_the_loop_for_many_records() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (buf, wakes) = counted();
        rt.block_on(async {
            for _ in 0..100 {
                buf.push(record());
            }
            assert_eq!(wakes.load(Ordering::SeqCst), 0, "no wake-up before the timer");
            tokio::time::sleep(FLUSH_AFTER * 3).await;
        });
        assert_eq!(wakes.load(Ordering::SeqCst), 1, "one flush for a hundred records");
        buf.flushed();
        assert_eq!(buf.take().len(), 100);
        // Taken: the next record schedules a flush of its own.
        rt.block_on(async {
            buf.push(record());
            tokio::time::sleep(FLUSH_AFTER * 3).await;
        });
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
    }

    /// A record kept while a flush is pending waits for that flush, not another; records a
    /// drain took before the flush came are not taken twice.
    #[test]
    fn a_pending_flush_covers_later_records() {
        let (buf, wakes) = counted();
        buf.push(record()); // no runtime: wakes at once
        buf.push(record());
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        assert_eq!(buf.take().len(), 2, "a drain for other work takes them");
        buf.push(record());
        assert_eq!(wakes.load(Ordering::SeqCst), 1, "the pending flush covers it");
        buf.flushed();
        assert_eq!(buf.take().len(), 1);
        buf.push(record());
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
    }
}
