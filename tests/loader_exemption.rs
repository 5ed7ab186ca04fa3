//! The loader's opens are learned from the first supervised program and
//! let through by later filters (src/intercept/loader.rs), without letting
//! through the opens the world answers. Its own test binary: what is
//! learned lives for the whole process.

use std::ffi::OsString;

use tlsign_seccomp::run::{run, RunOptions, DEFAULT_SEED, DEFAULT_TIME};
use tlsign_seccomp::Backend;

/// Runs two dynamically linked programs (a shell and `head`, one after
/// the other: processes racing to start would draw from the world in
/// either order) that copy bytes of /dev/urandom, which the world serves,
/// to `out`; returns the openat notifications they took.
fn run_once(out: &std::path::Path) -> u64 {
    let script = format!("head -c 32 /dev/urandom > '{}'", out.display());
    let outcome = run(RunOptions {
        seed: DEFAULT_SEED,
        time: DEFAULT_TIME,
        env: Vec::new(),
        command: vec![OsString::from("sh"), "-c".into(), script.into()],
        backend: Backend::Seccomp,
    })
    .expect("run under seccomp");
    assert_eq!(outcome.code, 0, "the pipeline failed");
    outcome
        .stats
        .by_syscall()
        .into_iter()
        .filter(|(name, _)| name == "openat")
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn later_programs_skip_the_loaders_opens_but_not_the_worlds() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let first = run_once(&a);
    let second = run_once(&b);
    // Two programs, each opening at least ld.so.cache and libc.so.6
    // through the loader, plus head's /dev/urandom through libc.
    assert!(first >= 5, "first run: {first} openat notifications");
    assert!(
        second + 4 <= first,
        "the loader's opens were not learned: {first} then {second} openat notifications"
    );
    assert!(second >= 1, "head's open of /dev/urandom was let through");
    // The world still served /dev/urandom: the same seed gave the same
    // bytes; the host's device would not have.
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(a.len(), 32, "head wrote {a:?}");
    assert_eq!(a, b, "the two runs read different random bytes");
}
