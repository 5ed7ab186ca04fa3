//! `sign --input URLS --out-dir DIR`: many URLs, one transcript each, and a
//! manifest that always agrees with the files.
//!
//! A transcript reaches DIR in three steps: written without its name
//! (`staged`) by the pool thread that ran its client; its manifest line
//! written and the file system synced (one `syncfs` for a group of URLs:
//! see `jsonl`), then given its name, both by the manifest's writing
//! thread, while the pool thread has long started another client. A crash
//! between any two leaves nothing (or, where files cannot be unnamed, a
//! temporary file that the next signing of the URL overwrites) or a line
//! whose file is missing, which the next run drops before it starts. So a
//! file in DIR always has its line, and "already signed" can be decided by
//! looking for the file alone, in constant memory whatever the size of the
//! list.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::driver::Driver;
use super::hosts::Hosts;
use super::input::{self, Entry, Source};
use super::jsonl;
use super::names::{self, Shard};
use super::pool::Pool;
use super::progress::{self, Counts};
use super::staged::{Staged, Staging};
use super::{clip, Summary};
use crate::session;
use crate::sign::{self as one, Failed, Fetch, Signed};
use crate::transcript::{self, Timestamp};
use crate::{Backend, Error};

/// What to sign and how.
pub struct SignBatchOptions {
    /// The list of URLs, one per line.
    pub input: Source,
    /// Where transcripts and the manifest go (created if missing).
    pub out_dir: PathBuf,
    /// Clients running at once.
    pub jobs: usize,
    /// Clients running at once against one host; 0 for no limit.
    pub per_host: usize,
    /// Sign only this shard of the list.
    pub shard: Option<Shard>,
    /// Further attempts after a transient failure.
    pub retries: u32,
    /// Sync each transcript, the manifest and DIR to disk (see the module
    /// doc); without, DIR survives a crash of this process but not of the
    /// machine.
    pub sync: bool,
    /// The first wait before a retry; it doubles each time.
    pub backoff: Duration,
    /// Give up on one attempt (killing its client) after this long.
    pub timeout: Duration,
    /// PEM files of CA certificates trusted besides Mozilla's roots.
    pub ca_files: Vec<PathBuf>,
    /// (host, port, address) overrides, as curl's --resolve.
    pub resolve: Vec<(String, u16, IpAddr)>,
    /// The world's clock start for every URL; `None` for each one's now.
    pub time: Option<Timestamp>,
    /// The seed for every URL (each world still differs: the key mixes in
    /// the URL); `None` for a fresh one each.
    pub seed: Option<[u8; 32]>,
    /// How the clients' syscalls are intercepted.
    pub backend: Backend,
    /// Who records the bytes; `None` for the backend's default.
    pub recorder: Option<session::Recorder>,
    /// How progress is shown.
    pub progress: progress::Mode,
}

/// A manifest line's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Signed; the final HTTP status is 2xx.
    Ok,
    /// Signed; the final HTTP status is not 2xx. The transcript is kept.
    HttpError,
    /// No transcript; `error` says why.
    Failed,
}

/// One line of DIR/manifest.jsonl.
#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestLine {
    /// The URL as signed (normalized), or the input line if it is no URL.
    pub url: String,
    /// The transcript's name in DIR; absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file: Option<String>,
    /// ok, http_error or failed.
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// The final response's status.
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// The final body's length, after transfer and content decoding.
    pub body_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// The final body's SHA-256, in hex.
    pub body_sha256: Option<String>,
    /// The world's clock when the fetch began (RFC 3339): the time the
    /// transcript proves the page was served at.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub signed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// Why it failed, or the HTTP status of an http_error.
    pub error: Option<String>,
    /// Wall time of all attempts, in milliseconds.
    pub duration_ms: u64,
    /// Attempts made (more than one after transient failures).
    pub attempts: u32,
    /// The line of the input it came from.
    pub line: u64,
}

/// The manifest's name: `manifest.jsonl`, or `manifest-K-of-N.jsonl` for a
/// shard, so shards may share one directory.
pub fn manifest_name(shard: Option<Shard>) -> String {
    match shard {
        None => "manifest.jsonl".into(),
        Some(s) => format!("manifest-{}-of-{}.jsonl", s.index, s.count),
    }
}

/// Signs every URL of `opts.input` into `opts.out_dir`. Per-URL failures
/// are in the summary and the manifest; `Err` is for the batch as a whole
/// (bad options, the directory, the supervisor cannot run at all).
pub fn sign_batch(opts: SignBatchOptions) -> Result<Summary, Error> {
    super::check_jobs(opts.jobs)?;
    super::open_files_for(opts.jobs)?;
    // Many clients: fork them from a zygote (intercept::zygote).
    crate::intercept::zygote::expect_many();
    let ca_files = session::check_ca_files(&opts.ca_files)?;
    let recorder = session::Recorder::for_backend(opts.backend, opts.recorder)?;
    let dir = &opts.out_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Usage(format!("--out-dir {}: {e}", dir.display())))?;
    let manifest_path = dir.join(manifest_name(opts.shard));
    let _lock = lock(dir, &manifest_path)?;
    compact_manifest(dir, &manifest_path)?;
    let manifest_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&manifest_path)
        .map_err(|e| Error::Usage(format!("cannot open {}: {e}", manifest_path.display())))?;
    let sync = manifest_file
        .try_clone()
        .map_err(|e| Error::Environment(format!("{}: {e}", manifest_path.display())))?;
    let entries_total = opts.input.count_entries();
    let rt = super::runtime()?;
    // Outside the runtime: dropping it waits for its threads.
    let pool = Arc::new(Pool::new(opts.jobs + 2, "batch-client")?);
    let summary = rt.block_on(async {
        let input = input::read(&opts.input, 64)?;
        let durable = opts.sync.then_some(sync);
        // A group as large as the concurrency: at -j 8 a syncfs per URL
        // wrote 9 times the blocks that 8 URLs need (docs/batch.md). The
        // linger bounds the wait of a line whose URL finished alone.
        let grouping = jsonl::Grouping {
            lines: opts.jobs,
            linger: Duration::from_millis(20),
        };
        let (writer, handle) = jsonl::Writer::new(Box::new(manifest_file), durable, grouping)
            .map_err(|e| Error::Environment(format!("cannot start the manifest's writer: {e}")))?;
        let ctx = Arc::new(Ctx {
            run: Driver::start(opts.progress, "signed", entries_total)?,
            out_dir: dir.clone(),
            staging: Staging::probe(dir),
            manifest: writer,
            hosts: Hosts::new(opts.per_host),
            slots: Arc::new(Semaphore::new(opts.jobs)),
            pool: Arc::clone(&pool),
            retries: opts.retries,
            backoff: opts.backoff,
            template: Template {
                ca_files,
                resolve: Arc::new(one::resolve_map(&opts.resolve)),
                time: opts.time,
                seed: opts.seed,
                timeout: opts.timeout,
                backend: opts.backend,
                recorder,
            },
        });
        let interrupted = dispatch(&ctx, input, opts.shard, opts.jobs).await;
        let ctx = Arc::into_inner(ctx).expect("every task has finished");
        drop(ctx.manifest);
        let outcome = ctx.run.finish(interrupted);
        handle.finish().map_err(|e| {
            Error::Environment(format!("cannot write {}: {e}", manifest_path.display()))
        })?;
        outcome
    })?;
    // Make the renames of this run durable; each file and line already is.
    if opts.sync {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(summary)
}

/// What every URL's fetch shares.
struct Template {
    ca_files: Vec<PathBuf>,
    resolve: Arc<HashMap<(String, u16), IpAddr>>,
    time: Option<Timestamp>,
    seed: Option<[u8; 32]>,
    timeout: Duration,
    backend: Backend,
    recorder: session::Recorder,
}

/// The state of one batch, shared by its tasks.
struct Ctx {
    run: Driver,
    out_dir: PathBuf,
    /// How transcripts wait for their line (see `staged`).
    staging: Staging,
    manifest: jsonl::Writer,
    hosts: Hosts,
    /// A slot is a running client: at most `-j` at once.
    slots: Arc<Semaphore>,
    /// Where clients run, and their transcripts are written: two threads
    /// more than slots, so a thread still writing the last transcript
    /// does not hold up the next client. No more: each thread's runtime
    /// holds three descriptors, and every client start copies the whole
    /// descriptor table into the child and closes it again at its exec.
    pool: Arc<Pool>,
    retries: u32,
    backoff: Duration,
    template: Template,
}

/// One entry, ready to sign.
struct Job {
    line: u64,
    url: url::Url,
    name: String,
}

/// Takes entries and starts their tasks until the input ends or the batch
/// is stopped; then waits for every task. Returns whether a signal stopped
/// it.
async fn dispatch(
    ctx: &Arc<Ctx>,
    mut input: tokio::sync::mpsc::Receiver<Result<Entry, Error>>,
    shard: Option<Shard>,
    jobs: usize,
) -> bool {
    // Entries queued beyond the running ones: enough that a slow host does
    // not idle the other slots, few enough to stay small.
    let queue = Arc::new(Semaphore::new(jobs * 4));
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let entry = match ctx.run.next(&mut input).await {
            None => break,
            Some(Err(e)) => {
                ctx.run.stop(e);
                break;
            }
            Some(Ok(e)) => e,
        };
        Counts::add(&ctx.run.counts.seen, 1);
        let Some(job) = prepare(ctx, entry, shard).await else {
            ctx.run.progress.update();
            continue;
        };
        if std::fs::symlink_metadata(ctx.out_dir.join(&job.name)).is_ok()
            || !in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job.name.clone())
        {
            Counts::add(&ctx.run.counts.skipped, 1);
            ctx.run.progress.update();
            continue;
        }
        let Some(permit) = ctx.run.acquire(&queue).await else {
            break;
        };
        let (ctx, in_flight) = (Arc::clone(ctx), Arc::clone(&in_flight));
        tasks.spawn(async move {
            let name = job.name.clone();
            sign_one(&ctx, job).await;
            in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            ctx.run.progress.update();
            drop(permit);
        });
    }
    ctx.run
        .wind_down(tasks, "client(s); finished URLs are kept")
        .await
}

/// Checks an entry and decides whether this shard signs it; a bad entry
/// gets its failure line here.
async fn prepare(ctx: &Arc<Ctx>, entry: Entry, shard: Option<Shard>) -> Option<Job> {
    let (raw, parsed) = match entry.text {
        // The name and shard are derived from the normalized URL, the one
        // the client is given.
        Ok(t) => {
            let p = one::check_url(&t);
            (t, p)
        }
        Err((shown, why)) => (shown, Err(Error::Usage(format!("input line is {why}")))),
    };
    let key = parsed
        .as_ref()
        .map_or(raw.as_str(), |u| u.as_str())
        .to_string();
    if shard.is_some_and(|s| !s.owns(&key)) {
        Counts::add(&ctx.run.counts.other_shard, 1);
        return None;
    }
    match parsed {
        Ok(url) => Some(Job {
            line: entry.line,
            name: names::file_name(&url),
            url,
        }),
        Err(e) => {
            let line = ManifestLine::failed(key, e.to_string(), entry.line, Duration::ZERO, 0);
            record(ctx, line, ctx.manifest.coming()).await;
            None
        }
    }
}

/// Signs one URL (with retries) and records the result. Nothing is recorded
/// if the batch is stopped first.
async fn sign_one(ctx: &Arc<Ctx>, job: Job) {
    let started = Instant::now();
    let host = job.url.host_str().unwrap_or("").to_string();
    let _turn = tokio::select! {
        biased;
        _ = ctx.run.cancel.cancelled() => return,
        t = ctx.hosts.acquire(&host) => t,
    };
    let mut attempts = 0u32;
    // From the start of an attempt to the hand-over of the URL's line: a
    // manifest group waiting to fill waits only while some line is on its
    // way (`jsonl::Coming`).
    let mut coming;
    let result = loop {
        attempts += 1;
        let Some(slot) = ctx.run.acquire(&ctx.slots).await else {
            return;
        };
        coming = ctx.manifest.coming();
        Counts::add(&ctx.run.counts.running, 1);
        let t = &ctx.template;
        let fetch = Fetch {
            url: job.url.as_str().to_string(),
            ca_files: t.ca_files.clone(),
            resolve: Arc::clone(&t.resolve),
            time: t.time,
            seed: t.seed,
            timeout: t.timeout,
            backend: t.backend,
            recorder: t.recorder,
            // Called on the pool thread once the client is gone: the next
            // client may start, on this thread's CPU, while this thread
            // reads the output and builds and writes the transcript. The
            // CPU is offered first, as the slot wakes the next job, which
            // looks for one.
            on_exit: Some(Box::new(move || {
                super::pool::leave_cpu();
                drop(slot);
            })),
        };
        let cancel = ctx.run.cancel.clone();
        let last_try = attempts > ctx.retries;
        let keep = Keep {
            ctx: Arc::clone(ctx),
            name: job.name.clone(),
            line: job.line,
            attempts,
            started,
        };
        // The transcript that will be kept is written by the thread that
        // has it, before it takes another client: no hand-off. Its line and
        // its name are the manifest writer's (see `Keep`).
        let (r, placed) = match ctx
            .pool
            .run(move |rt| {
                let r = rt.block_on(one::fetch(fetch, cancel));
                let placed = match &r {
                    Ok(s) if last_try || !retry_status(s.transcript.response.status) => {
                        Some(keep.write(s))
                    }
                    _ => None,
                };
                (r, placed)
            })
            .await
        {
            Ok(r) => r,
            Err(error) => (
                Err(Failed {
                    error,
                    transient: false,
                }),
                None,
            ),
        };
        Counts::sub(&ctx.run.counts.running);
        let again = match &r {
            Ok(s) => retry_status(s.transcript.response.status),
            // The client died of SIGINT or SIGTERM: a Ctrl-C reached the
            // process group, perhaps before our own handler ran. Stop all.
            Err(Failed {
                error: Error::Interrupted,
                ..
            }) => {
                ctx.run.switch.trip();
                return;
            }
            Err(Failed {
                error: e @ Error::Environment(_),
                ..
            }) => {
                ctx.run.stop(Error::Environment(e.to_string()));
                return;
            }
            Err(f) => f.transient,
        };
        if !again || attempts > ctx.retries {
            break (r, placed);
        }
        // 1 s, 2 s, 4 s ... with the slot given back meanwhile, and no
        // line on its way.
        drop(coming);
        let wait = ctx.backoff.saturating_mul(1 << (attempts - 1).min(5));
        tokio::select! {
            biased;
            _ = ctx.run.cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    };
    let elapsed = started.elapsed();
    let url = job.url.as_str().to_string();
    let line = match result {
        (Ok(_), Some(Ok(written))) => return written.commit(ctx, coming).await,
        // DIR takes no more: every later URL would be fetched for nothing.
        // Nothing is recorded for this one (a rerun signs it again).
        (
            Ok(_),
            Some(Err(NotWritten {
                message,
                fatal: true,
            })),
        ) => {
            return ctx.run.stop(Error::Environment(format!(
                "{message}; the batch stopped (what was signed is in the manifest)"
            )));
        }
        (Ok(_), Some(Err(e))) => ManifestLine::failed(url, e.message, job.line, elapsed, attempts),
        (Ok(_), None) => {
            let e = "the transcript was not kept (a bug: please report it)".to_string();
            ManifestLine::failed(url, e, job.line, elapsed, attempts)
        }
        (Err(f), _) => ManifestLine::failed(url, f.error.to_string(), job.line, elapsed, attempts),
    };
    record(ctx, line, coming).await;
}

/// HTTP statuses that say "try again later".
fn retry_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 502 | 503 | 504)
}

/// What a pool thread needs to put a signed transcript into DIR.
struct Keep {
    ctx: Arc<Ctx>,
    name: String,
    line: u64,
    attempts: u32,
    started: Instant,
}

impl Keep {
    /// Writes a signed transcript into DIR without its name (`staged`), the first
    /// of the steps the module doc gives; [`Written::commit`] does the
    /// rest. Blocks on the disk. An `Err` is why the URL failed (its
    /// transcript is not kept), or why the batch must stop.
    fn write(self, signed: &Signed) -> Result<Written, NotWritten> {
        let t = &signed.transcript;
        let dir = &self.ctx.out_dir;
        let staged = self
            .ctx
            .staging
            .write(dir, &self.name, &transcript::encode(t))
            .map_err(|e| {
                use std::io::ErrorKind::*;
                NotWritten {
                    message: format!("cannot write {} in {}: {e}", self.name, dir.display()),
                    fatal: matches!(e.kind(), StorageFull | QuotaExceeded | ReadOnlyFilesystem),
                }
            })?;
        let r = &t.response;
        let status = if (200..300).contains(&r.status) {
            Status::Ok
        } else {
            Status::HttpError
        };
        let line = ManifestLine {
            url: t.url.clone(),
            file: Some(self.name),
            status,
            http_status: Some(r.status),
            body_bytes: Some(r.body.len() as u64),
            body_sha256: Some(names::hex(&Sha256::digest(&r.body))),
            signed_at: Some(t.clock_start.to_rfc3339()),
            error: (status == Status::HttpError).then(|| format!("HTTP {}", r.status)),
            duration_ms: self
                .started
                .elapsed()
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            attempts: self.attempts,
            line: self.line,
        };
        Ok(Written { line, staged })
    }
}

/// Why a signed transcript could not be written.
struct NotWritten {
    message: String,
    /// DIR itself takes no more (full, over quota, read-only): the batch
    /// stops, rather than fetch every later URL for nothing.
    fatal: bool,
}

/// A transcript written but not yet under its name, and its line.
struct Written {
    line: ManifestLine,
    staged: Staged,
}

impl Written {
    /// Hands the line to the manifest writer, which commits it with the
    /// file system synced and then gives the transcript its name (or
    /// drops it, if the commit failed); waits for both.
    async fn commit(self, ctx: &Arc<Ctx>, coming: jsonl::Coming) {
        let Written { line, staged } = self;
        let run = Arc::clone(ctx);
        let after: jsonl::After = Box::new(move |committed| {
            if !committed {
                staged.discard();
                return;
            }
            if let Err(e) = staged.persist() {
                // The line is there and the file is not: the next run drops
                // the line. Nothing better can be done now.
                run.run.stop(Error::Environment(format!(
                    "cannot put a transcript into place: {e}"
                )));
            }
        });
        let handed = ctx.manifest.append_then(&line, after);
        drop(coming);
        counted(ctx, &line, jsonl::outcome(handed).await);
    }
}

/// Appends `line` (a URL that failed) to the manifest and counts it.
async fn record(ctx: &Arc<Ctx>, line: ManifestLine, coming: jsonl::Coming) {
    let handed = ctx.manifest.hand(&line);
    drop(coming);
    counted(ctx, &line, jsonl::outcome(handed).await);
}

/// Counts a line the manifest writer has committed (`written`), or stops
/// the batch if it could not.
fn counted(ctx: &Ctx, line: &ManifestLine, written: std::io::Result<()>) {
    if let Err(e) = written {
        ctx.run.stop(Error::Environment(format!(
            "cannot write the manifest: {e}"
        )));
        return;
    }
    let counter: &AtomicU64 = match line.status {
        Status::Ok => &ctx.run.counts.ok,
        Status::HttpError => &ctx.run.counts.http_error,
        Status::Failed => &ctx.run.counts.failed,
    };
    Counts::add(counter, 1);
    let why = line.error.as_deref().unwrap_or("");
    match line.status {
        Status::Ok => {}
        Status::HttpError => ctx.run.progress.note(&format!(
            "http error: {} (line {}): {why}; transcript kept",
            line.url, line.line
        )),
        Status::Failed => ctx
            .run
            .progress
            .note(&format!("failed: {} (line {}): {why}", line.url, line.line)),
    }
    ctx.run.progress.update();
}

impl ManifestLine {
    fn failed(url: String, error: String, line: u64, elapsed: Duration, attempts: u32) -> Self {
        ManifestLine {
            url,
            file: None,
            status: Status::Failed,
            http_status: None,
            body_bytes: None,
            body_sha256: None,
            signed_at: None,
            error: Some(clip(error)),
            duration_ms: elapsed.as_millis().try_into().unwrap_or(u64::MAX),
            attempts,
            line,
        }
    }
}

/// Holds DIR's lock for this manifest: two batches writing one manifest
/// would interleave their bookkeeping.
fn lock(dir: &Path, manifest: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
    let name = manifest.file_name().unwrap_or_default().to_string_lossy();
    let path = dir.join(format!(".{name}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::Usage(format!("cannot create {}: {e}", path.display())))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        Error::Usage(format!(
            "{} is in use by another batch ({}: {e})",
            manifest.display(),
            path.display()
        ))
    })
}

/// Rewrites the manifest keeping only the signed entries whose file is in
/// DIR: failures are tried again, and a line whose rename never happened
/// (a crash) goes. Streams, so a manifest of any size fits.
fn compact_manifest(dir: &Path, manifest: &Path) -> Result<(), Error> {
    let old = match std::fs::File::open(manifest) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Usage(format!(
                "cannot read {}: {e}",
                manifest.display()
            )))
        }
    };
    let fail = |e: std::io::Error| {
        Error::Environment(format!("cannot rewrite {}: {e}", manifest.display()))
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".manifest-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(fail)?;
    let mut out = std::io::BufWriter::new(tmp.as_file_mut());
    for line in BufReader::new(old).split(b'\n') {
        let line = line.map_err(fail)?;
        let Ok(entry) = serde_json::from_slice::<ManifestLine>(&line) else {
            continue;
        };
        let keep = entry.status != Status::Failed
            && entry.file.as_deref().is_some_and(|f| {
                // Only a plain name in DIR: the manifest is not trusted to
                // point anywhere else.
                !f.contains('/') && !f.starts_with('.') && dir.join(f).is_file()
            });
        if keep {
            out.write_all(&line)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(fail)?;
        }
    }
    out.flush().map_err(fail)?;
    drop(out);
    tmp.as_file().sync_all().map_err(fail)?;
    use std::os::unix::fs::PermissionsExt;
    let _ = tmp
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644));
    tmp.persist(manifest).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_keeps_signed_lines_with_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.tlsign"), b"x").unwrap();
        std::fs::write(d.join("c.tlsign"), b"x").unwrap();
        let m = d.join("manifest.jsonl");
        let line = |url: &str, file: Option<&str>, status: Status| {
            let mut l = ManifestLine::failed(url.into(), "e".into(), 1, Duration::ZERO, 1);
            l.file = file.map(str::to_string);
            l.status = status;
            serde_json::to_string(&l).unwrap()
        };
        let text = [
            line("https://a/", Some("a.tlsign"), Status::Ok),
            line("https://b/", Some("b.tlsign"), Status::Ok), // file lost
            line("https://c/", Some("c.tlsign"), Status::HttpError),
            line("https://d/", None, Status::Failed),
            line("https://e/", Some("../a.tlsign"), Status::Ok),
            "{not json".into(),
        ]
        .join("\n");
        std::fs::write(&m, text).unwrap();
        compact_manifest(d, &m).unwrap();
        let kept: Vec<String> = std::fs::read_to_string(&m)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<ManifestLine>(l).unwrap().url)
            .collect();
        assert_eq!(kept, ["https://a/", "https://c/"]);
    }

    #[test]
    fn a_second_batch_on_one_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("manifest.jsonl");
        let held = lock(dir.path(), &m).unwrap();
        let e = lock(dir.path(), &m).unwrap_err();
        assert!(e.to_string().contains("in use by another batch"), "{e}");
        drop(held);
        assert!(lock(dir.path(), &m).is_ok());
    }

    #[test]
    fn retry_statuses() {
        assert!(retry_status(503) && retry_status(429));
        assert!(!retry_status(404) && !retry_status(200) && !retry_status(500));
    }
}
