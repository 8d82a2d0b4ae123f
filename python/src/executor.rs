//! The bridge between Rust futures and the worker's asyncio loop, apart from HTTP.
//!
//! Everything crosses on one [`WakeQueue`]: Rust tasks push work, the loop thread drains it in
//! one GIL hold when the queue's descriptor turns readable (`loop.add_reader`). Two directions:
//!
//! - Python awaits a Rust future: [`future_into_py`] returns an asyncio future; the Rust future
//!   runs on the I/O runtime without the GIL, and its result is set on the loop thread.
//! - A Rust task calls Python: [`Bridge::call`] runs a closure on the loop thread and
//!   [`call_python`] calls a Python callable there (awaiting it if it returns an awaitable),
//!   handing the result back to the Rust task.
//!
//! The HTTP runtime (`runtime.rs`) is one user: its requests are [`Work::Job`]s of the same
//! queue. [`Executor`] is another, with no listener at all (`cello._cello.Executor`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};

use crate::queue::WakeQueue;

/// A closure for the loop thread.
pub type PyCall = Box<dyn FnOnce(Python<'_>) + Send>;

/// One item of the queue: a closure from any Rust task, or a job of the bridge's user.
pub enum Work<J> {
    /// Run on the loop thread.
    Call(PyCall),
    /// The user's own job (the HTTP runtime's requests, cancellations, access records).
    Job(J),
}

/// The queue to the loop thread, with the batching waker.
pub struct Bridge<J> {
    queue: WakeQueue<Work<J>>,
    /// Asks the waker task (see [`Io::handle`]) to wake the loop thread.
    waker: Notify,
    /// The waker task runs (batched wake-ups are possible).
    batching: AtomicBool,
}

impl<J: Send + 'static> Bridge<J> {
    /// A bridge with its socketpair.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            queue: WakeQueue::new()?,
            waker: Notify::new(),
            batching: AtomicBool::new(false),
        })
    }

    /// The descriptor the loop watches.
    pub fn fd(&self) -> i32 {
        self.queue.fd()
    }

    /// Queue a job and wake the loop now.
    pub fn push(&self, job: J) {
        crate::memory::touch();
        self.queue.push(Work::Job(job));
    }

    /// Queue a job; the wake-up comes once the I/O loop's current pass is done, so every job
    /// queued in that pass rides on one wake-up.
    pub fn push_batched(&self, job: J) {
        crate::memory::touch();
        self.push_work(Work::Job(job));
    }

    /// Run `f` on the loop thread (batched like [`Bridge::push_batched`]).
    pub fn call(&self, f: impl FnOnce(Python<'_>) + Send + 'static) {
        self.push_work(Work::Call(Box::new(f)));
    }

    fn push_work(&self, work: Work<J>) {
        if self.queue.push_deferred(work) {
            if self.batching.load(Ordering::Acquire) {
                self.waker.notify_one();
            } else {
                self.queue.wake();
            }
        }
    }

    /// Everything queued so far, in push order (loop thread).
    pub fn take(&self) -> Vec<Work<J>> {
        self.queue.take()
    }
}

/// The I/O runtime (tokio) of a bridge; shut down without blocking when dropped.
#[derive(Default)]
pub struct Io {
    rt: Mutex<Option<tokio::runtime::Runtime>>,
    handle: OnceLock<Handle>,
    /// Shut down: no new work (a task spawned now would be dropped, its future never set).
    stopped: AtomicBool,
}

impl Io {
    /// The runtime's handle, started on first use (`CELLO_IO_THREADS` threads, default 1)
    /// together with the bridge's waker task.
    pub fn handle<J: Send + 'static>(&self, bridge: &Arc<Bridge<J>>) -> PyResult<Handle> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(PyRuntimeError::new_err("the I/O runtime is shut down"));
        }
        if let Some(h) = self.handle.get() {
            return Ok(h.clone());
        }
        let mut rt = self.rt.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = self.handle.get() {
            return Ok(h.clone());
        }
        let threads = cello_config::env::var(cello_config::env::IO_THREADS)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1usize);
        let built = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("cello-io")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the I/O runtime: {e}")))?;
        spawn_waker(built.handle(), bridge.clone());
        crate::memory::spawn_janitor(built.handle(), bridge.clone());
        let handle = built.handle().clone();
        let _ = self.handle.set(handle.clone());
        *rt = Some(built);
        Ok(handle)
    }

    /// Stop the runtime without blocking (its tasks are dropped).
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(rt) = self.rt.lock().unwrap_or_else(PoisonError::into_inner).take() {
            // Never block here: this may run with the GIL held while I/O threads want it.
            rt.shutdown_background();
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The loop thread is woken by a task that first yields, so every item queued in the same
/// pass of the I/O loop rides on one wake-up. Waking it from each push (as on one core the
/// kernel then switches to it at once) cost ~1.7 context switches per request under load.
fn spawn_waker<J: Send + 'static>(handle: &Handle, bridge: Arc<Bridge<J>>) {
    bridge.batching.store(true, Ordering::Release);
    handle.spawn(async move {
        loop {
            bridge.waker.notified().await;
            tokio::task::yield_now().await;
            bridge.queue.wake();
        }
    });
}

/// Await a Rust future from Python: returns an asyncio future of `event_loop`. `fut` runs on
/// the I/O runtime without the GIL; `convert` turns its output into the result on the loop
/// thread. Cancelling the asyncio future aborts the Rust task.
pub fn future_into_py<J, F, T, C>(
    py: Python<'_>,
    bridge: &Arc<Bridge<J>>,
    handle: &Handle,
    event_loop: &Py<PyAny>,
    fut: F,
    convert: C,
) -> PyResult<Py<PyAny>>
where
    J: Send + 'static,
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    crate::memory::touch();
    let future = event_loop.call_method0(py, "create_future")?;
    let target = future.clone_ref(py);
    let back = bridge.clone();
    let task = handle.spawn(async move {
        let out = fut.await;
        back.call(move |py| settle(py, &target, out.and_then(|v| convert(py, v))));
    });
    let abort = AbortOnCancel {
        handle: task.abort_handle(),
    };
    future.call_method1(py, "add_done_callback", (abort,))?;
    Ok(future)
}

/// Set the result (or exception) of an asyncio future unless it is done (cancelled).
pub fn settle(py: Python<'_>, future: &Py<PyAny>, out: PyResult<Py<PyAny>>) {
    let fut = future.bind(py);
    if fut.call_method0("done").and_then(|d| d.is_truthy()).unwrap_or(true) {
        return;
    }
    let set = match out {
        Ok(v) => fut.call_method1("set_result", (v,)),
        Err(e) => fut.call_method1("set_exception", (e.into_value(py),)),
    };
    if let Err(e) = set {
        e.write_unraisable(py, Some(fut));
    }
}

/// `future.add_done_callback(...)`: a cancelled future stops its Rust task.
#[pyclass(frozen, module = "cello._cello")]
struct AbortOnCancel {
    handle: tokio::task::AbortHandle,
}

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.handle.abort();
        }
        Ok(())
    }
}

/// From a Rust task, run `f` on the loop thread (typically a call into Python) and get its
/// result back. A returned awaitable (a coroutine) runs as a task of `event_loop`; its result
/// comes back instead. The Rust task never takes the GIL.
pub async fn call_python<J, F>(bridge: &Bridge<J>, event_loop: Arc<Py<PyAny>>, f: F) -> PyResult<Py<PyAny>>
where
    J: Send + 'static,
    F: FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let (tx, rx) = oneshot::channel::<PyResult<Py<PyAny>>>();
    bridge.call(move |py| {
        let value = match f(py) {
            Ok(v) => v,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        if !value.bind(py).hasattr("__await__").unwrap_or(false) {
            let _ = tx.send(Ok(value));
            return;
        }
        let task = py.import("asyncio").and_then(|asyncio| {
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("loop", event_loop.bind(py))?;
            asyncio.call_method("ensure_future", (value,), Some(&kwargs))
        });
        match task {
            Ok(task) => {
                let reply = ReplyOnDone {
                    tx: Mutex::new(Some(tx)),
                };
                if let Err(e) = task.call_method1("add_done_callback", (reply,)) {
                    e.write_unraisable(py, Some(&task));
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    });
    rx.await
        .map_err(|_| PyRuntimeError::new_err("the Python thread stopped before it answered"))?
}

/// `task.add_done_callback(...)`: hand a task's outcome back to the waiting Rust task.
#[pyclass(frozen, module = "cello._cello")]
struct ReplyOnDone {
    tx: Mutex<Option<oneshot::Sender<PyResult<Py<PyAny>>>>>,
}

#[pymethods]
impl ReplyOnDone {
    fn __call__(&self, task: &Bound<'_, PyAny>) {
        let Some(tx) = self.tx.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return;
        };
        let _ = tx.send(task.call_method0("result").map(Bound::unbind));
    }
}

/// Run the closures of a drained batch (errors inside them are theirs to report).
pub fn run_call(py: Python<'_>, call: PyCall) {
    call(py);
}

/// An executor with no HTTP listener: Rust futures awaited from the asyncio loop and Rust
/// tasks that call back into Python. `Executor.start(loop)` attaches it to `loop`.
#[pyclass(frozen, module = "cello._cello")]
pub struct Executor {
    bridge: Arc<Bridge<std::convert::Infallible>>,
    io: Io,
    event_loop: Py<PyAny>,
    attached: AtomicBool,
}

impl Executor {
    fn io(&self) -> PyResult<Handle> {
        self.io.handle(&self.bridge)
    }

    fn spawn_into_py<F, T, C>(&self, py: Python<'_>, fut: F, convert: C) -> PyResult<Py<PyAny>>
    where
        F: Future<Output = PyResult<T>> + Send + 'static,
        T: Send + 'static,
        C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
    {
        let handle = self.io()?;
        future_into_py(py, &self.bridge, &handle, &self.event_loop, fut, convert)
    }

    /// Await `fut`, run on another runtime (`handle`: the data layer's), from this loop.
    pub fn spawn_on<F, T, C>(&self, py: Python<'_>, handle: &Handle, fut: F, convert: C) -> PyResult<Py<PyAny>>
    where
        F: Future<Output = PyResult<T>> + Send + 'static,
        T: Send + 'static,
        C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
    {
        future_into_py(py, &self.bridge, handle, &self.event_loop, fut, convert)
    }
}

#[pymethods]
impl Executor {
    /// An executor for `loop` (not attached: see `start`).
    #[new]
    fn new(event_loop: Py<PyAny>) -> PyResult<Self> {
        let bridge = Bridge::new().map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(Self {
            bridge: Arc::new(bridge),
            io: Io::default(),
            event_loop,
            attached: AtomicBool::new(false),
        })
    }

    /// A new executor attached to `loop` (its queue descriptor watched by `loop.add_reader`).
    #[staticmethod]
    #[pyo3(name = "start")]
    fn start_on(py: Python<'_>, event_loop: Py<PyAny>) -> PyResult<Py<Self>> {
        let this = Py::new(py, Self::new(event_loop)?)?;
        let bound = this.bind(py);
        let me = bound.get();
        me.io()?;
        me.event_loop
            .call_method1(py, "add_reader", (me.bridge.fd(), bound.getattr("drain")?))?;
        me.attached.store(true, Ordering::Release);
        Ok(this)
    }

    /// The descriptor that becomes readable when work is queued.
    fn wake_fd(&self) -> i32 {
        self.bridge.fd()
    }

    /// Run everything queued (the loop calls this when `wake_fd` is readable).
    fn drain(&self, py: Python<'_>) {
        for work in self.bridge.take() {
            match work {
                Work::Call(call) => run_call(py, call),
                Work::Job(never) => match never {},
            }
        }
    }

    /// A Rust `tokio::time::sleep`, awaitable: resolves to `value` after `seconds`.
    #[pyo3(signature = (seconds, value = None))]
    fn sleep(&self, py: Python<'_>, seconds: f64, value: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        let delay = Duration::try_from_secs_f64(seconds)
            .map_err(|_| PyValueError::new_err(format!("sleep: bad duration {seconds}")))?;
        self.spawn_into_py(
            py,
            async move {
                tokio::time::sleep(delay).await;
                Ok(())
            },
            move |py, ()| Ok(value.unwrap_or_else(|| py.None())),
        )
    }

    /// `data` copied through a Rust task on the I/O runtime and back, awaitable.
    fn echo(&self, py: Python<'_>, data: Vec<u8>) -> PyResult<Py<PyAny>> {
        self.spawn_into_py(
            py,
            async move {
                tokio::task::yield_now().await;
                Ok(bytes::Bytes::from(data))
            },
            |py, data| Ok(PyBytes::new(py, &data).into_any().unbind()),
        )
    }

    /// A Rust future that fails with `RuntimeError(message)` after `seconds`, awaitable.
    #[pyo3(signature = (message, seconds = 0.0))]
    fn fail(&self, py: Python<'_>, message: String, seconds: f64) -> PyResult<Py<PyAny>> {
        let delay = Duration::try_from_secs_f64(seconds)
            .map_err(|_| PyValueError::new_err(format!("fail: bad duration {seconds}")))?;
        self.spawn_into_py(
            py,
            async move {
                tokio::time::sleep(delay).await;
                Err::<(), _>(PyRuntimeError::new_err(message))
            },
            |py, ()| Ok(py.None()),
        )
    }

    /// A Rust task calls `func(i)` on the loop thread for `i` in `0..times`, one after the
    /// other (awaiting coroutines it returns), and gathers the results in Rust; awaitable,
    /// resolves to their list. An exception from `func` ends it with that exception.
    #[pyo3(signature = (func, times = 1))]
    fn call_back(&self, py: Python<'_>, func: Py<PyAny>, times: usize) -> PyResult<Py<PyAny>> {
        let bridge = self.bridge.clone();
        let event_loop = Arc::new(self.event_loop.clone_ref(py));
        let func = Arc::new(func);
        self.spawn_into_py(
            py,
            async move {
                let mut results = Vec::with_capacity(times);
                for i in 0..times {
                    let func = func.clone();
                    let call = move |py: Python<'_>| func.call1(py, (i,));
                    results.push(call_python(&bridge, event_loop.clone(), call).await?);
                }
                Ok(results)
            },
            |py, results| Ok(PyList::new(py, results)?.into_any().unbind()),
        )
    }

    /// Detach from the loop and stop the I/O runtime (pending futures never resolve).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.io.shutdown();
        if self.attached.swap(false, Ordering::AcqRel) {
            self.event_loop.call_method1(py, "remove_reader", (self.bridge.fd(),))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(work: Vec<Work<u32>>) -> Vec<Option<u32>> {
        work.into_iter()
            .map(|w| match w {
                Work::Job(j) => Some(j),
                Work::Call(_) => None,
            })
            .collect()
    }

    #[test]
    fn calls_and_jobs_keep_push_order() {
        let bridge = Bridge::<u32>::new().unwrap();
        bridge.push(1);
        bridge.call(|_| {});
        bridge.push_batched(2);
        bridge.call(|_| {});
        assert_eq!(kinds(bridge.take()), vec![Some(1), None, Some(2), None]);
        assert!(bridge.take().is_empty());
    }

    #[test]
    fn batched_pushes_share_one_wake_up_through_the_waker_task() {
        let bridge = Arc::new(Bridge::<u32>::new().unwrap());
        // As `Io::handle` starts it (built here: that one returns a PyResult, and this test
        // binary does not link libpython).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        spawn_waker(&handle, bridge.clone());
        // Pushed from one pass of an I/O task: one wake-up byte for all of them.
        let b = bridge.clone();
        handle.block_on(async move {
            for i in 0..100 {
                b.push_batched(i);
            }
            b.call(|_| {});
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        assert_eq!(bridge.queue.wake_bytes(), 1, "expected exactly one wake-up byte");
        let got = kinds(bridge.take());
        assert_eq!(got.len(), 101);
        assert_eq!(got[..100], (0..100).map(Some).collect::<Vec<_>>()[..]);
    }
}
