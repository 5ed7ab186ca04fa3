//! A small command runner with a hard timeout.
//!
//! The child runs in its own process group with stdin closed; on timeout the
//! whole group gets SIGKILL, so a hung supervisor and its supervised client
//! both die and the test fails with what they printed so far.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any command may run unless the test says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Cmd {
    cmd: Command,
    timeout: Duration,
    /// Send this signal to the whole process group after this long, as a
    /// terminal's Ctrl-C does (SIGINT to the foreground group).
    signal_after: Option<(Duration, i32)>,
}

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    /// The exit code; `None` when a signal killed it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        Cmd {
            cmd,
            timeout: DEFAULT_TIMEOUT,
            signal_after: None,
        }
    }

    /// The binary under test.
    pub fn tlsign() -> Cmd {
        Cmd::new(super::bin())
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env(k, v);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.cmd.current_dir(dir);
        self
    }

    /// Send `signal` to the command's process group after `delay`.
    pub fn signal_after(mut self, delay: Duration, signal: i32) -> Cmd {
        self.signal_after = Some((delay, signal));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }

    /// Wrap the command: `prefix... original-program original-args...`
    /// (for `unshare -n`, `setpriv ...`).
    pub fn wrapped<I, S>(self, prefix: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut prefix = prefix.into_iter();
        let first = prefix.next().expect("wrapped() needs a program");
        let mut outer = Cmd::new(first)
            .args(prefix)
            .arg(self.cmd.get_program())
            .args(self.cmd.get_args());
        for (k, v) in self.cmd.get_envs() {
            match v {
                Some(v) => outer.cmd.env(k, v),
                None => outer.cmd.env_remove(k),
            };
        }
        if let Some(d) = self.cmd.get_current_dir() {
            outer.cmd.current_dir(d);
        }
        outer.timeout = self.timeout;
        outer.signal_after = self.signal_after;
        outer
    }

    fn cmdline(&self) -> String {
        let mut s = self.cmd.get_program().to_string_lossy().into_owned();
        for a in self.cmd.get_args() {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Run to completion; panic if it cannot start or outlives its timeout.
    #[track_caller]
    pub fn run(self) -> Output {
        match self.try_run() {
            Ok(out) => out,
            Err(msg) => panic!("{msg}"),
        }
    }

    /// Run to completion; `Err` (with everything printed so far) if it
    /// outlived its timeout and was killed.
    pub fn try_run(mut self) -> Result<Output, String> {
        let cmdline = self.cmdline();
        let start = Instant::now();
        let mut child = self
            .cmd
            .spawn()
            .map_err(|e| format!("cannot start `{cmdline}`: {e}"))?;
        let pgid = child.id() as i32;

        // Read both pipes on threads so a chatty child never blocks on a full
        // pipe while we wait for it.
        let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
        for (is_out, mut pipe) in [
            (
                true,
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            ),
            (
                false,
                Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            ),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                let _ = tx.send((is_out, buf));
            });
        }
        drop(tx);

        // Wait for the exit without reaping it (WNOWAIT): while the child is
        // an unreaped zombie its pid, which is also the group id, cannot be
        // reused, so killing the group below can never hit a stranger.
        let deadline = start + self.timeout;
        let mut timed_out = false;
        loop {
            if exited_unreaped(pgid).map_err(|e| format!("waiting for `{cmdline}`: {e}"))? {
                break;
            }
            if let Some((delay, signal)) = self.signal_after {
                if start.elapsed() >= delay {
                    kill_group(pgid, signal);
                    self.signal_after = None;
                }
            }
            if !timed_out && Instant::now() >= deadline {
                timed_out = true;
                kill_group(pgid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let elapsed = start.elapsed();

        // Whatever the child left behind still holding the pipes (a stray
        // grandchild) gets a short grace period, then the group is killed;
        // one that left the group too is given up on after a second one.
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut grace = Instant::now() + Duration::from_secs(5);
        let mut killed = false;
        let mut pending = 2;
        while pending > 0 {
            match rx.recv_timeout(grace.saturating_duration_since(Instant::now())) {
                Ok((true, b)) => (stdout, pending) = (b, pending - 1),
                Ok((false, b)) => (stderr, pending) = (b, pending - 1),
                Err(mpsc::RecvTimeoutError::Timeout) if !killed => {
                    kill_group(pgid, libc::SIGKILL);
                    killed = true;
                    grace = Instant::now() + Duration::from_secs(5);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    eprintln!("warning: something outside its process group holds the pipes of `{cmdline}`");
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        // Leave nothing of this command running, whatever happened; then reap.
        kill_group(pgid, libc::SIGKILL);
        let status = child
            .wait()
            .map_err(|e| format!("reaping `{cmdline}`: {e}"))?;

        let out = Output {
            cmdline,
            code: status.code(),
            signal: status.signal(),
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            elapsed,
        };
        if timed_out {
            return Err(format!(
                "timed out after {:?} and killed: {}",
                self.timeout,
                out.describe()
            ));
        }
        Ok(out)
    }
}

/// Whether `pid` (our child) has exited, leaving it unreaped.
pub(super) fn exited_unreaped(pid: i32) -> std::io::Result<bool> {
    // SAFETY: siginfo_t is plain data for which all-zero bytes are valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t; P_PID with our own
    // child's pid; WNOWAIT leaves the child waitable for Child::wait.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    // SAFETY: waitid filled `info` (or left it zeroed when nothing changed:
    // si_pid 0 then means "still running").
    Ok(unsafe { info.si_pid() } != 0)
}

pub(super) fn kill_group(pgid: i32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions; a negative pid names
    // the process group the child leads (it was spawned with
    // process_group(0), so its pgid is its pid). ESRCH (already gone) is
    // fine.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// A description for assertion messages.
    pub fn describe(&self) -> String {
        let stdout = self.stdout_str();
        let stdout = if stdout.len() > 2000 {
            format!("{}... ({} bytes)", &stdout[..2000], stdout.len())
        } else {
            stdout
        };
        format!(
            "`{}`\n  exit code: {:?}, signal: {:?}, took {:?}\n  --- stderr ---\n{}\n  --- stdout ---\n{}",
            self.cmdline, self.code, self.signal, self.elapsed, self.stderr, stdout
        )
    }

    #[track_caller]
    pub fn assert_code(&self, want: i32) -> &Output {
        assert_eq!(
            self.code,
            Some(want),
            "wrong exit status from {}",
            self.describe()
        );
        self.assert_no_panic();
        self
    }

    /// No panic message and no backtrace hint, whatever the exit code.
    #[track_caller]
    pub fn assert_no_panic(&self) -> &Output {
        for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
            assert!(
                !self.stderr.contains(bad),
                "stderr contains {bad:?}: {}",
                self.describe()
            );
        }
        self
    }

    /// Exactly one non-empty line on stderr (a summary or a reason).
    #[track_caller]
    pub fn assert_one_line(&self) -> &str {
        let lines = self.stderr_lines();
        assert_eq!(
            lines.len(),
            1,
            "want exactly one stderr line: {}",
            self.describe()
        );
        lines[0]
    }

    /// The spec's error shape: exactly one stderr line, starting "error: ",
    /// and no panic or backtrace. Returns the line.
    #[track_caller]
    pub fn assert_one_error_line(&self) -> &str {
        self.assert_no_panic();
        let line = self.assert_one_line();
        assert!(
            line.starts_with("error: "),
            "the error line must start with \"error: \": {}",
            self.describe()
        );
        line
    }

    /// Assert stderr mentions `needle` (case-insensitive).
    #[track_caller]
    pub fn assert_stderr_mentions(&self, needle: &str) -> &Output {
        assert!(
            self.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "stderr should mention {needle:?}: {}",
            self.describe()
        );
        self
    }
}
