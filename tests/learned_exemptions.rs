//! Calls learned to be useless are let through by later filters
//! (src/intercept/learned.rs) without letting through what the world
//! answers. Its own test binary: what is learned lives for the whole
//! process.

use std::ffi::OsString;

use tlsign_seccomp::run::{run, RunOptions, DEFAULT_SEED, DEFAULT_TIME};
use tlsign_seccomp::Backend;

/// Runs dynamically linked programs one after the other (processes racing
/// to start would draw from the world in either order): `head` copies
/// bytes of /dev/urandom, which the world serves, and `date` prints the
/// clock, which it fakes. Returns what they wrote and the notifications by
/// syscall name.
fn run_once(out: &std::path::Path) -> (Vec<u8>, Vec<(String, u64)>) {
    let script = format!(
        "head -c 32 /dev/urandom > '{0}'; date -u +%s >> '{0}'",
        out.display()
    );
    let outcome = run(RunOptions {
        seed: DEFAULT_SEED,
        time: DEFAULT_TIME,
        env: Vec::new(),
        command: vec![OsString::from("sh"), "-c".into(), script.into()],
        backend: Backend::Seccomp,
    })
    .expect("run under seccomp");
    assert_eq!(outcome.code, 0, "the script failed");
    (std::fs::read(out).unwrap(), outcome.stats.by_syscall())
}

fn count(stops: &[(String, u64)], name: &str) -> u64 {
    stops
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn later_programs_skip_the_useless_stops_but_not_the_worlds() {
    let dir = tempfile::tempdir().unwrap();
    let (out1, first) = run_once(&dir.path().join("a"));
    let (out2, second) = run_once(&dir.path().join("b"));
    let (open1, open2) = (count(&first, "openat"), count(&second, "openat"));
    let (brk1, brk2) = (count(&first, "brk"), count(&second, "brk"));
    // Three images (sh, head, date), each opening at least ld.so.cache and
    // libc.so.6 through the loader, plus head's /dev/urandom through libc.
    assert!(open1 >= 7, "first run: {first:?}");
    assert!(
        open2 + 6 <= open1,
        "the loader's opens were not learned: {first:?} then {second:?}"
    );
    assert!(open2 >= 1, "head's open of /dev/urandom was let through");
    // Each image's loader calls brk(NULL), and its malloc again.
    assert!(brk1 >= 6, "first run: {first:?}");
    assert_eq!(brk2, 3, "one brk(NULL) per image: {second:?}");
    // The world still served /dev/urandom (the same seed gave the same
    // bytes; the host's device would not have) and still ran date's clock
    // (its vDSO was patched at the first brk).
    assert_eq!(out1, out2, "the two runs saw different worlds");
    assert_eq!(out1.len(), 32 + "946684800\n".len());
    assert!(
        out1.ends_with(b"946684800\n"),
        "date printed {:?}",
        &out1[32..]
    );
}
