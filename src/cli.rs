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
`run` exits with its command's status (128 + signal if it was killed).";

/// Turn one HTTPS fetch into a transcript anyone can re-check offline.
#[derive(Debug, Parser)]
#[command(name = "tlsign-seccomp", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
    pub url: String,
    /// Where to write the transcript (written atomically).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
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
}

/// The arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The transcript to check.
    pub file: PathBuf,
    /// Also trust the CA certificates in this PEM file (repeatable). Trust
    /// anchors never come from the transcript.
    #[arg(long = "ca-file", value_name = "PEM")]
    pub ca_files: Vec<PathBuf>,
    /// Write the verified body here (`-` for standard output).
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// How the supervisor intercepts the client's syscalls: seccomp user
    /// notification, or the ptrace baselines (see docs/benchmarks.md).
    #[arg(long, value_enum, default_value_t = crate::Backend::Seccomp)]
    pub backend: crate::Backend,
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
            let opts = crate::sign::SignOptions {
                resolve: a
                    .resolve
                    .iter()
                    .map(|r| crate::sign::parse_resolve(r))
                    .collect::<Result<_, _>>()?,
                time: a.time.as_deref().map(parse_time).transpose()?,
                seed: a.seed.as_deref().map(parse_full_seed).transpose()?,
                timeout: timeout(a.timeout)?,
                backend: a.backend,
                url: a.url,
                output: a.output,
                ca_files: a.ca_files,
            };
            let out = opts.output.clone();
            let s = crate::sign::sign(opts)?;
            let t = &s.transcript;
            eprintln!(
                "signed {}: HTTP {}, {} body bytes, {} connection(s), clock {} -> {} ({:.0} ms, {}{})",
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
            );
            Ok(crate::exit::OK)
        }
        Command::Inspect(a) => {
            let t = crate::transcript::read_file(&a.file, &crate::transcript::Limits::default())?;
            print!("{}", crate::inspect::describe(&t));
            Ok(crate::exit::OK)
        }
        Command::Verify(a) => {
            let opts = crate::verify::VerifyOptions {
                file: a.file.clone(),
                ca_files: a.ca_files,
                timeout: timeout(a.timeout)?,
                backend: a.backend,
            };
            let v = crate::verify::verify(opts)?;
            let t = &v.transcript;
            if let Some(path) = &a.body {
                write_body(path, &t.response.body)?;
            }
            eprintln!(
                "verified {}: {} as fetched at {} (HTTP {}, {} body bytes, {} connection(s))",
                a.file.display(),
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
