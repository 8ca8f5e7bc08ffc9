//! Awaitables made in Rust: work runs on a pool of runstash's own threads, without the GIL, and
//! its result completes an `asyncio.Future` of the caller's event loop through
//! `loop.call_soon_threadsafe`. The facade's file work goes this way instead of through
//! `loop.run_in_executor` (no Python thread pool, no `concurrent.futures` hop).
//!
//! Invariants:
//! - A job's Rust work runs with the GIL released; the GIL is taken once per job, to convert
//!   the result and hand it to the loop. Each worker thread keeps one Python thread state for
//!   its life (attached once, then detached), so a job's attach costs no state creation.
//! - The future is completed on its loop's thread only, and never twice: a future cancelled
//!   meanwhile is left alone (the work itself is not interrupted, as with an executor).
//! - Nothing panics into Python: a job whose loop has closed drops its result.
//! - No worker touches Python once the interpreter is finalizing (a thread that takes the GIL
//!   then is ended by `pthread_exit`, which cannot unwind Rust frames and aborts the process):
//!   an `atexit` hook waits, with the GIL released, until no job is in flight, as
//!   `concurrent.futures` joins its workers at exit. The in-flight count changes only with the
//!   GIL held, after a job's last Python call.
//! - After `fork` the child starts a pool of its own (threads do not survive a fork), and its
//!   exit does not wait for the parent's jobs.

use std::sync::mpsc;

use parking_lot::Condvar;

use super::*;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The pool's size: `concurrent.futures`' default (`min(32, cpus + 4)`), so that a program
/// moving from the executor keeps its parallelism.
fn pool_size() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus + 4).min(32)
}

/// The running pool of this process.
struct Pool {
    /// The process that started the threads.
    pid: u32,
    jobs: mpsc::Sender<Job>,
    /// Jobs submitted whose last Python call has not returned yet.
    in_flight: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);
/// Notified when `in_flight` drops to zero.
static IDLE: Condvar = Condvar::new();

fn start_pool() -> PyResult<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..pool_size() {
        let rx = Arc::clone(&rx);
        std::thread::Builder::new()
            .name(format!("runstash-aio-{i}"))
            .spawn(move || {
                Python::attach(|py| {
                    py.detach(|| {
                        loop {
                            // The lock is held only while waiting for a job, not while it runs.
                            let job = rx.lock().recv();
                            match job {
                                Ok(job) => job(),
                                Err(_) => return,
                            }
                        }
                    })
                })
            })
            .map_err(|e| {
                pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "cannot start a runstash worker thread: {e}"
                ))
            })?;
    }
    Ok(tx)
}

/// Queues `job`; the caller holds the GIL (so the count never changes across a `fork`).
fn submit(_py: Python<'_>, job: Job) -> PyResult<()> {
    let pid = std::process::id();
    let mut pool = POOL.lock();
    if !matches!(&*pool, Some(p) if p.pid == pid) {
        *pool = Some(Pool {
            pid,
            jobs: start_pool()?,
            in_flight: 0,
        });
    }
    if let Some(p) = pool.as_mut()
        && p.jobs.send(job).is_ok()
    {
        p.in_flight += 1;
        return Ok(());
    }
    Err(pyo3::exceptions::PyRuntimeError::new_err(
        "the runstash worker pool has stopped",
    ))
}

/// Called by a job, with the GIL held, after its last Python call.
fn job_done(_py: Python<'_>) {
    let mut pool = POOL.lock();
    if let Some(p) = pool.as_mut() {
        p.in_flight = p.in_flight.saturating_sub(1);
        if p.in_flight == 0 {
            IDLE.notify_all();
        }
    }
}

/// The `atexit` hook: returns once this process's pool has no job in flight.
#[pyfunction]
fn drain(py: Python<'_>) {
    let pid = std::process::id();
    py.detach(|| {
        let mut pool = POOL.lock();
        while let Some(p) = pool.as_ref()
            && p.pid == pid
            && p.in_flight > 0
        {
            IDLE.wait(&mut pool);
        }
    });
}

/// Registers the module's functions and the exit hook.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_async, m)?)?;
    let hook = wrap_pyfunction!(drain, m)?;
    m.py().import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
}

/// Sets `fut`'s result (`ok`) or exception (not `ok`) unless it is already done. Runs on the
/// loop's thread, called by `call_soon_threadsafe`.
#[pyfunction]
fn settle(fut: &Bound<'_, PyAny>, ok: bool, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if fut.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    if ok {
        fut.call_method1("set_result", (value,))?;
    } else {
        fut.call_method1("set_exception", (value,))?;
    }
    Ok(())
}

static SETTLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A future of `event_loop` that completes with `finish(work())`: `work` runs on a pool
/// thread without the GIL, `finish` converts its result with the GIL held.
pub(crate) fn spawn<T: Send + 'static>(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    work: impl FnOnce() -> T + Send + 'static,
    finish: impl FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
) -> PyResult<Py<PyAny>> {
    let settle = SETTLE
        .get_or_try_init(py, || {
            let m = py.import("runstash._core")?;
            wrap_pyfunction!(settle, &m).map(|f| f.into_any().unbind())
        })?
        .clone_ref(py);
    let fut = event_loop.call_method0("create_future")?.unbind();
    let event_loop = event_loop.clone().unbind();
    let handed = fut.clone_ref(py);
    submit(
        py,
        Box::new(move || {
            // A panic in the work (a bug) fails the future; it must not end the thread with
            // the job still counted, or the exit hook would wait for it forever.
            let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            Python::attach(move |py| {
                let result = match value {
                    Ok(value) => finish(py, value),
                    Err(_) => Err(pyo3::exceptions::PyRuntimeError::new_err(
                        "runstash: a worker job panicked (a bug; please report it)",
                    )),
                };
                let (ok, value) = match result {
                    Ok(v) => (true, v),
                    Err(e) => (false, e.into_value(py).into_any()),
                };
                // A closed loop refuses the callback: nobody awaits the result any more.
                let _ = event_loop.call_method1(
                    py,
                    "call_soon_threadsafe",
                    (settle, handed, ok, value),
                );
                drop(event_loop);
                job_done(py);
            });
        }),
    )?;
    Ok(fut)
}

/// `func(*args)` on a runstash worker thread, as a future of `event_loop`: the awaitable form
/// of any blocking call (the call takes the GIL; runstash's own calls release it inside).
#[pyfunction]
#[pyo3(signature = (event_loop, func, *args))]
pub(crate) fn run_async(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    func: Py<PyAny>,
    args: Py<pyo3::types::PyTuple>,
) -> PyResult<Py<PyAny>> {
    spawn(
        py,
        event_loop,
        || (),
        move |py, ()| func.call1(py, args.bind(py)),
    )
}
