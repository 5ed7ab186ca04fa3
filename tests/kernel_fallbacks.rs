//! Older kernels and hostile conditions, simulated on this one with
//! strace's fault injection: `seccomp()` made to fail with EINVAL, as a
//! kernel without a flag answers; other calls refused; signals delivered
//! as the supervisor enters its ioctls.
//!
//! The supervisor's first `seccomp()` in the child asks for the killable
//! wait (Linux 5.19); a kernel without it answers EINVAL, and the supervisor
//! must fall back to a plain listener. strace counts calls per process, and
//! the supervisor's own first `seccomp()` call (libseccomp probing with
//! SECCOMP_SET_MODE_STRICT) gets EINVAL anyway, so `when=1` hits only the
//! child's first call where it matters.

mod common;

use std::path::Path;

use common::*;

/// `strace` making `syscall` fail with `errno` on the calls `when` selects
/// (strace's syntax: "1", "1..2", omitted for every call).
fn strace_failing(syscall: &str, errno: &str, when: Option<&str>) -> Vec<String> {
    let mut inject = format!("inject={syscall}:error={errno}");
    if let Some(w) = when {
        inject.push_str(&format!(":when={w}"));
    }
    ["strace", "-f", "-qq", "-o", "/dev/null", "-e"]
        .into_iter()
        .map(String::from)
        .chain([format!("trace={syscall}"), "-e".into(), inject])
        .collect()
}

/// `seccomp()` failing with EINVAL on the calls `when` selects.
fn strace_injecting(when: &str) -> Vec<String> {
    strace_failing("seccomp", "EINVAL", Some(when))
}

/// Signs `/` of `nginx` into `file` and verifies it, both run under
/// `wrapper`: each must succeed, and the verified body be the page.
fn sign_and_verify_wrapped(nginx: &Nginx, pki: &Pki, file: &Path, wrapper: Vec<String>) {
    sign(nginx, pki, "/", file)
        .wrapped(wrapper.clone())
        .run()
        .assert_code(0);
    let body = verify(file, pki)
        .args(["--body", "-"])
        .wrapped(wrapper)
        .run();
    body.assert_code(0);
    assert_bytes_eq("verified body", &body.stdout, &nginx.site().index);
}

/// Without the killable wait, sign and verify still work, and `run` stays
/// deterministic.
#[test]
fn no_killable_wait_falls_back() {
    if strace_missing("no_killable_wait_falls_back") {
        return;
    }
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("old-kernel.tlsign");
    sign_and_verify_wrapped(&nginx, &pki, &file, strace_injecting("1"));
    // A transcript signed without the flag verifies with it, too.
    assert_bytes_eq(
        "verified body",
        &verify_ok(&file, &pki),
        &nginx.site().index,
    );

    let probe = cc_build(dir.path(), "probe", include_str!("c/world_probe.c"));
    let runs: Vec<Vec<u8>> = (0..2)
        .map(|_| {
            let r = Cmd::tlsign()
                .args(["run", "--seed", "7", "--"])
                .arg(&probe)
                .wrapped(strace_injecting("1"))
                .run();
            r.assert_code(0);
            r.stdout.clone()
        })
        .collect();
    assert_eq!(
        runs[0], runs[1],
        "run must stay deterministic without the killable wait"
    );
}

/// `strace` delivering SIGCHLD (ignored by default: only its interruption
/// counts) on entry to each of a thread's first 200 ioctls, so the
/// supervisor's waits inside `SECCOMP_IOCTL_NOTIF_ADDFD` are interrupted.
/// Why a bound: an interrupted ADDFD is restarted, and interrupted again on
/// entry, until the target happens to install the fd first; with every
/// ioctl interrupted that loop ran for 2 to 30 seconds.
fn strace_interrupting_ioctls() -> Vec<String> {
    let inject = "inject=ioctl:signal=SIGCHLD:when=1..200";
    [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=ioctl",
        "-e",
        inject,
    ]
    .map(String::from)
    .to_vec()
}

/// Pins a bug CI found: with `SECCOMP_ADDFD_FLAG_SEND`, a signal that
/// interrupted the supervisor inside ADDFD (a SIGCHLD under `strace -f`)
/// left the client's `openat` answered with 0, no fd installed, and its
/// resolv.conf read from stdin: "cannot resolve". Every served file and
/// redirected socket must survive such interruptions, in sign, verify and
/// run (whose /dev/urandom is a served fd).
#[test]
fn signals_interrupting_the_supervisor_change_nothing() {
    if strace_missing("signals_interrupting_the_supervisor_change_nothing") {
        return;
    }
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("interrupted.tlsign");
    sign_and_verify_wrapped(&nginx, &pki, &file, strace_interrupting_ioctls());

    let probe = cc_build(dir.path(), "probe", include_str!("c/world_probe.c"));
    let run = |interrupted: bool| {
        let mut c = Cmd::tlsign().args(["run", "--seed", "7", "--"]).arg(&probe);
        if interrupted {
            c = c.wrapped(strace_interrupting_ioctls());
        }
        let r = c.run();
        r.assert_code(0);
        r.stdout
    };
    assert_bytes_eq("the world seen under signals", &run(true), &run(false));
}

/// A kernel that refuses the filter altogether: exit 4 and one line that
/// says what the kernel refused.
#[test]
fn refused_filter_exits_4_with_a_reason() {
    if strace_missing("refused_filter_exits_4_with_a_reason") {
        return;
    }
    let r = Cmd::tlsign()
        .args(["run", "--", "true"])
        .wrapped(strace_injecting("1..2"))
        .run();
    r.assert_code(4);
    r.assert_one_error_line();
    r.assert_stderr_mentions("kernel refused the seccomp user-notification filter");
}

/// If the supervisor cannot examine a socket being connected (here
/// pidfd_getfd fails, as under an LSM that forbids it), it must not let the
/// connect through to the network: the run ends with exit 4 and the reason.
#[test]
fn unexaminable_connect_fails_closed() {
    if strace_missing("unexaminable_connect_fails_closed") {
        return;
    }
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("t.tlsign");
    let r = sign(&nginx, &pki, "/", &file)
        .wrapped(strace_failing("pidfd_getfd", "EPERM", None))
        .run();
    r.assert_code(4);
    r.assert_one_error_line();
    r.assert_stderr_mentions("cannot examine the socket being connected");
    assert!(!file.exists(), "no transcript may be written");
    let log = nginx.error_log();
    assert!(
        !log.contains("SSL_do_handshake"),
        "nothing should have reached the server:\n{log}"
    );
}

/// A kernel that refuses the /proc/PID/mem write (other kernels than this
/// one may, without ptrace): without the vDSO patch the clock would be the
/// real one, so the run must stop with exit 4 and say why, not go on.
#[test]
fn refused_vdso_patch_exits_4() {
    if strace_missing("refused_vdso_patch_exits_4") {
        return;
    }
    // The patch is the supervisor's only pwrite64.
    let r = Cmd::tlsign()
        .args(["run", "--", "true"])
        .wrapped(strace_failing("pwrite64", "EPERM", None))
        .run();
    r.assert_code(4);
    r.assert_one_error_line();
    r.assert_stderr_mentions("cannot patch the vDSO");
}
