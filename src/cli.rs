//! The command line: a thin shell over the library.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::transcript::Timestamp;
use crate::Error;

const EXIT_CODES: &str = "\
Exit codes:
  0    success: signed, verified, or the command of `run` succeeded
  1    verification failed: the transcript does not verify
  2    bad input: unreadable, empty, truncated or malformed transcript, future
       format version, transcript of another client, bad URL, bad option
  3    signing failed: network, TLS or HTTP error, including an untrusted or
       expired certificate at signing time
  4    the supervisor could not run (the kernel lacks something it needs)
  70   internal error: a bug in tlsign-seccomp; no output file was written
  130  interrupted; no output file was written
`run` exits with its command's status (128 + signal if it was killed).

Batches (sign --input, verify with several files or --input) go on past a
failing entry and exit, at the end, with:
  0    every entry signed with a 2xx status (or already signed), or verified
  3    sign: some URL failed or got a non-2xx status (see the manifest)
  1    verify: some transcript did not verify or could not be read (see the
       report)
  2    bad option, unreadable input list or output directory
  4    the supervisor could not run; the batch stopped
  130  interrupted: finished entries are kept; rerun the command to resume";

/// Turn one HTTPS fetch into a transcript anyone can re-check offline.
#[derive(Debug, Parser)]
#[command(name = "tlsign-seccomp", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether this runs a batch: many clients, for as long as the list
    /// lasts (`sign --input`, `verify` of several files or `--input`).
    pub fn is_batch(&self) -> bool {
        match &self.command {
            Command::Sign(a) => a.input.is_some(),
            Command::Verify(a) => a.is_batch(),
            Command::Run(_) | Command::Inspect(_) => false,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch an https:// URL under the supervisor and write a transcript.
    #[command(after_help = EXIT_CODES)]
    Sign(SignArgs),
    /// Replay a transcript offline and check it.
    #[command(after_help = EXIT_CODES)]
    Verify(VerifyArgs),
    /// Run any command in the deterministic world, recording nothing.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Show what a transcript claims, without checking it.
    #[command(after_help = EXIT_CODES)]
    Inspect(InspectArgs),
}

/// The arguments of `sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The https:// URL to fetch.
    #[arg(required_unless_present = "input", conflicts_with = "input")]
    pub url: Option<String>,
    /// Where to write the transcript (written atomically).
    #[arg(
        short,
        long,
        value_name = "FILE",
        required_unless_present = "input",
        conflicts_with = "input"
    )]
    pub output: Option<PathBuf>,
    /// Batch: sign every URL in this file, one per line (`-` for standard
    /// input; blank lines and `#` comments are skipped).
    #[arg(
        long,
        value_name = "URLS",
        requires = "out_dir",
        help_heading = "Batch"
    )]
    pub input: Option<PathBuf>,
    /// Batch: write one transcript per URL and manifest.jsonl here.
    #[arg(long, value_name = "DIR", requires = "input", help_heading = "Batch")]
    pub out_dir: Option<PathBuf>,
    /// Batch options shared with the other subcommand.
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Batch: at most this many clients at once against one host (0: no
    /// limit).
    #[arg(
        long,
        value_name = "K",
        default_value_t = 4,
        requires = "input",
        help_heading = "Batch"
    )]
    pub per_host: usize,
    /// Batch: sign only shard K of N (0 <= K < N), chosen by a hash of
    /// each URL, to split one list over N machines.
    #[arg(long, value_name = "K/N", requires = "input", help_heading = "Batch")]
    pub shard: Option<String>,
    /// Batch: further attempts after a transient network failure (a reset,
    /// a connect timeout, HTTP 408/429/502/503/504), waiting 1 s, 2 s, ...
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2,
        requires = "input",
        help_heading = "Batch"
    )]
    pub retries: u32,
    /// Batch: do not sync transcripts and the manifest to disk. Much faster
    /// on a real disk; a Ctrl-C or a crash of tlsign-seccomp still leaves DIR
    /// consistent, but a crash of the whole machine may lose transcripts
    /// the manifest lists (a rerun signs them again: see docs/batch.md).
    #[arg(long, requires = "input", help_heading = "Batch")]
    pub no_sync: bool,
    /// Also trust the CA certificates in this PEM file (repeatable).
    #[arg(long = "ca-file", value_name = "PEM")]
    pub ca_files: Vec<PathBuf>,
    /// Connect to ADDR for HOST:PORT instead of resolving HOST, as in curl.
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub resolve: Vec<String>,
    /// The world's clock at the start (RFC 3339). Default: now.
    #[arg(long, value_name = "RFC3339")]
    pub time: Option<String>,
    /// The world's 256-bit seed as exactly 64 hex digits. Default: fresh
    /// random (the seed is written into the transcript either way).
    #[arg(long, value_name = "HEX")]
    pub seed: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// How the supervisor intercepts the client's syscalls: seccomp user
    /// notification, or the ptrace baselines (see docs/benchmarks.md).
    #[arg(long, value_enum, default_value_t = crate::Backend::Seccomp)]
    pub backend: crate::Backend,
    /// Who records the bytes exchanged with the server. client: the
    /// supervisor connects to the server and installs that socket in the
    /// client, which reports what it sent and received (seccomp only; its
    /// default). relay: the supervisor relays every byte between the client
    /// and the server (the ptrace backends' only way). Transcripts are
    /// verified the same way either way.
    #[arg(long, value_enum, value_name = "WHO")]
    pub recorder: Option<crate::Recorder>,
}

/// Options shared by batch signing and verifying.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Batch: this many clients at once [default: 4 per CPU, at most 64].
    #[arg(short, long, value_name = "N", help_heading = "Batch")]
    pub jobs: Option<usize>,
    /// Batch: a bar on a terminal, a line every 10 s otherwise (auto).
    #[arg(long, value_enum, default_value_t = crate::batch::ProgressMode::Auto, help_heading = "Batch")]
    pub progress: crate::batch::ProgressMode,
}

/// The arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The transcript(s) to check; more than one makes a batch.
    #[arg(required_unless_present = "input", conflicts_with = "input")]
    pub files: Vec<PathBuf>,
    /// Batch: check every transcript listed in this file, one path per line
    /// (`-` for standard input).
    #[arg(long, value_name = "FILES", help_heading = "Batch")]
    pub input: Option<PathBuf>,
    /// Batch: write the JSON Lines report here (atomically, at the end)
    /// instead of to standard output, line by line.
    #[arg(long, value_name = "FILE", help_heading = "Batch")]
    pub report: Option<PathBuf>,
    /// Batch options shared with the other subcommand.
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Also trust the CA certificates in this PEM file (repeatable). Trust
    /// anchors never come from the transcript.
    #[arg(long = "ca-file", value_name = "PEM")]
    pub ca_files: Vec<PathBuf>,
    /// Write the verified body here (`-` for standard output); one
    /// transcript only.
    #[arg(long, value_name = "FILE", conflicts_with = "input")]
    pub body: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// How the supervisor intercepts the client's syscalls: seccomp user
    /// notification, or the ptrace baselines (see docs/benchmarks.md).
    #[arg(long, value_enum, default_value_t = crate::Backend::Seccomp)]
    pub backend: crate::Backend,
}

impl VerifyArgs {
    /// More than one transcript, or a list of them.
    fn is_batch(&self) -> bool {
        self.input.is_some() || self.files.len() > 1
    }
}

/// The arguments of `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The transcript to show.
    pub file: PathBuf,
}

/// The arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The world's 256-bit seed as hex (shorter values are zero-extended on
    /// the left). Default: all zeros.
    #[arg(long, value_name = "HEX")]
    pub seed: Option<String>,
    /// The world's clock at the start (RFC 3339). Default: 2000-01-01T00:00:00Z.
    #[arg(long, value_name = "RFC3339")]
    pub time: Option<String>,
    /// Add KEY=VALUE to the command's fixed minimal environment (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// How the supervisor intercepts the client's syscalls: seccomp user
    /// notification, or the ptrace baselines (see docs/benchmarks.md).
    #[arg(long, value_enum, default_value_t = crate::Backend::Seccomp)]
    pub backend: crate::Backend,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Parses a hex seed of 1 to 64 digits, zero-extended on the left.
pub fn parse_seed(s: &str) -> Result<[u8; 32], Error> {
    let bad = || {
        Error::Usage(format!(
            "--seed must be 1 to 64 hex digits, but {s:?} is not"
        ))
    };
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let padded = format!("{s:0>64}");
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A transcript's seed is a key: `sign` takes only all 64 hex digits, so a
/// typo cannot silently shorten it.
pub fn parse_full_seed(s: &str) -> Result<[u8; 32], Error> {
    if s.len() != 64 {
        return Err(Error::Usage(format!(
            "--seed for sign must be exactly 64 hex digits (256 bits), but {s:?} has {}",
            s.len()
        )));
    }
    parse_seed(s)
}

/// Parses an RFC 3339 time such as 2020-06-01T00:00:00Z.
pub fn parse_time(s: &str) -> Result<Timestamp, Error> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        Error::Usage(format!(
            "--time must be an RFC 3339 time like 2020-06-01T00:00:00Z, but {s:?} is not: {e}"
        ))
    })?;
    Ok(Timestamp::from_system_time(t))
}

/// Carries out a parsed command line; returns the exit code of a success.
pub fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Run(a) => {
            let seed = a
                .seed
                .as_deref()
                .map(parse_seed)
                .transpose()?
                .unwrap_or(crate::run::DEFAULT_SEED);
            let time = a
                .time
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or(crate::run::DEFAULT_TIME);
            let env = a
                .env
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok((OsString::from(k), OsString::from(v))),
                    _ => Err(Error::Usage(format!(
                        "--env must be KEY=VALUE, but {kv:?} is not"
                    ))),
                })
                .collect::<Result<_, _>>()?;
            let out = crate::run::run(crate::run::RunOptions {
                seed,
                time,
                env,
                command: a.command,
                backend: a.backend,
            })?;
            Ok(out.code)
        }
        Command::Sign(a) => {
            let resolve = a
                .resolve
                .iter()
                .map(|r| crate::sign::parse_resolve(r))
                .collect::<Result<_, _>>()?;
            let time = a.time.as_deref().map(parse_time).transpose()?;
            let seed = a.seed.as_deref().map(parse_full_seed).transpose()?;
            let timeout = timeout(a.timeout)?;
            if let (Some(input), Some(out_dir)) = (a.input, a.out_dir) {
                return sign_batch(crate::batch::sign::SignBatchOptions {
                    input: crate::batch::Source::from_arg(&input),
                    out_dir,
                    jobs: a.batch.jobs.unwrap_or_else(crate::batch::default_jobs),
                    per_host: a.per_host,
                    shard: a
                        .shard
                        .as_deref()
                        .map(crate::batch::Shard::parse)
                        .transpose()?,
                    retries: a.retries,
                    sync: !a.no_sync,
                    backoff: std::time::Duration::from_secs(1),
                    timeout,
                    ca_files: a.ca_files,
                    resolve,
                    time,
                    seed,
                    backend: a.backend,
                    recorder: a.recorder,
                    progress: a.batch.progress,
                });
            }
            let (Some(url), Some(output)) = (a.url, a.output) else {
                return Err(Error::Usage(
                    "sign needs a URL and --output, or --input and --out-dir".into(),
                ));
            };
            let opts = crate::sign::SignOptions {
                resolve,
                time,
                seed,
                timeout,
                backend: a.backend,
                recorder: a.recorder,
                url,
                output,
                ca_files: a.ca_files,
            };
            let out = opts.output.clone();
            let s = crate::sign::sign(opts)?;
            let t = &s.transcript;
            eprintln!(
                "signed {}: HTTP {}, {} body bytes, {} connection(s), clock {} -> {} ({:.0} ms, {}{}, {})",
                t.url,
                t.response.status,
                t.response.body.len(),
                t.connections.len(),
                t.clock_start.to_rfc3339(),
                out.display(),
                s.elapsed.as_secs_f64() * 1000.0,
                s.stats.summary(),
                if s.stats.backend == crate::Backend::Seccomp && !s.stats.killable {
                    ", no killable wait"
                } else {
                    ""
                },
                match s.recorder {
                    crate::Recorder::Client => "bytes recorded by the client",
                    crate::Recorder::Relay => "bytes relayed and recorded by the supervisor",
                },
            );
            Ok(crate::exit::OK)
        }
        Command::Inspect(a) => {
            let t = crate::transcript::read_file(&a.file, &crate::transcript::Limits::default())?;
            print!("{}", crate::inspect::describe(&t));
            Ok(crate::exit::OK)
        }
        Command::Verify(a) => {
            let timeout = timeout(a.timeout)?;
            if a.is_batch() {
                if a.body.is_some() {
                    return Err(Error::Usage(
                        "--body takes one transcript, not a batch".into(),
                    ));
                }
                return verify_batch(crate::batch::verify::VerifyBatchOptions {
                    files: match a.input {
                        Some(i) => {
                            crate::batch::verify::Files::List(crate::batch::Source::from_arg(&i))
                        }
                        None => crate::batch::verify::Files::Paths(a.files),
                    },
                    jobs: a.batch.jobs.unwrap_or_else(crate::batch::default_jobs),
                    ca_files: a.ca_files,
                    timeout,
                    backend: a.backend,
                    report: a.report,
                    progress: a.batch.progress,
                });
            }
            let Some(file) = a.files.into_iter().next() else {
                return Err(Error::Usage("verify needs a transcript, or --input".into()));
            };
            let opts = crate::verify::VerifyOptions {
                file: file.clone(),
                ca_files: a.ca_files,
                timeout,
                backend: a.backend,
            };
            let v = crate::verify::verify(opts)?;
            let t = &v.transcript;
            if let Some(path) = &a.body {
                write_body(path, &t.response.body)?;
            }
            eprintln!(
                "verified {}: {} as fetched at {} (HTTP {}, {} body bytes, {} connection(s))",
                file.display(),
                t.url,
                t.clock_start.to_rfc3339(),
                t.response.status,
                t.response.body.len(),
                t.connections.len()
            );
            Ok(crate::exit::OK)
        }
    }
}

/// A batch sign and its summary line.
fn sign_batch(opts: crate::batch::sign::SignBatchOptions) -> Result<i32, Error> {
    let manifest = opts
        .out_dir
        .join(crate::batch::sign::manifest_name(opts.shard));
    let s = crate::batch::sign::sign_batch(opts)?;
    let mut parts = vec![format!("{} ok", s.ok)];
    if s.http_error > 0 {
        parts.push(format!("{} HTTP error", s.http_error));
    }
    parts.push(format!("{} failed", s.failed));
    parts.push(format!("{} skipped (already signed)", s.skipped));
    if s.other_shard > 0 {
        parts.push(format!("{} for other shards", s.other_shard));
    }
    eprintln!(
        "{}signed {} URL(s): {} ({:.1} s, {:.1}/s{}); manifest: {}",
        if s.interrupted { "interrupted; " } else { "" },
        s.ok + s.http_error + s.failed,
        parts.join(", "),
        s.elapsed.as_secs_f64(),
        s.rate(),
        s.memory_note(),
        manifest.display()
    );
    Ok(s.exit_code(crate::exit::SIGN_FAILED))
}

/// A batch verify and its summary line.
fn verify_batch(opts: crate::batch::verify::VerifyBatchOptions) -> Result<i32, Error> {
    let report = opts.report.clone();
    let s = crate::batch::verify::verify_batch(opts)?;
    eprintln!(
        "{}checked {} transcript(s): {} verified, {} did not ({:.1} s, {:.1}/s{}){}",
        if s.interrupted { "interrupted; " } else { "" },
        s.ok + s.failed,
        s.ok,
        s.failed,
        s.elapsed.as_secs_f64(),
        s.rate(),
        s.memory_note(),
        report
            .map(|r| format!("; report: {}", r.display()))
            .unwrap_or_default()
    );
    Ok(s.exit_code(crate::exit::VERIFY_FAILED))
}

fn timeout(secs: u64) -> Result<std::time::Duration, Error> {
    if secs == 0 || secs > 24 * 3600 {
        return Err(Error::Usage(format!(
            "--timeout must be 1 to 86400 seconds, but {secs} is not"
        )));
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// Writes the verified body to `path` (atomically) or to stdout for `-`.
fn write_body(path: &std::path::Path, body: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(body)
            .and_then(|()| out.flush())
            .map_err(|e| Error::Usage(format!("cannot write the body to stdout: {e}")));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let fail = |e: std::io::Error| {
        Error::Usage(format!("cannot write the body to {}: {e}", path.display()))
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(body).map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds() {
        assert_eq!(parse_seed("1").unwrap()[31], 1);
        assert_eq!(parse_seed(&"ab".repeat(32)).unwrap(), [0xab; 32]);
        for bad in ["", "xyz", &"0".repeat(65), "+1", "é"] {
            assert!(parse_seed(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_time("2000-01-01T00:00:00Z").unwrap().secs,
            946_684_800
        );
        assert!(parse_time("yesterday").is_err());
    }
}
