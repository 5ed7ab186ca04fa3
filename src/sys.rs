//! The only module with `unsafe`: raw syscalls and ioctls the safe crates do
//! not wrap. One syscall per block, each turned into an `io::Result` at once.
//!
//! Constants come from <linux/seccomp.h>; Debian 12's headers predate some
//! of them, so they are spelled out here with the kernel version that added
//! them.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
/// Linux 5.0.
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
/// Linux 5.19: a waiting target ignores non-fatal signals until answered, so
/// a signal cannot withdraw a notification and make the syscall re-issue.
const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 1 << 5;
pub const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;
/// Linux 5.9. (`SECCOMP_ADDFD_FLAG_SEND`, 5.14, is deliberately unused:
/// see [`AddFd`].)
const SECCOMP_ADDFD_FLAG_SETFD: u32 = 1;
/// Linux 6.6: wake the supervisor on the target's CPU.
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SeccompNotif {
    pub id: u64,
    /// The thread id of the caller, in the supervisor's pid namespace.
    pub pid: u32,
    pub flags: u32,
    pub data: SeccompData,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct SeccompNotifAddfd {
    id: u64,
    flags: u32,
    srcfd: u32,
    newfd: u32,
    newfd_flags: u32,
}

nix::ioctl_readwrite!(ioctl_notif_recv, b'!', 0, SeccompNotif);
nix::ioctl_readwrite!(ioctl_notif_send, b'!', 1, SeccompNotifResp);
nix::ioctl_write_ptr!(ioctl_notif_id_valid, b'!', 2, u64);
nix::ioctl_write_ptr!(ioctl_notif_addfd, b'!', 3, SeccompNotifAddfd);
const IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = nix::request_code_write!(b'!', 4, 8) as libc::c_ulong;

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Waits for the next notification (SECCOMP_IOCTL_NOTIF_RECV). ENOENT means
/// the notification died before we read it: the caller just tries again.
pub fn notif_recv(listener: BorrowedFd<'_>) -> io::Result<SeccompNotif> {
    // The kernel requires the buffer to be zeroed.
    let mut req = SeccompNotif::default();
    // SAFETY: `req` is a valid, writable, correctly laid out seccomp_notif
    // that outlives the call; the fd is borrowed, hence open.
    unsafe { ioctl_notif_recv(listener.as_raw_fd(), &mut req) }.map_err(errno)?;
    Ok(req)
}

/// Answers a notification: `Ok(false)` if it was withdrawn meanwhile
/// (ENOENT: the target was killed or interrupted), so nothing happened.
pub fn notif_send(
    listener: BorrowedFd<'_>,
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
) -> io::Result<bool> {
    let mut resp = SeccompNotifResp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: `resp` is a valid seccomp_notif_resp living across the call.
    match unsafe { ioctl_notif_send(listener.as_raw_fd(), &mut resp) } {
        Ok(_) => Ok(true),
        Err(nix::Error::ENOENT) => Ok(false),
        Err(e) => Err(errno(e)),
    }
}

/// Is notification `id` still pending? Checked after reading target memory
/// and before acting on what was read: if the target died in between, its
/// pid may already belong to another process whose memory we just read.
pub fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: `id` is a valid u64 the kernel only reads.
    unsafe { ioctl_notif_id_valid(listener.as_raw_fd(), &id) }.is_ok()
}

/// Where [`notif_addfd`] puts the fd in the target. Either way the
/// notification still needs its answer ([`notif_send`]).
///
/// Why not `SECCOMP_ADDFD_FLAG_SEND`, which installs and answers in one
/// ioctl: the kernel (seen on 6.18) marks the notification answered, with
/// the value 0, *before* the target has installed the fd, and if a signal
/// then interrupts the supervisor's wait inside the ioctl, it takes the fd
/// request back but leaves the answer. The target's syscall returns 0, an
/// fd it never got: an `openat` of /etc/resolv.conf "returned" stdin. A
/// SIGCHLD under `strace -f`, a SIGSTOP or a cgroup freezer is enough.
/// Installing first and answering after has no such window: an interrupted
/// ADDFD is either done or taken back whole, and with
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (5.19) the target cannot leave
/// between the two steps. Before 5.19 a signal to the target there leaves
/// it one unused fd, and the syscall is re-issued.
#[derive(Clone, Copy, Debug)]
pub enum AddFd {
    /// Replace fd `n` (like dup2).
    Replace(RawFd),
    /// Take the lowest free fd.
    Lowest,
}

/// Installs `src` into the target of notification `id`
/// (SECCOMP_IOCTL_NOTIF_ADDFD). Returns the fd number in the target, or
/// `Ok(None)` if the notification was withdrawn.
pub fn notif_addfd(
    listener: BorrowedFd<'_>,
    id: u64,
    src: BorrowedFd<'_>,
    how: AddFd,
    cloexec: bool,
) -> io::Result<Option<RawFd>> {
    let (flags, newfd) = match how {
        AddFd::Replace(n) => (
            SECCOMP_ADDFD_FLAG_SETFD,
            u32::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        ),
        AddFd::Lowest => (0, 0),
    };
    let newfd_flags = if cloexec { libc::O_CLOEXEC as u32 } else { 0 };
    let srcfd =
        u32::try_from(src.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let addfd = SeccompNotifAddfd {
        id,
        flags,
        srcfd,
        newfd,
        newfd_flags,
    };
    loop {
        // SAFETY: `addfd` is a valid seccomp_notif_addfd the kernel only
        // reads; `src` is borrowed, hence open for the duration of the call.
        match unsafe { ioctl_notif_addfd(listener.as_raw_fd(), &addfd) } {
            Ok(n) => return Ok(Some(n)),
            Err(nix::Error::ENOENT) => return Ok(None),
            // Interrupted (a handler without SA_RESTART): the kernel either
            // finished the request, and said so, or took it back whole.
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// Asks for synchronous wake-ups (SECCOMP_IOCTL_NOTIF_SET_FLAGS, Linux 6.6).
pub fn notif_set_sync_wakeup(listener: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: this ioctl takes its flags by value, not through a pointer.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            IOCTL_NOTIF_SET_FLAGS as _,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs in the clone child, between clone and exec: only raw,
/// async-signal-safe syscalls, no allocation. Installs `filter` with a
/// listener and returns the listener's number and whether the kernel took
/// the killable wait, or why it refused the filter. The child shares our
/// descriptor table at that moment (CLONE_FILES), so the listener is
/// created straight in the supervisor: nothing has to carry it over.
pub(crate) fn child_install_filter(filter: &[libc::sock_filter]) -> io::Result<(RawFd, bool)> {
    let len = u16::try_from(filter.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr().cast_mut(),
    };
    let install = |flags: libc::c_ulong| {
        // SAFETY: `prog` points at `filter`, which outlives the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(fd as RawFd)
        }
    };
    match install(SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) {
        Ok(fd) => Ok((fd, true)),
        // Before Linux 5.19: no killable wait. Signals may then withdraw a
        // notification; the world only advances on answers that landed.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            install(SECCOMP_FILTER_FLAG_NEW_LISTENER).map(|fd| (fd, false))
        }
        Err(e) => Err(e),
    }
}

/// The limit on open files this process started with, kept when
/// [`raise_open_files`] raised it: each supervised child gets it back, so
/// a client sees the same limit under a batch as under a single sign.
static STARTED_NOFILE: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Raises this process's soft limit on open files to `want`, or as far as
/// the hard limit allows; children started later get the old one back.
/// Returns the soft limit now in force.
pub fn raise_open_files(want: u64) -> io::Result<u64> {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let target = want.min(now.rlim_max);
    if target <= now.rlim_cur {
        return Ok(now.rlim_cur);
    }
    let started = *STARTED_NOFILE.get_or_init(|| now);
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: started.rlim_max,
    };
    // SAFETY: reads a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(target)
}

/// The last step before exec of every supervised child: the limit on open
/// files this process started with, if a batch raised it. Not earlier: the
/// filter's listener is created in our descriptor table, whose free numbers
/// may all be above that limit.
pub(crate) fn child_restore_open_files() -> io::Result<()> {
    if let Some(limit) = STARTED_NOFILE.get() {
        // SAFETY: `limit` is a valid rlimit in memory that outlives the
        // call; lowering a soft limit is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The steps every supervised child takes between fork and exec, whatever
/// the backend: no_new_privs (which lets an unprivileged process install a
/// filter), death with the supervisor, and ASLR off (OpenSSL and others mix
/// addresses into their randomness). Raw syscalls only.
pub(crate) fn child_common() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: 0xffffffff queries the persona without changing it.
    let persona = unsafe { libc::personality(0xffff_ffff) };
    if persona < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: personality takes an integer; ADDR_NO_RANDOMIZE is harmless.
    if unsafe {
        libc::personality(persona as libc::c_ulong | libc::ADDR_NO_RANDOMIZE as libc::c_ulong)
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A seccomp program without a listener, for the ptrace backends.
fn install_plain_filter(filter: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(filter.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, which outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs in the forked child for the ptrace backends: the common steps,
/// PTRACE_TRACEME (the exec that follows stops the child with SIGTRAP, so
/// the tracer sees it before its first instruction), then `filter`, whose
/// SECCOMP_RET_TRACE rules stop the child for the tracer.
pub fn child_prepare_trace(filter: Option<&[libc::sock_filter]>) -> io::Result<()> {
    child_common()?;
    // SAFETY: PTRACE_TRACEME takes no pointers.
    if unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(f) = filter {
        install_plain_filter(f)?;
    }
    child_restore_open_files()
}

/// Makes `cmd` run [`child_prepare_trace`] between fork and exec.
pub fn trace_before_exec(cmd: &mut std::process::Command, filter: Option<Vec<libc::sock_filter>>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and makes only raw,
    // async-signal-safe syscalls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || child_prepare_trace(filter.as_deref()));
    }
}

/// One child state change, with the CPU time of a child that ended.
pub struct Waited {
    pub pid: i32,
    /// As waitpid(2) encodes it.
    pub status: i32,
    /// User + system time (zero unless the child ended).
    pub cpu: std::time::Duration,
}

/// wait4(2): waitpid plus the resource usage of a child that ended.
pub fn wait4(pid: i32, flags: i32) -> io::Result<Waited> {
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `ru` are live locals the kernel fills in.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        let tv = |t: libc::timeval| {
            std::time::Duration::from_secs(t.tv_sec as u64)
                + std::time::Duration::from_micros(t.tv_usec as u64)
        };
        return Ok(Waited {
            pid: r,
            status,
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        });
    }
}

/// pidfd_open(2), Linux 5.3. `pid` must be a thread-group leader.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments only.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// pidfd_getfd(2), Linux 5.6: a duplicate of another process's fd, to look
/// at the socket a target is connecting.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, target_fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments only; `pidfd` is borrowed, hence open.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Ignores SIGINT and SIGQUIT in the supervisor, for `run`: the command in
/// the foreground group gets them too and decides what they mean.
pub fn ignore_interrupts() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for s in [Signal::SIGINT, Signal::SIGQUIT] {
        // SAFETY: SIG_IGN installs no handler code, so nothing can run in
        // signal context.
        let _ = unsafe { signal(s, SigHandler::SigIgn) };
    }
}

/// Resumes a ptrace-stopped thread with PTRACE_SYSCALL (`to_syscall`: stop
/// again at the next syscall entry or exit) or PTRACE_CONT, delivering
/// signal `sig` (0 for none). Raw, because nix only passes the signals it
/// has names for, and a real-time signal must reach the tracee too.
pub fn ptrace_resume(tid: i32, to_syscall: bool, sig: i32) -> io::Result<()> {
    let req = if to_syscall {
        libc::PTRACE_SYSCALL
    } else {
        libc::PTRACE_CONT
    };
    // SAFETY: these requests take no pointers; `sig` travels as an integer.
    if unsafe { libc::ptrace(req, tid, 0, sig as libc::c_long) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers an fd we own with the current tokio runtime's reactor.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes the OwnedFd itself, so the descriptor stays
    // open and names the same file until the AsyncFd is dropped, and
    // OwnedFd::as_raw_fd always returns that one descriptor.
    Ok(unsafe { tokio::io::unix::AsyncFd::register(fd) }?)
}

/// Everything the child of [`spawn_filtered`] needs, prepared before the
/// clone: between clone and exec the child may not allocate.
pub struct ExecPlan {
    pub path: std::ffi::CString,
    /// argv, NUL-terminated pointer array into `_strings`.
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    _strings: Vec<std::ffi::CString>,
    pub cwd: Option<std::ffi::CString>,
    /// stdin, stdout, stderr for the child, or inherit all three.
    pub stdio: Option<[RawFd; 3]>,
    /// Exec with every signal still blocked, the handlers left as they are
    /// (exec resets them): for a program that unblocks them itself
    /// (`target::Program::unblocks_signals`).
    pub keep_signals_blocked: bool,
}

// SAFETY: the raw pointers point into `_strings`, owned by the plan and
// never mutated; moving the plan between threads moves them together.
unsafe impl Send for ExecPlan {}

impl ExecPlan {
    pub fn new(
        path: std::ffi::CString,
        args: Vec<std::ffi::CString>,
        env: Vec<std::ffi::CString>,
        cwd: Option<std::ffi::CString>,
        stdio: Option<[RawFd; 3]>,
    ) -> ExecPlan {
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        let mut strings = args;
        strings.extend(env);
        ExecPlan {
            path,
            argv,
            envp,
            _strings: strings,
            cwd,
            stdio,
            keep_signals_blocked: false,
        }
    }
}

/// What the clone child reads, and writes its results to, shared with the
/// parent: CLONE_VM.
struct ChildShared<'a> {
    plan: &'a ExecPlan,
    filter: &'a [libc::sock_filter],
    mask: libc::sigset_t,
    /// Why the child gave up before its exec, 0 if it did not.
    errno: AtomicI32,
    /// The step that failed was the filter's install.
    refused: AtomicBool,
    /// The listener, once created (in our table: see
    /// [`child_install_filter`]); -1 before.
    listener: AtomicI32,
    killable: AtomicBool,
}

/// A program started by [`spawn_filtered`].
pub struct FilteredChild {
    pub pid: i32,
    pub listener: OwnedFd,
    /// Signals wait for answers (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV).
    pub killable: bool,
}

/// Why [`spawn_filtered`] started nothing.
pub enum SpawnFailure {
    /// The kernel refused the filter.
    FilterRefused(io::Error),
    /// Another step failed: clone, a step before exec, or exec itself.
    Failed(io::Error),
    /// The child died of signal `n` before its exec (reaped).
    Killed(i32),
}

/// Starts `plan` with `filter` installed and returns its listener, the way
/// posix_spawn starts a program: clone(CLONE_VM | CLONE_VFORK), so the
/// child borrows this process's memory until its exec instead of copying
/// the page tables of a busy, many-threaded supervisor. (A fork here cost
/// more CPU than the client's whole TLS fetch: page-table copies, TLB
/// shootdowns on every CPU, and copy-on-write faults in every thread
/// afterwards.)
///
/// The child starts on our descriptor table too (CLONE_FILES), so the
/// listener its seccomp() creates is ours at once, and takes a copy of the
/// table of its own (unshare) only after that, before it touches any
/// descriptor. Sending the listener over a socket pair instead cost a
/// socketpair, a sendmsg, a recvmsg and four closes per client.
pub fn spawn_filtered(
    plan: &ExecPlan,
    filter: &[libc::sock_filter],
) -> Result<FilteredChild, SpawnFailure> {
    // The child's stack, kept per thread: a batch starts a client per URL,
    // and a fresh 256 KiB each time was an mmap, page faults and a munmap
    // per client. This thread is suspended while the child uses it.
    thread_local! {
        static STACK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    STACK.with(|cell| {
        let mut stack = cell.borrow_mut();
        // Reserved, never filled: only the pages the child touches count.
        stack.reserve_exact(CHILD_STACK);
        let top = stack.spare_capacity_mut().as_mut_ptr_range().end;
        spawn_on_stack(plan, filter, top.cast())
    })
}

/// The clone child's stack size: plenty for raw syscalls.
const CHILD_STACK: usize = 256 << 10;

fn spawn_on_stack(
    plan: &ExecPlan,
    filter: &[libc::sock_filter],
    stack_top: *mut u8,
) -> Result<FilteredChild, SpawnFailure> {
    // SAFETY: sigset_t is plain data; sigfillset/sigemptyset initialize it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a valid sigset_t to fill.
    unsafe { libc::sigfillset(&mut all) };
    let mut shared = ChildShared {
        plan,
        filter,
        // SAFETY: as above; overwritten by pthread_sigmask below.
        mask: unsafe { std::mem::zeroed() },
        errno: AtomicI32::new(0),
        refused: AtomicBool::new(false),
        listener: AtomicI32::new(-1),
        killable: AtomicBool::new(false),
    };
    // No signal handler of ours may run in the child, which shares our
    // memory: block every signal until the child has reset the handlers.
    // SAFETY: both pointers are valid sigset_t.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut shared.mask) };
    if r != 0 {
        return Err(SpawnFailure::Failed(io::Error::from_raw_os_error(r)));
    }
    // SAFETY: the child runs `vfork_child` on its own stack (below
    // `stack_top`, the end of CHILD_STACK bytes the caller holds, rounded
    // down to the 16 bytes the ABI wants; the child writes its stack before
    // reading it) with a pointer to `shared`; CLONE_VFORK suspends this
    // thread until the child has exec'd or exited, so `shared` and the
    // stack outlive every use by the child.
    let pid = unsafe {
        let top = stack_top.sub(stack_top as usize % 16);
        libc::clone(
            vfork_child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
            (&shared as *const ChildShared<'_>).cast_mut().cast(),
        )
    };
    let clone_err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &shared.mask, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(SpawnFailure::Failed(clone_err));
    }
    let listener = match shared.listener.load(Ordering::SeqCst) {
        -1 => None,
        // SAFETY: the child's seccomp() created this descriptor in the table
        // we shared with it, and nothing else knows its number.
        fd => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
    };
    let errno = shared.errno.load(Ordering::SeqCst);
    if errno == 0 {
        if let Some(listener) = listener {
            return Ok(FilteredChild {
                pid,
                listener,
                killable: shared.killable.load(Ordering::SeqCst),
            });
        }
    }
    // The child has exited before its exec: reap it and say why.
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid int.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let e = io::Error::from_raw_os_error(errno);
    Err(if errno != 0 && shared.refused.load(Ordering::SeqCst) {
        SpawnFailure::FilterRefused(e)
    } else if errno != 0 {
        SpawnFailure::Failed(e)
    } else if libc::WIFSIGNALED(status) {
        // Gone before its filter without a word: a signal killed it.
        SpawnFailure::Killed(libc::WTERMSIG(status))
    } else {
        SpawnFailure::Failed(io::Error::other(
            "the child ended before installing its filter",
        ))
    })
}

/// The clone child of [`spawn_filtered`]: raw syscalls only, no allocation,
/// no locks (it runs in our memory while we are suspended).
extern "C" fn vfork_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildShared the parent keeps alive until we exec
    // or exit (CLONE_VFORK).
    let s = unsafe { &*(arg as *const ChildShared<'_>) };
    let fail = |e: io::Error| -> libc::c_int {
        s.errno
            .store(e.raw_os_error().unwrap_or(libc::EINVAL), Ordering::SeqCst);
        // SAFETY: _exit never returns and runs no atexit handlers.
        unsafe { libc::_exit(127) }
    };
    // Handlers go back to default, as exec would do, before any signal can
    // be delivered here; then the parent's mask comes back. A program that
    // unblocks signals itself starts with all of them blocked instead, so
    // none can be delivered here and exec resets the handlers.
    if !s.plan.keep_signals_blocked {
        reset_handlers_and_mask(&s.mask);
    }
    if let Err(e) = child_common() {
        return fail(e);
    }
    match child_install_filter(s.filter) {
        Ok((fd, killable)) => {
            s.killable.store(killable, Ordering::SeqCst);
            s.listener.store(fd, Ordering::SeqCst);
        }
        Err(e) => {
            s.refused.store(true, Ordering::SeqCst);
            return fail(e);
        }
    }
    // From here on the filter applies to us: only calls it lets through
    // (none of those below is caught), as a caught one would wait for an
    // answer from this suspended parent forever. And the table is our own:
    // the descriptors below change only in this copy, where the listener is
    // close-on-exec.
    // SAFETY: unshare with a flag only.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        return fail(io::Error::last_os_error());
    }
    if let Some(fds) = s.plan.stdio {
        for (target, fd) in fds.into_iter().enumerate() {
            // SAFETY: dup2 on fds the parent keeps open, in our own table
            // (unshared above).
            if unsafe { libc::dup2(fd, target as RawFd) } < 0 {
                return fail(io::Error::last_os_error());
            }
        }
    }
    if let Some(cwd) = &s.plan.cwd {
        // SAFETY: a NUL-terminated path owned by the plan.
        if unsafe { libc::chdir(cwd.as_ptr()) } != 0 {
            return fail(io::Error::last_os_error());
        }
    }
    if let Err(e) = child_restore_open_files() {
        return fail(e);
    }
    // SAFETY: path, argv and envp are NUL-terminated and point into the
    // plan, which outlives the exec.
    unsafe {
        libc::execve(
            s.plan.path.as_ptr(),
            s.plan.argv.as_ptr(),
            s.plan.envp.as_ptr(),
        )
    };
    fail(io::Error::last_os_error())
}

/// The part of [`vfork_child`] a program that leaves signals blocked skips:
/// every handler reset to the default, then `mask` restored. Raw syscalls
/// only.
fn reset_handlers_and_mask(mask: &libc::sigset_t) {
    for sig in 1..libc::SIGRTMAX() {
        // SAFETY: sigaction is plain data; all-zero is valid to fill in.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: queries the disposition into a valid struct.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
            continue;
        }
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            // SAFETY: as above.
            let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            dfl.sa_sigaction = libc::SIG_DFL;
            // SAFETY: sets a plain default disposition.
            unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) };
        }
    }
    // SAFETY: restores the mask the parent had before blocking everything.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
}

/// glibc's tunable that turns off its per-thread cache of freed chunks.
#[cfg(target_env = "gnu")]
const NO_TCACHE: &str = "glibc.malloc.tcache_count=0";
/// Set on the re-executed process, so that it never tries again (glibc
/// drops `GLIBC_TUNABLES` itself in some cases, setuid among them).
#[cfg(target_env = "gnu")]
const REEXECUTED: &str = "TLSIGN_SECCOMP_REEXECUTED";

/// Re-executes this program (`args`: its whole command line) once, with
/// glibc's per-thread cache of freed chunks (tcache) turned off.
///
/// A batch runs for as long as its list lasts, on dozens of threads. With
/// the cache, its resident memory grew with the length of the list (15.3,
/// 17.1, 19.4 MiB at 1000, 5000, 20000 URLs at -j 16) while its live heap
/// stayed flat: cached chunks are in use as far as their arena can tell,
/// and the arena fragments around them. Without it, the same runs stayed
/// at 15.2 MiB from 5000 URLs on, at no throughput cost we could measure
/// (docs/batch.md). glibc reads the setting only when a program starts,
/// hence the exec. The clients never see it: they start with a fixed
/// environment.
///
/// Returns only if that cannot be done (no /proc), is not wanted (the
/// user's own `tcache_count`), or is done already (the re-executed
/// process): the batch then runs as it is.
#[cfg(target_env = "gnu")]
pub fn without_tcache(args: &[std::ffi::OsString]) {
    use std::os::unix::process::CommandExt;
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os(REEXECUTED).is_some() {
        name_after_binary();
        return;
    }
    if tunables
        .to_string_lossy()
        .contains("glibc.malloc.tcache_count")
    {
        return;
    }
    let mut value = tunables;
    if !value.is_empty() {
        value.push(":");
    }
    value.push(NO_TCACHE);
    let (Some(arg0), Some(rest)) = (args.first(), args.get(1..)) else {
        return;
    };
    // exec returns only on failure, and nothing has started yet.
    let _ = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(rest)
        .env("GLIBC_TUNABLES", value)
        .env(REEXECUTED, "1")
        .exec();
}

/// Gives the re-executed process the name a normal start gives it. The
/// kernel names a process after the file it executes, and that file was
/// `/proc/self/exe`: without this, `ps`, `top` and `pgrep -x
/// tlsign-seccomp` saw a batch as `exe`. Threads started later inherit
/// the name.
#[cfg(target_env = "gnu")]
fn name_after_binary() {
    use std::os::unix::ffi::OsStrExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let Some(base) = exe.file_name() else {
        return;
    };
    // The kernel keeps 15 bytes and a NUL, and would cut a longer name the
    // same way at exec.
    let mut name = [0u8; 16];
    let bytes = base.as_bytes();
    let n = bytes.len().min(15);
    name[..n].copy_from_slice(&bytes[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
    // bytes from the pointer: `name` is 16 bytes and ends in a NUL.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// Other C libraries: nothing to tune.
#[cfg(not(target_env = "gnu"))]
pub fn without_tcache(_args: &[std::ffi::OsString]) {}

/// Fixes glibc's mmap threshold at its default (128 KiB). Left alone,
/// glibc raises it each time a large block is freed, after which every
/// large buffer of a long batch (relay buffers, transcripts, client
/// output) comes from the heaps of its many threads and is returned in
/// pieces: the supervisor's memory crept up with the number of URLs
/// (docs/batch.md). Not on other C libraries, which have no such knob.
pub fn fix_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a malloc parameter; any value is accepted
    // or refused with a return of 0.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Makes `cmd` start the client zygote (`intercept::zygote`): `keep` stays
/// open across the exec, then the steps every supervised child takes, the
/// open-files limit the user had, and every signal blocked (as a client
/// starts).
pub fn zygote_before_exec(cmd: &mut std::process::Command, keep: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and makes only raw,
    // async-signal-safe syscalls (fcntl, prctl, personality, setrlimit,
    // sigprocmask) on values copied before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(keep, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            child_common()?;
            child_restore_open_files()?;
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Takes ownership of a descriptor this process was started with, by
/// number (the zygote's control socket, named in its arguments). Fails
/// unless it is open and a socket.
pub fn adopt_inherited_socket(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fstat writes into a valid stat buffer; a closed fd fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::from_raw_os_error(libc::ENOTSOCK));
    }
    // SAFETY: open (checked above) and passed to us for us alone to own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// recvmsg(2) of one message into `buf`, with up to 3 descriptors
/// (close-on-exec). Returns the bytes received (0 at end of stream),
/// whether the message was cut short, and the descriptors.
pub fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, bool, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(errno)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(errno)? {
        if let ControlMessageOwned::ScmRights(got) = c {
            // SAFETY: SCM_RIGHTS just installed these descriptors in our
            // table; nothing else knows them.
            fds.extend(got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    let cut = msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.flags.contains(MsgFlags::MSG_CTRUNC);
    Ok((msg.bytes, cut, fds))
}

/// fork(2), for the zygote: callable only while this process has a single
/// thread, which the zygote never leaves. `None` in the child.
pub fn fork_single_threaded() -> io::Result<Option<i32>> {
    // SAFETY: the caller is single-threaded (the zygote starts no thread),
    // so the child may run any code: no lock is held by another thread.
    match unsafe { nix::unistd::fork() }.map_err(errno)? {
        nix::unistd::ForkResult::Child => Ok(None),
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child.as_raw())),
    }
}

/// In a child of the zygote: SIGKILL when the parent dies (fork cleared
/// the setting), and false if it has died already.
pub fn die_with_parent(parent: i32) -> bool {
    // SAFETY: prctl with integer arguments only.
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } == 0;
    set && nix::unistd::getppid().as_raw() == parent
}

/// dup2(2) of `fd` onto the standard descriptor `target` (1 or 2).
pub fn dup_onto_std(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 onto a standard descriptor, from one that is open
    // (borrowed); replacing 1 or 2 invalidates no OwnedFd of ours.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Installs `filter` with a listener in this (single-threaded) process.
pub fn install_filter_here(filter: &[libc::sock_filter]) -> io::Result<(OwnedFd, bool)> {
    let (fd, killable) = child_install_filter(filter)?;
    // SAFETY: seccomp() just created this descriptor for us.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, killable))
}

/// Closes every descriptor from 3 up: after it, the process holds what an
/// executed program holds. Only for a process that keeps no OwnedFd of its
/// own above 2 (the zygote's client, about to become the client).
pub fn close_from_3() {
    // SAFETY: close_range with integer arguments only; the caller uses none
    // of these descriptors again.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

/// Where this process's arguments lie in its memory (`arg_start`,
/// `arg_end` of /proc/self/stat): what /proc/PID/cmdline, `ps` and
/// `pgrep -f` read.
#[derive(Clone, Copy, Debug)]
pub struct ArgArea {
    start: usize,
    end: usize,
}

impl ArgArea {
    /// This process's, read once: its children share the addresses.
    pub fn own() -> io::Result<ArgArea> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        let bad = || io::Error::other("/proc/self/stat has no argument area");
        // The name (field 2) may hold spaces; fields after it do not.
        let rest = stat
            .rfind(')')
            .and_then(|i| stat.get(i + 2..))
            .ok_or_else(bad)?;
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        // Fields 48 and 49 (1-based), counted from field 3.
        let num = |i: usize| -> io::Result<usize> {
            fields
                .get(i - 3)
                .and_then(|f| f.parse().ok())
                .ok_or_else(bad)
        };
        let (start, end) = (num(48)?, num(49)?);
        if start == 0 || end <= start {
            return Err(bad());
        }
        Ok(ArgArea { start, end })
    }

    /// Rewrites the arguments as others see them: `args` joined by NULs,
    /// cut to the area's size, the rest NULs. Only its length at exec is
    /// ours to write.
    pub fn set(&self, args: &[&[u8]]) {
        let len = self.end - self.start;
        let mut b = Vec::with_capacity(len);
        for a in args {
            b.extend_from_slice(a);
            b.push(0);
        }
        b.truncate(len - 1);
        b.resize(len, 0);
        // SAFETY: [start, end) is this process's own argument area, as the
        // kernel reports it: writable memory at the top of the initial
        // stack, which stays mapped for the process's life. The bytes are
        // strings no Rust reference points into (std reads argv through raw
        // pointers, and only when asked; nothing here asks again).
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), self.start as *mut u8, len) };
    }
}

/// The CPUs the calling thread may run on (empty if that cannot be read).
pub fn allowed_cpus() -> Vec<u32> {
    cpus_of(nix::unistd::Pid::from_raw(0))
}

/// The CPUs the process's main thread may run on: the process's own,
/// whatever a placed thread was pinned to.
pub fn process_cpus() -> Vec<u32> {
    cpus_of(nix::unistd::getpid())
}

fn cpus_of(tid: nix::unistd::Pid) -> Vec<u32> {
    use nix::sched::{sched_getaffinity, CpuSet};
    let Ok(set) = sched_getaffinity(tid) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .map(|c| c as u32)
        .collect()
}

/// Restricts the calling thread to `cpus` (nothing if empty, or if the
/// kernel refuses: the scheduler then places it).
pub fn run_on_cpus(cpus: &[u32]) {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    for &c in cpus {
        if set.set(c as usize).is_err() {
            return;
        }
    }
    if !cpus.is_empty() {
        let _ = sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}
