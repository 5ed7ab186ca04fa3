//! Helpers shared by the end-to-end tests.
//!
//! Each test makes its own temporary directory ([`tempdir`]) and builds what
//! it needs inside it: a test PKI made with the `openssl` CLI ([`Pki`]), real
//! HTTPS servers ([`Nginx`], [`SServer`]) serving a known [`Site`], and runs
//! the binary through [`Cmd`], which kills anything that outlives its
//! timeout so a hang fails the test instead of hanging CI.
//!
//! Every test binary compiles this module and uses a different part of it.
#![allow(dead_code, unused_imports)]

mod cmd;
mod nobody;
mod pki;
mod procs;
pub mod proxy;
mod servers;
mod site;
mod transcript_io;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cmd::{Cmd, Output};
pub use nobody::{can_drop_privileges, open_up, NOBODY};
pub use pki::{Cert, Pki};
pub use procs::{left_running, processes_where};
pub use servers::{free_port, HttpsServer, Nginx, SServer, SilentServer, TlsVersion};
pub use site::Site;
pub use transcript_io::{read_transcript, write_transcript};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tlsign-seccomp"))
}

/// A fresh private directory, removed when the returned value drops.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tlsign-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// Whether the tests run as root (some tests drop to `nobody` from there).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Say loudly why a test did nothing; the test then returns early and
/// passes, so the reason must be visible in `cargo test` output.
pub fn skip(test: &str, reason: &str) {
    // Straight to stderr: `eprintln!` is captured, and hidden, for tests
    // that pass.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

/// True, after saying the test skips, when strace is not installed (fault
/// injection and syscall traces need it; scripts/setup.sh installs it).
pub fn strace_missing(test: &str) -> bool {
    let have = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        skip(
            test,
            "strace is not installed (scripts/setup.sh installs it)",
        );
    }
    !have
}

/// Compile `c_source` with `cc` into `dir/name` and return the executable.
pub fn cc_build(dir: &Path, name: &str, c_source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    std::fs::write(&src, c_source).expect("write C source");
    Cmd::new("cc")
        .args(["-O1", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .timeout(Duration::from_secs(60))
        .run()
        .assert_code(0);
    exe
}

/// Lower-case hex, as `--seed` takes it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compare two byte strings without printing megabytes when they differ.
#[track_caller]
pub fn assert_bytes_eq(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let show = |b: &[u8]| {
        String::from_utf8_lossy(&b[first.min(b.len())..(first + 40).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: got {} bytes, want {} bytes; first difference at offset {first}: got {:?}, want {:?}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    );
}

/// `tlsign-seccomp sign URL -o OUT --resolve .. --ca-file CA` for `path` on
/// `server`; add options before `run()`.
pub fn sign(server: &impl HttpsServer, pki: &Pki, path: &str, out: &Path) -> Cmd {
    Cmd::tlsign()
        .arg("sign")
        .arg(server.url(path))
        .arg("-o")
        .arg(out)
        .arg("--resolve")
        .arg(server.resolve())
        .arg("--ca-file")
        .arg(&pki.ca)
}

/// The arguments of a `sign` into `out` against `server`, which accepts
/// and never answers, with the test CA: for [`Cmd`] and for tests that
/// must run the binary outside it.
pub fn silent_sign_args(server: &SilentServer, pki: &Pki, out: &Path) -> Vec<std::ffi::OsString> {
    let port = server.port();
    vec![
        "sign".into(),
        format!("https://tlsign.test:{port}/").into(),
        "-o".into(),
        out.into(),
        "--resolve".into(),
        format!("tlsign.test:{port}:127.0.0.1").into(),
        "--ca-file".into(),
        pki.ca.clone().into(),
    ]
}

/// `tlsign-seccomp verify FILE --ca-file CA`; add options before `run()`.
pub fn verify(file: &Path, pki: &Pki) -> Cmd {
    Cmd::tlsign()
        .arg("verify")
        .arg(file)
        .arg("--ca-file")
        .arg(&pki.ca)
}

/// Sign `path` on `server` into `out`, assert success and the one-line
/// summary, and return the decoded transcript.
#[track_caller]
pub fn sign_ok(
    server: &impl HttpsServer,
    pki: &Pki,
    path: &str,
    out: &Path,
) -> tlsign_seccomp::transcript::Transcript {
    let r = sign(server, pki, path, out).run();
    r.assert_code(0);
    r.assert_one_line();
    assert!(
        out.is_file(),
        "sign succeeded but wrote no {}",
        out.display()
    );
    read_transcript(out)
}

/// Verify `file` with `--body` into a file next to it, assert success, and
/// return the verified body.
#[track_caller]
pub fn verify_ok(file: &Path, pki: &Pki) -> Vec<u8> {
    let body = file.with_extension("body");
    verify(file, pki)
        .arg("--body")
        .arg(&body)
        .run()
        .assert_code(0);
    std::fs::read(&body).expect("verify exited 0 but wrote no --body file")
}

/// tests/c/world_probe.c: prints getrandom, /dev/urandom, the three clocks,
/// then the same from a forked child (keys prefixed "child-").
pub const WORLD_PROBE_C: &str = include_str!("../c/world_probe.c");

/// tests/c/deny_seccomp.c: `deny_seccomp PROG ARGS...` runs PROG where the
/// seccomp() syscall fails with ENOSYS (a kernel without seccomp).
pub const DENY_SECCOMP_C: &str = include_str!("../c/deny_seccomp.c");

/// Parse world_probe's "KEY VALUE" lines.
#[track_caller]
pub fn parse_probe(stdout: &[u8]) -> std::collections::BTreeMap<String, String> {
    let text = String::from_utf8_lossy(stdout);
    let map: std::collections::BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for key in ["getrandom", "urandom", "realtime", "gettimeofday", "time"] {
        for prefix in ["", "child-"] {
            assert!(
                map.contains_key(&format!("{prefix}{key}")),
                "world_probe printed no {prefix}{key}:\n{text}"
            );
        }
    }
    map
}

/// The seconds of a "SECS.FRACTION" or "SECS" probe value.
pub fn probe_secs(v: &str) -> i64 {
    v.split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("not a time: {v:?}"))
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `curl -sS --max-time 20 ARGS...` (curl is a test-only tool: the fixtures
/// self-test uses it to check the servers without the binary).
pub fn curl() -> Cmd {
    Cmd::new("curl").args(["--silent", "--show-error", "--max-time", "20"])
}

/// Everything the client sent on `conn`, in order.
pub fn client_bytes(conn: &tlsign_seccomp::transcript::Connection) -> Vec<u8> {
    conn.client_chunks().collect::<Vec<_>>().concat()
}

/// Everything the server sent on `conn`, in order.
pub fn server_bytes(conn: &tlsign_seccomp::transcript::Connection) -> Vec<u8> {
    conn.server_chunks().collect::<Vec<_>>().concat()
}

/// What the client sent before the server's first byte (its first flight:
/// the ClientHello). Fixed by the seed alone: the server's randomness only
/// shows after it.
pub fn first_client_flight(conn: &tlsign_seccomp::transcript::Connection) -> Vec<u8> {
    use tlsign_seccomp::transcript::Event;
    conn.events
        .iter()
        .take_while(|e| !matches!(e, Event::Server(_)))
        .filter_map(Event::client_data)
        .collect::<Vec<_>>()
        .concat()
}

/// One direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// `t` with one bit of the byte at `pos` of `side`'s stream on connection 0
/// flipped.
pub fn flip_stream(
    t: &tlsign_seccomp::transcript::Transcript,
    side: Side,
    pos: usize,
) -> tlsign_seccomp::transcript::Transcript {
    use tlsign_seccomp::transcript::Event;
    let mut t = t.clone();
    let mut at = 0;
    for e in &mut t.connections[0].events {
        let data = match (e, side) {
            (Event::Client(d), Side::Client) | (Event::Server(d), Side::Server) => d,
            _ => continue,
        };
        if pos < at + data.len() {
            data[pos - at] ^= 0x01;
            return t;
        }
        at += data.len();
    }
    panic!("offset {pos} is past the end of the {side:?} stream ({at} bytes)");
}

/// The value of response header `name` (case-insensitive).
pub fn header<'a>(r: &'a tlsign_seccomp::transcript::Response, name: &str) -> Option<&'a [u8]> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// A fixed `--seed` for tests that want reproducible runs.
pub const SEED_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub const SEED_B: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f";

/// 2024-03-01T00:00:00Z: inside [`Cert::Valid`]'s window.
pub const TIME_2024: &str = "2024-03-01T00:00:00Z";
pub const TIME_2024_SECS: i64 = 1_709_251_200;
/// 2020-06-01T00:00:00Z: inside [`Cert::PastWindow`]'s window.
pub const TIME_2020: &str = "2020-06-01T00:00:00Z";
pub const TIME_2020_SECS: i64 = 1_590_969_600;
