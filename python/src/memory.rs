//! Freed memory back to the OS after a burst, without paying for it on every request.
//!
//! mimalloc purges (decommits) freed pages after `purge_delay` (1 s by default), but only when
//! some thread later allocates or collects: an idle server never gave its burst memory back.
//! `MIMALLOC_PURGE_DELAY=0` fixed that by purging on every free, at the cost of `madvise`
//! calls on the request path (6–9 % of plain-JSON throughput, docs/benchmarks.md). Instead,
//! a janitor task on the I/O runtime collects while requests flow (expired purges only,
//! program-wide), and once the process turns idle it forces a full collection on the I/O
//! thread and on the loop thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::executor::Bridge;

/// Work handed between the I/O runtime and the loop thread since start (requests, awaited
/// Rust futures). Only compared between janitor ticks.
static ACTIVITY: AtomicU64 = AtomicU64::new(0);

const TICK: Duration = Duration::from_millis(250);

/// Count one unit of work (cheap: one relaxed add).
#[inline]
pub fn touch() {
    ACTIVITY.fetch_add(1, Ordering::Relaxed);
}

/// Collect this thread's mimalloc heap; `force` also purges pages whose delay has not expired.
pub fn collect(force: bool) {
    // SAFETY: `mi_collect` takes no pointers; it only walks the calling thread's heap and
    // the process's arenas, which mimalloc synchronises itself.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(force)
    }
}

/// Start the janitor on the bridge's I/O runtime.
pub fn spawn_janitor<J: Send + 'static>(handle: &Handle, bridge: Arc<Bridge<J>>) {
    handle.spawn(async move {
        let mut seen = ACTIVITY.load(Ordering::Relaxed);
        let mut dirty = false;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = ACTIVITY.load(Ordering::Relaxed);
            if now != seen {
                // Busy: run the purges whose delay expired, as an allocation would.
                seen = now;
                dirty = true;
                collect(false);
            } else if dirty {
                // A quiet tick after work: give everything back, here and on the loop thread
                // (its heap holds the response buffers it built). `call` does not count as
                // activity, so this runs once per burst.
                dirty = false;
                collect(true);
                bridge.call(|_py| collect(true));
            }
        }
    });
}
