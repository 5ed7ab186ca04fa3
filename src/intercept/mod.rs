//! Interception backends: they catch the syscalls the world answers and
//! carry out its answers, and decide nothing themselves.
//!
//! Three backends sit behind one entry point, [`start`]:
//! - [`Backend::Seccomp`]: a seccomp user-notification filter; the target
//!   stops only at the syscalls the world answers and the supervisor
//!   answers from outside (`seccomp.rs`).
//! - [`Backend::PtraceSeccomp`]: the same filter returning
//!   `SECCOMP_RET_TRACE`, serviced by a ptrace tracer (`ptrace.rs`).
//! - [`Backend::Ptrace`]: the original tlsign design, `PTRACE_SYSCALL`,
//!   stopping at every syscall entry and exit (`ptrace.rs`).
//!
//! Each can run the supervised program from a thread of its own
//! ([`start`]); seccomp can also be served by a task on the caller's tokio
//! runtime ([`start_here`]), which is how sign and verify run it. Every
//! redirected connection goes to a sink; `decode.rs` turns raw syscalls
//! into the world's requests for all of them.

pub mod decode;
pub mod filter;
pub mod learned;
pub mod mem;
pub mod procfs;
pub mod ptrace;
pub mod seccomp;
pub mod served;
pub mod target;
pub mod vdso;
pub mod zygote;

use std::fs::File;
use std::io;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::world::{Destination, Scope, World};

/// How the supervisor catches the syscalls it answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Backend {
    /// seccomp user notification (Linux 5.9+): the fastest.
    #[default]
    Seccomp,
    /// ptrace, stopping at every syscall entry and exit: the original design.
    Ptrace,
    /// ptrace, stopping only where a seccomp filter says `SECCOMP_RET_TRACE`.
    PtraceSeccomp,
}

impl Backend {
    /// Every backend, in the order benchmarks and docs list them.
    pub const ALL: [Backend; 3] = [Backend::Seccomp, Backend::PtraceSeccomp, Backend::Ptrace];

    /// The name on the command line and in transcripts.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Seccomp => "seccomp",
            Backend::Ptrace => "ptrace",
            Backend::PtraceSeccomp => "ptrace-seccomp",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What one supervised run cost.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// The backend that ran it.
    pub backend: Backend,
    /// Times a target thread stopped for the supervisor: seccomp
    /// notifications (including withdrawn ones) or ptrace stops.
    pub interceptions: u64,
    /// User + system CPU time of the supervised program (its first process
    /// and the descendants it waited for).
    pub client_cpu: Duration,
    /// Stops by (syscall number, clock id or -1), counting only the
    /// syscalls the filter selects: under `ptrace` the other stops are in
    /// `interceptions` alone. Integers here, names in [`Stats::by_syscall`]:
    /// this is counted on every notification.
    counts: std::collections::BTreeMap<(i64, i64), u64>,
    /// The killable wait was on (seccomp backend, Linux 5.19+).
    pub killable: bool,
    /// Synchronous wake-ups were on (seccomp backend, Linux 6.6+).
    pub sync_wakeup: bool,
}

impl Stats {
    /// Counts one stop at syscall `nr` with first argument `arg0`.
    pub(crate) fn count(&mut self, nr: i64, arg0: u64) {
        let clock = if nr == libc::SYS_clock_gettime {
            i64::from(arg0 as i32)
        } else {
            -1
        };
        *self.counts.entry((nr, clock)).or_default() += 1;
    }

    /// Stops by syscall, "clock_gettime(1)" naming the clock id: the
    /// syscalls the filter selects (under `ptrace` the other stops are in
    /// `interceptions` alone).
    pub fn by_syscall(&self) -> Vec<(String, u64)> {
        self.counts
            .iter()
            .map(|(&(nr, clock), &n)| {
                let name = decode::syscall_name(nr);
                let name = if clock >= 0 {
                    format!("{name}({clock})")
                } else {
                    name.to_string()
                };
                (name, n)
            })
            .collect()
    }

    /// "20 interceptions, sync wake-up" and the like, for summary lines.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} backend, {} interceptions",
            self.backend, self.interceptions
        );
        if self.backend == Backend::Seccomp {
            s.push_str(if self.sync_wakeup {
                ", sync wake-up"
            } else {
                ", no sync wake-up"
            });
        }
        s
    }
}

/// The supervisor's end of a redirected connection.
pub enum ClientEnd {
    /// The other end of a socket pair installed in place of the target's
    /// socket (seccomp backend).
    Unix(std::os::unix::net::UnixStream),
    /// A loopback connection the target's own socket was pointed at
    /// (ptrace backends: they cannot install an fd in the target).
    Tcp(std::net::TcpStream),
    /// The target's connect itself, still waiting: the caller connects to
    /// the server and installs that socket in the target (seccomp backend,
    /// [`ServerSockets::HandedOver`]).
    Pending(seccomp::PendingConnect),
}

/// What the seccomp backend puts in place of a socket the world sends to a
/// server (`Destination::Server`). The nameserver always gets a socket
/// pair, and the ptrace backends always relay: a tracer cannot install an
/// fd in its tracee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerSockets {
    /// One end of a socket pair; the sink gets the other, to relay.
    Relayed,
    /// The sink gets the waiting connect ([`ClientEnd::Pending`]) and
    /// answers it with a socket of its own, connected to the server: the
    /// client's bytes then pass through no supervisor thread.
    HandedOver,
}

/// Called with each connection the world redirected and where it leads.
pub type ConnectionSink = dyn FnMut(Destination, ClientEnd) + Send;

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// Starting failed; `start`'s caller already has the reason.
    #[error("the program did not start")]
    NotStarted,
    /// The supervisor ended without a word (its thread panicked).
    #[error("the supervisor ended without a result")]
    Vanished,
    #[error("seccomp listener failed: {0}")]
    Listener(io::Error),
    #[error("ptrace failed: {0}")]
    Ptrace(io::Error),
    #[error(transparent)]
    Vdso(#[from] vdso::VdsoError),
    #[error("{syscall} of thread {tid}: {source}")]
    Answer {
        syscall: &'static str,
        tid: i32,
        source: io::Error,
    },
}

/// How a supervised program ended.
pub struct Finished {
    pub status: ExitStatus,
    pub stats: Stats,
}

/// A supervised program, started.
pub struct Running {
    /// Its first process.
    pub pid: i32,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    /// Ends when every process of the program has exited.
    pub done: Done,
}

/// How the supervision of a running program ends, from a thread of its
/// own ([`start`]) or from a task on the caller's runtime ([`start_here`]).
pub struct Done(tokio::sync::oneshot::Receiver<Result<Finished, SuperviseError>>);

impl Done {
    /// Waits for the end (an async caller).
    pub async fn wait(self) -> Result<Finished, SuperviseError> {
        self.0.await.unwrap_or(Err(SuperviseError::Vanished))
    }

    /// Waits for the end (a caller outside any async runtime).
    pub fn wait_blocking(self) -> Result<Finished, SuperviseError> {
        self.0
            .blocking_recv()
            .unwrap_or(Err(SuperviseError::Vanished))
    }
}

/// Starts `cmd` under `backend` in the world `world`, on a supervisor
/// thread of its own (ptrace ties a tracee to the thread that started it).
/// Returns once the program runs, or with why it could not start.
pub fn start(
    backend: Backend,
    program: target::Program,
    scope: Scope,
    world: Arc<Mutex<World>>,
    sink: Box<ConnectionSink>,
) -> Result<Running, target::SpawnError> {
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let name = format!("{backend}-supervisor");
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let r = match backend {
                Backend::Seccomp => seccomp::supervise(&program, scope, &world, sink, started_tx),
                Backend::Ptrace | Backend::PtraceSeccomp => {
                    ptrace::supervise(backend, program.command(), scope, &world, sink, started_tx)
                }
            };
            let _ = done_tx.send(r);
        })
        .map_err(|e| {
            target::SpawnError::Setup(format!("cannot start the supervisor thread: {e}"))
        })?;
    match started_rx.recv() {
        Ok(Ok(s)) => Ok(Running {
            pid: s.pid,
            stdout: s.stdout,
            stderr: s.stderr,
            done: Done(done_rx),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(target::SpawnError::Setup(
            "the supervisor thread ended before starting the program".into(),
        )),
    }
}

/// Starts `program` under the seccomp backend and supervises it from a
/// task on the current tokio runtime, not a thread of its own: with a
/// current-thread runtime, one thread then serves a client's syscalls and
/// relays its connections, with no hand-off between threads. Waiting in
/// epoll costs a few microseconds per notification more than blocking in
/// RECV (docs/benchmarks.md), far less than the hand-offs it saves.
///
/// Must be called on a tokio runtime. The client's parent-death signal is
/// tied to the calling thread.
pub fn start_here(
    program: &target::Program,
    scope: Scope,
    world: Arc<Mutex<World>>,
    sink: Box<ConnectionSink>,
    servers: ServerSockets,
) -> Result<Running, target::SpawnError> {
    let (child, listening) = seccomp::launch(program, scope, servers)?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = done_tx.send(listening.serve_here(&world, sink).await);
    });
    Ok(Running {
        pid: child.pid,
        stdout: child.stdout,
        stderr: child.stderr,
        done: Done(done_rx),
    })
}

/// What a supervisor thread reports once its program runs.
pub struct Started {
    pub pid: i32,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

/// A preparation step's error as a reason the program could not start.
fn setup<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, target::SpawnError> {
    r.map_err(|e| target::SpawnError::Setup(e.to_string()))
}

/// Passes a failure to start on to `start`'s caller, leaving the
/// supervisor thread nothing to do (`None`).
fn or_report<T>(started: &StartedTx, r: Result<T, target::SpawnError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            let _ = started.send(Err(e));
            None
        }
    }
}

pub type StartedTx = std::sync::mpsc::SyncSender<Result<Started, target::SpawnError>>;
