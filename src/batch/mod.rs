//! Many signs or verifies at once, on one tokio runtime in one process.
//!
//! The shape of a batch: a thread streams the input into a bounded channel
//! (`input`); a dispatcher turns each entry into a task, holding at most
//! a few times `jobs` of them; each task waits for its host's turn
//! (`hosts`) and then for one of `jobs` run slots, runs one supervised
//! client (the same `session` a single sign uses), and reports
//! through one JSON Lines writer (`jsonl`). Memory is bounded by `jobs`,
//! not by the input.
//!
//! Signing (`sign`) and verifying (`verify`) share `driver`: the stop
//! switch, the counts and their display, and how a batch ends.
//!
//! Ctrl-C (or SIGTERM) trips one switch: the dispatcher stops taking
//! entries, running clients are killed and forgotten (no line, no file), and
//! entries being written finish. What is on disk then agrees with the
//! manifest, and a rerun resumes.

mod driver;
mod hosts;
mod input;
mod jsonl;
mod names;
mod placement;
mod pool;
mod progress;
pub mod sign;
mod staged;
pub mod verify;

use std::time::Duration;

pub use input::Source;
pub use names::{file_name, shard_of, Shard};
pub use progress::Mode as ProgressMode;

use crate::Error;

/// The most concurrent clients a batch takes (`-j`).
pub const MAX_JOBS: usize = 1024;

/// How a batch ended. The exit status the CLI gives is
/// [`Summary::exit_code`].
#[derive(Debug)]
pub struct Summary {
    /// Signed with a 2xx final status, or verified.
    pub ok: u64,
    /// Signed, but the final status is not 2xx (sign only). The transcript
    /// is kept: it proves what the server said.
    pub http_error: u64,
    /// No transcript (sign), or it does not verify or cannot be read
    /// (verify).
    pub failed: u64,
    /// Already signed in the output directory, or listed twice.
    pub skipped: u64,
    /// Left to other shards (`--shard`).
    pub other_shard: u64,
    /// Stopped by SIGINT or SIGTERM before the input was done.
    pub interrupted: bool,
    /// Wall time of the batch.
    pub elapsed: Duration,
    /// The process's peak resident memory (VmHWM), if the kernel says.
    pub peak_memory: Option<u64>,
}

impl Summary {
    /// 130 if interrupted; else `failure_code` if anything failed; else 0.
    pub fn exit_code(&self, failure_code: i32) -> i32 {
        if self.interrupted {
            crate::exit::INTERRUPTED
        } else if self.failed + self.http_error > 0 {
            failure_code
        } else {
            crate::exit::OK
        }
    }

    /// Results per second.
    pub fn rate(&self) -> f64 {
        (self.ok + self.http_error + self.failed) as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }

    /// ", peak memory 38 MiB" or nothing.
    pub fn memory_note(&self) -> String {
        self.peak_memory
            .map(|b| format!(", peak memory {} MiB", b.div_ceil(1 << 20)))
            .unwrap_or_default()
    }
}

/// Checks `-j`.
pub fn check_jobs(jobs: usize) -> Result<usize, Error> {
    if jobs == 0 || jobs > MAX_JOBS {
        return Err(Error::Usage(format!(
            "--jobs must be 1 to {MAX_JOBS}, but {jobs} is not"
        )));
    }
    Ok(jobs)
}

/// Raises the limit on open files for a batch of `jobs` clients, or says
/// why it cannot run. Measured at -j 64 over a 3000-URL batch: at most 629
/// descriptors open, up to about ten per client (its listener, its
/// connection's two sockets, its output files, its thread's runtime, and
/// its transcript waiting for the group commit, `staged`). The usual soft
/// limit of 1024 let a batch start at most about -j 110.
pub fn open_files_for(jobs: usize) -> Result<(), Error> {
    let jobs = jobs as u64;
    let need = 10 * jobs + 64;
    let got = crate::sys::raise_open_files(12 * jobs + 128)
        .map_err(|e| Error::Environment(format!("cannot raise the open-files limit: {e}")))?;
    if got < need {
        return Err(Error::Usage(format!(
            "-j {jobs} needs about {need} open files, but this process may open only {got} \
             (`ulimit -Hn`): lower -j, or raise the hard limit"
        )));
    }
    Ok(())
}

/// The default `-j`: four clients per CPU. A sign mostly waits on the
/// network, so a few per CPU keep the CPUs busy on a real crawl.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get() * 4)
        .min(64)
}

/// To be called first thing by a program that is about to run a batch,
/// with its whole command line: on glibc, re-executes the program once
/// with glibc's per-thread cache of freed chunks turned off, without which
/// the batch's resident memory grew with the length of its list (see
/// docs/batch.md). Returns if that is not needed or cannot be done.
pub fn reexec_tuned(args: &[std::ffi::OsString]) {
    crate::sys::without_tcache(args);
}

/// The runtime of a batch's bookkeeping (input, per-host turns, retries,
/// the manifest): one thread is plenty, as the clients run on the threads
/// of a [`pool::Pool`], and a single thread wakes no other to hand work on.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    crate::sys::fix_mmap_threshold();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Environment(format!("cannot start the async runtime: {e}")))
}

/// VmHWM of this process, in bytes.
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Shortens a message for a manifest or report line: the reason, not a
/// client's whole stderr.
fn clip(mut s: String) -> String {
    const MAX: usize = 1000;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}
