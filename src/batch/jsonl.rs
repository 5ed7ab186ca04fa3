//! JSON Lines out of many concurrent tasks: the manifest and the verify
//! report, committed in groups by a thread of their own.
//!
//! A task hands its line over and is told once it is written (for the
//! manifest: written and synced); it does not wait on the disk itself, so
//! a pool thread that has just written a transcript can start the next
//! client at once. The committing thread waits until a group has formed
//! ([`Grouping`]: as many lines as there are clients, or the first line's
//! linger time up, or no line on its way: see [`Coming`]), writes it,
//! syncs once, and then runs what each line asked to have done after it
//! (the rename of its transcript into place).
//!
//! The manifest's sync is a `syncfs` of its file system, not an `fdatasync`
//! of the manifest alone: it makes durable, in the same stroke, every
//! transcript the group's tasks wrote into DIR before handing over their
//! lines, where an `fsync` per transcript cost about 0.4 ms more CPU per
//! URL (docs/batch.md). Groups matter as much: a `syncfs` per URL wrote
//! the same inode-table, bitmap and directory blocks again for every
//! transcript (docs/batch.md has the counts).

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// When the committing thread writes the lines waiting.
#[derive(Clone, Copy, Debug)]
pub struct Grouping {
    /// Commit once this many lines wait...
    pub lines: usize,
    /// ...or once the first of them has waited this long.
    pub linger: Duration,
}

impl Grouping {
    /// Every line as soon as the committing thread is free.
    pub const EACH: Grouping = Grouping {
        lines: 1,
        linger: Duration::ZERO,
    };
}

/// Run by the committing thread once a line's commit is over, with whether
/// it succeeded; never while the lock is held.
pub type After = Box<dyn FnOnce(bool) + Send>;

/// The writing end; cheap to clone.
#[derive(Clone)]
pub struct Writer(Arc<Shared>);

/// Stops the committing thread and reports how the writing went.
pub struct Handle {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Rings when a line arrives to an empty queue, when a group is full,
    /// and when the writer closes.
    arrived: Condvar,
    grouping: Grouping,
}

struct State {
    waiting: Vec<Pending>,
    /// Lines announced ([`Writer::coming`]) and not yet handed over.
    coming: usize,
    /// When the oldest waiting line arrived.
    since: Option<Instant>,
    closed: bool,
    /// The first error sticks: later lines are refused too, so no line
    /// lands after a gap.
    failed: Option<(io::ErrorKind, String)>,
}

struct Pending {
    line: Vec<u8>,
    after: Option<After>,
    done: oneshot::Sender<io::Result<()>>,
}

impl Writer {
    /// Writes to `out` from a thread of its own. With `durable` (a file on
    /// the file system `out` writes to), a line counts as written only
    /// once that whole file system is synced: the line, and all that was
    /// written to it before the line was handed over.
    pub fn new(
        out: Box<dyn Write + Send>,
        durable: Option<std::fs::File>,
        grouping: Grouping,
    ) -> io::Result<(Writer, Handle)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                waiting: Vec::new(),
                coming: 0,
                since: None,
                closed: false,
                failed: None,
            }),
            arrived: Condvar::new(),
            grouping: Grouping {
                lines: grouping.lines.max(1),
                ..grouping
            },
        });
        let committer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("batch-commit".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| committer.run(out, durable));
                if std::panic::catch_unwind(run).is_err() {
                    committer.refuse_all();
                }
            })?;
        Ok((
            Writer(Arc::clone(&shared)),
            Handle {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Announces a line that is on its way: while none is announced, a
    /// group waiting to fill is committed at once, as nothing more can
    /// join it. The last URLs of a batch then do not wait out the linger
    /// time (20 ms for the manifest, added to every batch's run).
    pub fn coming(&self) -> Coming {
        self.0.lock().coming += 1;
        Coming(Arc::clone(&self.0))
    }

    /// Appends one record as a line; resolves once it is written (and, for
    /// a durable writer, synced).
    pub async fn append(&self, record: &impl serde::Serialize) -> io::Result<()> {
        outcome(self.hand(record)).await
    }

    /// Hands one record over without waiting; the receiver tells how its
    /// commit went ([`outcome`]).
    pub fn hand(&self, record: &impl serde::Serialize) -> oneshot::Receiver<io::Result<()>> {
        self.submit(as_line(record), None)
    }

    /// Hands one record over without waiting; `after` runs on the
    /// committing thread once the line's commit is over (see [`After`]).
    /// The receiver tells how the commit went ([`outcome`]).
    pub fn append_then(
        &self,
        record: &impl serde::Serialize,
        after: After,
    ) -> oneshot::Receiver<io::Result<()>> {
        self.submit(as_line(record), Some(after))
    }

    fn submit(
        &self,
        line: io::Result<Vec<u8>>,
        after: Option<After>,
    ) -> oneshot::Receiver<io::Result<()>> {
        let (done, rx) = oneshot::channel();
        let refused = Pending {
            line: Vec::new(),
            after,
            done,
        };
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                refused.answer(Err(e));
                return rx;
            }
        };
        let mut st = self.0.lock();
        if let Some(e) = st.error().or_else(|| st.closed.then(closed)) {
            drop(st);
            refused.answer(Err(e));
            return rx;
        }
        st.waiting.push(Pending { line, ..refused });
        let n = st.waiting.len();
        if n == 1 {
            st.since = Some(Instant::now());
        }
        // The committing thread sleeps on an empty queue, or until a group
        // is full: no other arrival needs to wake it.
        if n == 1 || n == self.0.grouping.lines {
            self.0.arrived.notify_one();
        }
        rx
    }
}

/// A line on its way ([`Writer::coming`]); dropping it says the line was
/// handed over, or will not come.
pub struct Coming(Arc<Shared>);

impl Drop for Coming {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.coming -= 1;
        if st.coming == 0 && !st.waiting.is_empty() {
            drop(st);
            self.0.arrived.notify_one();
        }
    }
}

/// How the commit of a line handed over with [`Writer::append_then`] went.
pub async fn outcome(rx: oneshot::Receiver<io::Result<()>>) -> io::Result<()> {
    rx.await.unwrap_or_else(|_| Err(closed()))
}

impl Pending {
    /// Runs the line's `after` with whether it was written, then tells its
    /// caller.
    fn answer(self, r: io::Result<()>) {
        if let Some(a) = self.after {
            a(r.is_ok());
        }
        let _ = self.done.send(r);
    }
}

impl Handle {
    /// Commits what is still waiting, stops the committing thread, and
    /// returns the first error any line met.
    pub fn finish(mut self) -> io::Result<()> {
        self.stop();
        self.shared.lock().error().map_or(Ok(()), Err)
    }

    fn stop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.arrived.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a panic of the committing thread (a bug): every line waiting,
    /// and every later one, is refused, so no task waits for ever.
    fn refuse_all(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.failed
            .get_or_insert((io::ErrorKind::Other, "the manifest writer failed".into()));
        let waiting = std::mem::take(&mut st.waiting);
        drop(st);
        for p in waiting {
            p.answer(Err(closed()));
        }
    }

    /// The committing thread: one group at a time until closed and empty.
    fn run(&self, mut out: Box<dyn Write + Send>, durable: Option<std::fs::File>) {
        loop {
            let mut st = self.lock();
            while st.waiting.is_empty() && !st.closed {
                st = self.arrived.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.waiting.is_empty() {
                return;
            }
            let deadline = st.since.unwrap_or_else(Instant::now) + self.grouping.linger;
            while st.waiting.len() < self.grouping.lines && !st.closed && st.coming > 0 {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = self
                    .arrived
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let group = std::mem::take(&mut st.waiting);
            st.since = None;
            let failed_before = st.error();
            drop(st);
            let r = match failed_before {
                Some(e) => Err(e),
                None => commit(&mut out, durable.as_ref(), &group),
            };
            if let Err(e) = &r {
                self.lock()
                    .failed
                    .get_or_insert_with(|| (e.kind(), e.to_string()));
            }
            for p in group {
                let copy = r
                    .as_ref()
                    .map_err(|e| io::Error::new(e.kind(), e.to_string()));
                p.answer(copy.copied());
            }
        }
    }
}

/// Writes `group`'s lines in one go and syncs once.
fn commit(
    out: &mut Box<dyn Write + Send>,
    durable: Option<&std::fs::File>,
    group: &[Pending],
) -> io::Result<()> {
    let mut all = Vec::with_capacity(group.iter().map(|p| p.line.len()).sum());
    for p in group {
        all.extend_from_slice(&p.line);
    }
    out.write_all(&all)?;
    out.flush()?;
    durable.map_or(Ok(()), sync_fs)
}

fn closed() -> io::Error {
    io::Error::other("the writer stopped before the line was written")
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
        let grouping = Grouping {
            lines: 16,
            linger: Duration::from_millis(5),
        };
        let (w, h) = Writer::new(Box::new(f.try_clone().unwrap()), Some(f), grouping).unwrap();
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

    /// Counts the writes it gets; each can be made to take a while.
    #[derive(Clone, Default)]
    struct Recording(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Recording {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let mut g = self.0.lock().unwrap();
            g.0.extend_from_slice(b);
            g.1 += 1;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer into a [`Recording`] that groups `lines` lines or waits
    /// `linger`.
    fn grouped(lines: usize, linger: Duration) -> (Recording, Writer, Handle) {
        let out = Recording::default();
        let (w, h) = Writer::new(Box::new(out.clone()), None, Grouping { lines, linger }).unwrap();
        (out, w, h)
    }

    /// A full group is written at once, in one write, without waiting for
    /// the linger time; a group that does not fill while more lines are
    /// announced is written when the first line's linger time is up;
    /// `after` runs once the line is written, before its caller hears.
    #[test]
    fn lines_go_in_groups_and_after_runs_once_written() {
        let (out, w, h) = grouped(8, Duration::from_millis(300));
        let start = Instant::now();
        let afters = Arc::new(Mutex::new(Vec::new()));
        let submit = |i: u32| {
            let (afters, out) = (Arc::clone(&afters), out.clone());
            w.append_then(
                &serde_json::json!({ "i": i }),
                Box::new(move |ok| {
                    let written =
                        numbers(&String::from_utf8(out.0.lock().unwrap().0.clone()).unwrap());
                    afters
                        .lock()
                        .unwrap()
                        .push((i, ok, written.contains(&u64::from(i))));
                }),
            )
        };
        // Announced first, as a batch does: otherwise the first line, with
        // nothing else on its way, is written alone at once.
        let announced: Vec<_> = (0..8).map(|_| w.coming()).collect();
        let full: Vec<_> = (0..8).map(submit).collect();
        drop(announced);
        for rx in full {
            rx.blocking_recv().unwrap().unwrap();
        }
        let full_took = start.elapsed();
        assert!(
            full_took < Duration::from_millis(250),
            "a full group waited {full_took:?}"
        );
        assert_eq!(out.0.lock().unwrap().1, 1, "8 lines, one write");
        let start = Instant::now();
        let more = w.coming();
        let partial: Vec<_> = (8..11).map(submit).collect();
        for rx in partial {
            rx.blocking_recv().unwrap().unwrap();
        }
        let waited = start.elapsed();
        drop(more);
        assert!(
            waited >= Duration::from_millis(290),
            "3 of 8 lines written after {waited:?}"
        );
        drop(w);
        h.finish().unwrap();
        let (text, writes) = out.0.lock().unwrap().clone();
        assert_eq!(
            numbers(&String::from_utf8(text).unwrap()),
            (0..11).collect::<Vec<_>>()
        );
        assert_eq!(writes, 2);
        let afters = afters.lock().unwrap().clone();
        assert_eq!(afters.len(), 11);
        assert!(
            afters.iter().all(|&(_, ok, written)| ok && written),
            "{afters:?}"
        );
    }

    /// A group waits to fill only while some line is announced: when the
    /// last announced line arrives, or an announcement is withdrawn, what
    /// waits is written at once, not after the linger time.
    #[test]
    fn a_group_waits_only_for_lines_that_are_coming() {
        let (out, w, h) = grouped(8, Duration::from_secs(10));
        let lines = || out.0.lock().unwrap().1;
        // Nothing announced: one line is written at once.
        let start = Instant::now();
        w.append_then(&serde_json::json!({ "i": 0 }), Box::new(|_| {}))
            .blocking_recv()
            .unwrap()
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(lines(), 1);
        // Two announced: the first to arrive waits for the second.
        let (a, b) = (w.coming(), w.coming());
        let first = w.append_then(&serde_json::json!({ "i": 1 }), Box::new(|_| {}));
        drop(a);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(lines(), 1, "written while a line was still coming");
        let second = w.append_then(&serde_json::json!({ "i": 2 }), Box::new(|_| {}));
        let start = Instant::now();
        drop(b);
        first.blocking_recv().unwrap().unwrap();
        second.blocking_recv().unwrap().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "waited out the linger"
        );
        assert_eq!(lines(), 2, "the two lines in one write");
        // An announcement withdrawn without a line releases the group too.
        let c = w.coming();
        let third = w.append_then(&serde_json::json!({ "i": 3 }), Box::new(|_| {}));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(lines(), 2);
        drop(c);
        third.blocking_recv().unwrap().unwrap();
        assert_eq!(lines(), 3);
        drop(w);
        h.finish().unwrap();
        assert_eq!(
            numbers(&String::from_utf8(out.0.lock().unwrap().0.clone()).unwrap()),
            vec![0, 1, 2, 3]
        );
    }

    /// Lines that were waiting while a commit failed are not written by
    /// the next commit: each of their callers hears of the error, and each
    /// `after` is told.
    #[test]
    fn lines_waiting_behind_a_failed_commit_are_refused() {
        #[derive(Clone, Default)]
        struct FailsFirst(Arc<Mutex<(bool, Vec<u8>)>>);
        impl Write for FailsFirst {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_millis(50));
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
        let grouping = Grouping {
            lines: 4,
            linger: Duration::from_secs(10),
        };
        let (w, h) = Writer::new(Box::new(out.clone()), None, grouping).unwrap();
        let told = Arc::new(Mutex::new(Vec::new()));
        let submit = |i: u32| {
            let told = Arc::clone(&told);
            w.append_then(&i, Box::new(move |ok| told.lock().unwrap().push(ok)))
        };
        let mut rxs: Vec<_> = (0..4).map(submit).collect();
        // The first group is being written (and failing) meanwhile.
        std::thread::sleep(Duration::from_millis(10));
        rxs.extend((4..8).map(submit));
        drop(w);
        assert!(h.finish().is_err());
        let results: Vec<bool> = rxs
            .into_iter()
            .map(|rx| rx.blocking_recv().unwrap().is_ok())
            .collect();
        assert_eq!(results, [false; 8]);
        assert_eq!(*told.lock().unwrap(), [false; 8]);
        assert!(
            out.0.lock().unwrap().1.is_empty(),
            "a line landed after the gap"
        );
    }

    /// A bug that panics the committing thread (here an `after` action)
    /// fails that line and every later one; none waits for ever.
    #[test]
    fn a_panicking_committer_refuses_every_later_line() {
        let (w, h) = Writer::new(Box::new(Recording::default()), None, Grouping::EACH).unwrap();
        let first = w.append_then(&1, Box::new(|_| panic!("a bug in an after action")));
        assert!(first.blocking_recv().map_or(true, |r| r.is_err()));
        let told = Arc::new(Mutex::new(None));
        let t = Arc::clone(&told);
        let mut later = w.append_then(&2, Box::new(move |ok| *t.lock().unwrap() = Some(ok)));
        // Bounded: without the refusal, this line would wait for ever.
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            match later.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                r => break r,
            }
        };
        assert!(matches!(answer, Ok(Err(_))), "{answer:?}");
        assert_eq!(*told.lock().unwrap(), Some(false));
        drop(w);
        assert!(h.finish().is_err());
    }

    /// A full disk: the task hears of it, and no later line lands after the
    /// gap.
    #[tokio::test]
    async fn a_write_error_reaches_the_task_and_sticks() {
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let (w, h) = Writer::new(Box::new(full), None, Grouping::EACH).unwrap();
        assert!(w.append(&1).await.is_err());
        assert!(w.append(&2).await.is_err());
        drop(w);
        assert!(h.finish().is_err());
    }
}
