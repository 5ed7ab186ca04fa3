//! JSON Lines out of many concurrent tasks: the manifest and the verify
//! report. One thread owns the file and commits lines in groups: it writes
//! every line waiting, syncs once (for the manifest), then tells each task
//! its line is on disk. A batch of 64 concurrent signs pays one sync per
//! group, not one per URL.
//!
//! The manifest's sync is a `syncfs` of its file system, not an `fdatasync`
//! of the manifest alone: it makes durable, in the same stroke, every
//! transcript the group's tasks wrote into DIR before sending their lines.
//! One file-system sync per group cost a quarter of one `fsync` per
//! transcript plus one per group (docs/benchmarks.md).

use std::io::{self, Write};
use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;

type Waiter = oneshot::Sender<io::Result<()>>;

/// The writing end; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: std_mpsc::SyncSender<(Vec<u8>, Waiter)>,
}

/// Joins the writer thread; see [`Writer::spawn`].
pub struct Handle(std::thread::JoinHandle<io::Result<()>>);

impl Writer {
    /// Starts the thread that owns `out`. With `durable` (a file on the file
    /// system `out` writes to), a line counts as written only once that whole
    /// file system is synced: the line, and all that was written to it
    /// before the line was sent.
    pub fn spawn(
        out: Box<dyn Write + Send>,
        durable: Option<std::fs::File>,
    ) -> io::Result<(Writer, Handle)> {
        // Bounded: a stalled disk holds back the tasks, not memory.
        let (tx, rx) = std_mpsc::sync_channel::<(Vec<u8>, Waiter)>(256);
        let thread = std::thread::Builder::new()
            .name("batch-jsonl".into())
            .spawn(move || commit_loop(out, durable, rx))?;
        Ok((Writer { tx }, Handle(thread)))
    }

    /// Appends one record as a line; returns once it is written (and, for a
    /// durable writer, synced).
    pub async fn append(&self, record: &impl serde::Serialize) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let (done, wait) = oneshot::channel();
        let stopped = || io::Error::other("the writer thread has stopped");
        match self.tx.try_send((line, done)) {
            Ok(()) => {}
            Err(std_mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
            Err(std_mpsc::TrySendError::Full(item)) => {
                // The channel is bounded: sending would wait, which it may
                // not do on a runtime thread.
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(item))
                    .await
                    .map_err(io::Error::other)?
                    .map_err(|_| stopped())?;
            }
        }
        wait.await.map_err(|_| stopped())?
    }
}

impl Handle {
    /// Waits for every line sent to be written; the writers must be gone.
    pub fn finish(self) -> io::Result<()> {
        self.0
            .join()
            .map_err(|_| io::Error::other("the writer thread panicked"))?
    }
}

fn commit_loop(
    mut out: Box<dyn Write + Send>,
    durable: Option<std::fs::File>,
    rx: std_mpsc::Receiver<(Vec<u8>, Waiter)>,
) -> io::Result<()> {
    let mut group: Vec<Waiter> = Vec::new();
    let mut buf = Vec::new();
    // The first error sticks: later lines are refused too, so no line lands
    // after a gap.
    let mut failed: Option<(io::ErrorKind, String)> = None;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some((line, waiter)) = next {
            buf.extend_from_slice(&line);
            group.push(waiter);
            next = rx.try_recv().ok();
        }
        let r = match &failed {
            Some((k, m)) => Err(io::Error::new(*k, m.clone())),
            None => out
                .write_all(&buf)
                .and_then(|()| out.flush())
                .and_then(|()| durable.as_ref().map_or(Ok(()), sync_fs)),
        };
        if let Err(e) = &r {
            failed.get_or_insert((e.kind(), e.to_string()));
        }
        buf.clear();
        for w in group.drain(..) {
            let _ = w.send(match &r {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
    match failed {
        Some((k, m)) => Err(io::Error::new(k, m)),
        None => Ok(()),
    }
}

fn sync_fs(on: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // Since Linux 5.8 syncfs also reports writeback errors met since the
    // file was opened, so a failed transcript write-back is not lost.
    nix::unistd::syncfs(on.as_raw_fd()).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lines_are_whole_and_all_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let f = std::fs::File::create(&path).unwrap();
        let (w, h) = Writer::spawn(Box::new(f.try_clone().unwrap()), Some(f)).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                w.append(&serde_json::json!({ "i": i, "pad": "x".repeat(i as usize * 10) }))
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        drop(w);
        h.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut seen: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["i"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
    }

    /// A full disk: the task hears of it, and no later line lands after the
    /// gap.
    #[tokio::test]
    async fn a_write_error_reaches_the_task_and_sticks() {
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let (w, h) = Writer::spawn(Box::new(full), None).unwrap();
        assert!(w.append(&1).await.is_err());
        assert!(w.append(&2).await.is_err());
        drop(w);
        assert!(h.finish().is_err());
    }
}
