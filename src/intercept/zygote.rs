//! Forking the built-in client from a zygote instead of executing it.
//!
//! Executing the client costs most of its CPU: the kernel maps the binary,
//! ld.so relocates it, libc and std initialise, and at the end all of it is
//! torn down again. A batch starts one client per URL. The zygote is the
//! client's binary, executed once with what a client gets at exec (the
//! fixed environment, `/` as working directory, ASLR off, no_new_privs,
//! every signal blocked, the open-files limit the user had, its vDSO
//! patched); each client is then a fork of it, which installs its own
//! filter and runs `client::child_main`.
//!
//! Why a forked client sends the same bytes as an executed one (a
//! transcript signed one way must verify the other way, and a test checks
//! both):
//! - it runs the same code from `child_main` on, with the same arguments,
//!   environment, descriptors 0-2, signal mask and handlers;
//! - the zygote, before forking, draws randomness and reads clocks only
//!   outside any filter, for its own start-up (glibc's tcache key, the
//!   process's hash keys). A fresh client draws those from streams of their
//!   own (`world::random::StreamId` separates them by flags), never from
//!   ring's, so what the TLS stack draws starts at the same place either
//!   way;
//! - what differs is the layout of memory (the arguments are no longer on
//!   the stack, the zygote's allocations precede the client's), which the
//!   client never lets reach the wire.
//!
//! The zygote is a child of a thread kept for it (a parent-death signal is
//! tied to the thread that started the process); the clients are the
//! zygote's children, so it reaps them and reports each one's wait status
//! and CPU time to the session that started it, over a socket pair of that
//! session's own.
//!
//! Batches fork their clients; a single `sign` or `verify` executes its one
//! client, as a zygote would cost it an extra exec. `TLSIGN_SECCOMP_LAUNCH`
//! (`fork` or `exec`) overrides both.

use std::ffi::OsString;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};

use super::target::Program;
use super::vdso::VdsoPatch;
use crate::client::CHILD_ARG;
use crate::sys::{self, FilteredChild, SpawnFailure, Waited};

/// The hidden `argv[1]` that makes the binary run as the zygote; `argv[2]`
/// is the number of its control socket.
pub const ZYGOTE_ARG: &str = "__zygote";

/// The environment variable that chooses how clients start: `exec`,
/// `fork`, or (unset) forked in batches and executed otherwise.
pub const LAUNCH_ENV: &str = "TLSIGN_SECCOMP_LAUNCH";

/// A batch runs in this process: many clients will start.
static MANY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says that many clients will start (a batch): forking them pays. A
/// single `sign` or `verify` executes its one client, which costs less
/// than executing a zygote and forking it.
pub fn expect_many() {
    MANY.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether to fork clients from the zygote: `TLSIGN_SECCOMP_LAUNCH` if
/// set, else in a batch.
pub fn enabled() -> bool {
    static SET: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let set = SET.get_or_init(|| match std::env::var_os(LAUNCH_ENV) {
        Some(v) if v == "exec" => Some(false),
        Some(v) if v == "fork" => Some(true),
        _ => None,
    });
    set.unwrap_or_else(|| MANY.load(std::sync::atomic::Ordering::Relaxed))
}

/// Message tags, zygote or client to supervisor.
const LISTENING: u8 = b'L';
const REFUSED: u8 = b'E';
const EXITED: u8 = b'X';
const READY: u8 = b'R';

/// The largest request: a filter of a few hundred instructions and a URL
/// (the CLI bounds URLs far below this).
const MAX_REQUEST: usize = 1 << 20;

/// Bytes of command line a forked client can show (`ps`, `pgrep -f`):
/// an executed client shows its URL there, and so does a forked one, cut
/// to this length.
const CMDLINE_ROOM: usize = 8 << 10;

/// How long the zygote may take to start before we give up on it.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The running zygote, as the supervisor sees it.
struct Zygote {
    /// Requests go here; closing it tells the zygote to exit.
    control: OwnedFd,
    /// The thread that started the zygote and reaps it.
    keeper: std::thread::JoinHandle<()>,
}

/// The process's zygote, started by the first client.
static ZYGOTE: Mutex<Option<Arc<Zygote>>> = Mutex::new(None);

/// Stops the zygote, if one was started, and waits for it to exit: so
/// that its CPU time, and its clients', counts as this process's
/// children's (what `time` and the benchmarks read), and no process
/// outlives us. Every client must have ended.
pub fn shutdown() {
    let z = ZYGOTE.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(z) = z.and_then(Arc::into_inner) {
        let Zygote { control, keeper } = z;
        drop(control);
        let _ = keeper.join();
    }
}

/// The zygote, started now if there is none, or if the one there is
/// `dead` (another thread may have replaced it already). `None` if none
/// can be started: clients are then executed, and a warning says why, once.
fn zygote(program: &Program, dead: Option<&Arc<Zygote>>) -> Option<Arc<Zygote>> {
    static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let mut slot = ZYGOTE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(z) = slot.as_ref() {
        if !dead.is_some_and(|d| Arc::ptr_eq(d, z)) {
            return Some(Arc::clone(z));
        }
    }
    if FAILED.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    match start(program) {
        Ok(z) => {
            let z = Arc::new(z);
            *slot = Some(Arc::clone(&z));
            Some(z)
        }
        Err(e) => {
            FAILED.store(true, std::sync::atomic::Ordering::Relaxed);
            *slot = None;
            eprintln!("warning: {e}; every client is executed instead ({LAUNCH_ENV}=exec)");
            None
        }
    }
}

/// Executes `program`'s binary as the zygote and patches its vDSO.
fn start(program: &Program) -> io::Result<Zygote> {
    let (control, theirs) = seqpacket_pair()?;
    let mut cmd = std::process::Command::new(&program.path);
    // The room a client's command line gets (`serve`): wide enough for a
    // long URL; the zygote shows only its own.
    cmd.arg(ZYGOTE_ARG)
        .arg(theirs.as_raw_fd().to_string())
        .arg(" ".repeat(CMDLINE_ROOM))
        .env_clear()
        .envs(program.env.iter().map(|(k, v)| (k, v)))
        .current_dir(program.cwd.as_deref().unwrap_or("/".as_ref()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Clients start with every signal blocked and unblock them in
    // `child_main`; the zygote keeps them blocked, so a Ctrl-C to the
    // process group leaves it to the supervisor to stop.
    sys::zygote_before_exec(&mut cmd, theirs.as_raw_fd());
    // Its parent-death signal follows the thread that starts it: one that
    // lives as long as the zygote, and reaps it.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let keeper = std::thread::Builder::new()
        .name("client-zygote".into())
        .spawn(move || {
            // A thread inherits its creator's CPUs, and the first client's
            // thread may be pinned to one (`batch::placement`): the zygote
            // gets the process's, as the main thread has them, and gives
            // each client the CPUs its request names.
            sys::run_on_cpus(&sys::process_cpus());
            match cmd.spawn() {
                Ok(child) => {
                    let pid = child.id() as i32;
                    let _ = tx.send(Ok(pid));
                    let _ = sys::wait4(pid, 0);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    let pid = rx
        .recv()
        .map_err(|_| io::Error::other("the zygote's thread ended before starting it"))??;
    drop(theirs);
    let z = Zygote { control, keeper };
    // Patched once it runs: every client forked afterwards has the patched
    // page. Before that, it must have said it is ready (exec done).
    let ready = poll_in(z.control.as_fd(), START_TIMEOUT)
        .and_then(|()| recv_message(z.control.as_fd()))
        .and_then(|m| match m {
            Some((tag, _, _)) if tag == READY => Ok(()),
            _ => Err(io::Error::other("the zygote did not start")),
        });
    let patched = ready.and_then(|()| match VdsoPatch::shared() {
        Ok(None) => Ok(()),
        Ok(Some(v)) => match v.apply(pid) {
            Ok(true) => Ok(()),
            Ok(false) => Err(io::Error::other("its vDSO could not be found")),
            Err(e) => Err(io::Error::other(e.to_string())),
        },
        Err(e) => Err(io::Error::other(e.to_string())),
    });
    if let Err(e) = patched {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        drop(z);
        return Err(io::Error::other(format!(
            "cannot start the client zygote: {e}"
        )));
    }
    Ok(z)
}

/// Starts `program` (the built-in client) as a fork of the zygote, with
/// `filter` installed and `stdout`, `stderr` as descriptors 1 and 2 (0 is
/// the zygote's /dev/null). Returns it with its listener, and the socket
/// its exit will be reported on; `None` if there is no zygote to fork it
/// from (the caller executes it instead).
pub fn spawn(
    program: &Program,
    filter: &[libc::sock_filter],
    stdout: BorrowedFd<'_>,
    stderr: BorrowedFd<'_>,
) -> Result<Option<(FilteredChild, ExitReport)>, SpawnFailure> {
    // The client runs where its supervising thread may: a batch keeps the
    // two on one CPU while it has CPUs to spare (`batch::placement`), and a
    // fork would otherwise start wherever the zygote runs.
    let cpus = sys::allowed_cpus();
    let request = encode_request(filter, &cpus, &program.args);
    let mut dead = None;
    // A zygote that dies (killed, or out of memory) is replaced once.
    for _ in 0..2 {
        let Some(z) = zygote(program, dead.as_ref()) else {
            return Ok(None);
        };
        match request_once(&z, &request, stdout, stderr)? {
            Some(started) => return Ok(Some(started)),
            None => dead = Some(z),
        }
    }
    Err(SpawnFailure::Failed(io::Error::other(
        "the client zygote exited twice while starting a client",
    )))
}

/// One start by `z`; `None` if `z` is gone.
fn request_once(
    z: &Zygote,
    request: &[u8],
    stdout: BorrowedFd<'_>,
    stderr: BorrowedFd<'_>,
) -> Result<Option<(FilteredChild, ExitReport)>, SpawnFailure> {
    let (mine, theirs) = seqpacket_pair().map_err(SpawnFailure::Failed)?;
    let fds = [stdout.as_raw_fd(), stderr.as_raw_fd(), theirs.as_raw_fd()];
    let sent = sendmsg::<()>(
        z.control.as_raw_fd(),
        &[IoSlice::new(request)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
    if sent.is_err() {
        return Ok(None);
    }
    drop(theirs);
    match recv_message(mine.as_fd()).map_err(SpawnFailure::Failed)? {
        Some((LISTENING, data, Some(listener))) if data.len() == 5 => {
            let pid = i32::from_le_bytes([data[1], data[2], data[3], data[4]]);
            set_nonblocking(mine.as_fd()).map_err(SpawnFailure::Failed)?;
            Ok(Some((
                FilteredChild {
                    pid,
                    listener,
                    killable: data[0] != 0,
                },
                ExitReport(mine),
            )))
        }
        Some((REFUSED, data, _)) if data.len() == 5 => {
            let errno = i32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            let e = io::Error::from_raw_os_error(errno);
            Err(if data[4] != 0 {
                SpawnFailure::FilterRefused(e)
            } else {
                SpawnFailure::Failed(e)
            })
        }
        // Gone before its filter without a word: a signal killed it.
        Some((EXITED, data, _)) => match decode_exit(&data) {
            Some(w) if libc::WIFSIGNALED(w.status) => {
                Err(SpawnFailure::Killed(libc::WTERMSIG(w.status)))
            }
            _ => Err(SpawnFailure::Failed(io::Error::other(
                "the client ended before installing its filter",
            ))),
        },
        // The zygote closed our socket without an answer: it is gone.
        None => Ok(None),
        Some(_) => Err(SpawnFailure::Failed(io::Error::other(
            "the client zygote answered a start with nonsense",
        ))),
    }
}

/// Where the zygote reports how one client ended.
pub struct ExitReport(OwnedFd);

impl ExitReport {
    /// Waits for the report of the client `pid`, on this thread.
    pub fn wait_blocking(self, pid: i32) -> io::Result<Waited> {
        loop {
            poll_in(self.0.as_fd(), Duration::MAX)?;
            match recv_message(self.0.as_fd()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return exit_of(r, pid),
            }
        }
    }

    /// Waits for the report of the client `pid`, from a task.
    pub async fn wait(self, pid: i32) -> io::Result<Waited> {
        let fd = sys::async_fd(self.0)?;
        loop {
            let mut guard = fd.readable().await?;
            match guard.try_io(|fd| recv_message(fd.get_ref().as_fd())) {
                Ok(r) => return exit_of(r, pid),
                Err(_would_block) => continue,
            }
        }
    }
}

fn exit_of(r: io::Result<Option<Message>>, pid: i32) -> io::Result<Waited> {
    match r? {
        Some((EXITED, data, _)) => decode_exit(&data).map(|mut w| {
            w.pid = pid;
            w
        }),
        // The zygote died: its death killed the client (SIGKILL, its
        // parent-death signal), unless the client had ended just before
        // and was not yet reported. Either way nothing more is known, and
        // the client failed.
        None => Some(Waited {
            pid,
            status: libc::SIGKILL,
            cpu: Duration::ZERO,
        }),
        Some(_) => None,
    }
    .ok_or_else(|| {
        io::Error::other(format!(
            "the client zygote sent nonsense about client {pid}"
        ))
    })
}

/// A tag, its data, and the descriptor that came with it.
type Message = (u8, Vec<u8>, Option<OwnedFd>);

/// One message; `None` at end of stream.
fn recv_message(fd: BorrowedFd<'_>) -> io::Result<Option<Message>> {
    let mut buf = [0u8; 64];
    let (n, _, fds) = sys::recv_with_fds(fd, &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some((buf[0], buf[1..n].to_vec(), fds.into_iter().next())))
}

fn encode_exit(w: &Waited) -> [u8; 13] {
    let mut m = [0u8; 13];
    m[0] = EXITED;
    m[1..5].copy_from_slice(&w.status.to_le_bytes());
    let micros = u64::try_from(w.cpu.as_micros()).unwrap_or(u64::MAX);
    m[5..13].copy_from_slice(&micros.to_le_bytes());
    m
}

fn decode_exit(data: &[u8]) -> Option<Waited> {
    let status = i32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
    let micros = u64::from_le_bytes(data.get(4..12)?.try_into().ok()?);
    Some(Waited {
        pid: 0,
        status,
        cpu: Duration::from_micros(micros),
    })
}

/// A request: the filter's length in instructions (u32), the
/// instructions (8 bytes each: code, jt, jf, k), the CPUs the client may
/// run on (a u32 count, then each CPU's number as a u32), then each
/// argument as a u32 length and its bytes.
fn encode_request(filter: &[libc::sock_filter], cpus: &[u32], args: &[OsString]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + filter.len() * 8 + cpus.len() * 4 + 256);
    b.extend_from_slice(&(filter.len() as u32).to_le_bytes());
    for f in filter {
        b.extend_from_slice(&f.code.to_le_bytes());
        b.push(f.jt);
        b.push(f.jf);
        b.extend_from_slice(&f.k.to_le_bytes());
    }
    b.extend_from_slice(&(cpus.len() as u32).to_le_bytes());
    for c in cpus {
        b.extend_from_slice(&c.to_le_bytes());
    }
    for a in args {
        b.extend_from_slice(&(a.len() as u32).to_le_bytes());
        b.extend_from_slice(a.as_bytes());
    }
    b
}

/// A decoded request: the filter, the client's CPUs, its arguments.
type Request = (Vec<libc::sock_filter>, Vec<u32>, Vec<OsString>);

fn decode_request(mut b: &[u8]) -> Option<Request> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (h, t) = (b.get(..n)?, b.get(n..)?);
        *b = t;
        Some(h)
    }
    fn u32_of(b: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize)
    }
    let n = u32_of(&mut b)?;
    let mut filter = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let i = take(&mut b, 8)?;
        filter.push(libc::sock_filter {
            code: u16::from_le_bytes([i[0], i[1]]),
            jt: i[2],
            jf: i[3],
            k: u32::from_le_bytes([i[4], i[5], i[6], i[7]]),
        });
    }
    let n = u32_of(&mut b)?;
    let mut cpus = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        cpus.push(u32_of(&mut b)? as u32);
    }
    let mut args = Vec::new();
    while !b.is_empty() {
        let n = u32_of(&mut b)?;
        args.push(OsString::from_vec(take(&mut b, n)?.to_vec()));
    }
    Some((filter, cpus, args))
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map(drop)
    .map_err(io::Error::from)
}

/// Waits until `fd` is readable (or hung up), at most `timeout`.
fn poll_in(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::NONE);
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, t) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::TimedOut)),
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The zygote's main loop: `argv[2]` names its control socket; `run` is
/// the client's entry point (`client::child_main`). Returns its exit code
/// once the supervisor has closed the socket and every client has ended.
pub fn serve(args: &[OsString], run: fn(Vec<OsString>) -> i32) -> i32 {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let Some(fd) = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(|a| a.parse::<RawFd>().ok())
    else {
        eprintln!("tlsign-seccomp {ZYGOTE_ARG}: usage: {ZYGOTE_ARG} FD");
        return 2;
    };
    let Ok(control) = sys::adopt_inherited_socket(fd) else {
        eprintln!("tlsign-seccomp {ZYGOTE_ARG}: descriptor {fd} is not a socket");
        return 2;
    };
    // SIGCHLD is blocked (every signal is), so it queues for the signalfd.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let Ok(sfd) = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
    else {
        return 1;
    };
    // Its own command line without the room it keeps for clients'.
    let area = sys::ArgArea::own().ok();
    let exe = std::env::args_os().next().unwrap_or_default();
    if let Some(a) = area {
        a.set(&[
            exe.as_bytes(),
            ZYGOTE_ARG.as_bytes(),
            fd.to_string().as_bytes(),
        ]);
    }
    if send_tag(control.as_fd(), &[READY]).is_err() {
        return 1;
    }
    let me = std::process::id() as i32;
    let mut live: Vec<(i32, OwnedFd)> = Vec::new();
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut open = true;
    while open || !live.is_empty() {
        let (ctl_ready, chld_ready) = {
            let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            if open {
                fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 1,
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (fds.get(1).is_some_and(ready), ready(&fds[0]))
        };
        if chld_ready {
            while let Ok(Some(_)) = sfd.read_signal() {}
            reap(&mut live);
        }
        if !ctl_ready {
            continue;
        }
        let Ok((n, truncated, fds)) = sys::recv_with_fds(control.as_fd(), &mut buf) else {
            open = false;
            continue;
        };
        if n == 0 {
            // The supervisor is done: serve the clients still running.
            open = false;
            continue;
        }
        let request = if truncated {
            None
        } else {
            decode_request(&buf[..n])
        };
        // Only the client is forked: its own first argument, then its
        // arguments as `child_main` takes them.
        let request = request.filter(|(_, _, a)| a.first().is_some_and(|a| a == CHILD_ARG));
        let (Some((filter, cpus, mut args)), Ok([stdout, stderr, reply])) =
            (request, <[OwnedFd; 3]>::try_from(fds))
        else {
            // Dropping the descriptors ends the requester's wait.
            continue;
        };
        match sys::fork_single_threaded() {
            Ok(None) => {
                drop(sfd);
                drop(control);
                // Before anything else runs here: on the CPU chosen for it.
                sys::run_on_cpus(&cpus);
                // Shown as an executed client is: `ps` finds it by its URL
                // (and, as after an exec, already on its CPUs).
                if let Some(a) = area {
                    let shown: Vec<&[u8]> = std::iter::once(exe.as_bytes())
                        .chain(args.iter().map(|a| a.as_bytes()))
                        .collect();
                    a.set(&shown);
                }
                let code = client(me, &filter, stdout, stderr, reply, args.split_off(1), run);
                std::process::exit(code);
            }
            Ok(Some(child)) => live.push((child, reply)),
            Err(e) => {
                let mut m = vec![REFUSED];
                m.extend_from_slice(&e.raw_os_error().unwrap_or(libc::EAGAIN).to_le_bytes());
                m.push(0);
                let _ = send_tag(reply.as_fd(), &m);
            }
        }
    }
    0
}

/// Reports every client that has ended to its session.
fn reap(live: &mut Vec<(i32, OwnedFd)>) {
    while let Ok(w) = sys::wait4(-1, libc::WNOHANG) {
        if w.pid <= 0 {
            break;
        }
        if let Some(i) = live.iter().position(|(p, _)| *p == w.pid) {
            let (_, reply) = live.swap_remove(i);
            let _ = send_tag(reply.as_fd(), &encode_exit(&w));
        }
    }
}

/// The forked client, before it becomes the client: what a started client
/// has at exec, then its filter, whose listener goes to the session.
fn client(
    zygote: i32,
    filter: &[libc::sock_filter],
    stdout: OwnedFd,
    stderr: OwnedFd,
    reply: OwnedFd,
    args: Vec<OsString>,
    run: fn(Vec<OsString>) -> i32,
) -> i32 {
    // Dies with the zygote, which dies with the supervisor; a zygote gone
    // already has no one left to serve this client.
    if !sys::die_with_parent(zygote) {
        return 127;
    }
    let refuse = |e: io::Error, refused: bool| {
        let mut m = vec![REFUSED];
        m.extend_from_slice(&e.raw_os_error().unwrap_or(libc::EINVAL).to_le_bytes());
        m.push(u8::from(refused));
        let _ = send_tag(reply.as_fd(), &m);
        127
    };
    for (fd, target) in [(&stdout, 1), (&stderr, 2)] {
        if let Err(e) = sys::dup_onto_std(fd.as_fd(), target) {
            return refuse(e, false);
        }
    }
    let (listener, killable) = match sys::install_filter_here(filter) {
        Ok(l) => l,
        Err(e) => return refuse(e, true),
    };
    // Nothing below is caught by the filter (sendmsg, close_range): the
    // session cannot answer before it has the listener.
    let mut m = vec![LISTENING, u8::from(killable)];
    m.extend_from_slice(&(std::process::id() as i32).to_le_bytes());
    let sent = sendmsg::<()>(
        reply.as_raw_fd(),
        &[IoSlice::new(&m)],
        &[ControlMessage::ScmRights(&[listener.as_raw_fd()])],
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
    if sent.is_err() {
        return 127;
    }
    drop((listener, stdout, stderr, reply));
    // What an executed client holds: 0-2 only. The zygote's copies of other
    // clients' sockets go too.
    sys::close_from_3();
    run(args)
}

fn send_tag(fd: BorrowedFd<'_>, m: &[u8]) -> io::Result<()> {
    nix::sys::socket::send(fd.as_raw_fd(), m, MsgFlags::MSG_NOSIGNAL)
        .map(drop)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_truncations_are_refused() {
        let filter = vec![
            libc::sock_filter {
                code: 0x15,
                jt: 1,
                jf: 2,
                k: 0xdead_beef,
            },
            libc::sock_filter {
                code: 6,
                jt: 0,
                jf: 0,
                k: 0x7fff_0000,
            },
        ];
        let args: Vec<OsString> = vec!["__client".into(), "https://a.test/".into(), "".into()];
        let b = encode_request(&filter, &[0, 3], &args);
        let (f, cpus, a) = decode_request(&b).expect("decodes");
        assert_eq!(a, args);
        assert_eq!(cpus, [0, 3]);
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[0].code, f[0].jt, f[0].jf, f[0].k),
            (0x15, 1, 2, 0xdead_beef)
        );
        assert_eq!(f[1].k, 0x7fff_0000);
        for cut in 1..b.len() {
            // A cut inside the filter or inside an argument never decodes
            // as the original.
            if let Some((f2, _, a2)) = decode_request(&b[..cut]) {
                assert!(f2.len() != 2 || a2 != args, "cut at {cut}");
            }
        }
    }

    #[test]
    fn exit_reports_round_trip() {
        let w = Waited {
            pid: 9,
            status: 0x0100,
            cpu: Duration::from_micros(2_500),
        };
        let m = encode_exit(&w);
        assert_eq!(m[0], EXITED);
        let back = decode_exit(&m[1..]).expect("decodes");
        assert_eq!(
            (back.status, back.cpu),
            (0x0100, Duration::from_micros(2_500))
        );
        assert!(decode_exit(&m[1..8]).is_none());
    }
}
