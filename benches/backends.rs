//! The three interception backends side by side, in one run.
//!
//! ```text
//! cargo bench --bench backends             # full run; rewrites docs/benchmarks.md
//! cargo bench --bench backends -- --quick  # smoke test (CI): a few rounds, no doc
//! ```
//!
//! End to end: against a local nginx (the tests' fixtures and PKI) each
//! round runs the bare built-in client (the same client, unsupervised),
//! then `sign` and `verify` under each backend, all interleaved (A B C D A
//! B C D ...) so drift on a noisy machine hits every variant alike. Signs
//! and verifies are library calls in this process, as a batch signer makes
//! them: the supervisor's own process start is not counted (it is the same
//! for every backend, and a long-running signer pays it once), and the
//! transcript goes to tmpfs so that a disk's fsync does not drown the
//! difference being measured. The client is this very binary re-executed,
//! as `tlsign-seccomp` re-executes itself.
//!
//! Interception cost: tests/c/syscall_loop.c makes N getrandom(16) and N
//! clock_gettime calls, bare and under `tlsign-seccomp run --backend B`,
//! each also with N = 0 so that process start-up cancels out. The seccomp
//! backend also runs with each way its supervisor thread can wait for a
//! notification (TLSIGN_SECCOMP_WAIT), to keep the fastest.
//!
//! Results: target/bench-results/backends.json, and (full runs only) the
//! generated block of docs/benchmarks.md and docs/img/latency.svg.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "report/mod.rs"]
#[allow(dead_code)] // benches/batch.rs uses the rest
mod report;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cert, HttpsServer, Nginx, Pki};
use nix::sys::resource::{getrusage, UsageWho};
use tlsign_seccomp::{sign, verify, Backend, Recorder};

const COMMAND: &str = "cargo bench --bench backends";
const USAGE: &str = "\
usage: cargo bench --bench backends [-- OPTIONS]

  (none)              the full run
  --quick             a few rounds, no docs (CI's smoke test)

Every run without --quick rewrites docs/benchmarks.md.
  --rounds N          end-to-end rounds
  --micro-rounds N    rounds of the interception micro-benchmark
  --n N               syscalls per micro-benchmark run";

struct Settings {
    quick: bool,
    rounds: usize,
    micro_rounds: usize,
    micro_n: u64,
}

fn settings() -> Settings {
    let args = report::checked_args(&["--quick"], &["--rounds", "--micro-rounds", "--n"], USAGE);
    let quick = args.iter().any(|a| a == "--quick");
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args.get(i + 1).and_then(|n| n.parse().ok()).expect(name))
    };
    let (rounds, micro_rounds, micro_n) = if quick {
        (3, 3, 1_000)
    } else {
        (60, 11, 10_000)
    };
    Settings {
        quick,
        rounds: value("--rounds").map_or(rounds, |n: u64| n as usize),
        micro_rounds: value("--micro-rounds").map_or(micro_rounds, |n: u64| n as usize),
        micro_n: value("--n").unwrap_or(micro_n),
    }
}

fn cpu_ms(who: UsageWho) -> f64 {
    let u = getrusage(who).expect("getrusage");
    let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1000.0 + t.tv_usec() as f64 / 1000.0;
    ms(u.user_time()) + ms(u.system_time())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // The library runs its client by re-executing the current binary.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == tlsign_seccomp::client::CHILD_ARG)
    {
        std::process::exit(tlsign_seccomp::client::child_main(args.split_off(2)));
    }
    let s = settings();
    let dir = common::tempdir();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    // tmpfs where there is one: see the module comment.
    let out_dir = match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => d,
        Err(_) => common::tempdir(),
    };

    let (e2e, breakdown) = end_to_end(&s, &nginx.ip_url("/"), &pki.ca, out_dir.path());
    let micro = micro(&s, dir.path());
    drop(nginx);

    let results = report::Results {
        command: if s.quick {
            format!("{COMMAND} -- --quick")
        } else {
            COMMAND.to_string()
        },
        rounds: s.rounds,
        micro_rounds: s.micro_rounds,
        page: "nginx 1.22 on 127.0.0.1, TLS 1.3, a 133-byte HTML page, fetched by IP literal"
            .into(),
        e2e,
        micro,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let json = root.join(if s.quick {
        "target/bench-results/backends-quick.json"
    } else {
        "target/bench-results/backends.json"
    });
    report::write_json(&results, &json).expect("write the JSON results");
    let block = format!(
        "{}\nWhat one sign stopped for under the seccomp backend (clock ids in parentheses: 0 realtime, 1 monotonic): {breakdown}.\n",
        report::markdown(&results, "img/latency.svg")
    );
    println!("{block}");
    if !s.quick {
        let svg = root.join("docs/img/latency.svg");
        std::fs::create_dir_all(svg.parent().expect("docs/img")).expect("create docs/img");
        std::fs::write(&svg, report::svg(&results)).expect("write the plot");
        report::update_doc(&root.join("docs/benchmarks.md"), &block)
            .expect("update docs/benchmarks.md");
        println!(
            "wrote {}, {} and docs/benchmarks.md",
            json.display(),
            svg.display()
        );
    } else {
        println!(
            "wrote {} (quick run: a smoke test; {} rounds are too few for these figures or ratios to mean anything, and the docs are untouched)",
            json.display(),
            s.rounds
        );
    }
}

/// The rows, and what one seccomp sign stopped for, by syscall.
fn end_to_end(s: &Settings, url: &str, ca: &Path, out: &Path) -> (Vec<report::Variant>, String) {
    let exe = std::env::current_exe().expect("our own path");
    let bare = |_: ()| {
        let children = cpu_ms(UsageWho::RUSAGE_CHILDREN);
        let start = Instant::now();
        let o = Command::new(&exe)
            .arg(tlsign_seccomp::client::CHILD_ARG)
            .arg(url)
            .arg("--ca-file")
            .arg(ca)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run the bare client");
        let wall = ms(start.elapsed());
        assert!(o.status.success(), "the bare client failed");
        (wall, cpu_ms(UsageWho::RUSAGE_CHILDREN) - children)
    };
    // Every backend with its default recorder, and seccomp also relaying
    // as the ptrace backends must: that row against ptrace's compares the
    // interception alone, and against seccomp's what the relay costs.
    let signers: Vec<(String, Backend, Option<Recorder>)> = Backend::ALL
        .iter()
        .flat_map(|&b| {
            let relayed = (b == Backend::Seccomp)
                .then(|| (format!("{b} --recorder relay"), b, Some(Recorder::Relay)));
            std::iter::once((b.to_string(), b, None)).chain(relayed)
        })
        .collect();
    let transcript = |b: Backend, r: Option<Recorder>| {
        out.join(format!(
            "{b}-{}.tlsign",
            r.map_or("default", Recorder::name)
        ))
    };
    let sign_once = |b: Backend, recorder: Option<Recorder>| {
        let own = cpu_ms(UsageWho::RUSAGE_SELF);
        let start = Instant::now();
        let signed = sign::sign(sign::SignOptions {
            url: url.into(),
            output: transcript(b, recorder),
            ca_files: vec![ca.to_path_buf()],
            resolve: vec![],
            time: None,
            seed: None,
            timeout: Duration::from_secs(30),
            backend: b,
            recorder,
        })
        .unwrap_or_else(|e| panic!("sign --backend {b}: {e}"));
        let wall = ms(start.elapsed());
        let supervisor = cpu_ms(UsageWho::RUSAGE_SELF) - own;
        (
            wall,
            supervisor,
            ms(signed.stats.client_cpu),
            signed.stats.interceptions as f64,
            signed.stats.by_syscall(),
        )
    };
    let verify_once = |b: Backend, r: Option<Recorder>| {
        let start = Instant::now();
        verify::verify(verify::VerifyOptions {
            file: transcript(b, r),
            ca_files: vec![ca.to_path_buf()],
            timeout: Duration::from_secs(30),
            backend: b,
        })
        .unwrap_or_else(|e| panic!("verify --backend {b}: {e}"));
        ms(start.elapsed())
    };

    let mut rows: Vec<report::Variant> = std::iter::once("bare client".to_string())
        .chain(signers.iter().map(|(name, _, _)| name.clone()))
        .map(|name| report::Variant {
            name,
            sign_ms: vec![],
            verify_ms: vec![],
            supervisor_cpu_ms: vec![],
            client_cpu_ms: vec![],
            interceptions: vec![],
        })
        .collect();
    // Warm-up: page cache, nginx's workers, the filter and vDSO caches.
    for _ in 0..3 {
        bare(());
        for &(_, b, r) in &signers {
            sign_once(b, r);
            verify_once(b, r);
        }
    }
    let mut breakdown = String::new();
    let started = Instant::now();
    for _ in 0..s.rounds {
        let (wall, cpu) = bare(());
        rows[0].sign_ms.push(wall);
        rows[0].client_cpu_ms.push(cpu);
        for (i, &(_, b, r)) in signers.iter().enumerate() {
            let (wall, sup, client, n, by_syscall) = sign_once(b, r);
            if b == Backend::Seccomp && r.is_none() {
                breakdown = by_syscall
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
            }
            let r = &mut rows[i + 1];
            r.sign_ms.push(wall);
            r.supervisor_cpu_ms.push(sup);
            r.client_cpu_ms.push(client);
            r.interceptions.push(n);
            r.verify_ms.push(verify_once(b, signers[i].2));
        }
    }
    eprintln!(
        "end to end: {} rounds in {:.1} s",
        s.rounds,
        started.elapsed().as_secs_f64()
    );
    (rows, breakdown)
}

/// A micro-benchmark variant: its name, and (backend, supervisor wait) or
/// None for the bare program.
type MicroVariant = (String, Option<(Backend, Option<&'static str>)>);

fn micro(s: &Settings, dir: &Path) -> Vec<report::MicroRow> {
    let prog = common::cc_build(
        dir,
        "syscall_loop",
        include_str!("../tests/c/syscall_loop.c"),
    );
    let bin = common::bin();
    // (name, backend, supervisor wait); None: bare.
    let variants: Vec<MicroVariant> = vec![
        ("bare".into(), None),
        ("seccomp".into(), Some((Backend::Seccomp, None))),
        (
            "ptrace-seccomp".into(),
            Some((Backend::PtraceSeccomp, None)),
        ),
        ("ptrace".into(), Some((Backend::Ptrace, None))),
        (
            "seccomp, waiting in poll() then RECV".into(),
            Some((Backend::Seccomp, Some("poll"))),
        ),
        (
            "seccomp, waiting on a tokio AsyncFd (epoll)".into(),
            Some((Backend::Seccomp, Some("async"))),
        ),
    ];
    let command = |v: &Option<(Backend, Option<&'static str>)>, n: u64| -> Command {
        match v {
            None => {
                let mut c = Command::new(&prog);
                c.arg(n.to_string());
                c
            }
            Some((b, wait)) => {
                let mut c = Command::new(&bin);
                c.arg("run")
                    .arg("--backend")
                    .arg(b.to_string())
                    .arg("--")
                    .arg(&prog)
                    .arg(n.to_string());
                if let Some(w) = wait {
                    c.env("TLSIGN_SECCOMP_WAIT", w);
                }
                c
            }
        }
    };
    let wall = |mut c: Command| {
        let start = Instant::now();
        let o = c.output().expect("run the loop");
        assert!(
            o.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        ms(start.elapsed())
    };
    let mut rows: Vec<report::MicroRow> = variants
        .iter()
        .map(|(name, _)| report::MicroRow {
            name: name.clone(),
            n: s.micro_n,
            zero_ms: vec![],
            n_ms: vec![],
        })
        .collect();
    let started = Instant::now();
    for _ in 0..s.micro_rounds {
        for (i, (_, v)) in variants.iter().enumerate() {
            rows[i].zero_ms.push(wall(command(v, 0)));
            rows[i].n_ms.push(wall(command(v, s.micro_n)));
        }
    }
    eprintln!(
        "interception cost: {} rounds in {:.1} s",
        s.micro_rounds,
        started.elapsed().as_secs_f64()
    );
    rows
}
