//! Starting a program under the filter.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::zygote;
use crate::sys;

/// The environment every supervised program starts with, whatever the
/// caller's: variables change behaviour (locale, time zone, proxies), and
/// two machines never agree on them.
pub const MINIMAL_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("HOME", "/"),
    ("LANG", "C"),
    ("LC_ALL", "C"),
    ("TZ", "UTC"),
    // RDRAND/RDSEED are instructions no filter sees: tell OpenSSL (bit 62
    // of the first word, bit 18 of the third) and systemd not to use them.
    ("OPENSSL_ia32cap", "~0x4000000000000000:0:~0x40000"),
    ("SYSTEMD_RDRAND", "0"),
];

/// The seccomp listener of one supervised program.
pub struct Listener {
    pub fd: OwnedFd,
    /// Signals wait for answers (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV).
    pub killable: bool,
    /// Synchronous wake-ups are on (Linux 6.6+).
    pub sync_wakeup: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("cannot set up the seccomp listener: {0}")]
    Listener(io::Error),
    /// The program was killed by SIGINT or SIGTERM while it started: a
    /// Ctrl-C to the process group, not a fault.
    #[error("interrupted")]
    Interrupted,
    /// The supervisor could not prepare (filter, vDSO patch, thread).
    #[error("{0}")]
    Setup(String),
    #[error("the kernel refused the seccomp user-notification filter ({0}); tlsign-seccomp needs Linux 5.9 or newer with seccomp enabled, and no outer filter that blocks seccomp()")]
    FilterRefused(io::Error),
}

/// A program to start under a backend. Unlike std's `Command`, every part
/// can be read back, so the seccomp backend can start it its own way.
pub struct Program {
    pub path: OsString,
    pub args: Vec<OsString>,
    /// The whole environment: nothing is inherited.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
    /// stdin from /dev/null and stdout/stderr captured by the supervisor
    /// (memfds under seccomp, pipes under ptrace); otherwise all three are
    /// inherited.
    pub capture: bool,
    /// The program unblocks every signal first thing, as the built-in
    /// client does (`client::child_main`). Under seccomp it then starts
    /// with all of them blocked, as they are between clone and exec, and
    /// the child need not reset each of the supervisor's handlers before
    /// its exec (some 65 syscalls per start): no handler can run while
    /// everything is blocked, and exec resets handlers anyway. Other
    /// programs start as under posix_spawn.
    pub unblocks_signals: bool,
    /// The built-in client (`client::CHILD_ARG` as its first argument):
    /// the seccomp backend may fork it from the zygote instead of
    /// executing it (`zygote.rs`).
    pub forkable: bool,
}

impl Program {
    /// The same as a `Command` (for the ptrace backends, which fork).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        if self.capture {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        cmd
    }

    /// The file to exec: `path` itself if it has a slash, else the first
    /// executable match in the program's own PATH, as execvp would find.
    fn resolve(&self) -> io::Result<PathBuf> {
        let p = Path::new(&self.path);
        if self.path.as_bytes().contains(&b'/') {
            return Ok(p.to_path_buf());
        }
        let path_var = self
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "/usr/bin:/bin".into());
        for dir in std::env::split_paths(&path_var) {
            let cand = dir.join(p);
            if let Ok(m) = std::fs::metadata(&cand) {
                if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                    return Ok(cand);
                }
            }
        }
        Err(io::Error::from_raw_os_error(libc::ENOENT))
    }
}

/// A started program: its pid and, if captured, its output: memfds to read
/// once it has ended.
pub struct Spawned {
    pub pid: i32,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

/// How a started program's first process is reaped.
pub enum Reap {
    /// It is our child: wait4.
    Wait,
    /// It is the zygote's child: the zygote reports its end.
    Zygote(zygote::ExitReport),
}

impl Reap {
    /// Waits for the end of `pid`, on this thread.
    pub fn wait_blocking(self, pid: i32) -> io::Result<sys::Waited> {
        match self {
            Reap::Wait => sys::wait4(pid, 0),
            Reap::Zygote(r) => r.wait_blocking(pid),
        }
    }

    /// Waits for the end of `pid`, from a task. Our own child is reaped by
    /// a blocking wait4: by the time a supervisor reaps, every process
    /// under its filter is gone, so the wait is short.
    pub async fn wait(self, pid: i32) -> io::Result<sys::Waited> {
        match self {
            Reap::Wait => sys::wait4(pid, 0),
            Reap::Zygote(r) => r.wait(pid).await,
        }
    }
}

/// /dev/null, opened once (close-on-exec) for every client's stdin.
fn dev_null() -> io::Result<BorrowedFd<'static>> {
    static NULL: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    if NULL.get().is_none() {
        let _ = NULL.set(File::open("/dev/null")?);
    }
    Ok(NULL.get().expect("just set").as_fd())
}

/// Starts `program` with ASLR off, no_new_privs, and `filter` installed with
/// a listener, which is returned with how its first process is reaped.
pub fn spawn(
    program: &Program,
    filter: Vec<libc::sock_filter>,
) -> Result<(Spawned, Listener, Reap), SpawnError> {
    let name = program.path.to_string_lossy().into_owned();
    let spawn_err = |source: io::Error| SpawnError::Spawn {
        program: name.clone(),
        source,
    };
    let cstr = |s: &OsStr| {
        CString::new(s.as_bytes())
            .map_err(|_| spawn_err(io::Error::from_raw_os_error(libc::EINVAL)))
    };
    let path = program.resolve().map_err(spawn_err)?;
    let mut args = vec![cstr(&program.path)?];
    for a in &program.args {
        args.push(cstr(a)?);
    }
    let mut env = Vec::with_capacity(program.env.len());
    for (k, v) in &program.env {
        let mut kv = k.clone();
        kv.push("=");
        kv.push(v);
        env.push(cstr(&kv)?);
    }
    let cwd = program
        .cwd
        .as_deref()
        .map(|d| cstr(d.as_os_str()))
        .transpose()?;
    // The client's output goes to memfds, read once it has ended: unlike
    // pipes, nothing has to be woken to drain them while it runs. Ours are
    // close-on-exec; the child gets dup2'd copies.
    let pipes = if program.capture {
        let memfd = || {
            nix::sys::memfd::memfd_create(
                c"tlsign-output",
                nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
            )
            .map_err(|e| spawn_err(e.into()))
        };
        let (out_r, err_r) = (memfd()?, memfd()?);
        let (out_w, err_w) = (
            out_r.try_clone().map_err(spawn_err)?,
            err_r.try_clone().map_err(spawn_err)?,
        );
        Some((dev_null().map_err(spawn_err)?, out_r, out_w, err_r, err_w))
    } else {
        None
    };
    let stdio = pipes
        .as_ref()
        .map(|(null, _, out_w, _, err_w)| [null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()]);
    let forked = match &pipes {
        Some((_, _, out_w, _, err_w)) if program.forkable && zygote::enabled() => {
            zygote::spawn(program, &filter, out_w.as_fd(), err_w.as_fd()).transpose()
        }
        _ => None,
    };
    let started = match forked {
        Some(r) => r.map(|(child, report)| (child, Reap::Zygote(report))),
        None => {
            let mut plan = sys::ExecPlan::new(cstr(path.as_os_str())?, args, env, cwd, stdio);
            plan.keep_signals_blocked = program.unblocks_signals;
            sys::spawn_filtered(&plan, &filter).map(|child| (child, Reap::Wait))
        }
    };
    let (child, reap) = match started {
        Ok(child) => child,
        // Out of descriptors is this process's limit, not the kernel's
        // seccomp support.
        Err(sys::SpawnFailure::FilterRefused(e))
            if !matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) =>
        {
            return Err(SpawnError::FilterRefused(e));
        }
        Err(sys::SpawnFailure::FilterRefused(e) | sys::SpawnFailure::Failed(e)) => {
            return Err(spawn_err(e));
        }
        // A Ctrl-C to the process group, not a fault.
        Err(sys::SpawnFailure::Killed(libc::SIGINT | libc::SIGTERM)) => {
            return Err(SpawnError::Interrupted);
        }
        Err(sys::SpawnFailure::Killed(sig)) => {
            return Err(SpawnError::Listener(io::Error::other(format!(
                "the child died of signal {sig} before its filter was installed"
            ))));
        }
    };
    let (stdout, stderr) = match pipes {
        Some((_, out_r, _, err_r, _)) => (Some(File::from(out_r)), Some(File::from(err_r))),
        None => (None, None),
    };
    let (fd, killable, pid) = (child.listener, child.killable, child.pid);
    let sync_wakeup = sys::notif_set_sync_wakeup(fd.as_fd()).is_ok();
    Ok((
        Spawned {
            pid,
            stdout,
            stderr,
        },
        Listener {
            fd,
            killable,
            sync_wakeup,
        },
        reap,
    ))
}
