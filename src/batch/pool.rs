//! The threads a batch runs its clients on.
//!
//! Each thread owns a current-thread tokio runtime and runs one job at a
//! time: a client's start, the service of its syscalls, the relays of its
//! connections and the reading of its output all happen on that one thread
//! (see `intercept::start_here`). Handing each of those steps between the
//! supervisor thread, the blocking pool and the workers of a shared runtime
//! cost more CPU than the rest of the supervisor together, and a thread
//! created per URL added its own start and end. The batch's own runtime
//! keeps the bookkeeping: reading input, per-host turns, retries, the
//! manifest. A job and its client run on one CPU (see `placement`).

use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Mutex};

use tokio::runtime::Runtime;

use crate::Error;

type Job = Box<dyn FnOnce(&Runtime) + Send>;

thread_local! {
    /// Where the current job of this pool thread runs (see `placement`):
    /// placed on a CPU, or left it and finishing; nothing if not placed.
    static PLACED: std::cell::RefCell<Place> = const { std::cell::RefCell::new(Place::None) };
}

enum Place {
    None,
    On(super::placement::Placed),
    /// Held for its drop, which ends the accounting.
    Finishing {
        _job: super::placement::Finishing,
    },
}

/// Offers the CPU the calling pool thread's job was placed on (see
/// `placement`) to the next job, once its client is gone: what is left of
/// this one (reading the output, writing the transcript) needs no partner
/// on the same CPU, and the next client does. The thread itself stays on
/// the CPU until its job ends. Nothing happens on any other thread.
pub fn leave_cpu() {
    // Taken out first: leaving takes the placement's lock.
    let place = match PLACED.with(|p| p.replace(Place::None)) {
        Place::On(placed) => Place::Finishing {
            _job: placed.leave(),
        },
        other => other,
    };
    PLACED.with(|p| p.replace(place));
}

/// Ends the calling pool thread's place, whatever it was.
fn unplace() {
    // Dropped outside the borrow: ending a place takes the placement's lock.
    drop(PLACED.with(|p| p.replace(Place::None)));
}

/// A fixed set of threads, each with a runtime of its own.
pub struct Pool {
    /// Each thread's own queue: a job wakes exactly the thread it is for.
    queues: Vec<mpsc::Sender<Job>>,
    /// Threads without a job.
    idle: Mutex<Vec<usize>>,
    /// Rings when a thread becomes idle.
    freed: tokio::sync::Notify,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    /// Starts `n` threads named `name-I`.
    pub fn new(n: usize, name: &str) -> Result<Pool, Error> {
        let env = |what: &str, e: std::io::Error| Error::Environment(format!("{what}: {e}"));
        let mut queues = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let placement = std::sync::Arc::new(super::placement::Placement::new());
        for i in 0..n {
            let placement = std::sync::Arc::clone(&placement);
            // I/O and timers only: signals are the batch runtime's, and
            // without the signal driver a park does not scan for orphaned
            // child processes every time.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| env("cannot start an async runtime", e))?;
            let (tx, rx) = mpsc::channel::<Job>();
            let t = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    for job in rx {
                        let place = placement.place().map_or(Place::None, Place::On);
                        PLACED.with(|p| p.replace(place));
                        // A panicking job loses its own result (its caller
                        // sees an error), not the thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&rt)));
                        unplace();
                    }
                })
                .map_err(|e| env("cannot start a batch thread", e))?;
            queues.push(tx);
            threads.push(t);
        }
        Ok(Pool {
            idle: Mutex::new((0..n).rev().collect()),
            queues,
            freed: tokio::sync::Notify::new(),
            threads,
        })
    }

    /// Runs `job` on an idle thread (waiting for one), with that thread's
    /// runtime, and returns its result.
    pub async fn run<T, F>(&self, job: F) -> Result<T, Error>
    where
        F: FnOnce(&Runtime) -> T + Send + 'static,
        T: Send + 'static,
    {
        let thread = loop {
            // Registered before looking, so a thread freed in between
            // still wakes this caller.
            let freed = self.freed.notified();
            if let Some(i) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                break i;
            }
            freed.await;
        };
        // Back on the idle list however this ends, even if the caller is
        // dropped while waiting.
        let _idle = Idle { pool: self, thread };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |rt| {
            let _ = tx.send(job(rt));
        });
        let lost = || Error::Environment("a batch thread failed (a bug: please report it)".into());
        self.queues[thread].send(job).map_err(|_| lost())?;
        rx.await.map_err(|_| lost())
    }
}

/// A thread of a [`Pool`] taken for a job; idle again when dropped. A
/// caller dropped mid-job frees the thread early: its next job then waits
/// in that thread's queue for the current one to finish.
struct Idle<'a> {
    pool: &'a Pool,
    thread: usize,
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.pool
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.thread);
        self.pool.freed.notify_one();
    }
}

impl Drop for Pool {
    /// Lets every thread finish its job and end.
    fn drop(&mut self) {
        self.queues.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn jobs_run_on_the_pool_threads_with_their_runtimes() {
        let pool = Arc::new(Pool::new(3, "pool-test").unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let names = rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..12u64 {
                let pool = Arc::clone(&pool);
                tasks.push(tokio::spawn(async move {
                    pool.run(move |rt| {
                        // The job's own runtime drives async work.
                        let v = rt.block_on(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            i * 2
                        });
                        (v, std::thread::current().name().unwrap_or("").to_string())
                    })
                    .await
                    .unwrap()
                }));
            }
            let mut out = Vec::new();
            for (i, t) in tasks.into_iter().enumerate() {
                let (v, name) = t.await.unwrap();
                assert_eq!(v, i as u64 * 2);
                out.push(name);
            }
            out
        });
        assert!(
            names.iter().all(|n| n.starts_with("pool-test-")),
            "{names:?}"
        );
    }

    #[test]
    fn a_panicking_job_is_an_error_and_the_thread_lives_on() {
        let pool = Pool::new(1, "pool-test").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = pool.run(|_| -> u32 { panic!("on purpose") }).await;
            assert!(matches!(r, Err(Error::Environment(_))));
            assert_eq!(pool.run(|_| 7).await.unwrap(), 7);
        });
    }
}
