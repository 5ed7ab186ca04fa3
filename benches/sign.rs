//! End-to-end cost of signing and verifying, side by side in one run.
//!
//! Against a local nginx (the tests' fixtures and PKI), each round runs, in
//! this order, the bare built-in client (`tlsign-seccomp __client`, the same
//! client with no supervisor), `sign` and `verify` of the page, so drift on
//! a noisy machine hits all three alike. Reports wall time (median, p95),
//! CPU time of the process tree, and notifications per sign, then the
//! ratios that matter: what supervision adds to a fetch.
//!
//! ```text
//! cargo bench --bench sign                  # 40 rounds
//! cargo bench --bench sign -- --rounds 200
//! cargo bench --bench sign -- --quick       # 3 rounds: a smoke test
//! ```
//!
//! Results go to stdout as a Markdown table and to
//! `target/bench-results/sign.json`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{Cert, HttpsServer, Nginx, Pki};
use nix::sys::resource::{getrusage, UsageWho};

#[derive(Default)]
struct Samples {
    wall: Vec<f64>,
    cpu: Vec<f64>,
    notifications: Vec<f64>,
}

/// Runs one command to completion; (wall ms, CPU ms of it and its children,
/// its stderr).
fn timed(cmd: &mut Command) -> (f64, f64, String) {
    let cpu_before = children_cpu_ms();
    let start = Instant::now();
    let out = cmd.output().expect("run the binary");
    let wall = start.elapsed().as_secs_f64() * 1000.0;
    let cpu = children_cpu_ms() - cpu_before;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    (wall, cpu, stderr)
}

/// User + system time of every reaped descendant so far: the supervisor's
/// own children (the client) are counted once the supervisor reaps them.
fn children_cpu_ms() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1000.0 + t.tv_usec() as f64 / 1000.0;
    ms(u.user_time()) + ms(u.system_time())
}

/// "(12 ms, 20 notifications, ...)" at the end of sign's summary line.
fn notifications(stderr: &str) -> f64 {
    stderr
        .split(", ")
        .find_map(|p| p.trim_end_matches(')').strip_suffix(" notifications"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    s[i]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; ignore what we do not know.
    let mut rounds = 40;
    if args.iter().any(|a| a == "--quick") {
        rounds = 3;
    }
    if let Some(i) = args.iter().position(|a| a == "--rounds") {
        rounds = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--rounds N");
    }

    let dir = common::tempdir();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let bin = common::bin();
    // The bare client cannot resolve tlsign.test (no supervisor to answer),
    // so every variant fetches the IP-literal URL.
    let url = nginx.ip_url("/");
    let transcript = dir.path().join("bench.tlsign");
    let ca = &pki.ca;

    let bare_cmd = || {
        let mut c = Command::new(&bin);
        c.arg("__client").arg(&url).arg("--ca-file").arg(ca);
        c
    };
    let sign_cmd = |out: &Path| {
        let mut c = Command::new(&bin);
        c.arg("sign")
            .arg(&url)
            .arg("-o")
            .arg(out)
            .arg("--ca-file")
            .arg(ca);
        c
    };
    let verify_cmd = || {
        let mut c = Command::new(&bin);
        c.arg("verify").arg(&transcript).arg("--ca-file").arg(ca);
        c
    };

    // Warm-up: page cache, nginx, the binary.
    for _ in 0..3 {
        timed(&mut bare_cmd());
        timed(&mut sign_cmd(&transcript));
        timed(&mut verify_cmd());
    }

    let (mut bare, mut sign, mut verify) =
        (Samples::default(), Samples::default(), Samples::default());
    let started = Instant::now();
    for _ in 0..rounds {
        let (w, c, _) = timed(&mut bare_cmd());
        bare.wall.push(w);
        bare.cpu.push(c);
        let (w, c, e) = timed(&mut sign_cmd(&transcript));
        sign.wall.push(w);
        sign.cpu.push(c);
        let n = notifications(&e);
        assert!(
            n.is_finite(),
            "no notification count in sign's summary: {e}"
        );
        sign.notifications.push(n);
        let (w, c, _) = timed(&mut verify_cmd());
        verify.wall.push(w);
        verify.cpu.push(c);
    }
    let took = started.elapsed();

    let row = |name: &str, s: &Samples| {
        format!(
            "| {name} | {:.1} | {:.1} | {:.1} | {} |",
            percentile(&s.wall, 0.5),
            percentile(&s.wall, 0.95),
            percentile(&s.cpu, 0.5),
            if s.notifications.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}", percentile(&s.notifications, 0.5))
            }
        )
    };
    let bare_med = percentile(&bare.wall, 0.5);
    let sign_med = percentile(&sign.wall, 0.5);
    let verify_med = percentile(&verify.wall, 0.5);
    println!("{rounds} rounds, interleaved bare/sign/verify, {:.1} s, against nginx on 127.0.0.1 (small page)\n", took.as_secs_f64());
    println!("| variant | median ms | p95 ms | CPU ms (median) | notifications |");
    println!("|---|---|---|---|---|");
    println!("{}", row("bare client", &bare));
    println!("{}", row("sign (seccomp)", &sign));
    println!("{}", row("verify (seccomp)", &verify));
    println!(
        "\nsign / bare = {:.2}, verify / bare = {:.2}, supervision overhead per sign (median sign - median bare) = {:.1} ms",
        sign_med / bare_med,
        verify_med / bare_med,
        sign_med - bare_med
    );

    let json = format!(
        "{{\"rounds\":{rounds},\"bare_ms\":{{\"median\":{:.3},\"p95\":{:.3}}},\"sign_ms\":{{\"median\":{:.3},\"p95\":{:.3}}},\"verify_ms\":{{\"median\":{:.3},\"p95\":{:.3}}},\"bare_cpu_ms\":{:.3},\"sign_cpu_ms\":{:.3},\"verify_cpu_ms\":{:.3},\"notifications_per_sign\":{:.1}}}\n",
        bare_med,
        percentile(&bare.wall, 0.95),
        sign_med,
        percentile(&sign.wall, 0.95),
        verify_med,
        percentile(&verify.wall, 0.95),
        percentile(&bare.cpu, 0.5),
        percentile(&sign.cpu, 0.5),
        percentile(&verify.cpu, 0.5),
        percentile(&sign.notifications, 0.5),
    );
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&out_dir).expect("create target/bench-results");
    std::fs::write(out_dir.join("sign.json"), json).expect("write sign.json");
    drop(nginx);
}
