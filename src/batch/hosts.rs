//! At most K signs per host at once (`--per-host`). One semaphore per host
//! that has a sign running or waiting; a host's entry goes when its last
//! sign does, so the map is bounded by the batch's queue, not its input.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Host -> (its semaphore, signs holding or waiting for a permit).
type Map = Arc<Mutex<HashMap<String, (Arc<Semaphore>, usize)>>>;

/// The per-host limits of one batch.
pub struct Hosts {
    limit: usize,
    map: Map,
}

/// A sign's right to talk to its host; gives it back when dropped.
pub struct HostPermit {
    host: String,
    _permit: Option<OwnedSemaphorePermit>,
    map: Map,
}

impl Hosts {
    /// `limit` signs at once per host; 0 for no limit.
    pub fn new(limit: usize) -> Hosts {
        Hosts {
            limit,
            map: Arc::default(),
        }
    }

    /// Waits for a turn at `host` (compared case-insensitively).
    pub async fn acquire(&self, host: &str) -> HostPermit {
        let host = host.to_ascii_lowercase();
        let sem = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let e = map
                .entry(host.clone())
                .or_insert_with(|| (Arc::new(Semaphore::new(self.limit.max(1))), 0));
            e.1 += 1;
            Arc::clone(&e.0)
        };
        // Registered before waiting: the guard below unregisters even if
        // this future is dropped (a Ctrl-C) while it waits.
        let mut permit = HostPermit {
            host,
            _permit: None,
            map: Arc::clone(&self.map),
        };
        if self.limit > 0 {
            // Never closed, so acquiring cannot fail.
            permit._permit = sem.acquire_owned().await.ok();
        }
        permit
    }

    /// Hosts with a sign running or waiting (for tests of boundedness).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&self.host) {
            e.1 -= 1;
            if e.1 == 0 {
                map.remove(&self.host);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_k_per_host_and_other_hosts_are_not_held_up() {
        let hosts = Arc::new(Hosts::new(2));
        let now = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let peak = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (hosts, now, peak) = (Arc::clone(&hosts), Arc::clone(&now), Arc::clone(&peak));
            tasks.push(tokio::spawn(async move {
                let h = i % 2;
                let _p = hosts
                    .acquire(if h == 0 { "A.test" } else { "b.test" })
                    .await;
                let n = now[h].fetch_add(1, Ordering::SeqCst) + 1;
                peak[h].fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                now[h].fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak[0].load(Ordering::SeqCst), 2);
        assert_eq!(peak[1].load(Ordering::SeqCst), 2);
        assert_eq!(hosts.tracked(), 0, "finished hosts are forgotten");
    }

    #[tokio::test]
    async fn a_waiter_dropped_while_waiting_is_forgotten() {
        let hosts = Hosts::new(1);
        let held = hosts.acquire("a.test").await;
        let waiting = hosts.acquire("a.test");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), waiting)
                .await
                .is_err()
        );
        drop(held);
        assert_eq!(hosts.tracked(), 0);
    }
}
