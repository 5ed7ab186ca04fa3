//! Batch signing throughput and the supervisor's memory, against the bare
//! client at the same concurrency.
//!
//! ```text
//! cargo bench --bench batch             # full run (about 10 minutes); rewrites docs/benchmarks.md
//! cargo bench --bench batch -- --quick  # smoke test (CI): one round, c = 1 and 8, no doc
//! ```
//!
//! A local nginx (its own configuration here: 1024+ connections per
//! worker, no access log) serves 1000 distinct pages of 4 KiB over TLS 1.3
//! at https://127.0.0.1:PORT/p/N.html, with a certificate carrying an IP
//! SAN, so the same URL list works for every variant. Per concurrency c,
//! each round runs, interleaved:
//!
//! - bare: c concurrent `tlsign-seccomp __client URL --ca-file CA`
//!   processes (the built-in client, unsupervised) over the URL list;
//! - seccomp, ptrace: one `tlsign-seccomp sign --input LIST --out-dir DIR
//!   -j c --per-host 0 --retries 0 --backend B` process over the same list,
//!   into a fresh directory (on disk by default: every transcript is
//!   synced, as in real use; `--tmpfs` puts it in /dev/shm). Directories
//!   on disk are removed only at the end (see `Ctx::signed`);
//! - seccomp-tmpfs: the same into /dev/shm, where nothing is durable and
//!   syncs cost nothing: the cost of supervision alone.
//! - seccomp-relay: seccomp with `--recorder relay` (to disk, like seccomp):
//!   the supervisor relays and records every byte, as the ptrace backends
//!   must, instead of handing the client a socket to the server. Against
//!   seccomp, it shows what the relay costs; against ptrace, it compares
//!   the interception alone.
//!
//! - seccomp-exec: seccomp with every client executed from the binary
//!   (`TLSIGN_SECCOMP_LAUNCH=exec`) instead of forked from the zygote, as
//!   the bare clients are: against bare, the cost of supervision alone, on
//!   equal start-up terms.
//!
//! `--variants` picks among these and seccomp-nosync (`--no-sync`, on the
//! same file system as seccomp) and `other` (seccomp with the binary
//! `--other BIN`): comparing two builds, say before and after a change,
//! in one interleaved run:
//!
//! ```text
//! cargo bench --bench batch -- --variants bare,seccomp,other --other OLD_BIN \
//!     --jobs 1,8 --urls 1500 --rounds 3 --tmpfs --memory-urls ""
//! ```
//!
//! `--paired` runs the two `--variants` at the same time instead, and
//! compares what each spent in CPU per URL: the way to see a change of a
//! few percent between two builds (see `paired`):
//!
//! ```text
//! cargo bench --bench batch -- --paired --variants seccomp,other --other OLD_BIN \
//!     --jobs 4,16 --rounds 3 --urls 2000 --memory-urls "" --tmpfs
//! ```
//!
//! Every binary runs from a copy read back cold (`report::cold_copy`).
//!
//! Throughput is URLs over the wall time of the whole run (process start
//! to exit). The supervisor's peak memory is its VmHWM, polled every 5 ms
//! from /proc/PID/status (the last value read before it exits: VmHWM only
//! grows). CPU: wait4's rusage of each process (the supervisor's includes
//! its clients), the supervisor's own from /proc/PID/stat, and nginx's
//! from its workers' /proc/PID/stat.
//!
//! A second part runs the seccomp batch at c = 16 over 1000, 5000, 20000
//! and 60000 URLs (pages repeat past 1000, with distinct query strings) to
//! see whether the supervisor's memory grows with the list once warm (60000
//! against 5000: see `Run::targets`).
//!
//! The binaries are the release build `cargo bench` makes of this package
//! (CARGO_BIN_EXE_tlsign-seccomp): nothing here builds anything.
//!
//! Results: target/bench-results/batch.json (batch-quick.json for --quick)
//! with every sample; full runs also rewrite the generated block of
//! docs/benchmarks.md and docs/img/throughput.svg.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "report/mod.rs"]
#[allow(dead_code)] // benches/backends.rs uses the rest
mod report;

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Cert, Pki};
use report::fmt;
use serde_json::{json, Value};

const COMMAND: &str = "cargo bench --bench batch";
const USAGE: &str = "\
usage: cargo bench --bench batch [-- OPTIONS]

  (none)                 the full run (about 10 minutes): rewrites docs/benchmarks.md
  --quick                one round at c = 1 and 8, no docs (CI's smoke test)
  --rounds N             rounds per concurrency
  --jobs C,C,...         concurrencies
  --urls N               URLs per run (default: 25 per job, at least 600)
  --variants V,V,...     bare, seccomp, ptrace, seccomp-exec, seccomp-relay, seccomp-nosync, seccomp-tmpfs, other
  --other BIN            the binary of the `other` variant (compare two builds)
  --tmpfs                seccomp writes to /dev/shm instead of the disk
  --memory-urls N,N,...  list lengths of the memory series (\"\" for none)
  --memory-variant V     seccomp or other
  --paired               run the two --variants at the same time, and compare
                         their CPU per URL (see docs/benchmarks.md)

Any option but --quick makes a custom run, which leaves the docs alone.";
const BEGIN: &str = "<!-- BEGIN GENERATED by benches/batch.rs -->";
const END: &str = "<!-- END GENERATED by benches/batch.rs -->";
/// Distinct files nginx serves.
const PAGES: usize = 1000;
const PAGE_BYTES: usize = 4096;
/// Target: batch throughput at least this fraction of the bare client's.
const THROUGHPUT_TARGET: f64 = 0.80;
/// "Flat": peak memory at the longest list within this factor of the
/// second shortest's (the shortest is still warming up; see `targets`).
const FLAT_LIMIT: f64 = 1.10;
/// A run that takes longer than this is stuck: it is killed and the bench
/// fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

const VARIANTS: [&str; 3] = ["bare", "seccomp", "ptrace"];
/// Further variants `--variants` may name: seccomp writing to /dev/shm
/// whatever `--tmpfs` says (in the full run), seccomp executing its
/// clients and seccomp relaying (both in the full run), seccomp with `--no-sync`, and `other`: seccomp signing with the
/// binary `--other BIN` names, to compare two builds in one run.
const EXTRA_VARIANTS: [&str; 5] = [
    "seccomp-exec",
    "seccomp-relay",
    "seccomp-nosync",
    "seccomp-tmpfs",
    "other",
];

struct Settings {
    quick: bool,
    /// The arguments after `--`, as given.
    args: Vec<String>,
    /// Some setting was changed from the command line: not the full run
    /// the docs show.
    custom: bool,
    rounds: usize,
    concurrency: Vec<usize>,
    /// URLs per run, if fixed by --urls; else [`urls_for`].
    urls: Option<usize>,
    memory_jobs: usize,
    memory_urls: Vec<usize>,
    /// `--memory-variant V`: which variant the memory series runs
    /// (seccomp unless given; `other` measures another build).
    memory_variant: &'static str,
    tmpfs: bool,
    /// `--other BIN`: the binary of the `other` variant.
    other: Option<PathBuf>,
    /// `--paired`: the two variants run at the same time (see `paired`).
    paired: bool,
    /// What runs at each concurrency: [`VARIANTS`], or `--variants` (which
    /// may add seccomp-tmpfs: seccomp writing to /dev/shm whatever
    /// `--tmpfs` says, to compare file systems in one run).
    variants: Vec<&'static str>,
}

fn settings() -> Settings {
    let args = report::checked_args(
        &["--quick", "--tmpfs", "--paired"],
        &[
            "--rounds",
            "--jobs",
            "--urls",
            "--memory-urls",
            "--memory-variant",
            "--variants",
            "--other",
        ],
        USAGE,
    );
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| -> Option<String> {
        args.iter().position(|a| a == name).map(|i| {
            args.get(i + 1)
                .cloned()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        })
    };
    let list = |v: String| -> Vec<usize> {
        v.split(',')
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.trim().parse().expect("a comma-separated list of numbers"))
            .collect()
    };
    let quick = flag("--quick");
    let (rounds, concurrency, memory_urls) = if quick {
        (1, vec![1, 8], vec![50, 200])
    } else {
        (
            5,
            vec![1, 2, 4, 8, 16, 32, 64],
            vec![1000, 5000, 20000, 60000],
        )
    };
    let custom = [
        "--rounds",
        "--jobs",
        "--urls",
        "--memory-urls",
        "--memory-variant",
        "--tmpfs",
        "--variants",
        "--other",
        "--paired",
    ]
    .iter()
    .any(|a| flag(a));
    Settings {
        quick,
        custom,
        args: args.clone(),
        rounds: value("--rounds").map_or(rounds, |n| n.parse().expect("--rounds N")),
        concurrency: value("--jobs").map_or(concurrency, list),
        urls: value("--urls").map(|n| n.parse().expect("--urls N")),
        memory_jobs: if quick { 8 } else { 16 },
        memory_urls: value("--memory-urls").map_or(memory_urls, list),
        memory_variant: match value("--memory-variant").as_deref() {
            None | Some("seccomp") => "seccomp",
            Some("other") => "other",
            Some(v) => panic!("--memory-variant: {v}? (seccomp, other)"),
        },
        tmpfs: flag("--tmpfs"),
        other: value("--other").map(PathBuf::from),
        paired: flag("--paired"),
        variants: value("--variants").map_or(
            vec![
                "bare",
                "seccomp",
                "seccomp-tmpfs",
                "seccomp-exec",
                "seccomp-relay",
                "ptrace",
            ],
            |v| {
                v.split(',')
                    .map(|name| {
                        let name = name.trim();
                        *VARIANTS
                            .iter()
                            .chain(&EXTRA_VARIANTS)
                            .find(|&&v| v == name)
                            .unwrap_or_else(|| {
                                panic!("--variants: {name}? (bare, seccomp, ptrace, seccomp-exec, seccomp-relay, seccomp-nosync, seccomp-tmpfs, other)")
                            })
                    })
                    .collect()
            },
        ),
    }
}

/// URLs per run at concurrency `c`: enough that start-up and the tail
/// (fewer than c running at the end) are a small part of the run.
fn urls_for(s: &Settings, c: usize) -> usize {
    match s.urls {
        Some(n) => n,
        None if s.quick => 40,
        None => (25 * c).max(600),
    }
}

fn main() {
    let s = settings();
    let built = common::bin();
    assert!(
        built.is_file(),
        "{} is missing: run this through `cargo bench`, which builds it",
        built.display()
    );
    let dir = common::tempdir();
    // Every binary compared runs from a copy read back cold (see
    // `report::cold_copy`): the linker's own file and a copy of it cost
    // their clients different amounts of CPU.
    let copy = |bin: &Path, to: &str| {
        let d = dir.path().join(to);
        std::fs::create_dir_all(&d).unwrap();
        report::cold_copy(bin, &d)
            .unwrap_or_else(|e| panic!("cannot copy {} for the bench: {e}", bin.display()))
    };
    let bin = copy(&built, "this");
    let other = s.other.as_deref().map(|o| copy(o, "other"));
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki);
    let out_root = out_root(s.tmpfs);
    let fs_note = if s.tmpfs {
        "tmpfs (/dev/shm)"
    } else {
        "disk (the target directory)"
    };
    let load_before = loadavg();
    eprintln!(
        "nginx on port {}, {} workers; transcripts to {} ({fs_note}); load average {load_before}",
        nginx.port,
        nginx.workers.len(),
        out_root.path().display()
    );

    let urls_max = s
        .concurrency
        .iter()
        .map(|&c| urls_for(&s, c))
        .chain(s.memory_urls.iter().copied())
        .max()
        .unwrap_or(1);
    let urls: Vec<String> = (0..urls_max).map(|i| nginx.url(i)).collect();
    let lists = dir.path().join("lists");
    std::fs::create_dir_all(&lists).unwrap();
    let list_file = |n: usize| {
        let p = lists.join(format!("urls-{n}.txt"));
        if !p.exists() {
            std::fs::write(&p, urls[..n].join("\n") + "\n").unwrap();
        }
        p
    };
    let shm_root = out_root_in_shm(&s);
    assert!(
        s.other.is_some() == (s.variants.contains(&"other") || s.memory_variant == "other"),
        "--other BIN and the variant `other` go together"
    );
    let ctx = Ctx {
        bin: &bin,
        other: other.as_deref(),
        ca: &pki.ca,
        nginx: &nginx,
        out_root: out_root.path(),
        shm_root: shm_root.as_ref().map(|d| d.path()),
    };

    // Warm-up: page cache, nginx's workers, the binary.
    for &v in &s.variants {
        ctx.run(v, 4, &urls[..16], &list_file(16));
    }

    if s.paired {
        paired(&s, &ctx, &urls, &list_file);
        return;
    }
    let mut samples: Vec<Sample> = Vec::new();
    let started = Instant::now();
    for round in 0..s.rounds {
        for &c in &s.concurrency {
            let n = urls_for(&s, c);
            let list = list_file(n);
            // Every other round in reverse order (A B C, C B A, ...): a
            // machine that speeds up or slows down during a round then
            // favours no variant over the rounds. Single rounds on this VM
            // moved by 10-30% (docs/benchmarks.md).
            let mut order = s.variants.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for &v in &order {
                let mut sample = ctx.run(v, c, &urls[..n], &list);
                sample.round = round;
                eprintln!("{}", sample.line());
                samples.push(sample);
            }
        }
        eprintln!(
            "round {} of {} done after {:.0} s",
            round + 1,
            s.rounds,
            started.elapsed().as_secs_f64()
        );
    }
    let mut memory: Vec<Sample> = Vec::new();
    for &n in &s.memory_urls {
        let mut sample = ctx.run(s.memory_variant, s.memory_jobs, &urls[..n], &list_file(n));
        sample.round = 0;
        eprintln!("memory: {}", sample.line());
        memory.push(sample);
    }
    let load_after = loadavg();
    let nginx_workers = nginx.workers.len();
    drop(nginx);

    let run = Run {
        s: &s,
        samples,
        memory,
        fs_note,
        load: format!("{load_before} before, {load_after} after"),
        elapsed: started.elapsed(),
        nginx_workers,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let json_path = root.join(if s.quick {
        "target/bench-results/batch-quick.json"
    } else if s.custom {
        "target/bench-results/batch-custom.json"
    } else {
        "target/bench-results/batch.json"
    });
    let mut json_text = serde_json::to_string_pretty(&run.json()).expect("JSON");
    json_text.push('\n');
    report::write_atomic(&json_path, json_text.as_bytes()).expect("write the JSON results");
    let block = run.markdown();
    println!("{block}");
    if s.quick || s.custom {
        println!(
            "wrote {} (not a full run: the docs are untouched{})",
            json_path.display(),
            if s.quick {
                "; one round of a few URLs is a smoke test, not a measurement"
            } else {
                ""
            }
        );
        return;
    }
    let svg = root.join("docs/img/throughput.svg");
    report::write_atomic(&svg, run.svg().as_bytes()).expect("write the plot");
    report::update_doc_block(&root.join("docs/benchmarks.md"), BEGIN, END, &block)
        .expect("update docs/benchmarks.md");
    println!(
        "wrote {}, {} and docs/benchmarks.md",
        json_path.display(),
        svg.display()
    );
}

/// `--paired`: each round, at each concurrency, the two `--variants` run
/// at the same time over the same list, and what each spent in CPU per URL
/// is compared (bare: its clients and the threads that start them; signed:
/// the supervisor with its clients; nginx, which both share, is left out).
///
/// Two runs one after the other see a different machine: on a VM whose
/// CPUs the host shares, a round's CPU per URL moved by 10% and more, so
/// sequential rounds cannot resolve a change of a few percent. Running
/// together, both see the same host load, page cache and nginx: two copies
/// of one binary came out 0.5% apart, round after round, and two builds of
/// one commit up to 2% (docs/benchmarks.md, "Comparing two builds"). Wall
/// time and throughput mean nothing here: the two compete.
fn paired(s: &Settings, ctx: &Ctx, urls: &[String], list_file: &dyn Fn(usize) -> PathBuf) {
    let [a, b] = s.variants[..] else {
        panic!("--paired compares exactly two --variants, e.g. seccomp,other");
    };
    let cpu = |x: &Sample| (x.cpu_ms + x.launcher_cpu_ms) / x.urls as f64;
    let mut ratios: Vec<(usize, f64)> = Vec::new();
    let mut rows = Vec::new();
    for round in 0..s.rounds {
        for &c in &s.concurrency {
            let n = urls_for(s, c);
            let list = list_file(n);
            let (x, y) = std::thread::scope(|scope| {
                let x = scope.spawn(|| ctx.run(a, c, &urls[..n], &list));
                let y = scope.spawn(|| ctx.run(b, c, &urls[..n], &list));
                (x.join().unwrap(), y.join().unwrap())
            });
            let ratio = cpu(&y) / cpu(&x);
            eprintln!(
                "round {} c={c:<3} {a} {:.3} ms/URL, {b} {:.3} ms/URL: {b}/{a} {ratio:.3}",
                round + 1,
                cpu(&x),
                cpu(&y),
            );
            rows.push(json!({
                "round": round, "concurrency": c, "urls": n,
                // Each sample names its variant; fixed keys keep both
                // when the two are the same variant.
                "a": x.json(), "b": y.json(),
                "cpu_ratio": ratio,
            }));
            ratios.push((c, ratio));
        }
    }
    println!(
        "\n{b} / {a}, CPU per URL, run at the same time (median of {} rounds):\n",
        s.rounds
    );
    println!("| concurrency | {b} / {a} | rounds |");
    println!("|---|---|---|");
    for &c in &s.concurrency {
        let r: Vec<f64> = ratios
            .iter()
            .filter(|(k, _)| *k == c)
            .map(|(_, r)| *r)
            .collect();
        let each: Vec<String> = r.iter().map(|x| format!("{x:.3}")).collect();
        println!("| {c} | {:.3} | {} |", report::median(&r), each.join(", "));
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results/batch-paired.json");
    let mut text = serde_json::to_string_pretty(&json!({
        "command": format!("{COMMAND} -- {}", s.args.join(" ")),
        "machine": report::machine(),
        "date": report::today(),
        "runs": rows,
    }))
    .expect("JSON");
    text.push('\n');
    report::write_atomic(&path, text.as_bytes()).expect("write the JSON results");
    println!(
        "\nwrote {} (a paired run leaves the docs alone)",
        path.display()
    );
}

/// Where the runs' output directories go: /dev/shm, or a directory in the
/// target directory (on disk), found from this executable's path
/// (target/release/deps/batch-HASH).
fn out_root(tmpfs: bool) -> tempfile::TempDir {
    let builder = || {
        let mut b = tempfile::Builder::new();
        b.prefix("tlsign-batch-bench-");
        b
    };
    if tmpfs {
        return builder()
            .tempdir_in("/dev/shm")
            .expect("a directory in /dev/shm");
    }
    let exe = std::env::current_exe().expect("our own path");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| exe.ancestors().nth(3).map(Path::to_path_buf))
        .expect("the target directory");
    let parent = target.join("bench-tmp");
    std::fs::create_dir_all(&parent).expect("create target/bench-tmp");
    builder()
        .tempdir_in(&parent)
        .expect("a directory in target/")
}

/// A directory in /dev/shm for the seccomp-tmpfs variant, if it runs.
fn out_root_in_shm(s: &Settings) -> Option<tempfile::TempDir> {
    s.variants
        .contains(&"seccomp-tmpfs")
        .then(|| out_root(true))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// nginx with a configuration for many concurrent connections, serving
/// [`PAGES`] distinct pages; stopped (its whole process group) on drop.
struct Nginx {
    port: u16,
    child: std::process::Child,
    workers: Vec<i32>,
}

const NGINX_CONF: &str = r#"
user root;
worker_processes auto;
worker_rlimit_nofile 8192;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path @PREFIX@/tmp/body;
    proxy_temp_path @PREFIX@/tmp/proxy;
    fastcgi_temp_path @PREFIX@/tmp/fastcgi;
    uwsgi_temp_path @PREFIX@/tmp/uwsgi;
    scgi_temp_path @PREFIX@/tmp/scgi;
    types { text/html html; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:@PORT@ ssl backlog=4096;
        ssl_certificate @CERT@;
        ssl_certificate_key @KEY@;
        ssl_protocols TLSv1.2 TLSv1.3;
        root @ROOT@;
        gzip off;
    }
}
"#;

impl Nginx {
    fn start(dir: &Path, pki: &Pki) -> Nginx {
        let prefix = dir.join("nginx");
        let pages = prefix.join("root/p");
        std::fs::create_dir_all(&pages).unwrap();
        std::fs::create_dir_all(prefix.join("tmp")).unwrap();
        for i in 0..PAGES {
            let mut page = format!("<!doctype html><title>page {i}</title><p>");
            let mut k = 0u64;
            while page.len() < PAGE_BYTES - 5 {
                // Distinct text per page (no two bodies alike).
                let _ = write!(page, "{:x} ", (i as u64 + 1) * 2_654_435_761 + k);
                k += 1;
            }
            page.truncate(PAGE_BYTES - 5);
            page.push_str("</p>\n");
            std::fs::write(pages.join(format!("{i}.html")), page).unwrap();
        }
        let p = |p: &Path| p.to_str().expect("UTF-8 paths").to_string();
        for _ in 0..5 {
            let port = common::free_port();
            let conf = prefix.join("nginx.conf");
            let text = NGINX_CONF
                .replace("@PREFIX@", &p(&prefix))
                .replace("@ROOT@", &p(&prefix.join("root")))
                .replace("@PORT@", &port.to_string())
                .replace("@CERT@", &p(&pki.cert(Cert::Valid)))
                .replace("@KEY@", &p(&pki.key));
            std::fs::write(&conf, text).unwrap();
            let _ = std::fs::remove_file(prefix.join("error.log"));
            let mut child = Command::new("nginx")
                .arg("-e")
                .arg(prefix.join("error.log"))
                .arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start nginx (is it installed? scripts/setup.sh installs it)");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    // The workers may still be starting.
                    std::thread::sleep(Duration::from_millis(200));
                    let workers = children_of(child.id() as i32);
                    return Nginx {
                        port,
                        child,
                        workers,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                assert!(Instant::now() < deadline, "nginx did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            let log = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
            assert!(log.contains("in use"), "nginx exited at start:\n{log}");
        }
        panic!("nginx: no free port after 5 attempts");
    }

    fn url(&self, i: usize) -> String {
        let page = format!("https://127.0.0.1:{}/p/{}.html", self.port, i % PAGES);
        match i / PAGES {
            0 => page,
            k => format!("{page}?r={k}"),
        }
    }

    /// CPU time of nginx's workers so far, in ms.
    fn cpu_ms(&self) -> f64 {
        self.workers.iter().filter_map(|&p| proc_cpu_ms(p)).sum()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill has no memory-safety preconditions; the group is
        // nginx's own (process_group(0)), and its leader is unreaped.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The pids whose parent is `pid`, from /proc.
fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if proc_stat(child).and_then(|f| f.get(1).and_then(|p| p.parse::<i32>().ok())) == Some(pid)
        {
            out.push(child);
        }
    }
    out
}

/// The fields of /proc/PID/stat after the command name: [0] is the state,
/// [1] the parent, [11] utime, [12] stime (in clock ticks).
fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// utime + stime of `pid` (all its threads), in ms.
fn proc_cpu_ms(pid: i32) -> Option<f64> {
    let f = proc_stat(pid)?;
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks * 1000.0 / hz)
}

/// VmHWM of `pid`, in KiB; None once it has exited.
fn vm_hwm_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rusage_ms(ru: &libc::rusage) -> f64 {
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The calling thread's own CPU so far.
fn thread_cpu_ms() -> f64 {
    // SAFETY: rusage is plain data; all-zero bytes are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid for writes.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    rusage_ms(&ru)
}

/// wait4 on `pid`: Some((status, rusage)) once it has exited, None if it
/// is still running (with `nohang`).
fn wait4(pid: i32, nohang: bool) -> Option<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero bytes are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: status and ru are valid for writes for the call; pid is
        // our own unreaped child.
        let r = unsafe {
            libc::wait4(
                pid,
                &mut status,
                if nohang { libc::WNOHANG } else { 0 },
                &mut ru,
            )
        };
        match r {
            0 => return None,
            r if r == pid => return Some((status, ru)),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
                continue
            }
            _ => panic!("wait4({pid}): {}", std::io::Error::last_os_error()),
        }
    }
}

fn exit_code(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else {
        format!("signal {}", libc::WTERMSIG(status))
    }
}

/// One run: `urls` URLs by one variant at concurrency `c`.
struct Sample {
    variant: &'static str,
    c: usize,
    urls: usize,
    round: usize,
    wall_s: f64,
    /// wait4 CPU: the clients' (bare), or the supervisor's with its
    /// clients (signed).
    cpu_ms: f64,
    /// The supervisor process's own CPU; None for bare.
    supervisor_cpu_ms: Option<f64>,
    nginx_cpu_ms: f64,
    /// bare: the CPU of this bench's threads that started and reaped the
    /// clients (a `sign --input` does that itself, inside `cpu_ms`); 0 for
    /// the others, whose only launcher is the bench polling /proc.
    launcher_cpu_ms: f64,
    /// The supervisor's VmHWM; None for bare.
    peak_kib: Option<u64>,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.urls as f64 / self.wall_s
    }

    fn line(&self) -> String {
        format!(
            "{:<8} c={:<3} {:>5} URLs {:>7.2} s {:>7.1}/s  CPU {:.2} ms/URL (supervisor {}), nginx {:.2} ms/URL, peak {}",
            self.variant,
            self.c,
            self.urls,
            self.wall_s,
            self.rate(),
            self.cpu_ms / self.urls as f64,
            self.supervisor_cpu_ms
                .map_or("-".into(), |m| format!("{:.2}", m / self.urls as f64)),
            self.nginx_cpu_ms / self.urls as f64,
            self.peak_kib
                .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        )
    }

    fn json(&self) -> Value {
        json!({
            "variant": self.variant,
            "concurrency": self.c,
            "urls": self.urls,
            "round": self.round,
            "wall_s": self.wall_s,
            "signs_per_s": self.rate(),
            "cpu_ms": self.cpu_ms,
            "supervisor_cpu_ms": self.supervisor_cpu_ms,
            "nginx_cpu_ms": self.nginx_cpu_ms,
            "launcher_cpu_ms": self.launcher_cpu_ms,
            "peak_rss_kib": self.peak_kib,
        })
    }
}

struct Ctx<'a> {
    bin: &'a Path,
    /// `--other`: the binary of the `other` variant.
    other: Option<&'a Path>,
    ca: &'a Path,
    nginx: &'a Nginx,
    out_root: &'a Path,
    shm_root: Option<&'a Path>,
}

impl Ctx<'_> {
    fn run(&self, variant: &'static str, c: usize, urls: &[String], list: &Path) -> Sample {
        let nginx_before = self.nginx.cpu_ms();
        let mut sample = match variant {
            "bare" => self.bare(c, urls),
            "seccomp-tmpfs" => {
                let shm = self.shm_root.expect("a /dev/shm directory");
                let mut s = self.signed(self.bin, "seccomp", c, urls.len(), list, shm, &[], &[]);
                s.variant = variant;
                s
            }
            "seccomp-exec" | "seccomp-nosync" | "seccomp-relay" => {
                let (extra, env): (&[&str], &[(&str, &str)]) = match variant {
                    "seccomp-exec" => (&[], &[("TLSIGN_SECCOMP_LAUNCH", "exec")]),
                    "seccomp-nosync" => (&["--no-sync"], &[]),
                    _ => (&["--recorder", "relay"], &[]),
                };
                let mut s = self.signed(
                    self.bin,
                    "seccomp",
                    c,
                    urls.len(),
                    list,
                    self.out_root,
                    extra,
                    env,
                );
                s.variant = variant;
                s
            }
            "other" => {
                let bin = self.other.expect("--other BIN");
                let mut s =
                    self.signed(bin, "seccomp", c, urls.len(), list, self.out_root, &[], &[]);
                s.variant = variant;
                s
            }
            backend => self.signed(
                self.bin,
                backend,
                c,
                urls.len(),
                list,
                self.out_root,
                &[],
                &[],
            ),
        };
        sample.nginx_cpu_ms = self.nginx.cpu_ms() - nginx_before;
        sample
    }

    /// c threads, each running one bare client at a time, taking the next
    /// URL from a shared counter.
    // Each client is reaped by wait4 (for its rusage), not Child::wait.
    #[allow(clippy::zombie_processes)]
    fn bare(&self, c: usize, urls: &[String]) -> Sample {
        let next = AtomicUsize::new(0);
        let mut latencies: Vec<f64> = Vec::new();
        let started = Instant::now();
        let (cpu_ms, launcher_cpu_ms) = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..c)
                .map(|_| {
                    scope.spawn(|| {
                        let own_before = thread_cpu_ms();
                        let mut cpu = 0.0;
                        let mut lat = Vec::new();
                        loop {
                            let t0 = Instant::now();
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(url) = urls.get(i) else { break };
                            let child = Command::new(self.bin)
                                .arg(tlsign_seccomp::client::CHILD_ARG)
                                .arg(url)
                                .arg("--ca-file")
                                .arg(self.ca)
                                .stdin(Stdio::null())
                                .stdout(Stdio::null())
                                .spawn()
                                .expect("start the bare client");
                            let (status, ru) =
                                wait4(child.id() as i32, false).expect("a blocking wait");
                            assert!(
                                libc::WIFEXITED(status)
                                    && libc::WEXITSTATUS(status)
                                        == tlsign_seccomp::client::EXIT_FETCHED,
                                "the bare client failed on {url}: {}",
                                exit_code(status)
                            );
                            cpu += rusage_ms(&ru);
                            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                        }
                        (cpu, thread_cpu_ms() - own_before, lat)
                    })
                })
                .collect();
            let (mut cpu, mut own) = (0.0, 0.0);
            for t in threads {
                let (c, o, l) = t.join().unwrap();
                cpu += c;
                own += o;
                latencies.extend(l);
            }
            (cpu, own)
        });
        eprintln!(
            "  bare client latency ms: p50 {:.1}, p95 {:.1}, max {:.1}",
            report::median(&latencies),
            report::percentile(&latencies, 0.95),
            latencies.iter().copied().fold(0.0, f64::max)
        );
        Sample {
            variant: "bare",
            c,
            urls: urls.len(),
            round: 0,
            wall_s: started.elapsed().as_secs_f64(),
            cpu_ms,
            supervisor_cpu_ms: None,
            nginx_cpu_ms: 0.0,
            launcher_cpu_ms,
            peak_kib: None,
        }
    }

    /// One `sign --input` process, watched from /proc until it exits.
    // Reaped by wait4 (for its rusage), not Child::wait.
    #[allow(clippy::zombie_processes)]
    #[allow(clippy::too_many_arguments)]
    fn signed(
        &self,
        bin: &Path,
        backend: &'static str,
        c: usize,
        urls: usize,
        list: &Path,
        root: &Path,
        // Options after the common ones: --no-sync, --recorder.
        extra: &[&str],
        // Added to the environment: TLSIGN_SECCOMP_LAUNCH.
        env: &[(&str, &str)],
    ) -> Sample {
        let out = tempfile::Builder::new()
            .prefix("out-")
            .tempdir_in(root)
            .expect("an output directory");
        let stderr = out.path().with_extension("stderr");
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("sign")
            .arg("--input")
            .arg(list)
            .arg("--out-dir")
            .arg(out.path())
            .args(["-j", &c.to_string(), "--per-host", "0", "--retries", "0"])
            .args(["--progress", "quiet", "--backend", backend])
            .args(extra)
            .envs(env.iter().copied())
            .arg("--ca-file")
            .arg(self.ca)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("a stderr file"))
            .spawn()
            .expect("start tlsign-seccomp sign --input");
        let pid = child.id() as i32;
        let (mut peak, mut own_cpu) = (None, None);
        let (status, ru) = loop {
            if let Some(k) = vm_hwm_kib(pid) {
                peak = Some(k);
            }
            if let Some(ms) = proc_cpu_ms(pid) {
                own_cpu = Some(ms);
            }
            if let Some(done) = wait4(pid, true) {
                break done;
            }
            if started.elapsed() > RUN_TIMEOUT {
                // SAFETY: kill has no memory-safety preconditions; pid is
                // our unreaped child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                wait4(pid, false);
                panic!("sign --input --backend {backend} -j {c} took over {RUN_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let wall_s = started.elapsed().as_secs_f64();
        let log = std::fs::read_to_string(&stderr).unwrap_or_default();
        let _ = std::fs::remove_file(&stderr);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "sign --input --backend {backend} -j {c}: {}\n{log}",
            exit_code(status)
        );
        assert!(
            log.contains(&format!("signed {urls} URL(s): {urls} ok, 0 failed")),
            "sign --input --backend {backend} -j {c} did not sign all {urls} URLs:\n{log}"
        );
        let files = std::fs::read_dir(out.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tlsign"))
            .count();
        assert_eq!(files, urls, "transcripts in the output directory");
        // Removed with the whole root at the end, not now: ext4 skips inodes
        // freed in the last minute or so when it allocates new ones
        // (`recently_deleted`), and deleting a run's thousand files made the
        // next run on disk spend about 1 ms of kernel CPU per file created.
        let _ = out.keep();
        Sample {
            variant: backend,
            c,
            urls,
            round: 0,
            wall_s,
            cpu_ms: rusage_ms(&ru),
            supervisor_cpu_ms: own_cpu,
            nginx_cpu_ms: 0.0,
            launcher_cpu_ms: 0.0,
            peak_kib: peak,
        }
    }
}

/// A whole run's samples, and its reports.
struct Run<'a> {
    s: &'a Settings,
    samples: Vec<Sample>,
    memory: Vec<Sample>,
    fs_note: &'static str,
    load: String,
    elapsed: Duration,
    nginx_workers: usize,
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

impl Run<'_> {
    fn of(&self, variant: &str, c: usize) -> impl Iterator<Item = &Sample> {
        let variant = variant.to_string();
        self.samples
            .iter()
            .filter(move |s| s.variant == variant && s.c == c)
    }

    fn median_of(&self, variant: &str, c: usize, f: impl Fn(&Sample) -> Option<f64>) -> f64 {
        report::median(&self.of(variant, c).filter_map(f).collect::<Vec<_>>())
    }

    fn rate(&self, variant: &str, c: usize) -> f64 {
        self.median_of(variant, c, |s| Some(s.rate()))
    }

    fn ratio(&self, variant: &str, c: usize) -> f64 {
        self.rate(variant, c) / self.rate("bare", c)
    }

    fn peak_mib(&self, variant: &str, c: usize) -> f64 {
        mib(self.median_of(variant, c, |s| s.peak_kib.map(|k| k as f64)))
    }

    /// Throughput a saturated machine would give `variant` against bare,
    /// judged by CPU alone: bare's CPU per URL (clients, their launcher,
    /// nginx) over the variant's (supervisor with its clients, nginx),
    /// round by round, median. If it agrees with the wall-time ratio, the
    /// spread between rounds is in the CPU spent, not in the clock (on the
    /// machine measured it does, within a few hundredths per round).
    /// Meaningless where CPUs sit idle (c = 1 on a 2-CPU machine).
    fn cpu_ratio(&self, variant: &str, c: usize) -> f64 {
        let cost = |s: &Sample| (s.cpu_ms + s.launcher_cpu_ms + s.nginx_cpu_ms) / s.urls as f64;
        let ratios: Vec<f64> = self
            .of(variant, c)
            .filter_map(|v| {
                let b = self.of("bare", c).find(|b| b.round == v.round)?;
                Some(cost(b) / cost(v))
            })
            .collect();
        report::median(&ratios)
    }

    /// Per URL, in ms: (clients + supervisor, supervisor alone, nginx).
    fn cpu_per_url(&self, variant: &str, c: usize) -> (f64, f64, f64) {
        let per = |f: &dyn Fn(&Sample) -> Option<f64>| {
            self.median_of(variant, c, |s| f(s).map(|ms| ms / s.urls as f64))
        };
        (
            per(&|s| Some(s.cpu_ms)),
            per(&|s| s.supervisor_cpu_ms),
            per(&|s| Some(s.nginx_cpu_ms)),
        )
    }

    fn json(&self) -> Value {
        let summary: Vec<Value> = self
            .s
            .concurrency
            .iter()
            .flat_map(|&c| {
                self.s.variants.iter().map(move |&v| {
                    let (cpu, sup, ngx) = self.cpu_per_url(v, c);
                    json!({
                        "variant": v,
                        "concurrency": c,
                        "signs_per_s_median": num(self.rate(v, c)),
                        "ratio_to_bare": num(self.ratio(v, c)),
                        "peak_rss_mib_median": num(self.peak_mib(v, c)),
                        "cpu_ms_per_url_median": num(cpu),
                        "supervisor_cpu_ms_per_url_median": num(sup),
                        "nginx_cpu_ms_per_url_median": num(ngx),
                        "cpu_ratio_to_bare_median": num(self.cpu_ratio(v, c)),
                    })
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .iter()
            .map(|t| json!({ "name": t.0, "value": num(t.1), "met": t.2 }))
            .collect();
        json!({
            "date": report::today(),
            "machine": report::machine(),
            "command": self.command(),
            "rounds": self.s.rounds,
            "output_directory": self.fs_note,
            "load_average": self.load,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "pages": PAGES,
            "page_bytes": PAGE_BYTES,
            "summary": summary,
            "targets": targets,
            "samples": self.samples.iter().map(Sample::json).collect::<Vec<_>>(),
            "memory": {
                "concurrency": self.s.memory_jobs,
                "samples": self.memory.iter().map(Sample::json).collect::<Vec<_>>(),
            },
        })
    }

    fn command(&self) -> String {
        if self.s.args.is_empty() {
            COMMAND.to_string()
        } else {
            format!("{COMMAND} -- {}", self.s.args.join(" "))
        }
    }

    /// (label, value, met).
    fn targets(&self) -> Vec<(String, f64, bool)> {
        let mut out = Vec::new();
        let worst = self
            .s
            .concurrency
            .iter()
            .map(|&c| (c, self.ratio("seccomp", c)))
            .filter(|(_, r)| r.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((c, r)) = worst {
            out.push((
                format!(
                    "seccomp batch throughput / bare client throughput at the same concurrency, lowest over c = {} (at c = {c}) = {r:.2} (target ≥ {THROUGHPUT_TARGET:.2})",
                    self.s
                        .concurrency
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                r,
                r >= THROUGHPUT_TARGET,
            ));
        }
        for v in ["seccomp-nosync", "seccomp-tmpfs"] {
            let worst = self
                .s
                .concurrency
                .iter()
                .map(|&c| (c, self.ratio(v, c)))
                .filter(|(_, r)| r.is_finite())
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((c, r)) = worst {
                out.push((
                    format!("the same for {v}: lowest at c = {c}: {r:.2} (target ≥ {THROUGHPUT_TARGET:.2})"),
                    r,
                    r >= THROUGHPUT_TARGET,
                ));
            }
        }
        // Flat once warm: at first the allocator's arenas grow to what the
        // concurrency needs (at c = 16, measured: 13.5 MiB after 200 URLs,
        // 13.7 after 1000, then level at about 15.2 from 5000 on), so the
        // longest list is compared with the second shortest when there are
        // more than two (the shortest is shown too).
        let longest = self.memory.last();
        let base = match self.memory.len() {
            0..=2 => self.memory.first(),
            _ => self.memory.get(1),
        };
        if let (Some(a), Some(b)) = (base, longest) {
            if let (Some(ka), Some(kb)) = (a.peak_kib, b.peak_kib) {
                let r = kb as f64 / ka as f64;
                out.push((
                    format!(
                        "supervisor peak memory at {} URLs / at {} URLs (c = {}) = {:.1} / {:.1} MiB = {r:.2} (flat: target ≤ {FLAT_LIMIT:.2})",
                        b.urls,
                        a.urls,
                        self.s.memory_jobs,
                        mib(kb as f64),
                        mib(ka as f64)
                    ),
                    r,
                    r <= FLAT_LIMIT,
                ));
            }
        }
        out
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "Measured {} on: {}.\n",
            report::today(),
            report::machine()
        );
        let _ = writeln!(md, "```sh\n{}\n```\n", self.command());
        let _ = writeln!(
            md,
            "Rounds: {} (each: every concurrency, and at each {} in turn, in reverse order every other round; medians below), {:.0} s in all; load average {} the run. \
             Server: nginx 1.22 on 127.0.0.1 ({} worker processes), TLS 1.3, {PAGES} distinct {} KiB pages fetched by IP literal. \
             Transcripts go to a fresh directory per run on {}, each synced before it is kept, as in real use, and removed only at the end of the bench (seccomp-tmpfs: into /dev/shm; seccomp-nosync: `--no-sync`). \
             URLs per run: {}.\n",
            self.s.rounds,
            self.s.variants.join(", "),
            self.elapsed.as_secs_f64(),
            self.load,
            self.nginx_workers,
            PAGE_BYTES / 1024,
            self.fs_note,
            self.s
                .concurrency
                .iter()
                .map(|&c| format!("{} at c = {c}", urls_for(self.s, c)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        md.push_str(
            "| concurrency | bare signs/s | seccomp signs/s | ptrace signs/s | seccomp / bare | ptrace / bare \
             | seccomp peak RSS MiB | ptrace peak RSS MiB |\n|---|---|---|---|---|---|---|---|\n",
        );
        for &c in &self.s.concurrency {
            let _ = writeln!(
                md,
                "| {c} | {} | {} | {} | {} | {} | {} | {} |",
                fmt(self.rate("bare", c), 1),
                fmt(self.rate("seccomp", c), 1),
                fmt(self.rate("ptrace", c), 1),
                fmt(self.ratio("seccomp", c), 2),
                fmt(self.ratio("ptrace", c), 2),
                fmt(self.peak_mib("seccomp", c), 1),
                fmt(self.peak_mib("ptrace", c), 1),
            );
        }
        let others: Vec<&str> = self
            .s
            .variants
            .iter()
            .copied()
            .filter(|v| !VARIANTS.contains(v))
            .collect();
        if !others.is_empty() {
            md.push_str("\n| concurrency | variant | signs/s | / bare | peak RSS MiB | CPU ms per URL (all / supervisor) | / bare by CPU |\n|---|---|---|---|---|---|---|\n");
            for &c in &self.s.concurrency {
                for v in &others {
                    let (all, sup, _) = self.cpu_per_url(v, c);
                    let _ = writeln!(
                        md,
                        "| {c} | {v} | {} | {} | {} | {} / {} | {} |",
                        fmt(self.rate(v, c), 1),
                        fmt(self.ratio(v, c), 2),
                        fmt(self.peak_mib(v, c), 1),
                        fmt(all, 2),
                        fmt(sup, 2),
                        fmt(self.cpu_ratio(v, c), 2)
                    );
                }
            }
        }
        md.push_str(
            "\nsigns/s: URLs over the wall time of the whole run, from starting the process(es) to the last exit. \
             Peak RSS: the `sign --input` process's VmHWM (the supervisor alone: the clients are processes of their own).\n",
        );
        md.push_str("\n![batch signing throughput per concurrency](img/throughput.svg)\n\n");

        md.push_str(
            "CPU per URL (medians, ms): the clients' and the supervisor's together (wait4), the supervisor process's own \
             (/proc/PID/stat), and nginx's workers'. Last column: the seccomp / bare throughput ratio the CPU alone \
             predicts on a saturated machine, round by round (bare: its clients, the bench threads that start \
             them, nginx; seccomp: the supervisor with its clients, nginx); median. Not the target. Where it \
             agrees with the wall-time ratio, the machine is CPU-bound and a round's ratio moves with what \
             the CPUs spent, not with the clock; where CPUs sit idle (c = 1 here) it predicts nothing.\n\n\
             | concurrency | bare clients | bare launcher | seccomp all | seccomp supervisor | ptrace all | ptrace supervisor | nginx (bare / seccomp / ptrace) | seccomp / bare by CPU |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for &c in &self.s.concurrency {
            let (b, _, bn) = self.cpu_per_url("bare", c);
            let bl = self.median_of("bare", c, |s| Some(s.launcher_cpu_ms / s.urls as f64));
            let (s, ss, sn) = self.cpu_per_url("seccomp", c);
            let (p, ps, pn) = self.cpu_per_url("ptrace", c);
            let _ = writeln!(
                md,
                "| {c} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} |",
                fmt(b, 2),
                fmt(bl, 2),
                fmt(s, 2),
                fmt(ss, 2),
                fmt(p, 2),
                fmt(ps, 2),
                fmt(bn, 2),
                fmt(sn, 2),
                fmt(pn, 2),
                fmt(self.cpu_ratio("seccomp", c), 2)
            );
        }

        let _ = writeln!(
            md,
            "\nSupervisor memory against the length of the list ({}, c = {}, one run each; past {PAGES} URLs the pages repeat with distinct query strings):\n",
            self.s.memory_variant,
            self.s.memory_jobs
        );
        md.push_str("| URLs | peak RSS MiB | signs/s |\n|---|---|---|\n");
        for m in &self.memory {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                m.urls,
                m.peak_kib.map_or("-".into(), |k| fmt(mib(k as f64), 1)),
                fmt(m.rate(), 1)
            );
        }

        md.push_str("\nTargets:\n\n");
        for (label, _, met) in self.targets() {
            let _ = writeln!(md, "- {label}: {}", if met { "met" } else { "NOT met" });
        }
        let below: Vec<String> = self
            .s
            .concurrency
            .iter()
            .filter(|&&c| self.ratio("seccomp", c) < THROUGHPUT_TARGET)
            .map(ToString::to_string)
            .collect();
        if !below.is_empty() {
            let _ = writeln!(
                md,
                "\nseccomp is below {THROUGHPUT_TARGET:.2} × bare at c = {}.",
                below.join(", ")
            );
        }
        md
    }

    fn svg(&self) -> String {
        let series: Vec<report::Series> = self
            .s
            .variants
            .iter()
            .map(|&v| report::Series {
                name: match v {
                    "bare" => "bare client (no supervision)".into(),
                    "seccomp" => "sign --input, seccomp".into(),
                    "seccomp-nosync" => "sign --input --no-sync, seccomp".into(),
                    "seccomp-tmpfs" => "sign --input to tmpfs, seccomp".into(),
                    "seccomp-relay" => "sign --input --recorder relay, seccomp".into(),
                    "seccomp-exec" => "sign --input, seccomp, clients executed".into(),
                    "other" => "sign --input, seccomp, --other binary".into(),
                    _ => "sign --input, ptrace".into(),
                },
                points: self
                    .s
                    .concurrency
                    .iter()
                    .map(|&c| (c as f64, self.rate(v, c)))
                    .collect(),
            })
            .collect();
        report::line_svg(&report::LinePlot {
            title: "Batch signing throughput (median signs/s)",
            x_label: "concurrency (clients at once)",
            y_label: "signs per second",
            log2_x: true,
            series: &series,
        })
    }
}

fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}
