//! `verify FILE...` and `verify --input LIST`: many transcripts replayed at
//! once, one JSON Lines record each, and a summary.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::driver::Driver;
use super::input::{self, Source};
use super::jsonl;
use super::names;
use super::pool::Pool;
use super::progress::{self, Counts};
use super::{clip, Summary};
use crate::session;
use crate::transcript::{self, Limits};
use crate::{Backend, Error};

/// Which transcripts.
pub enum Files {
    /// Named on the command line.
    Paths(Vec<PathBuf>),
    /// Listed one per line in a file or on standard input.
    List(Source),
}

/// What to verify and how.
pub struct VerifyBatchOptions {
    /// The transcripts.
    pub files: Files,
    /// Replays running at once.
    pub jobs: usize,
    /// PEM files of CA certificates trusted besides Mozilla's roots.
    pub ca_files: Vec<PathBuf>,
    /// Give up on one replay after this long.
    pub timeout: Duration,
    /// How the replayed clients' syscalls are intercepted.
    pub backend: Backend,
    /// Where the JSON Lines report goes (written atomically when the batch
    /// ends); `None` for standard output, line by line.
    pub report: Option<PathBuf>,
    /// How progress is shown.
    pub progress: progress::Mode,
}

/// A report line's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The replay matched: the transcript verifies.
    Verified,
    /// The replay diverged, the chain is not trusted, or the response
    /// differs: `error` says where.
    Failed,
    /// Not a transcript this build can check: unreadable, malformed, a
    /// future version, another client.
    Unreadable,
}

/// One line of the report.
#[derive(Debug, Serialize)]
pub struct ReportLine {
    /// The transcript's path, as given.
    pub file: String,
    /// verified, failed or unreadable.
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The URL the transcript claims.
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The replayed response's status.
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The replayed body's length.
    pub body_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The replayed body's SHA-256, in hex.
    pub body_sha256: Option<String>,
    /// When the transcript says the page was fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Why it did not verify.
    pub error: Option<String>,
    /// Wall time of the read and the replay.
    pub duration_ms: u64,
}

/// Verifies every transcript; per-file verdicts are in the report and the
/// summary, `Err` is for the batch as a whole.
pub fn verify_batch(opts: VerifyBatchOptions) -> Result<Summary, Error> {
    super::check_jobs(opts.jobs)?;
    super::open_files_for(opts.jobs)?;
    // Many clients: fork them from a zygote (intercept::zygote).
    crate::intercept::zygote::expect_many();
    let ca_files = session::check_ca_files(&opts.ca_files)?;
    // The report goes to a temporary file beside its name, renamed into
    // place at the end: never half a report under the name.
    let (out, mut tmp): (Box<dyn Write + Send>, Option<tempfile::NamedTempFile>) = match &opts
        .report
    {
        None => (Box::new(std::io::stdout()), None),
        Some(p) => {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            let bad = |e: std::io::Error| Error::Usage(format!("--report {}: {e}", p.display()));
            let t = tempfile::Builder::new()
                .prefix(".report-")
                .suffix(".tmp")
                .tempfile_in(dir)
                .map_err(bad)?;
            let f = t.reopen().map_err(bad)?;
            (Box::new(std::io::BufWriter::new(f)), Some(t))
        }
    };
    let total = match &opts.files {
        Files::Paths(p) => Some(p.len() as u64),
        Files::List(s) => s.count_entries(),
    };
    let rt = super::runtime()?;
    // Outside the runtime: dropping it waits for its threads.
    let pool = Arc::new(Pool::new(opts.jobs, "batch-client")?);
    let summary = rt.block_on(async {
        let mut files = feed(opts.files)?;
        let (writer, handle) = jsonl::Writer::new(out, None, jsonl::Grouping::EACH)
            .map_err(|e| Error::Environment(format!("cannot start the report's writer: {e}")))?;
        let run = Arc::new(Driver::start(opts.progress, "verified", total)?);
        let slots = Arc::new(Semaphore::new(opts.jobs));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let path = match run.next(&mut files).await {
                None => break,
                Some(Err(e)) => {
                    run.stop(e);
                    break;
                }
                Some(Ok(p)) => p,
            };
            Counts::add(&run.counts.seen, 1);
            let Some(slot) = run.acquire(&slots).await else {
                break;
            };
            let (pool, run, writer, ca_files) = (
                Arc::clone(&pool),
                Arc::clone(&run),
                writer.clone(),
                ca_files.clone(),
            );
            let (timeout, backend) = (opts.timeout, opts.backend);
            tasks.spawn(async move {
                let counts = &run.counts;
                Counts::add(&counts.running, 1);
                let cancel = run.cancel.clone();
                let r = pool
                    .run(move |rt| {
                        rt.block_on(verify_one(path, ca_files, timeout, backend, cancel))
                    })
                    .await
                    .and_then(|r| r);
                Counts::sub(&counts.running);
                drop(slot);
                let line = match r {
                    Ok(line) => line,
                    // An interrupted replay (its client died of a Ctrl-C
                    // to the group) stops the batch too, as a signal.
                    Err(Error::Interrupted) => return run.switch.trip(),
                    Err(e) => return run.stop(e),
                };
                let counter = match line.status {
                    Status::Verified => &counts.ok,
                    Status::Failed | Status::Unreadable => &counts.failed,
                };
                if line.status != Status::Verified {
                    run.progress.note(&format!(
                        "failed: {}: {}",
                        line.file,
                        line.error.as_deref().unwrap_or("")
                    ));
                }
                if let Err(e) = writer.append(&line).await {
                    return run.stop(Error::Environment(format!("cannot write the report: {e}")));
                }
                Counts::add(counter, 1);
                run.progress.update();
            });
        }
        let interrupted = run.wind_down(tasks, "replay(s)").await;
        drop(writer);
        let run = Arc::into_inner(run).expect("every task has finished");
        let outcome = run.finish(interrupted);
        handle
            .finish()
            .map_err(|e| Error::Environment(format!("cannot write the report: {e}")))?;
        outcome
    })?;
    if let (Some(t), Some(p)) = (tmp.take(), &opts.report) {
        t.as_file()
            .sync_all()
            .and_then(|()| t.persist(p).map(drop).map_err(|e| e.error))
            .map_err(|e| Error::Usage(format!("--report {}: {e}", p.display())))?;
    }
    Ok(summary)
}

/// The transcripts to check, as a bounded stream.
fn feed(files: Files) -> Result<tokio::sync::mpsc::Receiver<Result<PathBuf, Error>>, Error> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    match files {
        Files::Paths(paths) => {
            tokio::spawn(async move {
                for p in paths {
                    if tx.send(Ok(p)).await.is_err() {
                        return;
                    }
                }
            });
        }
        Files::List(source) => {
            let mut entries = input::read(&source, 64)?;
            tokio::spawn(async move {
                while let Some(e) = entries.recv().await {
                    let item = e.map(|e| match e.text {
                        Ok(t) => PathBuf::from(t),
                        // Not a path we could open: let the open say so.
                        Err((shown, _)) => PathBuf::from(shown),
                    });
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    Ok(rx)
}

/// One transcript's verdict; `Err` only for the batch's own failures (the
/// supervisor cannot run, a stop).
async fn verify_one(
    path: PathBuf,
    ca_files: Vec<PathBuf>,
    timeout: Duration,
    backend: Backend,
    cancel: session::Cancel,
) -> Result<ReportLine, Error> {
    let started = Instant::now();
    let file = path.display().to_string();
    // On a pool thread of its own (see `Pool`): reading blocks nobody else.
    let read = transcript::read_file(&path, &Limits::default());
    let mut line = ReportLine {
        file,
        status: Status::Unreadable,
        url: None,
        http_status: None,
        body_bytes: None,
        body_sha256: None,
        signed_at: None,
        error: None,
        duration_ms: 0,
    };
    let t = match read {
        Ok(t) => t,
        Err(e) => {
            line.error = Some(clip(e.to_string()));
            return Ok(finish(line, started));
        }
    };
    line.url = Some(t.url.clone());
    line.signed_at = Some(t.clock_start.to_rfc3339());
    match crate::verify::replay(t, ca_files, timeout, backend, cancel).await {
        Ok(v) => {
            let r = &v.transcript.response;
            line.status = Status::Verified;
            line.http_status = Some(r.status);
            line.body_bytes = Some(r.body.len() as u64);
            line.body_sha256 = Some(names::hex(&Sha256::digest(&r.body)));
        }
        Err(e @ (Error::Interrupted | Error::Environment(_))) => return Err(e),
        Err(e @ Error::VerifyFailed(_)) => {
            line.status = Status::Failed;
            line.error = Some(clip(e.to_string()));
        }
        Err(e) => line.error = Some(clip(e.to_string())),
    }
    Ok(finish(line, started))
}

fn finish(mut line: ReportLine, started: Instant) -> ReportLine {
    line.duration_ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
    line
}
