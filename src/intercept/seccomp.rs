//! The seccomp user-notification backend: receives notifications, decodes
//! them into the world's requests, and carries out the world's answers.
//!
//! One blocking thread per supervised program waits on the listener. A
//! waiter blocked on the fd itself keeps the kernel's synchronous wake-up
//! (the target's CPU runs the supervisor next), which an epoll-based async
//! wait would lose; the network work a redirected connection needs is
//! handed to the async runtime through the connection sink.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;

use super::decode::{self, Decoded};
use super::procfs::{self, tgid_cached};
use super::served::{memfd_with, random_device};
use super::target::{self, Listener};
use super::vdso::VdsoPatch;
use super::{
    filter, learned, mem, or_report, setup, Backend, ClientEnd, ConnectionSink, Finished,
    ServerSockets, Started, StartedTx, Stats, SuperviseError,
};
use crate::sys::{self, AddFd, SeccompNotif};
use crate::world::{Answer, Caller, Scope, World};

/// How the supervisor thread waits for the next notification. The
/// synchronous wake-up (Linux 6.6) runs the woken waiter on the target's
/// CPU; which waits keep that benefit is measured by `cargo bench` (see
/// docs/benchmarks.md). `TLSIGN_SECCOMP_WAIT=poll|recv|async` picks one,
/// for that comparison only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Block in SECCOMP_IOCTL_NOTIF_RECV itself (the default where the
    /// kernel has the sync wake-up; poll otherwise).
    Recv,
    /// poll(2) for POLLIN, then RECV.
    Poll,
    /// A tokio `AsyncFd` (epoll), then RECV.
    Async,
}

impl Wait {
    fn from_env() -> Wait {
        match std::env::var("TLSIGN_SECCOMP_WAIT").as_deref() {
            Ok("poll") => Wait::Poll,
            Ok("async") => Wait::Async,
            _ => Wait::Recv,
        }
    }
}

/// Spawns `cmd` under the notification filter, reports it started, and
/// services it until every process under the filter has exited.
pub fn supervise(
    program: &target::Program,
    scope: Scope,
    world: &Mutex<World>,
    mut sink: Box<ConnectionSink>,
    started: StartedTx,
) -> Result<Finished, SuperviseError> {
    let launched = launch(program, scope, ServerSockets::Relayed);
    let Some((child, listening)) = or_report(&started, launched) else {
        return Err(SuperviseError::NotStarted);
    };
    let _ = started.send(Ok(Started {
        pid: child.pid,
        stdout: child.stdout,
        stderr: child.stderr,
    }));
    let served = listening.serve(world, &mut *sink);
    kill_if_failed(listening.pid, &served);
    let waited = listening.reap.wait_blocking(listening.pid);
    finish(served, waited)
}

/// A program started under the filter, its listener not yet served.
pub struct Listening {
    pid: i32,
    listener: Listener,
    vdso: Option<&'static VdsoPatch>,
    servers: ServerSockets,
    reap: target::Reap,
}

/// Starts `program` under the notification filter.
pub fn launch(
    program: &target::Program,
    scope: Scope,
    servers: ServerSockets,
) -> Result<(target::Spawned, Listening), target::SpawnError> {
    let prog = setup(filter::program(scope, filter::Catch::Notify))?;
    let prog = filter::exempting(prog, &learned::exemptions());
    let vdso = setup(VdsoPatch::shared())?;
    let (child, listener, reap) = target::spawn(program, prog)?;
    let listening = Listening {
        pid: child.pid,
        listener,
        vdso,
        servers,
        reap,
    };
    Ok((child, listening))
}

impl Listening {
    /// Services the listener on this thread until every process under the
    /// filter has exited, waiting as `TLSIGN_SECCOMP_WAIT` says.
    fn serve(
        &self,
        world: &Mutex<World>,
        sink: &mut ConnectionSink,
    ) -> Result<Stats, SuperviseError> {
        let mut stats = stats_of(&self.listener);
        let fd = self.listener.fd.as_fd();
        let mut s = Supervisor::new(fd, world, self.vdso, self.pid, sink, self.servers);
        match Wait::from_env() {
            Wait::Async => s.run_async(&mut stats),
            // Before Linux 6.6 (no sync wake-up) RECV slept on a semaphore
            // that the last process leaving never signals: only poll sees
            // the end.
            Wait::Recv if !self.listener.sync_wakeup => s.run(Wait::Poll, &mut stats),
            wait => s.run(wait, &mut stats),
        }
        .map(|()| stats)
    }

    /// [`supervise`]'s service, as a task on the current tokio runtime
    /// (see `intercept::start_here`).
    pub async fn serve_here(
        self,
        world: &Mutex<World>,
        mut sink: Box<ConnectionSink>,
    ) -> Result<Finished, SuperviseError> {
        let Listening {
            pid,
            listener,
            vdso,
            servers,
            reap,
        } = self;
        let mut stats = stats_of(&listener);
        let served = match sys::async_fd(listener.fd) {
            Ok(fd) => {
                let listener = fd.get_ref().as_fd();
                let mut s = Supervisor::new(listener, world, vdso, pid, &mut *sink, servers);
                s.serve_async(&fd, &mut stats).await.map(|()| stats)
            }
            Err(e) => Err(SuperviseError::Listener(e)),
        };
        // Every process under the filter is gone (or killed): reaping the
        // first one blocks this thread only briefly.
        kill_if_failed(pid, &served);
        let waited = reap.wait(pid).await;
        finish(served, waited)
    }
}

/// A service's statistics before its first notification.
fn stats_of(listener: &Listener) -> Stats {
    Stats {
        backend: Backend::Seccomp,
        killable: listener.killable,
        sync_wakeup: listener.sync_wakeup,
        ..Stats::default()
    }
}

/// If the service failed, kills the whole program before it is reaped, so
/// no target is left waiting for an answer that never comes.
fn kill_if_failed(pid: i32, served: &Result<Stats, SuperviseError>) {
    if served.is_err() {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// How the program ended, from its service and the reaping of its first
/// process.
fn finish(
    served: Result<Stats, SuperviseError>,
    waited: io::Result<sys::Waited>,
) -> Result<Finished, SuperviseError> {
    let mut stats = served?;
    let waited = waited.map_err(SuperviseError::Listener)?;
    stats.client_cpu = waited.cpu;
    Ok(Finished {
        status: std::process::ExitStatus::from_raw(waited.status),
        stats,
    })
}

struct Supervisor<'a> {
    fd: BorrowedFd<'a>,
    world: &'a Mutex<World>,
    vdso: Option<&'a VdsoPatch>,
    tgids: HashMap<i32, i32>,
    sink: &'a mut ConnectionSink,
    servers: ServerSockets,
}

/// What the listener has for us.
enum Ready {
    Notification,
    /// POLLHUP without POLLIN: the last process under the filter is gone.
    Gone,
    Spurious,
}

impl<'a> Supervisor<'a> {
    /// Serves the program whose first process is `root`, waiting on `fd`.
    fn new(
        fd: BorrowedFd<'a>,
        world: &'a Mutex<World>,
        vdso: Option<&'a VdsoPatch>,
        root: i32,
        sink: &'a mut ConnectionSink,
        servers: ServerSockets,
    ) -> Supervisor<'a> {
        Supervisor {
            fd,
            world,
            vdso,
            // The first process leads its thread group: no /proc lookup.
            tgids: HashMap::from([(root, root)]),
            sink,
            servers,
        }
    }

    fn run(&mut self, wait: Wait, stats: &mut Stats) -> Result<(), SuperviseError> {
        loop {
            if wait == Wait::Poll {
                match self.ready(PollTimeout::NONE)? {
                    Ready::Notification => {}
                    Ready::Gone => return Ok(()),
                    Ready::Spurious => continue,
                }
            }
            if !self.receive(stats)? {
                return Ok(());
            }
        }
    }

    /// The same loop with the wait on a tokio runtime of its own (epoll),
    /// for comparing waits (`TLSIGN_SECCOMP_WAIT=async`).
    fn run_async(&mut self, stats: &mut Stats) -> Result<(), SuperviseError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(SuperviseError::Listener)?;
        let fd = self
            .fd
            .try_clone_to_owned()
            .map_err(SuperviseError::Listener)?;
        rt.block_on(async {
            let afd = sys::async_fd(fd).map_err(SuperviseError::Listener)?;
            self.serve_async(&afd, stats).await
        })
    }

    /// Waits on `afd` (the listener, registered with the current runtime)
    /// and handles each notification, until nobody is left.
    async fn serve_async(
        &mut self,
        afd: &tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
        stats: &mut Stats,
    ) -> Result<(), SuperviseError> {
        loop {
            let mut guard = afd.readable().await.map_err(SuperviseError::Listener)?;
            // Cleared before draining: a notification arriving meanwhile
            // marks it ready again. Every pending one is handled before the
            // next wait, as epoll reports edges, not levels.
            guard.clear_ready();
            loop {
                // POLLIN means a notification is pending, so RECV does not
                // block: a withdrawn one makes it fail with ENOENT.
                match self.ready(PollTimeout::ZERO)? {
                    Ready::Notification => {}
                    Ready::Gone => return Ok(()),
                    Ready::Spurious => break,
                }
                if !self.receive(stats)? {
                    return Ok(());
                }
            }
        }
    }

    fn ready(&self, timeout: PollTimeout) -> Result<Ready, SuperviseError> {
        let mut fds = [PollFd::new(self.fd, PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Ready::Spurious),
            Err(e) => return Err(SuperviseError::Listener(e.into())),
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.contains(PollFlags::POLLIN) {
            Ok(Ready::Notification)
        } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
        {
            Ok(Ready::Gone)
        } else {
            Ok(Ready::Spurious)
        }
    }

    /// Receives and handles one notification; false once nobody is left.
    /// RECV blocks until a notification comes or (Linux 6.6+) the last
    /// process under the filter is gone, when it fails with ENOENT, as it
    /// does for a notification withdrawn before we read it: poll tells
    /// the two apart.
    fn receive(&mut self, stats: &mut Stats) -> Result<bool, SuperviseError> {
        let req = match sys::notif_recv(self.fd) {
            Ok(r) => r,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINTR)) => {
                return Ok(!matches!(self.ready(PollTimeout::ZERO)?, Ready::Gone));
            }
            Err(e) => return Err(SuperviseError::Listener(e)),
        };
        stats.interceptions += 1;
        stats.count(i64::from(req.data.nr), req.data.args[0]);
        self.handle(&req)?;
        Ok(true)
    }

    fn handle(&mut self, n: &SeccompNotif) -> Result<(), SuperviseError> {
        let tid = n.pid as i32;
        let a = n.data.args;
        let nr = i64::from(n.data.nr);
        let name = decode::syscall_name(nr);
        let fail = |source| SuperviseError::Answer {
            syscall: name,
            tid,
            source,
        };
        let fd = self.fd;
        let tgids = &mut self.tgids;
        let request = match decode::decode(nr, a, tid, || tgid_cached(tgids, tid)) {
            Decoded::Request(r) => r,
            Decoded::NewImage => {
                if let Some(v) = self.vdso {
                    match v.apply(tid) {
                        Ok(true) => {}
                        // Not this image's first brk(NULL).
                        Ok(false) => {
                            if let Ok(tgid) = tgid_cached(tgids, tid) {
                                learned::saw_repeated_brk(tgid, n.data.instruction_pointer, || {
                                    sys::notif_id_valid(fd, n.id)
                                });
                            }
                        }
                        // A target that died meanwhile has nothing left to
                        // patch.
                        Err(_) if !sys::notif_id_valid(fd, n.id) => return Ok(()),
                        Err(e) => return Err(e.into()),
                    }
                }
                return self.send_continue(n).map_err(fail);
            }
            Decoded::Continue => return self.send_continue(n).map_err(fail),
            Decoded::Errno(e) => {
                return sys::notif_send(fd, n.id, 0, -e, 0).map(drop).map_err(fail)
            }
            // Fail closed: letting an unexamined connect through could
            // reach the network during a verify.
            Decoded::Unknown(source) => {
                if !sys::notif_id_valid(fd, n.id) {
                    return Ok(());
                }
                return Err(fail(source));
            }
        };
        // What was read from the target above belongs to notification
        // `n.id` only if it is still pending: otherwise the thread may have
        // died and its id been reused. Every answer is tied to the id, so
        // the kernel refuses one to a dead notification, and the world
        // commits only answers that landed; only writes into the target's
        // memory, which happen before the answer, check the id first (see
        // `carry_out`).
        //
        // From here on, failing /proc lookups or fd operations usually mean
        // the caller died meanwhile: then the notification is simply gone.
        let gone_or = |s: &Self, e: io::Error| {
            if sys::notif_id_valid(s.fd, n.id) {
                Err(fail(e))
            } else {
                Ok(())
            }
        };
        let tgid = match self.tgid(tid) {
            Ok(t) => t,
            Err(e) => return gone_or(self, e),
        };
        let caller = Caller { tid, tgid };
        let (answer, commit) = World::lock(self.world).decide(caller, &request);
        // Learned while the caller still waits: its /proc files are then
        // its own (see `learned::consider`).
        if nr == libc::SYS_openat && matches!(answer, Answer::Continue) {
            learned::saw_continued_openat(tgid, n.data.instruction_pointer, || {
                sys::notif_id_valid(fd, n.id)
            });
        }
        let accepted = match self.carry_out(n, answer) {
            Ok(a) => a,
            Err(e) => return gone_or(self, e),
        };
        if accepted {
            World::lock(self.world).commit(commit);
        }
        Ok(())
    }

    fn tgid(&mut self, tid: i32) -> io::Result<i32> {
        tgid_cached(&mut self.tgids, tid)
    }

    fn send_continue(&self, n: &SeccompNotif) -> io::Result<()> {
        sys::notif_send(self.fd, n.id, 0, 0, sys::SECCOMP_USER_NOTIF_FLAG_CONTINUE).map(drop)
    }

    /// Installs `fd` at the target's lowest free number and answers with
    /// that number, in two steps (`sys::AddFd` says why not one).
    fn answer_with_fd(
        &self,
        n: &SeccompNotif,
        fd: BorrowedFd<'_>,
        cloexec: bool,
    ) -> io::Result<bool> {
        match sys::notif_addfd(self.fd, n.id, fd, AddFd::Lowest, cloexec)? {
            Some(theirs) => sys::notif_send(self.fd, n.id, i64::from(theirs), 0, 0),
            None => Ok(false),
        }
    }

    /// Returns whether the target accepted the answer.
    fn carry_out(&mut self, n: &SeccompNotif, answer: Answer) -> io::Result<bool> {
        let tid = n.pid as i32;
        match answer {
            Answer::Continue => {
                sys::notif_send(self.fd, n.id, 0, 0, sys::SECCOMP_USER_NOTIF_FLAG_CONTINUE)
            }
            Answer::Errno(e) => sys::notif_send(self.fd, n.id, 0, -e, 0),
            Answer::Return { writes, ret } => {
                // A reused id would be some other thread's memory.
                if !writes.is_empty() && !sys::notif_id_valid(self.fd, n.id) {
                    return Ok(false);
                }
                for (addr, data) in &writes {
                    if mem::write_mem(tid, *addr, data).is_err() {
                        return sys::notif_send(self.fd, n.id, 0, -libc::EFAULT, 0).map(|_| false);
                    }
                }
                sys::notif_send(self.fd, n.id, ret, 0, 0)
            }
            Answer::File { content, cloexec } => {
                let fd = memfd_with(&content)?;
                self.answer_with_fd(n, fd.as_fd(), cloexec)
            }
            Answer::RandomDevice {
                stream,
                cloexec,
                nonblock,
            } => {
                let read = random_device(*stream, nonblock)?;
                self.answer_with_fd(n, read.as_fd(), cloexec)
            }
            Answer::Redirect { to } => {
                let fd = n.data.args[0] as i32;
                let tgid = self.tgid(tid)?;
                let flags = procfs::fd_flags(tgid, fd)?;
                if self.servers == ServerSockets::HandedOver
                    && matches!(to, crate::world::Destination::Server { .. })
                {
                    // Answered later, by whoever connects to the server. The
                    // world counts the connection now: its index is fixed by
                    // the order of the connects, whichever finishes first.
                    let pending = PendingConnect {
                        listener: self.fd.try_clone_to_owned()?,
                        id: n.id,
                        fd,
                        flags,
                        answered: false,
                    };
                    (self.sink)(to, ClientEnd::Pending(pending));
                    return Ok(true);
                }
                let (ours, theirs) = UnixStream::pair()?;
                // A new socket is blocking: only a non-blocking one needs a call.
                if flags & libc::O_NONBLOCK != 0 {
                    theirs.set_nonblocking(true)?;
                }
                if !install_connected(self.fd, n.id, fd, flags, theirs.into())? {
                    return Ok(false);
                }
                (self.sink)(to, ClientEnd::Unix(ours));
                Ok(true)
            }
        }
    }
}

/// Installs `sock` (its blocking mode already the target socket's) over the
/// target's socket `fd`, with the close-on-exec flag of `flags`, and
/// answers the connect of notification `id` with 0. `Ok(false)`: the
/// target is gone.
fn install_connected(
    listener: BorrowedFd<'_>,
    id: u64,
    fd: RawFd,
    flags: i32,
    sock: OwnedFd,
) -> io::Result<bool> {
    let cloexec = flags & libc::O_CLOEXEC != 0;
    if sys::notif_addfd(listener, id, sock.as_fd(), AddFd::Replace(fd), cloexec)?.is_none() {
        return Ok(false);
    }
    // The target holds its own reference now; ours goes.
    drop(sock);
    sys::notif_send(listener, id, 0, 0, 0)
}

/// A target's connect to a server, waiting for its answer
/// ([`ServerSockets::HandedOver`]). Whoever holds it connects to the server
/// and [`complete`](PendingConnect::complete)s it with that socket, or
/// [`fail`](PendingConnect::fail)s it. Dropped unanswered, or when
/// answering goes wrong halfway, it fails the connect with ECONNABORTED:
/// no target waits forever on a connect nobody will answer.
pub struct PendingConnect {
    /// Our own copy of the listener: the answer comes after the service
    /// loop has moved on, from another task.
    listener: OwnedFd,
    id: u64,
    /// The connecting socket's number in the target, and its file flags.
    fd: RawFd,
    flags: i32,
    answered: bool,
}

impl PendingConnect {
    /// Installs `sock` in place of the target's socket, with the target
    /// socket's close-on-exec and non-blocking flags, and lets the connect
    /// return 0. `Ok(false)`: the target is gone (killed, timed out).
    pub fn complete(mut self, sock: std::net::TcpStream) -> io::Result<bool> {
        sock.set_nonblocking(self.flags & libc::O_NONBLOCK != 0)?;
        let landed = install_connected(
            self.listener.as_fd(),
            self.id,
            self.fd,
            self.flags,
            sock.into(),
        )?;
        self.answered = true;
        Ok(landed)
    }

    /// Fails the target's connect with `errno`, as a connect to the server
    /// failed. `Ok(false)`: the target is gone.
    pub fn fail(mut self, errno: i32) -> io::Result<bool> {
        self.answered = true;
        sys::notif_send(self.listener.as_fd(), self.id, 0, -errno, 0)
    }
}

impl Drop for PendingConnect {
    fn drop(&mut self) {
        if !self.answered {
            let _ = sys::notif_send(self.listener.as_fd(), self.id, 0, -libc::ECONNABORTED, 0);
        }
    }
}
