//! What every batch shares, signing or verifying: one switch that stops
//! it, worked by SIGINT and SIGTERM or by the batch's own fatal error (the
//! first error wins); the counts and their display; and the end: say that
//! the batch was interrupted, let what runs finish, and tell an interrupt
//! from a fatal stop.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::progress::{self, Counts, Progress};
use super::Summary;
use crate::session::{self, Cancel, CancelSwitch};
use crate::Error;

/// How often lines mode looks whether a line is due, so that a batch whose
/// clients all hang still says so.
const TICK: Duration = Duration::from_secs(1);

/// The state every batch has; one per batch, shared by its tasks.
pub struct Driver {
    /// Trips the batch's stop.
    pub switch: CancelSwitch,
    /// Tells tasks the batch is stopping.
    pub cancel: Cancel,
    pub counts: Arc<Counts>,
    pub progress: Arc<Progress>,
    /// Why the batch stopped on its own (the supervisor cannot run, the
    /// manifest or report cannot be written); the first reason wins.
    fatal: Mutex<Option<Error>>,
    /// SIGINT and SIGTERM trip `switch`; lines mode's clock.
    background: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Driver {
    /// Starts the batch's signal handling and display; inside the batch's
    /// runtime. `verb` ("signed", "verified") and `total` (the input's
    /// entries, if known) are for the display.
    pub fn start(
        mode: progress::Mode,
        verb: &'static str,
        total: Option<u64>,
    ) -> Result<Driver, Error> {
        let (switch, cancel) = CancelSwitch::new();
        let mut background = vec![session::on_signal(switch.clone())?];
        let counts = Arc::new(Counts::default());
        let progress = Arc::new(Progress::new(mode, verb, total, Arc::clone(&counts)));
        if progress.prints_lines() {
            // Lines are otherwise printed only when an entry ends: a batch
            // whose every client hangs would print nothing until the
            // timeout.
            let progress = Arc::clone(&progress);
            background.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(TICK).await;
                    progress.update();
                }
            }));
        }
        Ok(Driver {
            switch,
            cancel,
            counts,
            progress,
            fatal: Mutex::new(None),
            background,
            started: Instant::now(),
        })
    }

    /// Stops the batch for a reason of its own; the first reason wins.
    pub fn stop(&self, e: Error) {
        self.fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
        self.switch.trip();
    }

    /// Stopped, by a signal rather than by an error of its own.
    fn stopped_by_signal(&self) -> bool {
        self.cancel.is_cancelled()
            && self
                .fatal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none()
    }

    /// The next input item; None once the input ends or the batch stops.
    pub async fn next<T>(&self, input: &mut mpsc::Receiver<T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            item = input.recv() => item,
        }
    }

    /// A permit of `limit`; None if the batch stops first.
    pub async fn acquire(&self, limit: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            p = Arc::clone(limit).acquire_owned() => Some(p.expect("never closed")),
        }
    }

    /// Once no more entries are taken: says so if a signal stopped the
    /// batch (`running`: what the running entries are, "client(s)"), waits
    /// for every task, and returns whether a signal stopped the batch.
    pub async fn wind_down(&self, mut tasks: JoinSet<()>, running: &str) -> bool {
        if self.stopped_by_signal() {
            self.progress.note(&format!(
                "interrupted: stopping {} running {running}",
                Counts::get(&self.counts.running)
            ));
        }
        while tasks.join_next().await.is_some() {}
        // Asked again: a stop may come while the last tasks run, after the
        // input has ended.
        self.stopped_by_signal()
    }

    /// Ends signal handling and the display; the batch's fatal error if it
    /// had one, else its summary.
    pub fn finish(self, interrupted: bool) -> Result<Summary, Error> {
        for task in &self.background {
            task.abort();
        }
        self.progress.finish();
        if let Some(e) = self.fatal.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let c = &self.counts;
        Ok(Summary {
            ok: Counts::get(&c.ok),
            http_error: Counts::get(&c.http_error),
            failed: Counts::get(&c.failed),
            skipped: Counts::get(&c.skipped),
            other_shard: Counts::get(&c.other_shard),
            interrupted,
            elapsed: self.started.elapsed(),
            peak_memory: super::peak_memory(),
        })
    }
}
