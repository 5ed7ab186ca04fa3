//! One run of the built-in client under the supervisor, with its redirected
//! connections going to the recorder (sign) or the replayer (verify).
//!
//! Threads: the calling thread spawns the client (the client's parent-death
//! signal is tied to it) and drives a small tokio runtime for the relays;
//! one blocking thread services the seccomp listener; two more collect the
//! client's stdout and stderr.

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use crate::client::{self, ClientOutcome};
use crate::intercept::{self, target, Backend, ClientEnd, Stats};
use crate::relay::{self, record::Recorded, replay::Divergence};
use crate::transcript::Connection;
use crate::world::{Destination, Scope, World, WorldConfig};
use crate::Error;

/// The most the client may print as its outcome: the largest body plus
/// headers and framing.
const MAX_OUTCOME: u64 = 300 << 20;

/// Where redirected server connections go.
pub enum Ends {
    /// To the real servers. `resolve` overrides name resolution for
    /// (host, port), as curl's --resolve does.
    Record {
        resolve: HashMap<(String, u16), IpAddr>,
    },
    /// To the recorded connections, in order.
    Replay { connections: Arc<Vec<Connection>> },
}

pub struct Spec {
    pub backend: Backend,
    pub url: String,
    pub ca_files: Vec<PathBuf>,
    pub world: WorldConfig,
    pub timeout: Duration,
}

/// What happened on one connection.
pub enum ConnectionResult {
    Recorded(Recorded),
    Replayed(Result<(), Divergence>),
    /// The client connected somewhere the transcript does not have.
    Unexpected(String),
}

pub struct Report {
    /// The client's outcome, or why there is none (it crashed, timed out).
    pub outcome: Result<ClientOutcome, String>,
    /// By connection index.
    pub connections: Vec<ConnectionResult>,
    pub stats: Stats,
    pub elapsed: Duration,
}

/// Runs the client once. Errors are the supervisor's own failures; what the
/// client or the connections did is in the report.
pub fn run(spec: Spec, ends: Ends) -> Result<Report, Error> {
    let started = Instant::now();
    let env_err = |e: &dyn std::fmt::Display| Error::Environment(e.to_string());
    let cmd = client_command(&spec)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Environment(format!("cannot start the async runtime: {e}")))?;
    // Listen for Ctrl-C and SIGTERM before the client exists, so neither can
    // slip between its start and the loop below. (Handlers reset at exec:
    // the client keeps the default actions.)
    let (mut sigint, mut sigterm) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _rt = rt.enter();
        let install =
            |k| signal(k).map_err(|e| Error::Environment(format!("cannot handle signals: {e}")));
        (
            install(SignalKind::interrupt())?,
            install(SignalKind::terminate())?,
        )
    };
    let world = Arc::new(Mutex::new(World::new(spec.world.clone())));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Destination, ClientEnd)>();
    let running = intercept::start(
        spec.backend,
        cmd,
        Scope::Networked,
        Arc::clone(&world),
        Box::new(move |to, s| {
            let _ = tx.send((to, s));
        }),
    )
    .map_err(|e| env_err(&e))?;
    let pid = running.pid;
    let stdout = running.stdout.map(|s| collect(s, MAX_OUTCOME));
    let stderr = running.stderr.map(|s| collect(s, 64 << 10));

    let ends = Arc::new(ends);
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let (results, stop) = rt.block_on(async {
        let mut tasks: Vec<(usize, tokio::task::JoinHandle<ConnectionResult>)> = Vec::new();
        let mut stop: Option<Stop> = None;
        loop {
            tokio::select! {
                // Signals first: a Ctrl-C also kills the client, and its
                // death must not be mistaken for a plain failure.
                biased;
                _ = sigint.recv(), if stop.is_none() => {
                    stop = Some(Stop::Interrupted);
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                _ = sigterm.recv(), if stop.is_none() => {
                    stop = Some(Stop::Interrupted);
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                conn = rx.recv() => match conn {
                    Some((Destination::Nameserver, s)) => {
                        if let Ok(s) = relay::into_async(s) {
                            tokio::spawn(relay::dns::serve(s, Arc::clone(&world)));
                        }
                    }
                    Some((Destination::Server { index, host, port }, s)) => {
                        let ends = Arc::clone(&ends);
                        tasks.push((index, tokio::spawn(serve_connection(ends, index, host, port, s))));
                    }
                    // The supervisor finished: every process under it is gone.
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline), if stop.is_none() => {
                    stop = Some(Stop::TimedOut);
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        // The client is gone, so every relay sees its end close soon; the
        // upstream side of a recorder may still linger: bound the wait.
        let mut results = Vec::new();
        if stop.is_some() {
            // Nothing recorded will be used, and why the run stopped is the
            // story to tell: do not wait for servers.
            for (_, t) in &tasks {
                t.abort();
            }
            tasks.clear();
        }
        for (index, t) in tasks {
            let r = match tokio::time::timeout_at(deadline + Duration::from_secs(5), t).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => ConnectionResult::Unexpected("connection task failed".into()),
                Err(_) => ConnectionResult::Unexpected("connection did not finish in time".into()),
            };
            results.push((index, r));
        }
        (results, stop)
    });
    let finished = match running.done.join() {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return Err(Error::Environment(format!("supervisor: {e}"))),
        Err(_) => return Err(Error::Environment("the supervisor thread panicked".into())),
    };
    let status = finished.status;
    // The client killed by the signal a Ctrl-C sends the whole group: the
    // supervisor's own copy may not have been seen yet.
    let stop = match &stop {
        None if matches!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGINT | libc::SIGTERM)
        ) =>
        {
            Some(Stop::Interrupted)
        }
        _ => stop,
    };
    let stats = finished.stats;
    let mut results = results;
    results.sort_by_key(|(i, _)| *i);
    let connections = results.into_iter().map(|(_, r)| r).collect();
    let outcome = match stop {
        Some(Stop::Interrupted) => return Err(Error::Interrupted),
        Some(Stop::TimedOut) => Err(format!("timed out after {} s", spec.timeout.as_secs())),
        None => read_outcome(stdout, stderr, &status),
    };
    Ok(Report {
        outcome,
        connections,
        stats,
        elapsed: started.elapsed(),
    })
}

/// The built-in client, re-executed from our own binary, with a fixed
/// environment and working directory.
fn client_command(spec: &Spec) -> Result<Command, Error> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Environment(format!("cannot find our own executable: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg(client::CHILD_ARG).arg(&spec.url);
    for ca in &spec.ca_files {
        cmd.arg("--ca-file").arg(ca);
    }
    cmd.env_clear()
        .envs(target::MINIMAL_ENV.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The root directory is the same on every machine; the caller's
        // working directory is not.
        .current_dir("/");
    Ok(cmd)
}

/// The outcome the client printed, or why there is none.
fn read_outcome(
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    status: &std::process::ExitStatus,
) -> Result<ClientOutcome, String> {
    let out = stdout
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    if let Ok(o) = client::decode_outcome(&out) {
        return Ok(o);
    }
    let err = stderr
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    let err = String::from_utf8_lossy(&err);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let how = status.to_string();
    Err(if last.is_empty() {
        format!("the client ended without a result ({how})")
    } else {
        format!("the client ended without a result ({how}): {last}")
    })
}

/// Checks each CA file holds at least one PEM certificate, and makes the
/// paths absolute: the client runs in `/`.
pub(crate) fn check_ca_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    paths
        .iter()
        .map(|p| {
            let bad = |why: String| Error::Usage(format!("--ca-file {}: {why}", p.display()));
            // The client reads the file again by its path: a pipe, which can
            // be read once, would not do (and a FIFO could block here).
            if !std::fs::metadata(p)
                .map_err(|e| bad(e.to_string()))?
                .is_file()
            {
                return Err(bad("not a regular file".into()));
            }
            let pem = std::fs::read(p).map_err(|e| bad(e.to_string()))?;
            let certs = rustls_pemfile::certs(&mut pem.as_slice())
                .filter(Result::is_ok)
                .count();
            if certs == 0 {
                return Err(bad("no PEM certificate in it".into()));
            }
            std::path::absolute(p).map_err(|e| bad(e.to_string()))
        })
        .collect()
}

enum Stop {
    TimedOut,
    Interrupted,
}

async fn serve_connection(
    ends: Arc<Ends>,
    index: usize,
    host: String,
    port: u16,
    s: ClientEnd,
) -> ConnectionResult {
    let s = match relay::into_async(s) {
        Ok(s) => s,
        Err(e) => return ConnectionResult::Unexpected(format!("connection {index}: {e}")),
    };
    match &*ends {
        Ends::Record { resolve } => {
            let addrs = match resolve.get(&(host.to_ascii_lowercase(), port)) {
                Some(ip) => vec![SocketAddr::new(*ip, port)],
                None => match host.parse::<IpAddr>() {
                    Ok(ip) => vec![SocketAddr::new(ip, port)],
                    Err(_) => match tokio::net::lookup_host((host.as_str(), port)).await {
                        Ok(a) => a.collect(),
                        Err(e) => {
                            drop(s);
                            let conn = Connection { host: host.clone(), port, signed_addr: String::new(), events: vec![] };
                            return ConnectionResult::Recorded(Recorded { connection: conn, error: Some(format!("cannot resolve {host}: {e}")) });
                        }
                    },
                },
            };
            ConnectionResult::Recorded(relay::record::record(s, host, port, addrs).await)
        }
        Ends::Replay { connections } => match connections.get(index) {
            None => ConnectionResult::Unexpected(format!(
                "the client opened connection {index} to {host}:{port}, but the transcript has only {} connection(s)",
                connections.len()
            )),
            Some(c) if !c.host.eq_ignore_ascii_case(&host) || c.port != port => ConnectionResult::Unexpected(format!(
                "connection {index}: the client connected to {host}:{port}, but the transcript has {}:{}",
                c.host, c.port
            )),
            Some(c) => ConnectionResult::Replayed(relay::replay::replay(s, index, c).await),
        },
    }
}

/// Reads a pipe to its end on a thread, keeping at most `max` bytes.
fn collect(mut r: impl Read + Send + 'static, max: u64) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut r).take(max).read_to_end(&mut buf);
        // Drain the rest so the client never blocks on a full pipe.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
        buf
    })
}
