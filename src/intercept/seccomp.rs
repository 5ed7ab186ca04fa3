//! The seccomp user-notification backend: receives notifications, decodes
//! them into the world's requests, and carries out the world's answers.
//!
//! One blocking thread per supervised program waits on the listener. A
//! waiter blocked on the fd itself keeps the kernel's synchronous wake-up
//! (the target's CPU runs the supervisor next), which an epoll-based async
//! wait would lose; the network work a redirected connection needs is
//! handed to the async runtime through the connection sink.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

use super::procfs;
use super::target::Listener;
use super::vdso::{VdsoError, VdsoPatch};
use crate::sys::{self, AddFd, SeccompNotif};
use crate::world::{Answer, Caller, Destination, Request, SockAddr, SockType, World};

/// Called with each connection the world redirected: the supervisor's end
/// of the new socket and where the world says it leads.
pub type ConnectionSink<'a> = dyn FnMut(Destination, UnixStream) + Send + 'a;

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("seccomp listener failed: {0}")]
    Listener(io::Error),
    #[error(transparent)]
    Vdso(#[from] VdsoError),
    #[error("{syscall} of thread {tid}: {source}")]
    Answer {
        syscall: &'static str,
        tid: i32,
        source: io::Error,
    },
}

/// What one supervised run cost.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Notifications received (including withdrawn ones).
    pub notifications: u64,
    /// The killable wait was on (Linux 5.19+).
    pub killable: bool,
    /// Synchronous wake-ups were on (Linux 6.6+).
    pub sync_wakeup: bool,
}

/// Services `listener` until every process under the filter has exited.
/// On a fatal error the whole program is killed (`root` is its first pid),
/// so no target is left waiting for an answer that never comes.
pub fn serve(
    listener: Listener,
    world: &Mutex<World>,
    vdso: Option<&VdsoPatch>,
    root: i32,
    sink: &mut ConnectionSink<'_>,
) -> Result<Stats, SuperviseError> {
    let mut s = Supervisor {
        fd: listener.fd.as_fd(),
        world,
        vdso,
        tgids: HashMap::new(),
        sink,
    };
    let mut stats = Stats {
        killable: listener.killable,
        sync_wakeup: listener.sync_wakeup,
        ..Stats::default()
    };
    let r = s.run(&mut stats);
    if r.is_err() {
        let _ = nix::sys::signal::kill(Pid::from_raw(root), nix::sys::signal::Signal::SIGKILL);
    }
    r.map(|()| stats)
}

struct Supervisor<'a, 'b> {
    fd: BorrowedFd<'a>,
    world: &'a Mutex<World>,
    vdso: Option<&'a VdsoPatch>,
    tgids: HashMap<i32, i32>,
    sink: &'a mut ConnectionSink<'b>,
}

impl Supervisor<'_, '_> {
    fn run(&mut self, stats: &mut Stats) -> Result<(), SuperviseError> {
        loop {
            // POLLHUP without POLLIN: the last process under the filter is gone.
            let mut fds = [PollFd::new(self.fd, PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(SuperviseError::Listener(e.into())),
            }
            let revents = fds[0].revents().unwrap_or(PollFlags::empty());
            if !revents.contains(PollFlags::POLLIN) {
                if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
                {
                    return Ok(());
                }
                continue;
            }
            let req = match sys::notif_recv(self.fd) {
                Ok(r) => r,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINTR)) => {
                    continue
                }
                Err(e) => return Err(SuperviseError::Listener(e)),
            };
            stats.notifications += 1;
            self.handle(&req)?;
        }
    }

    fn handle(&mut self, n: &SeccompNotif) -> Result<(), SuperviseError> {
        let tid = n.pid as i32;
        let a = n.data.args;
        let nr = i64::from(n.data.nr);
        let name = syscall_name(nr);
        let fail = |source| SuperviseError::Answer {
            syscall: name,
            tid,
            source,
        };
        let request = match nr {
            libc::SYS_brk => {
                if let Some(v) = self.vdso {
                    // A target that died meanwhile has nothing left to patch.
                    if let Err(e) = v.apply(tid) {
                        if !sys::notif_id_valid(self.fd, n.id) {
                            return Ok(());
                        }
                        return Err(e.into());
                    }
                }
                return self.send_continue(n).map_err(fail);
            }
            libc::SYS_getrandom => Request::Getrandom {
                buf: a[0],
                len: a[1],
                flags: a[2] as u32,
            },
            libc::SYS_clock_gettime => Request::ClockGettime {
                clock: a[0] as i32,
                ts: a[1],
            },
            libc::SYS_clock_getres => Request::ClockGetres {
                clock: a[0] as i32,
                res: a[1],
            },
            libc::SYS_gettimeofday => Request::Gettimeofday { tv: a[0], tz: a[1] },
            libc::SYS_time => Request::Time { tloc: a[0] },
            libc::SYS_open | libc::SYS_openat => {
                let (path_ptr, flags) = if nr == libc::SYS_open {
                    (a[0], a[1])
                } else {
                    (a[1], a[2])
                };
                match read_cstring(tid, path_ptr) {
                    // Relative paths never name the files the world serves.
                    Ok(p) if p.first() == Some(&b'/') => Request::Open {
                        path: p,
                        flags: flags as i32,
                    },
                    _ => return self.send_continue(n).map_err(fail),
                }
            }
            libc::SYS_connect => match self.decode_connect(tid, a) {
                Decoded::Request(r) => r,
                Decoded::KernelWillFail => return self.send_continue(n).map_err(fail),
                Decoded::Errno(e) => {
                    return sys::notif_send(self.fd, n.id, 0, -e, 0)
                        .map(drop)
                        .map_err(fail)
                }
                // Fail closed: letting an unexamined connect through could
                // reach the network during a verify.
                Decoded::Unknown(source) => {
                    if !sys::notif_id_valid(self.fd, n.id) {
                        return Ok(());
                    }
                    return Err(fail(io::Error::new(
                        source.kind(),
                        format!("cannot examine the socket being connected: {source}"),
                    )));
                }
            },
            _ => return self.send_continue(n).map_err(fail),
        };
        // Everything read from the target above belongs to notification
        // `n.id` only if it is still pending: otherwise the thread may have
        // died and its id been reused.
        if !sys::notif_id_valid(self.fd, n.id) {
            return Ok(());
        }
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
        let (answer, commit) = self
            .world
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .decide(caller, &request);
        let accepted = match self.carry_out(n, answer) {
            Ok(a) => a,
            Err(e) => return gone_or(self, e),
        };
        if accepted {
            self.world
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .commit(commit);
        }
        Ok(())
    }

    fn tgid(&mut self, tid: i32) -> io::Result<i32> {
        if let Some(t) = self.tgids.get(&tid) {
            return Ok(*t);
        }
        let t = procfs::tgid_of(tid)?;
        self.tgids.insert(tid, t);
        Ok(t)
    }

    fn send_continue(&self, n: &SeccompNotif) -> io::Result<()> {
        sys::notif_send(self.fd, n.id, 0, 0, sys::SECCOMP_USER_NOTIF_FLAG_CONTINUE).map(drop)
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
                for (addr, data) in &writes {
                    if write_mem(tid, *addr, data).is_err() {
                        return sys::notif_send(self.fd, n.id, 0, -libc::EFAULT, 0).map(|_| false);
                    }
                }
                sys::notif_send(self.fd, n.id, ret, 0, 0)
            }
            Answer::File { content, cloexec } => {
                let fd = memfd_with(&content)?;
                Ok(
                    sys::notif_addfd(self.fd, n.id, fd.as_fd(), AddFd::AnswerWithNew, cloexec)?
                        .is_some(),
                )
            }
            Answer::RandomDevice {
                stream,
                cloexec,
                nonblock,
            } => {
                let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
                if nonblock {
                    fcntl(read.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
                }
                feed_random_device(write, *stream)?;
                Ok(
                    sys::notif_addfd(self.fd, n.id, read.as_fd(), AddFd::AnswerWithNew, cloexec)?
                        .is_some(),
                )
            }
            Answer::Redirect { to } => {
                let fd = n.data.args[0] as i32;
                let tgid = self.tgid(tid)?;
                let flags = procfs::fd_flags(tgid, fd)?;
                let (ours, theirs) = UnixStream::pair()?;
                if flags & libc::O_NONBLOCK != 0 {
                    theirs.set_nonblocking(true)?;
                }
                let cloexec = flags & libc::O_CLOEXEC != 0;
                if sys::notif_addfd(self.fd, n.id, theirs.as_fd(), AddFd::Replace(fd), cloexec)?
                    .is_none()
                {
                    return Ok(false);
                }
                drop(theirs);
                if !sys::notif_send(self.fd, n.id, 0, 0, 0)? {
                    return Ok(false);
                }
                (self.sink)(to, ours);
                Ok(true)
            }
        }
    }

    fn decode_connect(&mut self, tid: i32, a: [u64; 6]) -> Decoded {
        // Like the kernel: an address too short for its family, or unreadable,
        // fails the call; the world only sees well-formed requests.
        let Ok(len) = usize::try_from(a[2]) else {
            return Decoded::Errno(libc::EINVAL);
        };
        let mut raw = vec![0u8; len.min(128)];
        if raw.len() < 2 {
            return Decoded::Errno(libc::EINVAL);
        }
        if read_mem(tid, a[1], &mut raw).is_err() {
            return Decoded::Errno(libc::EFAULT);
        }
        let family = i32::from(u16::from_ne_bytes([raw[0], raw[1]]));
        let addr = match family {
            libc::AF_INET if raw.len() >= 8 => {
                let port = u16::from_be_bytes([raw[2], raw[3]]);
                let ip = std::net::Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
                SockAddr::Inet((ip, port).into())
            }
            libc::AF_INET6 if raw.len() >= 24 => {
                let port = u16::from_be_bytes([raw[2], raw[3]]);
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&raw[8..24]);
                SockAddr::Inet((std::net::Ipv6Addr::from(octets), port).into())
            }
            libc::AF_INET | libc::AF_INET6 => return Decoded::Errno(libc::EINVAL),
            libc::AF_UNIX => SockAddr::Unix,
            other => SockAddr::Other(other),
        };
        let sock_type = match addr {
            SockAddr::Inet(_) => match self.socket_type(tid, a[0] as i32) {
                Ok(t) => t,
                // Not a socket, or no such fd: the kernel fails the call.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSOCK) | Some(libc::EBADF)) => {
                    return Decoded::KernelWillFail
                }
                Err(e) => return Decoded::Unknown(e),
            },
            _ => SockType::Other,
        };
        Decoded::Request(Request::Connect { addr, sock_type })
    }

    /// SO_TYPE of the target's fd, through a duplicate (pidfd_getfd).
    fn socket_type(&mut self, tid: i32, fd: i32) -> io::Result<SockType> {
        let pidfd = sys::pidfd_open(self.tgid(tid)?)?;
        let dup: OwnedFd = sys::pidfd_getfd(pidfd.as_fd(), fd)?;
        Ok(match getsockopt(&dup, sockopt::SockType)? {
            nix::sys::socket::SockType::Stream => SockType::Stream,
            nix::sys::socket::SockType::Datagram => SockType::Datagram,
            _ => SockType::Other,
        })
    }
}

/// What a `connect` notification turned out to be.
enum Decoded {
    Request(Request),
    /// The kernel itself will fail the call (not a socket): let it.
    KernelWillFail,
    /// Answer with this errno, as the kernel would for a bad argument.
    Errno(i32),
    /// The supervisor could not tell what is being connected.
    Unknown(io::Error),
}

fn syscall_name(nr: i64) -> &'static str {
    match nr {
        libc::SYS_brk => "brk",
        libc::SYS_getrandom => "getrandom",
        libc::SYS_clock_gettime => "clock_gettime",
        libc::SYS_clock_getres => "clock_getres",
        libc::SYS_gettimeofday => "gettimeofday",
        libc::SYS_time => "time",
        libc::SYS_open => "open",
        libc::SYS_openat => "openat",
        libc::SYS_connect => "connect",
        _ => "syscall",
    }
}

fn read_mem(tid: i32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let len = buf.len();
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let n = process_vm_readv(Pid::from_raw(tid), &mut [IoSliceMut::new(buf)], &remote)?;
    if n != len {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(())
}

fn write_mem(tid: i32, addr: u64, data: &[u8]) -> io::Result<()> {
    let remote = [RemoteIoVec {
        base: addr as usize,
        len: data.len(),
    }];
    let n = process_vm_writev(Pid::from_raw(tid), &[IoSlice::new(data)], &remote)?;
    if n != data.len() {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(())
}

/// Reads a NUL-terminated string of at most PATH_MAX bytes, one page at a
/// time so a string ending just before an unmapped page still reads.
fn read_cstring(tid: i32, addr: u64) -> io::Result<Vec<u8>> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let chunk = (PAGE - at % PAGE) as usize;
        let mut buf = vec![0u8; chunk];
        read_mem(tid, at, &mut buf)?;
        if let Some(end) = buf.iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&buf);
        at += chunk as u64;
    }
    Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG))
}

fn memfd_with(content: &[u8]) -> io::Result<OwnedFd> {
    use std::io::Seek;
    let fd = nix::sys::memfd::memfd_create(
        c"tlsign-world",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    let mut f = std::fs::File::from(fd);
    f.write_all(content)?;
    f.rewind()?;
    Ok(f.into())
}

/// Feeds one random device's stream into a pipe until the reader closes it.
fn feed_random_device(write: OwnedFd, mut stream: rand_chacha::ChaCha20Rng) -> io::Result<()> {
    use rand_core::RngCore;
    let mut pipe = std::fs::File::from(write);
    // Fill the pipe before the reader can look, so its first reads are
    // whole whatever the scheduler does. 64 KiB is the default pipe
    // capacity: this write cannot block.
    let mut block = vec![0u8; 64 * 1024];
    stream.fill_bytes(&mut block);
    pipe.write_all(&block)?;
    // The rest on a detached thread, until the reader closes its end.
    std::thread::Builder::new()
        .name("random-device".into())
        .spawn(move || loop {
            stream.fill_bytes(&mut block);
            if pipe.write_all(&block).is_err() {
                return;
            }
        })?;
    Ok(())
}
