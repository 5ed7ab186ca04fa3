//! `sign`: one fetch under the supervisor, recorded into a transcript.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::client::{self, ClientOutcome, FailureKind};
use crate::relay::record::Upstream;
use crate::session::{self, ConnectionResult, Ends, Spec};
use crate::transcript::{self, Timestamp, Transcript};
use crate::world::{random::world_key, Scope, WorldConfig};
use crate::Error;

/// What to sign and how.
pub struct SignOptions {
    /// The https:// URL to fetch.
    pub url: String,
    /// Where the transcript goes (written atomically).
    pub output: PathBuf,
    /// PEM files of CA certificates trusted besides Mozilla's roots.
    pub ca_files: Vec<PathBuf>,
    /// (host, port, address) overrides, as curl's --resolve.
    pub resolve: Vec<(String, u16, IpAddr)>,
    /// The world's clock start; `None` for now.
    pub time: Option<Timestamp>,
    /// The seed; `None` for a fresh random one.
    pub seed: Option<[u8; 32]>,
    /// Give up (killing the client) after this long.
    pub timeout: Duration,
    /// How the client's syscalls are intercepted.
    pub backend: crate::Backend,
    /// Who records the bytes; `None` for the backend's default
    /// ([`session::Recorder::for_backend`]).
    pub recorder: Option<session::Recorder>,
}

/// A finished sign.
pub struct Signed {
    /// What was written to the output file.
    pub transcript: Transcript,
    /// What supervising the client cost.
    pub stats: crate::Stats,
    /// Who recorded the bytes.
    pub recorder: session::Recorder,
    /// Wall time of the whole sign.
    pub elapsed: Duration,
}

/// Checks a URL given to `sign`: only https:// with a host.
pub fn check_url(url: &str) -> Result<url::Url, Error> {
    let u = url::Url::parse(url).map_err(|e| Error::Usage(format!("bad URL {url:?}: {e}")))?;
    match u.scheme() {
        "https" => {}
        "http" => {
            return Err(Error::Usage(format!(
                "{url} is plain http://, which has nothing to sign; use https://"
            )))
        }
        s => {
            return Err(Error::Usage(format!(
                "bad URL {url:?}: scheme {s:?} is not https"
            )))
        }
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(Error::Usage(format!("bad URL {url:?}: no host")));
    }
    Ok(u)
}

/// Parses curl's `HOST:PORT:ADDR` (ADDR may be a bracketed IPv6 address).
pub fn parse_resolve(s: &str) -> Result<(String, u16, IpAddr), Error> {
    let bad = || {
        Error::Usage(format!(
            "--resolve must be HOST:PORT:ADDR, but {s:?} is not"
        ))
    };
    let (host, rest) = s.split_once(':').ok_or_else(bad)?;
    let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let addr = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_ascii_lowercase(), port, addr))
}

/// Fetches `opts.url` with the built-in client under the supervisor,
/// records every connection and writes the transcript to `opts.output`.
/// Nothing is written unless the fetch succeeded.
pub fn sign(opts: SignOptions) -> Result<Signed, Error> {
    check_url(&opts.url)?;
    check_output_dir(&opts.output)?;
    let job = Fetch {
        url: opts.url,
        ca_files: session::check_ca_files(&opts.ca_files)?,
        resolve: Arc::new(resolve_map(&opts.resolve)),
        time: opts.time,
        seed: opts.seed,
        timeout: opts.timeout,
        backend: opts.backend,
        recorder: session::Recorder::for_backend(opts.backend, opts.recorder)?,
        on_exit: None,
    };
    let signed =
        session::one_shot(|cancel| async move { fetch(job, cancel).await.map_err(|f| f.error) })?;
    transcript::write_file_atomic(&opts.output, &signed.transcript)
        .map_err(|e| Error::SignFailed(format!("cannot write {}: {e}", opts.output.display())))?;
    Ok(signed)
}

/// `--resolve` overrides, keyed for lookups.
pub(crate) fn resolve_map(r: &[(String, u16, IpAddr)]) -> HashMap<(String, u16), IpAddr> {
    r.iter().map(|(h, p, a)| ((h.clone(), *p), *a)).collect()
}

/// One fetch to sign, its inputs already checked.
pub(crate) struct Fetch {
    pub url: String,
    /// Checked and absolute ([`session::check_ca_files`]).
    pub ca_files: Vec<PathBuf>,
    pub resolve: Arc<HashMap<(String, u16), IpAddr>>,
    pub time: Option<Timestamp>,
    pub seed: Option<[u8; 32]>,
    pub timeout: Duration,
    pub backend: crate::Backend,
    pub recorder: session::Recorder,
    /// See [`session::Spec::on_exit`].
    pub on_exit: Option<session::OnExit>,
}

/// Why a fetch produced no transcript.
#[derive(Debug)]
pub(crate) struct Failed {
    pub error: Error,
    /// The network failed in a way a later attempt may not (a reset, a
    /// connect timeout): a batch retries these, and only these.
    pub transient: bool,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Failed {
        Failed {
            error,
            transient: false,
        }
    }
}

/// Runs one fetch under the supervisor on the current runtime and returns
/// the transcript, unwritten. Many may run at once.
pub(crate) async fn fetch(job: Fetch, cancel: session::Cancel) -> Result<Signed, Failed> {
    let seed = match job.seed {
        Some(s) => s,
        None => {
            let mut s = [0u8; 32];
            rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut s)
                .map_err(|e| Error::Environment(format!("cannot draw a seed from the OS: {e}")))?;
            s
        }
    };
    let clock_start = job
        .time
        .unwrap_or_else(|| Timestamp::from_system_time(SystemTime::now()));
    let world = WorldConfig {
        key: world_key(&seed, clock_start, &job.url),
        clock_start,
        scope: Scope::Networked,
    };
    let spec = Spec {
        backend: job.backend,
        url: job.url.clone(),
        ca_files: job.ca_files,
        world,
        timeout: job.timeout,
        on_exit: job.on_exit,
    };
    let report = session::run(
        spec,
        Ends::Record {
            resolve: job.resolve,
            by: job.recorder,
        },
        cancel,
    )
    .await?;

    let mut connections = Vec::new();
    let mut upstream: Option<Upstream> = None;
    for c in report.connections {
        match c {
            ConnectionResult::Recorded(r) => {
                if upstream.is_none() {
                    upstream = r.error.clone();
                }
                connections.push(r.connection);
            }
            ConnectionResult::Replayed(_) => unreachable!("sign only records"),
            ConnectionResult::Unexpected(e) => return Err(Error::SignFailed(e).into()),
        }
    }
    let failed = |message: String, transient: bool| Failed {
        error: Error::SignFailed(message),
        transient,
    };
    let response = match report.outcome {
        Ok(ClientOutcome::Fetched(r)) => r,
        Ok(ClientOutcome::Failed(f)) => {
            // A refused or unreachable server is better said by the recorder
            // than by the client, which only saw its socket close.
            if let (Some(u), FailureKind::Io | FailureKind::Tls | FailureKind::Connect) =
                (upstream, f.kind)
            {
                return Err(failed(u.message, u.transient));
            }
            return Err(match f.kind {
                FailureKind::BadUrl => Error::Usage(f.message).into(),
                // On a socket handed over, the client saw the network's
                // errors itself.
                _ => failed(f.message, f.transient),
            });
        }
        Err(why) => {
            return Err(match upstream {
                Some(u) => failed(u.message, u.transient),
                None => failed(why, false),
            })
        }
    };
    Ok(Signed {
        transcript: Transcript {
            client: client::client_id(),
            url: job.url,
            seed,
            clock_start,
            backend: job.backend.name().into(),
            connections,
            response,
        },
        stats: report.stats,
        recorder: job.recorder,
        elapsed: report.elapsed,
    })
}

/// Fails before any network traffic if the transcript could not be written.
fn check_output_dir(output: &Path) -> Result<(), Error> {
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "cannot write {}: {} is not a directory",
            output.display(),
            dir.display()
        )));
    }
    if output.is_dir() {
        return Err(Error::Usage(format!(
            "cannot write {}: it is a directory",
            output.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("https://example.test/a?b").is_ok());
        assert!(
            matches!(check_url("http://example.test/"), Err(Error::Usage(m)) if m.contains("nothing to sign"))
        );
        assert!(check_url("ftp://x/").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn resolve_specs() {
        assert_eq!(
            parse_resolve("A.test:443:127.0.0.1").unwrap(),
            ("a.test".into(), 443, "127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_resolve("a.test:8443:[::1]").unwrap().2,
            "::1".parse::<IpAddr>().unwrap()
        );
        for bad in [
            "a.test",
            "a.test:x:127.0.0.1",
            ":1:127.0.0.1",
            "a.test:1:nope",
        ] {
            assert!(parse_resolve(bad).is_err(), "{bad}");
        }
    }
}
