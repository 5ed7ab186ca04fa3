//! One run of the built-in client under the supervisor, with its redirected
//! connections going to the recorder (sign) or the replayer (verify).
//!
//! On sign, the recorder is the client itself where the backend can hand it
//! a socket to the server ([`Recorder::Client`], seccomp), or a relay: see
//! `relay::record`. Either way the transcript's connections come out of
//! [`run`] with their events.
//!
//! Threads: under seccomp, a run is served entirely by the task that calls
//! [`run`]: its runtime waits for the client's syscalls, connects or relays
//! its connections, and the client's output is read once it ends. On a
//! current-thread runtime ([`one_shot`], or each thread of a batch's pool)
//! one thread then does everything for one client, with no hand-off between
//! threads. Under ptrace the tracer is a thread of its own (a tracee belongs
//! to the thread that forked it), and the relays stay tasks.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use crate::client::{self, ClientOutcome, ClientOutput};
use crate::intercept::{self, target, Backend, ClientEnd, ServerSockets, Stats};
use crate::relay::{
    self,
    record::{Recorded, Upstream},
    replay::Divergence,
};
use crate::transcript::{Connection, Event};
use crate::world::{Destination, Scope, World, WorldConfig};
use crate::Error;

/// The most the client may print: the largest body, plus its record of
/// the wire (the body again, encrypted, and the handshakes), headers and
/// framing. A transcript decodes to at most 512 MiB in all.
const MAX_OUTCOME: usize = 640 << 20;

/// Where redirected server connections go.
pub enum Ends {
    /// To the real servers. `resolve` overrides name resolution for
    /// (host, port), as curl's --resolve does.
    Record {
        resolve: Arc<HashMap<(String, u16), IpAddr>>,
        by: Recorder,
    },
    /// To the recorded connections, in order.
    Replay { connections: Arc<Vec<Connection>> },
}

/// Who records a server connection's bytes when signing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Recorder {
    /// The supervisor connects to the server and installs that socket in
    /// the client, which reports what it wrote and read (seccomp only:
    /// ADDFD). No supervisor thread is on the data path.
    Client,
    /// The supervisor relays between the client and the server and keeps
    /// every byte (every backend).
    Relay,
}

impl Recorder {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Recorder::Client => "client",
            Recorder::Relay => "relay",
        }
    }

    /// The recorder asked for, or the backend's default: the client where
    /// the backend can hand it a socket (seccomp), the relay elsewhere.
    pub fn for_backend(backend: Backend, asked: Option<Recorder>) -> Result<Recorder, Error> {
        match (backend, asked) {
            (Backend::Seccomp, None) => Ok(Recorder::Client),
            (_, None) => Ok(Recorder::Relay),
            (Backend::Seccomp, Some(r)) | (_, Some(r @ Recorder::Relay)) => Ok(r),
            (b, Some(Recorder::Client)) => Err(Error::Usage(format!(
                "--recorder client needs the seccomp backend (it installs a socket in the client); {} can only relay",
                b.name()
            ))),
        }
    }
}

pub struct Spec {
    pub backend: Backend,
    pub url: String,
    pub ca_files: Vec<PathBuf>,
    pub world: WorldConfig,
    pub timeout: Duration,
    /// Called once the client and every process it started are gone, before
    /// their output is read and the result built (or dropped uncalled if
    /// the run ends before that): a batch gives the client's run slot back
    /// there, so the next client starts while this one's result is made.
    pub on_exit: Option<OnExit>,
}

/// See [`Spec::on_exit`].
pub type OnExit = Box<dyn FnOnce() + Send>;

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

/// Stops runs from outside: a batch's Ctrl-C, or the one-shot run's.
/// Cheap to clone; every clone sees the same stop.
#[derive(Clone)]
pub struct Cancel(tokio::sync::watch::Receiver<bool>);

/// Trips every [`Cancel`] made from it; clones trip the same.
#[derive(Clone)]
pub struct CancelSwitch(Arc<tokio::sync::watch::Sender<bool>>);

impl CancelSwitch {
    pub fn new() -> (CancelSwitch, Cancel) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (CancelSwitch(Arc::new(tx)), Cancel(rx))
    }

    pub fn trip(&self) {
        let _ = self.0.send(true);
    }
}

impl Cancel {
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Returns once tripped (never, if the switch is dropped untripped).
    pub async fn cancelled(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Drives one job on a small runtime of its own, stopping it on SIGINT or
/// SIGTERM (the job sees its [`Cancel`] tripped).
pub fn one_shot<T, F, Fut>(job: F) -> Result<T, Error>
where
    F: FnOnce(Cancel) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Environment(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let (switch, cancel) = CancelSwitch::new();
        let signals = on_signal(switch)?;
        let r = job(cancel).await;
        signals.abort();
        r
    })
}

/// Trips `switch` on the first SIGINT or SIGTERM. Listening starts before
/// this returns, so no signal can slip in between it and a client's start.
/// (Handlers reset at exec: clients keep the default actions.)
pub fn on_signal(switch: CancelSwitch) -> Result<tokio::task::JoinHandle<()>, Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let install =
        |k| signal(k).map_err(|e| Error::Environment(format!("cannot handle signals: {e}")));
    let mut sigint = install(SignalKind::interrupt())?;
    let mut sigterm = install(SignalKind::terminate())?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        switch.trip();
    }))
}

/// Runs the client once on the current runtime; many may run at once.
/// `cancel` kills the client and makes the result [`Error::Interrupted`].
pub async fn run(mut spec: Spec, ends: Ends, cancel: Cancel) -> Result<Report, Error> {
    let started = Instant::now();
    let on_exit = spec.on_exit.take();
    // A batch may hand over a job just as it is stopped.
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let env_err = |e: &dyn std::fmt::Display| Error::Environment(e.to_string());
    let cmd = client_command(&spec)?;
    let world = Arc::new(Mutex::new(World::new(spec.world.clone())));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Destination, ClientEnd)>();
    let backend = spec.backend;
    let world2 = Arc::clone(&world);
    let sink: Box<intercept::ConnectionSink> = Box::new(move |to, s| {
        let _ = tx.send((to, s));
    });
    let servers = match ends {
        Ends::Record {
            by: Recorder::Client,
            ..
        } => ServerSockets::HandedOver,
        _ => ServerSockets::Relayed,
    };
    let running = if backend == Backend::Seccomp {
        // Served from this task's runtime: see `intercept::start_here`.
        intercept::start_here(&cmd, Scope::Networked, world2, sink, servers)
    } else {
        // ptrace needs a thread of its own, and starting waits for fork and
        // exec: not on a runtime thread.
        tokio::task::spawn_blocking(move || {
            intercept::start(backend, cmd, Scope::Networked, world2, sink)
        })
        .await
        .map_err(|e| Error::Environment(format!("cannot start the client: {e}")))?
    }
    .map_err(|e| match e {
        target::SpawnError::Interrupted => Error::Interrupted,
        e => env_err(&e),
    })?;
    let pid = running.pid;
    let stdout = running.stdout.map(|s| collect(s, MAX_OUTCOME));
    let stderr = running.stderr.map(|s| collect(s, 64 << 10));
    let running_done = running.done;

    let ends = Arc::new(ends);
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut tasks: Vec<(usize, tokio::task::JoinHandle<ConnectionResult>)> = Vec::new();
    // Connections handed to the client: it reports their bytes.
    let mut handed = Vec::new();
    let mut stop: Option<Stop> = None;
    loop {
        tokio::select! {
            // A stop first: a Ctrl-C also kills the client, and its death
            // must not be mistaken for a plain failure.
            biased;
            _ = cancel.cancelled(), if stop.is_none() => {
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
                    if matches!(s, ClientEnd::Pending(_)) {
                        handed.push(index);
                    }
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
    if let Some(f) = on_exit {
        f();
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
    // The channel closed, so the supervisor is ending.
    let finished = running_done
        .wait()
        .await
        .map_err(|e| Error::Environment(format!("supervisor: {e}")))?;
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
    results.sort_by_key(|(i, _)| *i);
    let output = match stop {
        Some(Stop::Interrupted) => return Err(Error::Interrupted),
        Some(Stop::TimedOut) => Err(format!("timed out after {} s", spec.timeout.as_secs())),
        None => read_outcome(stdout, stderr, &status).await,
    };
    // Without the client's output there is no record to pair, and nothing
    // will be signed: why the client gave none is the story to tell.
    let outcome = output.map(|o| {
        if !handed.is_empty() {
            take_client_records(&mut results, &handed, o.wire);
        }
        o.outcome
    });
    let connections = results.into_iter().map(|(_, r)| r).collect();
    Ok(Report {
        outcome,
        connections,
        stats,
        elapsed: started.elapsed(),
    })
}

/// The built-in client, re-executed from our own binary, with a fixed
/// environment and working directory.
fn client_command(spec: &Spec) -> Result<target::Program, Error> {
    // Looked up once: a batch starts a client per URL.
    static EXE: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let exe = EXE
        .get_or_init(|| std::env::current_exe().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::Environment(format!("cannot find our own executable: {e}")))?;
    let mut args: Vec<OsString> = vec![client::CHILD_ARG.into(), spec.url.clone().into()];
    for ca in &spec.ca_files {
        args.push("--ca-file".into());
        args.push(ca.into());
    }
    Ok(target::Program {
        path: exe.into(),
        args,
        env: target::MINIMAL_ENV
            .iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
        // The root directory is the same on every machine; the caller's
        // working directory is not.
        cwd: Some("/".into()),
        capture: true,
        // `client::child_main` does, first thing.
        unblocks_signals: true,
        forkable: true,
    })
}

/// Fills the connections handed to the client (`handed`, by index) with
/// the events it reported (`wire`, in the order it connected). The client
/// reports exactly the connects that succeeded, and only a handed-over
/// connection that was answered with a socket succeeded, so the two lists
/// pair up in order. If they do not, the connections say so and no
/// transcript is made of them.
fn take_client_records(
    results: &mut [(usize, ConnectionResult)],
    handed: &[usize],
    wire: Vec<Vec<Event>>,
) {
    let connected: Vec<&mut Recorded> = results
        .iter_mut()
        .filter(|(i, _)| handed.contains(i))
        .filter_map(|(_, r)| match r {
            ConnectionResult::Recorded(r) if r.error.is_none() => Some(r),
            _ => None,
        })
        .collect();
    if connected.len() != wire.len() {
        let why = format!(
            "the client reported {} connection(s), but {} were handed to it",
            wire.len(),
            connected.len()
        );
        for (i, r) in results.iter_mut() {
            if handed.contains(i) {
                *r = ConnectionResult::Unexpected(why.clone());
            }
        }
        return;
    }
    for (r, events) in connected.into_iter().zip(wire) {
        r.connection.events = events;
    }
}

/// The outcome the client printed, or why there is none.
async fn read_outcome(
    stdout: Option<Collected>,
    stderr: Option<Collected>,
    status: &std::process::ExitStatus,
) -> Result<ClientOutput, String> {
    let out = match stdout {
        Some(c) => c.take().await,
        None => Vec::new(),
    };
    if let Ok(o) = client::decode_output(&out) {
        return Ok(o);
    }
    let err = match stderr {
        Some(c) => c.take().await,
        None => Vec::new(),
    };
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
    let resolve = match &*ends {
        Ends::Record { resolve, .. } => resolve,
        Ends::Replay { connections } => {
            return replay_connection(connections, index, host, port, s).await
        }
    };
    let addrs = match upstream_addrs(resolve, &host, port).await {
        Ok(a) => a,
        Err(error) => {
            if let ClientEnd::Pending(pending) = s {
                let _ = pending.fail(libc::EHOSTUNREACH);
            }
            return not_made(host, port, error);
        }
    };
    ConnectionResult::Recorded(match s {
        ClientEnd::Pending(pending) => relay::record::hand_over(pending, host, port, addrs).await,
        s => match relay::into_async(s) {
            Ok(s) => relay::record::record(s, host, port, addrs).await,
            Err(e) => return ConnectionResult::Unexpected(format!("connection {index}: {e}")),
        },
    })
}

/// A connection of a replay: the transcript's connection `index`, if the
/// client connected where it says.
async fn replay_connection(
    connections: &[Connection],
    index: usize,
    host: String,
    port: u16,
    s: ClientEnd,
) -> ConnectionResult {
    // A connect waiting to be handed a socket cannot be replayed to (only a
    // signer asks for those): dropped, it fails.
    let s = match relay::into_async(s) {
        Ok(s) => s,
        Err(e) => return ConnectionResult::Unexpected(format!("connection {index}: {e}")),
    };
    match connections.get(index) {
            None => ConnectionResult::Unexpected(format!(
                "the client opened connection {index} to {host}:{port}, but the transcript has only {} connection(s)",
                connections.len()
            )),
            Some(c) if !c.host.eq_ignore_ascii_case(&host) || c.port != port => ConnectionResult::Unexpected(format!(
                "connection {index}: the client connected to {host}:{port}, but the transcript has {}:{}",
                c.host, c.port
            )),
            Some(c) => ConnectionResult::Replayed(relay::replay::replay(s, index, c).await),
    }
}

/// A server connection that failed before it was made.
fn not_made(host: String, port: u16, error: Upstream) -> ConnectionResult {
    ConnectionResult::Recorded(Recorded {
        connection: relay::record::unrecorded(host, port),
        error: Some(error),
    })
}

/// Where the signer connects for `host:port`: a `--resolve` entry, the
/// address itself, or the system's resolver.
async fn upstream_addrs(
    resolve: &HashMap<(String, u16), IpAddr>,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Upstream> {
    if let Some(ip) = resolve.get(&(host.to_ascii_lowercase(), port)) {
        return Ok(vec![SocketAddr::new(*ip, port)]);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(a) => Ok(a.collect()),
        Err(e) => Err(Upstream::new(format!("cannot resolve {host}: {e}"), false)),
    }
}

/// A client's stdout or stderr, being collected.
enum Collected {
    /// A pipe, read by a task while the client runs.
    Pipe(tokio::task::JoinHandle<Vec<u8>>),
    /// A file (a memfd), read once the client is gone.
    File(std::fs::File, usize),
}

impl Collected {
    /// Everything read, at most `max` bytes; the client is gone, so a pipe
    /// is at its end or about to be.
    async fn take(self) -> Vec<u8> {
        match self {
            Collected::Pipe(h) => h.await.unwrap_or_default(),
            Collected::File(mut f, max) => {
                use std::io::{Read, Seek};
                // Sized from the file: `take` hides the size from
                // read_to_end, which then probes with a dozen small reads.
                let size = f.metadata().map_or(0, |m| m.len()).min(max as u64);
                let mut buf = Vec::with_capacity(size as usize + 1);
                if f.rewind().is_ok() {
                    let _ = f.take(max as u64).read_to_end(&mut buf);
                }
                buf
            }
        }
    }
}

/// Collects a client's output: a file as is, a pipe by a task (no thread
/// per client) that keeps at most `max` bytes and drains the rest, so the
/// client never blocks on a full pipe.
fn collect(out: std::fs::File, max: usize) -> Collected {
    use std::os::unix::fs::FileTypeExt;
    use tokio::io::AsyncReadExt;
    if !out.metadata().is_ok_and(|m| m.file_type().is_fifo()) {
        return Collected::File(out, max);
    }
    Collected::Pipe(tokio::spawn(async move {
        let mut buf = Vec::new();
        let Ok(mut r) = tokio::net::unix::pipe::Receiver::from_file(out) else {
            return buf;
        };
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = max.saturating_sub(buf.len());
                    buf.extend_from_slice(&chunk[..n.min(room)]);
                }
            }
        }
        buf
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handed(host: &str, error: bool) -> ConnectionResult {
        ConnectionResult::Recorded(Recorded {
            connection: relay::record::unrecorded(host.into(), 443),
            error: error.then(|| Upstream::new("refused".into(), false)),
        })
    }

    fn events_of(r: &ConnectionResult) -> Option<&[Event]> {
        match r {
            ConnectionResult::Recorded(r) => Some(&r.connection.events),
            _ => None,
        }
    }

    #[test]
    fn client_records_go_to_the_handed_over_connections_that_succeeded_in_order() {
        // Connection 1 failed (refused): the client has no record of it.
        let mut results = vec![
            (0, handed("a.test", false)),
            (1, handed("b.test", true)),
            (2, handed("c.test", false)),
        ];
        let wire = vec![
            vec![Event::Client(b"to a".to_vec()), Event::ClientEof],
            vec![Event::Client(b"to c".to_vec()), Event::ClientEof],
        ];
        take_client_records(&mut results, &[0, 1, 2], wire.clone());
        assert_eq!(events_of(&results[0].1), Some(&wire[0][..]));
        assert_eq!(events_of(&results[1].1), Some(&[][..]));
        assert_eq!(events_of(&results[2].1), Some(&wire[1][..]));
    }

    #[test]
    fn a_client_record_that_does_not_pair_up_makes_no_transcript() {
        for wire in [vec![], vec![vec![Event::ClientEof]; 3]] {
            let mut results = vec![(0, handed("a.test", false)), (1, handed("b.test", false))];
            take_client_records(&mut results, &[0, 1], wire.clone());
            for (_, r) in &results {
                assert!(
                    matches!(r, ConnectionResult::Unexpected(m) if m.contains(&format!("reported {} connection", wire.len()))),
                    "{} records for 2 connections were taken",
                    wire.len()
                );
            }
        }
    }
}
