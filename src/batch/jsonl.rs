//! JSON Lines out of many concurrent tasks: the manifest and the verify
//! report, committed in groups. Whoever appends while no commit is under
//! way commits: it writes every line waiting, syncs once (for the
//! manifest), and tells the others whose lines went with it. Those that
//! came during a commit wait and go together in the next. A batch of 64
//! concurrent signs pays one sync per group, not one per URL, and a lone
//! client pays no hand-off to another thread.
//!
//! The manifest's sync is a `syncfs` of its file system, not an `fdatasync`
//! of the manifest alone: it makes durable, in the same stroke, every
//! transcript the group's tasks wrote into DIR before sending their lines,
//! where an `fsync` per transcript cost about 0.4 ms more CPU per URL
//! (docs/batch.md).

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The writing end; cheap to clone.
#[derive(Clone)]
pub struct Writer(Arc<Shared>);

/// Reports how the writing went once every [`Writer`] is done.
pub struct Handle(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
    /// Rings when a commit ends.
    committed: Condvar,
}

struct State {
    /// The file and what syncs it, or `None` while a committer has them.
    out: Option<(Box<dyn Write + Send>, Option<std::fs::File>)>,
    /// Lines appended and not yet taken by a committer.
    waiting: Vec<u8>,
    /// Lines are numbered from 1 as appended: the last one appended, the
    /// last one a finished commit covered, and the last one known written.
    appended: u64,
    done: u64,
    written: u64,
    /// The first error sticks: later lines are refused too, so no line
    /// lands after a gap.
    failed: Option<(io::ErrorKind, String)>,
}

impl Writer {
    /// Writes to `out`. With `durable` (a file on the file system `out`
    /// writes to), a line counts as written only once that whole file
    /// system is synced: the line, and all that was written to it before
    /// the line was appended.
    pub fn new(out: Box<dyn Write + Send>, durable: Option<std::fs::File>) -> (Writer, Handle) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                out: Some((out, durable)),
                waiting: Vec::new(),
                appended: 0,
                done: 0,
                written: 0,
                failed: None,
            }),
            committed: Condvar::new(),
        });
        (Writer(Arc::clone(&shared)), Handle(shared))
    }

    /// Appends one record as a line; returns once it is written (and, for a
    /// durable writer, synced). Blocks: for threads that may wait on disk.
    pub fn append_now(&self, record: &impl serde::Serialize) -> io::Result<()> {
        self.0.append_line(&as_line(record)?)
    }

    /// [`Writer::append_now`] from async code, on a blocking thread.
    pub async fn append(&self, record: &impl serde::Serialize) -> io::Result<()> {
        let line = as_line(record)?;
        let shared = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || shared.append_line(&line))
            .await
            .map_err(io::Error::other)?
    }
}

impl Handle {
    /// The first error any line met, once the writers are done.
    pub fn finish(self) -> io::Result<()> {
        self.0.lock().error().map_or(Ok(()), Err)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append_line(&self, line: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        if let Some(e) = st.error() {
            return Err(e);
        }
        st.waiting.extend_from_slice(line);
        st.appended += 1;
        let mine = st.appended;
        while st.done < mine {
            let Some((mut out, durable)) = st.out.take() else {
                st = self.committed.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            // This thread commits everything waiting, its own line with it.
            // Lines that were waiting when an earlier commit failed are not
            // written: none may land after the gap.
            let group = std::mem::take(&mut st.waiting);
            let last = st.appended;
            let failed_before = st.failed.is_some();
            drop(st);
            let r = if failed_before {
                Ok(())
            } else {
                out.write_all(&group)
                    .and_then(|()| out.flush())
                    .and_then(|()| durable.as_ref().map_or(Ok(()), sync_fs))
            };
            st = self.lock();
            st.out = Some((out, durable));
            match r {
                Ok(()) if !failed_before => st.written = last,
                Ok(()) => {}
                Err(e) => {
                    st.failed.get_or_insert((e.kind(), e.to_string()));
                }
            }
            st.done = last;
            self.committed.notify_all();
        }
        match st.error() {
            Some(e) if st.written < mine => Err(e),
            _ => Ok(()),
        }
    }
}

impl State {
    /// The first error met, for one more caller to hear.
    fn error(&self) -> Option<io::Error> {
        let (kind, message) = self.failed.as_ref()?;
        Some(io::Error::new(*kind, message.clone()))
    }
}

/// `record` as one JSON line, newline included.
fn as_line(record: &impl serde::Serialize) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
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

    /// The "i" of every line, sorted; panics on a line that is not whole.
    fn numbers(text: &str) -> Vec<u64> {
        let mut seen: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["i"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        seen.sort_unstable();
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lines_are_whole_and_all_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let f = std::fs::File::create(&path).unwrap();
        let (w, h) = Writer::new(Box::new(f.try_clone().unwrap()), Some(f));
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
        assert_eq!(numbers(&text), (0..200).collect::<Vec<_>>());
    }

    /// Lines appended from many threads while a slow commit is under way go
    /// together in the next: fewer writes than lines, and every line whole.
    #[test]
    fn threads_that_wait_for_a_commit_share_the_next() {
        #[derive(Clone, Default)]
        struct Slow(Arc<Mutex<(Vec<u8>, usize)>>);
        impl Write for Slow {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                std::thread::sleep(std::time::Duration::from_millis(20));
                let mut g = self.0.lock().unwrap();
                g.0.extend_from_slice(b);
                g.1 += 1;
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let out = Slow::default();
        let (w, h) = Writer::new(Box::new(out.clone()), None);
        std::thread::scope(|s| {
            for i in 0..16u32 {
                let w = w.clone();
                s.spawn(move || w.append_now(&serde_json::json!({ "i": i })).unwrap());
            }
        });
        drop(w);
        h.finish().unwrap();
        let (text, writes) = out.0.lock().unwrap().clone();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(numbers(&text), (0..16).collect::<Vec<_>>());
        assert!(writes < 16, "{writes} writes for 16 lines: no grouping");
    }

    /// Lines that were waiting while a commit failed are not written by
    /// the next committer: each of their callers hears of the error.
    #[test]
    fn lines_waiting_behind_a_failed_commit_are_refused() {
        #[derive(Clone, Default)]
        struct FailsFirst(Arc<Mutex<(bool, Vec<u8>)>>);
        impl Write for FailsFirst {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                std::thread::sleep(std::time::Duration::from_millis(20));
                let mut g = self.0.lock().unwrap();
                if !g.0 {
                    g.0 = true;
                    return Err(io::Error::other("first write fails"));
                }
                g.1.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let out = FailsFirst::default();
        let (w, h) = Writer::new(Box::new(out.clone()), None);
        let results: Vec<bool> = std::thread::scope(|s| {
            let tasks: Vec<_> = (0..8u32)
                .map(|i| {
                    let w = w.clone();
                    s.spawn(move || w.append_now(&i).is_ok())
                })
                .collect();
            tasks.into_iter().map(|t| t.join().unwrap()).collect()
        });
        drop(w);
        assert!(h.finish().is_err());
        assert_eq!(results, [false; 8]);
        assert!(
            out.0.lock().unwrap().1.is_empty(),
            "a line landed after the gap"
        );
    }

    /// A full disk: the task hears of it, and no later line lands after the
    /// gap.
    #[tokio::test]
    async fn a_write_error_reaches_the_task_and_sticks() {
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let (w, h) = Writer::new(Box::new(full), None);
        assert!(w.append(&1).await.is_err());
        assert!(w.append(&2).await.is_err());
        drop(w);
        assert!(h.finish().is_err());
    }
}
