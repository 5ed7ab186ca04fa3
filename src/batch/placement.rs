//! Which CPU each client of a batch runs on.
//!
//! A client and the pool thread supervising it wake each other many times
//! per URL (every notification; every TLS flight, too, when the
//! supervisor relays: `--recorder relay`). On the 2-vCPU
//! virtual machines measured here a wake-up across CPUs costs about 20
//! times one on the same CPU (`perf bench sched pipe`: 128 µs against
//! 6.7 µs per round trip), and the scheduler, seeing an idle CPU, kept
//! spreading the pair over both. So while fewer jobs run than there are
//! CPUs, each job, the client and its thread, is kept on one CPU of its
//! own. Once every CPU has a job, the scheduler keeps pairs together by
//! itself, and pinning only took away its freedom to balance them against
//! everything else (nginx, in the benchmark): measured a little slower at
//! 4 to 16 clients, so jobs are then left alone (docs/benchmarks.md).

use std::sync::{Arc, Mutex};

use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The CPUs the batch may use and what each is doing.
pub struct Placement {
    /// Per CPU: its number, the jobs placed on it, and the jobs that left it
    /// when their client ended and are still finishing (reading output,
    /// writing the transcript) on the thread that was there. Empty: no
    /// placing (one CPU, or the affinity mask could not be read).
    cpus: Mutex<Vec<Cpu>>,
    /// The mask a placed thread gets back after its job.
    allowed: Option<CpuSet>,
}

struct Cpu {
    number: usize,
    jobs: usize,
    finishing: usize,
}

/// A job's place; frees it when dropped, which must happen on the thread
/// that was placed (its affinity is given back there).
pub struct Placed {
    placement: Arc<Placement>,
    slot: usize,
    /// Already accounted as finishing ([`Placed::leave`]).
    left: bool,
}

/// A job that has left its CPU ([`Placed::leave`]) but not yet ended.
pub struct Finishing {
    placement: Arc<Placement>,
    slot: usize,
}

impl Placement {
    /// The CPUs this process may run on, as its affinity mask says now.
    pub fn new() -> Placement {
        let allowed = sched_getaffinity(Pid::from_raw(0)).ok();
        let cpus: Vec<Cpu> = allowed
            .map(|set| {
                (0..CpuSet::count())
                    .filter(|&c| set.is_set(c).unwrap_or(false))
                    .map(|number| Cpu {
                        number,
                        jobs: 0,
                        finishing: 0,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Placement {
            cpus: Mutex::new(if cpus.len() > 1 { cpus } else { Vec::new() }),
            allowed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Cpu>> {
        self.cpus.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// While some CPU runs no job, keeps the calling thread, and so every
    /// process it starts, on such a CPU until the returned guard is
    /// dropped or leaves. A CPU where no job is finishing either comes
    /// first (at -j 1 the next client then runs beside the last one's
    /// finishing work, not on top of it), then this thread's own. `None`
    /// if nothing was placed: the job runs wherever the scheduler puts it.
    pub fn place(self: &Arc<Self>) -> Option<Placed> {
        let here = sched_getcpu().ok();
        let mut cpus = self.lock();
        let slot = (0..cpus.len())
            .filter(|&i| cpus[i].jobs == 0)
            .min_by_key(|&i| (cpus[i].finishing, Some(cpus[i].number) != here))?;
        let mut one = CpuSet::new();
        one.set(cpus[slot].number).ok()?;
        // A CPU taken away since (hotplug, a cpuset change) refuses: the
        // job then runs wherever the scheduler puts it.
        sched_setaffinity(Pid::from_raw(0), &one).ok()?;
        cpus[slot].jobs += 1;
        Some(Placed {
            placement: Arc::clone(self),
            slot,
            left: false,
        })
    }

    /// Gives the calling thread back the whole mask.
    fn unpin(&self) {
        if let Some(all) = &self.allowed {
            let _ = sched_setaffinity(Pid::from_raw(0), all);
        }
    }
}

impl Placed {
    /// Frees the CPU for the next job while this one finishes there. The
    /// thread stays on it until the job ends: let go at once, the
    /// scheduler moved it next to the new client it was making room for,
    /// and -j 1 got slower.
    pub fn leave(mut self) -> Finishing {
        let mut cpus = self.placement.lock();
        cpus[self.slot].jobs -= 1;
        cpus[self.slot].finishing += 1;
        drop(cpus);
        self.left = true;
        Finishing {
            placement: Arc::clone(&self.placement),
            slot: self.slot,
        }
    }
}

impl Drop for Placed {
    /// Runs on the placed thread: it may run anywhere again.
    fn drop(&mut self) {
        if self.left {
            return;
        }
        self.placement.unpin();
        self.placement.lock()[self.slot].jobs -= 1;
    }
}

impl Drop for Finishing {
    /// Runs on the placed thread: it may run anywhere again.
    fn drop(&mut self) {
        self.placement.unpin();
        self.placement.lock()[self.slot].finishing -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` with a fresh placement and its CPU count on a thread of its
    /// own (placing changes the calling thread's affinity); skipped with
    /// fewer than 2 CPUs.
    fn on_a_thread_of_its_own(f: impl FnOnce(&Arc<Placement>, usize) + Send) {
        let p = Arc::new(Placement::new());
        let n = p.lock().len();
        if n < 2 {
            eprintln!("skipped: fewer than 2 CPUs allowed");
            return;
        }
        std::thread::scope(|s| {
            s.spawn(|| f(&p, n));
        });
    }

    /// How many CPUs the calling thread may run on.
    fn allowed_now() -> usize {
        let mask = sched_getaffinity(Pid::from_raw(0)).unwrap();
        (0..CpuSet::count())
            .filter(|&c| mask.is_set(c).unwrap())
            .count()
    }

    /// A job that left its CPU frees it for the next, but a CPU where no
    /// job is finishing is taken first; the job's thread stays on its CPU
    /// until it has finished.
    #[test]
    fn a_left_cpu_is_taken_last() {
        on_a_thread_of_its_own(|p, n| {
            let cpu_of = |j: &Placed| p.lock()[j.slot].number;
            let first = p.place().expect("a free CPU");
            let left = cpu_of(&first);
            let finishing = first.leave();
            assert_eq!(sched_getcpu().unwrap(), left, "a job finishes where it ran");
            let mut placed = Vec::new();
            for _ in 0..n - 1 {
                let j = p.place().expect("a free CPU");
                assert_ne!(
                    cpu_of(&j),
                    left,
                    "a CPU with a job finishing was taken first"
                );
                placed.push(j);
            }
            let last = p.place().expect("the CPU that was left");
            assert_eq!(cpu_of(&last), left);
            assert!(p.place().is_none(), "every CPU has a job");
            drop(last);
            drop(placed);
            drop(finishing);
            assert!(p.lock().iter().all(|c| c.jobs == 0 && c.finishing == 0));
            assert_eq!(allowed_now(), n, "unpinned once finished");
        });
    }

    /// One job per CPU, each running where it was placed; with every CPU
    /// taken, nothing more is placed; a finished job frees its CPU and its
    /// thread's affinity.
    #[test]
    fn one_job_per_cpu_while_some_are_free() {
        on_a_thread_of_its_own(|p, n| {
            let cpu_of = |j: &Placed| p.lock()[j.slot].number;
            let mut placed: Vec<Placed> = Vec::new();
            for _ in 0..n {
                let j = p.place().expect("a free CPU");
                assert_eq!(sched_getcpu().unwrap(), cpu_of(&j), "runs where placed");
                placed.push(j);
            }
            let mut used: Vec<usize> = placed.iter().map(cpu_of).collect();
            used.sort_unstable();
            used.dedup();
            assert_eq!(used.len(), n, "one job per CPU");
            assert!(p.place().is_none(), "every CPU has a job");
            let last = placed.pop().unwrap();
            let freed = cpu_of(&last);
            drop(last);
            let again = p.place().expect("the freed CPU");
            assert_eq!(cpu_of(&again), freed);
            drop(again);
            drop(placed);
            assert!(p.lock().iter().all(|c| c.jobs == 0));
            assert_eq!(allowed_now(), n, "unpinned once the jobs ended");
        });
    }
}
