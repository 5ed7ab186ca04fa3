//! Which CPU each client of a batch runs on.
//!
//! A client and the pool thread supervising it wake each other dozens of
//! times per URL (every notification, every relayed flight). On the 2-vCPU
//! virtual machines measured here a wake-up across CPUs costs about 20
//! times one on the same CPU (`perf bench sched pipe`: 128 µs against
//! 6.7 µs per round trip), and the scheduler, seeing an idle CPU, kept
//! spreading the pair over both. So while fewer jobs run than there are
//! CPUs, each job, the client and its thread, is kept on one CPU of its
//! own. Once every CPU has a job, the scheduler keeps pairs together by
//! itself, and pinning only took away its freedom to balance them against
//! everything else (nginx, in the benchmark): measured a little slower at
//! 4 to 16 clients, so jobs are then left alone (docs/benchmarks.md).

use std::sync::Mutex;

use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The CPUs the batch may use and how many jobs each is running.
pub struct Placement {
    /// (CPU number, jobs placed on it); empty: no placing (one CPU, or the
    /// affinity mask could not be read).
    cpus: Mutex<Vec<(usize, usize)>>,
    /// The mask a placed thread gets back after its job.
    allowed: Option<CpuSet>,
}

/// A job's place; frees it when dropped.
pub struct Placed<'a> {
    placement: &'a Placement,
    slot: usize,
}

impl Placement {
    /// The CPUs this process may run on, as its affinity mask says now.
    pub fn new() -> Placement {
        let allowed = sched_getaffinity(Pid::from_raw(0)).ok();
        let cpus: Vec<(usize, usize)> = allowed
            .map(|set| {
                (0..CpuSet::count())
                    .filter(|&c| set.is_set(c).unwrap_or(false))
                    .map(|c| (c, 0))
                    .collect()
            })
            .unwrap_or_default();
        Placement {
            cpus: Mutex::new(if cpus.len() > 1 { cpus } else { Vec::new() }),
            allowed,
        }
    }

    /// While some CPU runs no job, keeps the calling thread, and so every
    /// process it starts, on such a CPU (this thread's own if it is one)
    /// until the returned guard is dropped. `None` if nothing was placed:
    /// the job runs wherever the scheduler puts it.
    pub fn place(&self) -> Option<Placed<'_>> {
        let here = sched_getcpu().ok();
        let mut cpus = self.cpus.lock().unwrap_or_else(|p| p.into_inner());
        let slot = cpus
            .iter()
            .position(|&(c, n)| n == 0 && Some(c) == here)
            .or_else(|| cpus.iter().position(|&(_, n)| n == 0))?;
        let mut one = CpuSet::new();
        one.set(cpus[slot].0).ok()?;
        // A CPU taken away since (hotplug, a cpuset change) refuses: the
        // job then runs wherever the scheduler puts it.
        sched_setaffinity(Pid::from_raw(0), &one).ok()?;
        cpus[slot].1 += 1;
        Some(Placed {
            placement: self,
            slot,
        })
    }
}

impl Drop for Placed<'_> {
    /// Runs on the placed thread: it may run anywhere again.
    fn drop(&mut self) {
        if let Some(all) = &self.placement.allowed {
            let _ = sched_setaffinity(Pid::from_raw(0), all);
        }
        let mut cpus = self
            .placement
            .cpus
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cpus[self.slot].1 -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One job per CPU, each running where it was placed; with every CPU
    /// taken, nothing more is placed; a finished job frees its CPU and its
    /// thread's affinity.
    #[test]
    fn one_job_per_cpu_while_some_are_free() {
        let p = Placement::new();
        let n = p.cpus.lock().unwrap().len();
        if n < 2 {
            eprintln!("skipped: fewer than 2 CPUs allowed");
            return;
        }
        let cpu_of = |j: &Placed| p.cpus.lock().unwrap()[j.slot].0;
        std::thread::scope(|s| {
            s.spawn(|| {
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
                assert!(p.cpus.lock().unwrap().iter().all(|&(_, k)| k == 0));
                let mask = sched_getaffinity(Pid::from_raw(0)).unwrap();
                assert_eq!(
                    (0..CpuSet::count())
                        .filter(|&c| mask.is_set(c).unwrap())
                        .count(),
                    n
                );
            });
        });
    }
}
