//! The ptrace backends: the baseline tlsign-seccomp is measured against.
//!
//! - `ptrace` is the original tlsign design: PTRACE_SYSCALL stops every
//!   thread at every syscall entry and exit, and the tracer looks at each.
//! - `ptrace-seccomp` installs the seccomp backend's filter with
//!   SECCOMP_RET_TRACE instead of a listener: the tracee stops only at the
//!   syscalls the world answers (PTRACE_O_TRACESECCOMP), plus the exit of
//!   those whose arguments were rewritten.
//!
//! Both put the same questions to the same world as the seccomp backend
//! (`decode.rs`); only carrying out the answers differs, because a tracer
//! cannot install an fd in its tracee:
//! - a value answer skips the syscall (number -1) and sets its return value
//!   (at the exit stop under `ptrace`, where the original design wrote it);
//! - a file answer points the path argument at `/proc/SUPERVISOR/fd/N`, a
//!   memfd or pipe the supervisor holds, written below the tracee's stack
//!   red zone, and restores the argument at the exit stop;
//! - a redirect points the sockaddr argument at a loopback listener of the
//!   supervisor's (the original used socat on a fixed port) and matches the
//!   accepted connection to the tracee's socket by its port. It therefore
//!   needs a working loopback interface, which the seccomp backend does not.
//!
//! A tracee belongs to the thread that forked it, so this whole backend
//! runs on one thread, which `wait4(__WNOTHREAD)` keeps from reaping other
//! threads' children.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::decode::{self, Decoded};
use super::procfs::tgid_cached;
use super::served::{memfd_with, random_device};
use super::vdso::VdsoPatch;
use super::{
    filter, mem, or_report, setup, target, Backend, ClientEnd, ConnectionSink, Finished, Started,
    StartedTx, Stats, SuperviseError,
};
use crate::sys;
use crate::world::{Answer, Caller, Commit, Destination, Request, Scope, SockAddr, World};

/// How long the tracer waits for a redirected connection to arrive at its
/// listener. Loopback handshakes finish within the connect call itself.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Spawns `cmd` traced, reports it started, and services it until every
/// traced thread has exited.
pub fn supervise(
    backend: Backend,
    mut cmd: Command,
    scope: Scope,
    world: &Mutex<World>,
    sink: Box<ConnectionSink>,
    started: StartedTx,
) -> Result<Finished, SuperviseError> {
    let prog = match backend {
        Backend::PtraceSeccomp => setup(filter::program(scope, filter::Catch::Trace)).map(Some),
        _ => Ok(None),
    };
    let prepared = prog.and_then(|prog| Ok((prog, setup(VdsoPatch::shared())?)));
    let Some((prog, vdso)) = or_report(&started, prepared) else {
        return Err(SuperviseError::NotStarted);
    };
    let program = cmd.get_program().to_string_lossy().into_owned();
    sys::trace_before_exec(&mut cmd, prog);
    let spawned = cmd
        .spawn()
        .map_err(|source| target::SpawnError::Spawn { program, source });
    let Some(mut child) = or_report(&started, spawned) else {
        return Err(SuperviseError::NotStarted);
    };
    let root = i32::try_from(child.id()).unwrap_or(0);
    let _ = started.send(Ok(Started {
        pid: root,
        stdout: child.stdout.take().map(|s| File::from(OwnedFd::from(s))),
        stderr: child.stderr.take().map(|s| File::from(OwnedFd::from(s))),
    }));
    let mut t = Tracer {
        backend,
        scope,
        world,
        vdso,
        sink,
        root,
        threads: HashMap::new(),
        // The first process leads its thread group: no /proc lookup for it.
        tgids: HashMap::from([(root, root)]),
        listeners: [None, None],
        stats: Stats {
            backend,
            ..Stats::default()
        },
        root_status: None,
    };
    let r = t.attach().and_then(|()| t.run());
    if r.is_err() {
        // Nothing may be left waiting for a tracer that has given up.
        let _ = kill(Pid::from_raw(root), Signal::SIGKILL);
        while let Ok(w) = sys::wait4(-1, libc::__WALL | libc::__WNOTHREAD) {
            if w.pid == root && (libc::WIFEXITED(w.status) || libc::WIFSIGNALED(w.status)) {
                t.root_status = Some(w.status);
            }
        }
    }
    // The std handle never reaps: the loop above did.
    drop(child);
    r?;
    let status = t.root_status.ok_or_else(|| {
        SuperviseError::Ptrace(io::Error::other("the program's end was not seen"))
    })?;
    Ok(Finished {
        status: ExitStatus::from_raw(status),
        stats: t.stats,
    })
}

/// What the tracer must do when a thread's current syscall returns.
enum AtExit {
    /// The syscall was skipped: write `writes`, return `ret`, then apply
    /// `commit` if the writes landed (`ptrace` backend).
    Return {
        writes: Vec<(u64, Vec<u8>)>,
        ret: i64,
        commit: Commit,
    },
    /// Arguments were rewritten: put them back, and if the call succeeded,
    /// finish `then`. `_held` keeps the fd the path pointed at open until
    /// the tracee has opened its own copy.
    Restore {
        args: [u64; 3],
        then: Then,
        _held: Option<OwnedFd>,
    },
}

enum Then {
    Commit(Commit),
    Accept {
        to: Destination,
        fd: i32,
        family: usize,
        commit: Commit,
    },
}

#[derive(Default)]
struct Thread {
    /// Seen its first stop (a new tracee starts with a SIGSTOP to swallow).
    started: bool,
    /// Between syscall entry and exit (`ptrace` backend).
    in_syscall: bool,
    pending: Option<AtExit>,
}

struct Tracer<'a> {
    backend: Backend,
    scope: Scope,
    world: &'a Mutex<World>,
    vdso: Option<&'static VdsoPatch>,
    sink: Box<ConnectionSink>,
    root: i32,
    threads: HashMap<i32, Thread>,
    tgids: HashMap<i32, i32>,
    /// Loopback listeners for redirected connections: IPv4, IPv6.
    listeners: [Option<TcpListener>; 2],
    stats: Stats,
    root_status: Option<i32>,
}

fn ptrace_err(e: Errno) -> SuperviseError {
    SuperviseError::Ptrace(e.into())
}

impl Tracer<'_> {
    /// The first stop: the SIGTRAP of the tracee's exec under PTRACE_TRACEME.
    fn attach(&mut self) -> Result<(), SuperviseError> {
        let w = sys::wait4(self.root, libc::__WALL).map_err(SuperviseError::Ptrace)?;
        if !libc::WIFSTOPPED(w.status) {
            self.root_status = Some(w.status);
            return Err(SuperviseError::Ptrace(io::Error::other(
                "the program ended before its first instruction",
            )));
        }
        self.stats.interceptions += 1;
        let mut opts = Options::PTRACE_O_TRACESYSGOOD
            | Options::PTRACE_O_TRACECLONE
            | Options::PTRACE_O_TRACEFORK
            | Options::PTRACE_O_TRACEVFORK
            | Options::PTRACE_O_TRACEEXEC
            | Options::PTRACE_O_EXITKILL;
        if self.backend == Backend::PtraceSeccomp {
            opts |= Options::PTRACE_O_TRACESECCOMP;
        }
        ptrace::setoptions(Pid::from_raw(self.root), opts).map_err(ptrace_err)?;
        self.threads.insert(
            self.root,
            Thread {
                started: true,
                ..Thread::default()
            },
        );
        self.new_image(self.root)?;
        self.resume(self.root, 0)
    }

    fn run(&mut self) -> Result<(), SuperviseError> {
        loop {
            let w = match sys::wait4(-1, libc::__WALL | libc::__WNOTHREAD) {
                Ok(w) => w,
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return Ok(()),
                Err(e) => return Err(SuperviseError::Ptrace(e)),
            };
            let (tid, st) = (w.pid, w.status);
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                self.threads.remove(&tid);
                if tid == self.root {
                    self.root_status = Some(st);
                    self.stats.client_cpu = w.cpu;
                }
                continue;
            }
            if !libc::WIFSTOPPED(st) {
                continue;
            }
            self.stats.interceptions += 1;
            let sig = libc::WSTOPSIG(st);
            let event = (st >> 16) & 0xff;
            if sig == libc::SIGTRAP | 0x80 {
                self.syscall_stop(tid)?;
            } else if sig == libc::SIGTRAP && event != 0 {
                self.event_stop(tid, event)?;
            } else {
                let t = self.threads.entry(tid).or_default();
                if sig == libc::SIGSTOP && !t.started {
                    t.started = true;
                    self.resume(tid, 0)?;
                } else {
                    // A signal on its way to the tracee: deliver it. A
                    // group-stop (no siginfo) is not kept: job control of
                    // a supervised program is not supported.
                    let deliver = match ptrace::getsiginfo(Pid::from_raw(tid)) {
                        Ok(_) => sig,
                        Err(_) => 0,
                    };
                    self.resume(tid, deliver)?;
                }
            }
        }
    }

    fn event_stop(&mut self, tid: i32, event: i32) -> Result<(), SuperviseError> {
        match event {
            libc::PTRACE_EVENT_SECCOMP => return self.entry(tid),
            libc::PTRACE_EVENT_EXEC => {
                // A non-leader thread that execs takes over the leader's id.
                if let Ok(former) = ptrace::getevent(Pid::from_raw(tid)) {
                    let former = former as i32;
                    if former != tid {
                        if let Some(t) = self.threads.remove(&former) {
                            self.threads.insert(tid, t);
                        }
                    }
                }
                self.tgids.retain(|_, tgid| *tgid != tid);
                self.new_image(tid)?;
            }
            libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
                if let Ok(new) = ptrace::getevent(Pid::from_raw(tid)) {
                    self.threads.entry(new as i32).or_default();
                }
            }
            _ => {}
        }
        self.resume(tid, 0)
    }

    /// A new image: patch its vDSO before it runs, as the seccomp backend
    /// does at its first `brk`.
    fn new_image(&mut self, tid: i32) -> Result<(), SuperviseError> {
        if let Some(v) = self.vdso {
            if let Err(e) = v.apply(tid) {
                // Gone meanwhile: nothing left to patch.
                if kill(Pid::from_raw(tid), None).is_ok() {
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    fn syscall_stop(&mut self, tid: i32) -> Result<(), SuperviseError> {
        let t = self.threads.entry(tid).or_default();
        t.started = true;
        if self.backend == Backend::Ptrace {
            t.in_syscall = !t.in_syscall;
            if t.in_syscall {
                return self.entry(tid);
            }
        }
        // ptrace-seccomp stops at a syscall exit only when asked to.
        self.exit(tid)
    }

    /// Resumes `tid`: to its next stop of interest.
    fn resume(&mut self, tid: i32, sig: i32) -> Result<(), SuperviseError> {
        let wants_exit = self.threads.get(&tid).is_some_and(|t| t.pending.is_some());
        let to_syscall = self.backend == Backend::Ptrace || wants_exit;
        match sys::ptrace_resume(tid, to_syscall, sig) {
            // Killed meanwhile: its exit is reported next.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r.map_err(SuperviseError::Ptrace),
        }
    }

    /// A syscall entry (`ptrace`) or seccomp stop (`ptrace-seccomp`).
    fn entry(&mut self, tid: i32) -> Result<(), SuperviseError> {
        let pid = Pid::from_raw(tid);
        let mut regs = match ptrace::getregs(pid) {
            Ok(r) => r,
            Err(Errno::ESRCH) => return Ok(()),
            Err(e) => return Err(ptrace_err(e)),
        };
        let nr = regs.orig_rax as i64;
        if self.backend == Backend::Ptrace && !answered_by_world(nr, self.scope) {
            return self.resume(tid, 0);
        }
        self.stats.count(nr, regs.rdi);
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
        let name = decode::syscall_name(nr);
        let fail = |source| SuperviseError::Answer {
            syscall: name,
            tid,
            source,
        };
        let tgids = &mut self.tgids;
        let request = match decode::decode(nr, args, tid, || tgid_cached(tgids, tid)) {
            Decoded::Request(r) => r,
            // The vDSO was patched at the exec event.
            Decoded::NewImage | Decoded::Continue => return self.resume(tid, 0),
            Decoded::Errno(e) => {
                return self.answer_value(tid, &mut regs, vec![], -i64::from(e), Commit::None)
            }
            // Fail closed, as the seccomp backend does.
            Decoded::Unknown(source) => return Err(fail(source)),
        };
        let tgid = tgid_cached(&mut self.tgids, tid).map_err(fail)?;
        // What a rewrite of the path or address arguments puts back at exit.
        let saved = [regs.rdi, regs.rsi, regs.rdx];
        let (answer, commit) = World::lock(self.world).decide(Caller { tid, tgid }, &request);
        match answer {
            Answer::Continue => self.resume(tid, 0),
            Answer::Errno(e) => self.answer_value(tid, &mut regs, vec![], -i64::from(e), commit),
            Answer::Return { writes, ret } => {
                self.answer_value(tid, &mut regs, writes, ret, commit)
            }
            Answer::File { content, .. } => {
                let fd = memfd_with(&content).map_err(fail)?;
                Self::point_path(tid, &mut regs, nr, &fd).map_err(fail)?;
                self.rewritten(tid, &regs, saved, Then::Commit(Commit::None), Some(fd))
            }
            Answer::RandomDevice { stream, .. } => {
                // The tracee's own open flags (O_NONBLOCK, O_CLOEXEC) apply
                // to the file it opens through /proc.
                let read = random_device(*stream, false).map_err(fail)?;
                Self::point_path(tid, &mut regs, nr, &read).map_err(fail)?;
                self.rewritten(tid, &regs, saved, Then::Commit(commit), Some(read))
            }
            Answer::Redirect { to } => {
                let Request::Connect {
                    addr: SockAddr::Inet(addr),
                    ..
                } = request
                else {
                    return Err(fail(io::Error::other(
                        "a redirect of something not an inet connect",
                    )));
                };
                let family = self.point_connect(tid, &mut regs, addr).map_err(fail)?;
                let then = Then::Accept {
                    to,
                    fd: saved[0] as i32,
                    family,
                    commit,
                };
                self.rewritten(tid, &regs, saved, then, None)
            }
        }
    }

    /// Skips the syscall and makes it return `ret`, after writing `writes`.
    /// Under `ptrace` the answer lands at the exit stop, as in the original
    /// design; at a seccomp stop there is no exit stop, so it lands now.
    fn answer_value(
        &mut self,
        tid: i32,
        regs: &mut libc::user_regs_struct,
        writes: Vec<(u64, Vec<u8>)>,
        ret: i64,
        commit: Commit,
    ) -> Result<(), SuperviseError> {
        regs.orig_rax = u64::MAX; // -1: no syscall
        if self.backend == Backend::Ptrace {
            self.set_regs(tid, regs)?;
            self.pending(
                tid,
                AtExit::Return {
                    writes,
                    ret,
                    commit,
                },
            );
        } else {
            self.land(tid, regs, &writes, ret, commit)?;
        }
        self.resume(tid, 0)
    }

    /// Writes the answer and the return value; commits if it all landed.
    fn land(
        &mut self,
        tid: i32,
        regs: &mut libc::user_regs_struct,
        writes: &[(u64, Vec<u8>)],
        ret: i64,
        commit: Commit,
    ) -> Result<(), SuperviseError> {
        let landed = writes
            .iter()
            .all(|(addr, data)| mem::write_mem(tid, *addr, data).is_ok());
        regs.rax = if landed {
            ret
        } else {
            -i64::from(libc::EFAULT)
        } as u64;
        self.set_regs(tid, regs)?;
        if landed {
            World::lock(self.world).commit(commit);
        }
        Ok(())
    }

    fn set_regs(&self, tid: i32, regs: &libc::user_regs_struct) -> Result<(), SuperviseError> {
        match ptrace::setregs(Pid::from_raw(tid), *regs) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(ptrace_err(e)),
        }
    }

    fn pending(&mut self, tid: i32, p: AtExit) {
        self.threads.entry(tid).or_default().pending = Some(p);
    }

    /// Writes `data` just below the tracee's red zone, which the ABI lets
    /// a signal handler clobber at any time, so nothing lives there.
    fn scratch(tid: i32, regs: &libc::user_regs_struct, data: &[u8]) -> io::Result<u64> {
        let at = (regs.rsp - 128 - data.len() as u64) & !15;
        mem::write_mem(tid, at, data)?;
        Ok(at)
    }

    /// Points the open's path at `/proc/OUR_PID/fd/N`, our copy of the file
    /// the world serves.
    fn point_path(
        tid: i32,
        regs: &mut libc::user_regs_struct,
        nr: i64,
        held: &OwnedFd,
    ) -> io::Result<()> {
        let path = format!("/proc/{}/fd/{}\0", std::process::id(), held.as_raw_fd());
        let at = Self::scratch(tid, regs, path.as_bytes())?;
        if nr == libc::SYS_open {
            regs.rdi = at;
        } else {
            regs.rsi = at;
        }
        Ok(())
    }

    /// Points the connect at our loopback listener of the same family;
    /// returns which family (0 IPv4, 1 IPv6).
    fn point_connect(
        &mut self,
        tid: i32,
        regs: &mut libc::user_regs_struct,
        addr: SocketAddr,
    ) -> io::Result<usize> {
        let family = usize::from(addr.is_ipv6());
        let port = self.listener(family)?.local_addr()?.port();
        let raw = sockaddr_bytes(if addr.is_ipv6() {
            SocketAddr::from((Ipv6Addr::LOCALHOST, port))
        } else {
            SocketAddr::from((Ipv4Addr::LOCALHOST, port))
        });
        regs.rsi = Self::scratch(tid, regs, &raw)?;
        regs.rdx = raw.len() as u64;
        Ok(family)
    }

    /// Runs the syscall with rewritten arguments `regs`; its exit stop puts
    /// `saved` back and finishes `then`.
    fn rewritten(
        &mut self,
        tid: i32,
        regs: &libc::user_regs_struct,
        saved: [u64; 3],
        then: Then,
        held: Option<OwnedFd>,
    ) -> Result<(), SuperviseError> {
        self.set_regs(tid, regs)?;
        self.pending(
            tid,
            AtExit::Restore {
                args: saved,
                then,
                _held: held,
            },
        );
        self.resume(tid, 0)
    }

    fn listener(&mut self, family: usize) -> io::Result<&TcpListener> {
        if self.listeners[family].is_none() {
            let ip: std::net::IpAddr = if family == 1 {
                Ipv6Addr::LOCALHOST.into()
            } else {
                Ipv4Addr::LOCALHOST.into()
            };
            let l = TcpListener::bind((ip, 0)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("the ptrace backends redirect connections through loopback ({ip}), which failed: {e}"),
                )
            })?;
            l.set_nonblocking(true)?;
            self.listeners[family] = Some(l);
        }
        Ok(self.listeners[family].as_ref().expect("just set"))
    }

    /// A syscall exit we asked to see.
    fn exit(&mut self, tid: i32) -> Result<(), SuperviseError> {
        let Some(p) = self.threads.get_mut(&tid).and_then(|t| t.pending.take()) else {
            return self.resume(tid, 0);
        };
        let pid = Pid::from_raw(tid);
        let mut regs = match ptrace::getregs(pid) {
            Ok(r) => r,
            Err(Errno::ESRCH) => return Ok(()),
            Err(e) => return Err(ptrace_err(e)),
        };
        match p {
            AtExit::Return {
                writes,
                ret,
                commit,
            } => {
                self.land(tid, &mut regs, &writes, ret, commit)?;
            }
            AtExit::Restore { args, then, _held } => {
                let ret = regs.rax as i64;
                [regs.rdi, regs.rsi, regs.rdx] = args;
                self.set_regs(tid, &regs)?;
                let ok = ret >= 0 || ret == -i64::from(libc::EINPROGRESS);
                let interrupted = ret == -i64::from(libc::EINTR) || (-516..=-512).contains(&ret);
                if !ok && !interrupted && matches!(then, Then::Accept { .. }) {
                    // Our own listener refused: no network namespace lets a
                    // connect to loopback fail for a client's reasons, and
                    // passing the error on would look like an unreachable
                    // server (and fail a good transcript's verify).
                    return Err(SuperviseError::Answer {
                        syscall: "connect",
                        tid,
                        source: io::Error::other(format!(
                            "the connection redirected to the supervisor's loopback listener failed ({}); the ptrace backends need a working loopback interface (the seccomp backend does not)",
                            io::Error::from_raw_os_error(-ret as i32)
                        )),
                    });
                }
                if ok {
                    let commit = match then {
                        Then::Commit(c) => c,
                        Then::Accept {
                            to,
                            fd,
                            family,
                            commit,
                        } => {
                            let stream = self.accept(tid, fd, family).map_err(|source| {
                                SuperviseError::Answer {
                                    syscall: "connect",
                                    tid,
                                    source,
                                }
                            })?;
                            (self.sink)(to, ClientEnd::Tcp(stream));
                            commit
                        }
                    };
                    World::lock(self.world).commit(commit);
                }
            }
        }
        self.resume(tid, 0)
    }

    /// Our end of the connection the tracee's socket `fd` just made to our
    /// listener: the one whose peer is that socket's local address.
    fn accept(&mut self, tid: i32, fd: i32, family: usize) -> io::Result<TcpStream> {
        let tgid = tgid_cached(&mut self.tgids, tid)?;
        // Our duplicate of the tracee's socket, only to read its address.
        let want = TcpStream::from(mem::target_fd(tgid, fd)?)
            .local_addr()?
            .port();
        let listener = self.listener(family)?;
        let deadline = Instant::now() + ACCEPT_TIMEOUT;
        loop {
            match listener.accept() {
                Ok((s, peer)) if peer.port() == want && peer.ip().is_loopback() => {
                    s.set_nonblocking(false)?;
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                // Somebody else on this host: not ours to serve.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the redirected connection never reached the loopback listener",
                        ));
                    }
                    let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(ms));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether syscall `nr` can concern the world: everything else is resumed
/// at once under PTRACE_SYSCALL. Must agree with `filter::build`.
fn answered_by_world(nr: i64, scope: Scope) -> bool {
    matches!(
        nr,
        libc::SYS_getrandom
            | libc::SYS_clock_gettime
            | libc::SYS_clock_getres
            | libc::SYS_gettimeofday
            | libc::SYS_time
            | libc::SYS_open
            | libc::SYS_openat
            | libc::SYS_openat2
            | libc::SYS_io_uring_setup
    ) || (nr == libc::SYS_connect && scope == Scope::Networked)
}

/// `struct sockaddr_in` or `sockaddr_in6` as x86_64 lays them out.
fn sockaddr_bytes(a: SocketAddr) -> Vec<u8> {
    match a {
        SocketAddr::V4(a) => {
            let mut b = (libc::AF_INET as u16).to_ne_bytes().to_vec();
            b.extend_from_slice(&a.port().to_be_bytes());
            b.extend_from_slice(&a.ip().octets());
            b.extend_from_slice(&[0; 8]);
            b
        }
        SocketAddr::V6(a) => {
            let mut b = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
            b.extend_from_slice(&a.port().to_be_bytes());
            b.extend_from_slice(&a.flowinfo().to_be_bytes());
            b.extend_from_slice(&a.ip().octets());
            b.extend_from_slice(&a.scope_id().to_ne_bytes());
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_layouts_match_the_kernel_sizes() {
        assert_eq!(
            sockaddr_bytes("127.0.0.1:80".parse().unwrap()).len(),
            std::mem::size_of::<libc::sockaddr_in>()
        );
        assert_eq!(
            sockaddr_bytes("[::1]:80".parse().unwrap()).len(),
            std::mem::size_of::<libc::sockaddr_in6>()
        );
    }
}
