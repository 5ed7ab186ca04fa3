//! The cost of one interception: a program making N `getrandom(16)` and N
//! `clock_gettime` calls (tests/c/syscall_loop.c), bare and under
//! `tlsign-seccomp run`, each also with N = 0 so process start-up cancels
//! out. Variants interleave, round by round.
//!
//! ```text
//! cargo bench --bench notify               # N = 20000, 15 rounds
//! cargo bench --bench notify -- --quick    # N = 2000, 3 rounds: a smoke test
//! ```
//!
//! per call = ((run N - run 0) - (bare N - bare 0)) / 2N, from medians.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Instant;

fn wall_ms(cmd: &mut Command) -> f64 {
    let start = Instant::now();
    let out = cmd.output().expect("run the benchmark program");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed().as_secs_f64() * 1000.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, rounds) = if quick {
        (2_000u64, 3)
    } else {
        (20_000u64, 15)
    };
    let dir = common::tempdir();
    let prog = common::cc_build(
        dir.path(),
        "syscall_loop",
        include_str!("../tests/c/syscall_loop.c"),
    );
    let bin = common::bin();
    let bare = |k: u64| {
        let mut c = Command::new(&prog);
        c.arg(k.to_string());
        c
    };
    let supervised = |k: u64| {
        let mut c = Command::new(&bin);
        c.arg("run").arg("--").arg(&prog).arg(k.to_string());
        c
    };
    let mut t = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds {
        t[0].push(wall_ms(&mut bare(0)));
        t[1].push(wall_ms(&mut bare(n)));
        t[2].push(wall_ms(&mut supervised(0)));
        t[3].push(wall_ms(&mut supervised(n)));
    }
    let [b0, bn, s0, sn] = t.map(|mut v| median(&mut v));
    let calls = 2.0 * n as f64;
    let bare_us = (bn - b0) * 1000.0 / calls;
    let supervised_us = (sn - s0) * 1000.0 / calls;
    println!("{rounds} rounds, N = {n} getrandom(16) + N clock_gettime, medians\n");
    println!("| variant | N = 0 ms | N ms | µs per call |");
    println!("|---|---|---|---|");
    println!("| bare | {b0:.1} | {bn:.1} | {bare_us:.2} |");
    println!("| under `run` (seccomp) | {s0:.1} | {sn:.1} | {supervised_us:.2} |");
    println!(
        "\ncost of one interception: {:.1} µs",
        supervised_us - bare_us
    );
}
