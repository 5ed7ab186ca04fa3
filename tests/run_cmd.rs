//! `tlsign-seccomp run`: any command in the deterministic world.
//!
//! tests/c/world_probe.c prints getrandom, /dev/urandom and the three vDSO
//! clocks (clock_gettime, gettimeofday, time), then forks a child that does
//! the same.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

fn probe(dir: &Path) -> PathBuf {
    cc_build(dir, "world_probe", WORLD_PROBE_C)
}

/// `run --seed SEED --time TIME -- PROG`, asserting exit 0.
fn run_probe(prog: &Path, seed: &str, time: &str) -> Output {
    let r = Cmd::tlsign()
        .args(["run", "--seed", seed, "--time", time, "--"])
        .arg(prog)
        .run();
    r.assert_code(0);
    r
}

const RANDOM_KEYS: [&str; 4] = ["getrandom", "urandom", "child-getrandom", "child-urandom"];
const TIME_KEYS: [&str; 6] = [
    "realtime",
    "gettimeofday",
    "time",
    "child-realtime",
    "child-gettimeofday",
    "child-time",
];

#[track_caller]
fn assert_times_near(p: &BTreeMap<String, String>, secs: i64) {
    for key in TIME_KEYS {
        let got = probe_secs(&p[key]);
        assert!(
            (got - secs).abs() <= 5,
            "{key} = {} but the world's clock started at {secs}",
            p[key]
        );
    }
}

#[test]
fn same_seed_and_time_give_the_same_world() {
    let dir = tempdir();
    let prog = probe(dir.path());
    let a = run_probe(&prog, SEED_A, TIME_2024);
    let b = run_probe(&prog, SEED_A, TIME_2024);
    assert_eq!(
        a.stdout_str(),
        b.stdout_str(),
        "two runs with the same seed and time saw different worlds"
    );

    let p = parse_probe(&a.stdout);
    assert_times_near(&p, TIME_2024_SECS);
    // The child has a stream of its own: not a copy of its parent's.
    assert_ne!(p["getrandom"], p["child-getrandom"]);
    assert_ne!(p["urandom"], p["child-urandom"]);
    // And nothing is all zeros (a filled buffer, not an untouched one).
    for key in RANDOM_KEYS {
        assert_ne!(p[key], "0".repeat(32), "{key}");
    }
}

#[test]
fn another_seed_gives_other_random_bytes() {
    let dir = tempdir();
    let prog = probe(dir.path());
    let a = parse_probe(&run_probe(&prog, SEED_A, TIME_2024).stdout);
    let b = parse_probe(&run_probe(&prog, SEED_B, TIME_2024).stdout);
    for key in RANDOM_KEYS {
        assert_ne!(a[key], b[key], "{key} did not change with the seed");
    }
    assert_times_near(&b, TIME_2024_SECS);
}

#[test]
fn another_time_moves_every_clock() {
    let dir = tempdir();
    let prog = probe(dir.path());
    let p = parse_probe(&run_probe(&prog, SEED_A, TIME_2020).stdout);
    assert_times_near(&p, TIME_2020_SECS);
}

#[test]
fn exec_in_children_is_deterministic_too() {
    // The probe started twice by a shell: every exec'd image needs its
    // clocks patched and its own random stream.
    let dir = tempdir();
    let prog = probe(dir.path());
    let script = format!("{0}; {0}", prog.display());
    let go = || {
        let r = Cmd::tlsign()
            .args([
                "run", "--seed", SEED_A, "--time", TIME_2024, "--", "sh", "-c", &script,
            ])
            .run();
        r.assert_code(0);
        r.stdout_str()
    };
    let (a, b) = (go(), go());
    assert_eq!(a, b, "two runs of `sh -c 'probe; probe'` differ");
    let text = a.lines().collect::<Vec<_>>();
    assert_eq!(text.len(), 20, "two probes, ten lines each:\n{a}");
    let (first, second) = (
        parse_probe(text[..10].join("\n").as_bytes()),
        parse_probe(text[10..].join("\n").as_bytes()),
    );
    assert_ne!(
        first["getrandom"], second["getrandom"],
        "two processes drew the same random bytes"
    );
    assert_times_near(&first, TIME_2024_SECS);
    assert_times_near(&second, TIME_2024_SECS);
}

#[test]
fn exit_status_is_the_commands() {
    let r = Cmd::tlsign().args(["run", "--", "false"]).run();
    r.assert_code(1);
    let r = Cmd::tlsign()
        .args(["run", "--", "sh", "-c", "exit 7"])
        .run();
    r.assert_code(7);
    let r = Cmd::tlsign()
        .args(["run", "--seed", SEED_A, "--", "true"])
        .run();
    r.assert_code(0);
}

#[test]
fn env_is_passed() {
    let r = Cmd::tlsign()
        .args([
            "run",
            "--env",
            "TLSIGN_TEST_VAR=hello world",
            "--",
            "sh",
            "-c",
            "echo \"$TLSIGN_TEST_VAR\"",
        ])
        .run();
    r.assert_code(0);
    assert_eq!(r.stdout_str(), "hello world\n");
}

/// Threads busy in answered syscalls while the process exits under them:
/// notifications die mid-flight, and the supervisor must drop them and pass
/// on the program's own status, every time.
#[test]
fn abrupt_exit_with_notifications_in_flight() {
    let dir = tempdir();
    let churn = cc_build(dir.path(), "thread_churn", include_str!("c/thread_churn.c"));
    for i in 0..15 {
        let r = Cmd::tlsign().args(["run", "--"]).arg(&churn).run();
        assert_eq!(r.code, Some(3), "run {i}: {}", r.describe());
        assert!(r.stderr.is_empty(), "run {i}: {}", r.describe());
    }
}
