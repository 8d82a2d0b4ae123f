//! The hand-off queue between the I/O threads and the Python thread.
//!
//! Producers push without the GIL; the first push after a drain writes one byte to
//! a socketpair whose read end the event loop watches. Under load one wake-up
//! serves a whole batch.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// A multi-producer queue with a file-descriptor wake-up for one consumer.
pub struct WakeQueue<T> {
    queue: Mutex<Vec<T>>,
    notified: AtomicBool,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
}

impl<T> WakeQueue<T> {
    /// A queue with its socketpair (both ends non-blocking).
    pub fn new() -> std::io::Result<Self> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        Ok(Self {
            queue: Mutex::new(Vec::with_capacity(64)),
            notified: AtomicBool::new(false),
            wake_tx,
            wake_rx,
        })
    }

    /// The descriptor that becomes readable when there is work.
    pub fn fd(&self) -> i32 {
        self.wake_rx.as_raw_fd()
    }

    /// Queue an item; wakes the consumer if it may be asleep.
    pub fn push(&self, item: T) {
        if self.push_deferred(item) {
            self.wake();
        }
    }

    /// Queue an item without waking the consumer. `true` means the consumer may be
    /// asleep and the caller must call [`WakeQueue::wake`] (now or a little later, to
    /// batch): every `true` must be followed by a `wake`.
    pub fn push_deferred(&self, item: T) -> bool {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).push(item);
        !self.notified.swap(true, Ordering::SeqCst)
    }

    /// Wake the consumer (write one byte; non-blocking, and a full buffer already
    /// means a wake-up is pending).
    pub fn wake(&self) {
        let _ = (&self.wake_tx).write(&[1]);
    }

    /// Everything queued so far (consumer side).
    pub fn take(&self) -> Vec<T> {
        self.take_with(|| {})
    }

    /// `take`, running `between` after the wake bytes are consumed (tests use it to
    /// push at the worst moment).
    fn take_with(&self, between: impl FnOnce()) -> Vec<T> {
        // Order matters: consume the wake bytes, then clear the flag, then take the
        // queue. A push after the flag is cleared writes a new byte (a later, maybe
        // empty, drain); clearing it before consuming the bytes could swallow the
        // only wake-up of an item queued in between.
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.wake_rx).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
        between();
        self.notified.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
impl<T> WakeQueue<T> {
    /// Consume and count the pending wake-up bytes (tests of the batching).
    pub(crate) fn wake_bytes(&self) -> usize {
        let mut buf = [0u8; 64];
        let mut total = 0;
        while let Ok(n) = (&self.wake_rx).read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Wait until a wake byte arrives, like the event loop does before a drain
    /// (reading one byte first is equivalent: `take` reads the rest).
    fn wait_readable(q: &WakeQueue<u64>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut probe = [0u8; 1];
        while Instant::now() < deadline {
            match (&q.wake_rx).read(&mut probe) {
                Ok(n) if n > 0 => return true,
                _ => std::thread::yield_now(),
            }
        }
        false
    }

    fn readable(q: &WakeQueue<u64>) -> bool {
        let mut probe = [0u8; 1];
        matches!((&q.wake_rx).read(&mut probe), Ok(1))
    }

    #[test]
    fn push_during_a_drain_is_never_lost() {
        let q = WakeQueue::<u64>::new().unwrap();
        q.push(1);
        // A producer pushes while the consumer is half-way through its drain.
        let got = q.take_with(|| q.push(2));
        assert_eq!(got, vec![1, 2]);
        // The next push must wake the consumer again.
        q.push(3);
        assert!(readable(&q), "the push after a drain wrote no wake-up byte");
        assert_eq!(q.take(), vec![3]);
        assert!(!readable(&q));
    }

    #[test]
    fn deferred_pushes_share_one_wake_up() {
        let q = WakeQueue::<u64>::new().unwrap();
        assert!(q.push_deferred(1), "the first push must ask for a wake-up");
        assert!(!q.push_deferred(2), "later pushes ride on the pending one");
        assert!(!readable(&q));
        q.wake();
        assert!(readable(&q));
        assert_eq!(q.take(), vec![1, 2]);
        assert!(q.push_deferred(3), "after a drain the next push asks again");
    }

    #[test]
    fn no_lost_wakeups_under_contention() {
        // The race is narrow: repeat it (each round takes milliseconds when correct).
        for _ in 0..20 {
            one_round();
        }
    }

    fn one_round() {
        const PRODUCERS: u64 = 4;
        const PER: u64 = 50_000;
        let q = Arc::new(WakeQueue::<u64>::new().unwrap());
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..PER {
                        q.push(p * PER + i);
                    }
                })
            })
            .collect();
        let mut seen = 0u64;
        while seen < PRODUCERS * PER {
            // A lost wake-up leaves items queued with nothing to read: this times out.
            assert!(
                wait_readable(&q, Duration::from_secs(1)),
                "lost wake-up after {seen} items"
            );
            seen += q.take().len() as u64;
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(seen, PRODUCERS * PER);
        assert!(q.take().is_empty());
    }
}
