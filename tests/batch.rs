//! Batches: `sign --input URLS --out-dir DIR` and `verify FILE...` /
//! `verify --input LIST`, against real servers on 127.0.0.1.
//!
//! What each test checks: the manifest (every URL exactly once, with the
//! right status, and in agreement with the files in DIR both ways), the
//! exit codes, that a rerun resumes (skips what was signed, retries what
//! failed), Ctrl-C (exit 130, nothing partial, no client left running),
//! retries of transient failures only, `--per-host`, `--shard`, batch
//! verify with bad members, bad options, running as `nobody`, and odd
//! input lines.
//!
//! Four tests pin bugs these tests found (and that are fixed): a stop after
//! the input was read exiting 0, for sign and verify; a Ctrl-C to the
//! process group exiting 4; a missing --out-dir not named.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::proxy::{ConcurrencyProbe, ResetProxy};
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A test's directory and PKI.
fn setup() -> (tempfile::TempDir, Pki) {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    (dir, pki)
}

fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// `https://tlsign.test:PORT{path}`: every server here has a certificate
/// for tlsign.test; pair with [`resolve`].
fn url(port: u16, path: &str) -> String {
    format!("https://tlsign.test:{port}{path}")
}

fn resolve(port: u16) -> String {
    format!("tlsign.test:{port}:127.0.0.1")
}

/// The arguments `sign --input LIST --out-dir OUT --ca-file CA --progress
/// quiet`.
fn batch_args(list: &Path, out: &Path, pki: &Pki) -> Vec<OsString> {
    let mut a: Vec<OsString> = ["sign", "--input"].map(OsString::from).to_vec();
    a.push(list.into());
    a.push("--out-dir".into());
    a.push(out.into());
    a.push("--ca-file".into());
    a.push(pki.ca.clone().into());
    a.extend(["--progress", "quiet"].map(OsString::from));
    a
}

/// [`batch_args`] as a command; add `--resolve` and the rest before
/// `run()`.
fn batch_sign(list: &Path, out: &Path, pki: &Pki) -> Cmd {
    Cmd::tlsign().args(batch_args(list, out, pki))
}

/// `n` distinct URLs of `nginx` (`/?KEY=0` to `/?KEY=n-1`), and the list
/// of them written to `dir/urls.txt`.
fn query_list(nginx: &Nginx, dir: &Path, key: &str, n: usize) -> (Vec<String>, PathBuf) {
    let urls: Vec<String> = (0..n).map(|i| nginx.url(&format!("/?{key}={i}"))).collect();
    let list = write_list(dir, "urls.txt", &urls);
    (urls, list)
}

/// Writes `urls`, one per line, to `dir/name` and returns its path.
fn write_list(dir: &Path, name: &str, urls: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = urls.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    path
}

/// Every line of OUT/manifest.jsonl, parsed.
#[track_caller]
fn manifest(out: &Path) -> Vec<Value> {
    let path = out.join("manifest.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the manifest ends in half a line: {text:?}"
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a manifest line is not JSON ({e}): {l:?}"))
        })
        .collect()
}

/// JSON Lines `text` by `key`, asserting each key appears once.
#[track_caller]
fn lines_by(text: &str, key: &str) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for l in text.lines() {
        let v: Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("a line is not JSON ({e}): {l:?}"));
        let k = str_field(&v, key).to_string();
        if let Some(old) = map.insert(k.clone(), v) {
            panic!("{key} {k} appears twice: {old} and {l}");
        }
    }
    map
}

/// The manifest's lines by URL, each URL exactly once.
#[track_caller]
fn manifest_by_url(out: &Path) -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    manifest(out); // whole lines only
    lines_by(&text, "url")
}

#[track_caller]
fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {v}"))
}

#[track_caller]
fn num_field(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {v}"))
}

/// The names in `dir`.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The transcripts in `dir`.
fn transcripts(dir: &Path) -> BTreeSet<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".tlsign") && !n.starts_with('.'))
        .collect()
}

/// No temporary file, and nothing but transcripts, the manifest and its
/// lock, in `dir`.
#[track_caller]
fn assert_clean(dir: &Path) {
    for n in names(dir) {
        let expected = (n.ends_with(".tlsign") && !n.starts_with('.'))
            || n == "manifest.jsonl"
            || n == ".manifest.jsonl.lock";
        assert!(
            expected && !n.contains(".tmp"),
            "unexpected file {n:?} left in {}",
            dir.display()
        );
    }
}

/// Manifest and files agree both ways: each line with a file names a
/// transcript in `out` (and a failed line names none), and each transcript
/// in `out` has exactly one line.
#[track_caller]
fn assert_manifest_matches_files(out: &Path) {
    let lines = manifest(out);
    let mut named = BTreeMap::<String, usize>::new();
    for l in &lines {
        match str_field(l, "status") {
            "failed" => assert!(l.get("file").is_none(), "a failed line names a file: {l}"),
            "ok" | "http_error" => {
                let f = str_field(l, "file");
                assert!(
                    out.join(f).is_file(),
                    "{f} is in the manifest but not in DIR: {l}"
                );
                *named.entry(f.to_string()).or_default() += 1;
            }
            s => panic!("status {s:?}: {l}"),
        }
    }
    for f in transcripts(out) {
        assert_eq!(
            named.get(&f).copied().unwrap_or(0),
            1,
            "{f} is in DIR but has not exactly one manifest line"
        );
    }
}

/// (inode, mtime in ns) of every transcript in `dir`.
fn stamps(dir: &Path) -> BTreeMap<String, (u64, i64)> {
    transcripts(dir)
        .into_iter()
        .map(|n| {
            let m = std::fs::metadata(dir.join(&n)).unwrap();
            let t = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            (n, (m.ino(), t))
        })
        .collect()
}

/// `verify --ca-file CA -j 4 --progress quiet FILE...`, report on stdout.
fn batch_verify(files: &[PathBuf], pki: &Pki) -> Cmd {
    Cmd::tlsign()
        .arg("verify")
        .arg("--ca-file")
        .arg(&pki.ca)
        .args(["-j", "4", "--progress", "quiet"])
        .args(files)
}

/// Runs `cmd` with `input` fed to its standard input through a pipe.
fn with_stdin(cmd: Cmd, dir: &Path, input: &[u8]) -> Cmd {
    let file = tempfile::NamedTempFile::new_in(dir).unwrap();
    std::fs::write(file.path(), input).unwrap();
    let (_, path) = file.keep().unwrap();
    cmd.env("BATCH_TEST_STDIN", path).wrapped([
        "sh",
        "-c",
        "cat \"$BATCH_TEST_STDIN\" | \"$@\"",
        "sh",
    ])
}

/// Processes (other than this one) with an argument containing `marker`.
fn processes_with(marker: &str) -> Vec<(i32, String)> {
    processes_where(|args| args.iter().any(|a| a.contains(marker)))
}

/// A batch started in the background, in its own process group, with its
/// output in files; killed (the whole group) on drop if still running.
struct Background {
    child: Child,
    stderr: PathBuf,
}

impl Background {
    /// Starts the binary with `args`.
    fn spawn(args: &[OsString], dir: &Path, name: &str) -> Background {
        Background::spawn_env(args, dir, name, &[])
    }

    /// The same with `env` added to the environment.
    fn spawn_env(args: &[OsString], dir: &Path, name: &str, env: &[(&str, &str)]) -> Background {
        let (stdout, stderr) = (
            dir.join(format!("{name}.stdout")),
            dir.join(format!("{name}.stderr")),
        );
        let mut c = std::process::Command::new(bin());
        c.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .process_group(0);
        let child = c.spawn().expect("start the binary");
        Background { child, stderr }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the batch alone, or to its whole process group
    /// (as a terminal's Ctrl-C does).
    fn signal(&self, signal: i32, group: bool) {
        let pid = if group { -self.pid() } else { self.pid() };
        // SAFETY: kill has no memory-safety preconditions; the pid (or
        // group) is our own unreaped child's, so it cannot have been
        // reused.
        unsafe { libc::kill(pid, signal) };
    }

    /// Waits up to `limit` for the exit; its code and stderr.
    fn wait(&mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                self.signal(libc::SIGKILL, true);
                let _ = self.child.wait();
                panic!(
                    "the batch still ran after {limit:?}; stderr:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        (
            status.code(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGKILL, true);
            let _ = self.child.wait();
        }
    }
}

/// Fails (after killing them) if processes with `marker` in their command
/// line are still there a second after the batch exited.
#[track_caller]
fn assert_no_process_with(marker: &str) {
    let left = left_running(|| processes_with(marker));
    assert!(
        left.is_empty(),
        "the batch exited but left processes running: {left:?}"
    );
}

/// What a URL of the mixed batch must end as.
#[derive(Clone, Debug)]
enum Want {
    /// Signed, 200, with this body.
    Ok(Vec<u8>),
    /// Signed, with a 404.
    NotFound,
    /// Failed, with an error mentioning one of these (case-insensitive).
    Failed(&'static [&'static str]),
}

/// A few hundred URLs to one nginx (distinct pages), mixed with a refused
/// port, an expired certificate, missing pages and a server that never
/// answers: every URL ends in the manifest once, with the right status;
/// the transcripts verify as a batch and match the manifest; a rerun skips
/// what was signed and retries only the failures.
#[test]
fn mixed_batch_manifest_verify_and_rerun() {
    let (dir, pki) = setup();
    let d = dir.path();
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    let expired = Nginx::start(d, &pki, Cert::Expired);
    let silent = SilentServer::start();
    let refused = free_port();

    // 300 pages, each different.
    let pages = nginx.site().root.join("p");
    std::fs::create_dir(&pages).unwrap();
    let mut want: Vec<(String, Want)> = Vec::new();
    for i in 0..300 {
        let body = format!("<p>batch page {i}</p>\n").repeat(1 + i % 5);
        std::fs::write(pages.join(format!("{i}.html")), &body).unwrap();
        want.push((
            url(nginx.port(), &format!("/p/{i}.html")),
            Want::Ok(body.into_bytes()),
        ));
    }
    let failures = [
        (url(refused, "/a"), Want::Failed(&["refused"])),
        (url(refused, "/b"), Want::Failed(&["refused"])),
        (url(expired.port(), "/"), Want::Failed(&["expired"])),
        (url(expired.port(), "/x"), Want::Failed(&["expired"])),
        (url(nginx.port(), "/missing/1"), Want::NotFound),
        (url(nginx.port(), "/missing/2"), Want::NotFound),
        (url(nginx.port(), "/p/300.html"), Want::NotFound),
        (url(silent.port(), "/stall"), Want::Failed(&["timed out"])),
    ];
    // Spread through the list, not bunched at one end.
    for (k, f) in failures.iter().enumerate() {
        want.insert(7 + k * 37, f.clone());
    }
    let urls: Vec<String> = want.iter().map(|(u, _)| u.clone()).collect();
    let list = write_list(d, "urls.txt", &urls);
    let out = d.join("out");
    let run = || {
        batch_sign(&list, &out, &pki)
            .args(["-j", "8", "--per-host", "8", "--timeout", "5"])
            .args(["--resolve", &nginx.resolve()])
            .args(["--resolve", &expired.resolve()])
            .args(["--resolve", &resolve(silent.port())])
            .args(["--resolve", &resolve(refused)])
            .timeout(Duration::from_secs(120))
            .run()
    };

    let r = run();
    r.assert_code(3);
    assert_clean(&out);
    assert_manifest_matches_files(&out);
    let lines = manifest_by_url(&out);
    assert_eq!(
        lines.keys().collect::<BTreeSet<_>>(),
        urls.iter().collect::<BTreeSet<_>>(),
        "the manifest's URLs are not the input's"
    );
    let line_no: BTreeMap<&str, u64> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| (u.as_str(), i as u64 + 1))
        .collect();
    let mut kept = Vec::new();
    for (u, w) in &want {
        let l = &lines[u];
        assert_eq!(num_field(l, "line"), line_no[u.as_str()], "{l}");
        assert!(num_field(l, "attempts") >= 1, "{l}");
        l["duration_ms"].as_u64().unwrap_or_else(|| panic!("{l}"));
        match w {
            Want::Ok(body) => {
                assert_eq!(str_field(l, "status"), "ok", "{l}");
                assert_eq!(num_field(l, "http_status"), 200, "{l}");
                assert_eq!(num_field(l, "body_bytes"), body.len() as u64, "{l}");
                assert_eq!(str_field(l, "body_sha256"), sha256_hex(body), "{l}");
                assert_eq!(num_field(l, "attempts"), 1, "{l}");
                str_field(l, "signed_at");
                kept.push(out.join(str_field(l, "file")));
            }
            Want::NotFound => {
                assert_eq!(str_field(l, "status"), "http_error", "{l}");
                assert_eq!(num_field(l, "http_status"), 404, "{l}");
                assert!(str_field(l, "error").contains("404"), "{l}");
                // 404 is not "try again later".
                assert_eq!(num_field(l, "attempts"), 1, "{l}");
                kept.push(out.join(str_field(l, "file")));
                assert!(
                    r.stderr.contains(u.as_str()),
                    "stderr does not name the HTTP error {u}: {}",
                    r.describe()
                );
            }
            Want::Failed(words) => {
                assert_eq!(str_field(l, "status"), "failed", "{l}");
                let e = str_field(l, "error").to_lowercase();
                assert!(
                    words.iter().any(|w| e.contains(w)),
                    "{u}: want an error mentioning one of {words:?}: {l}"
                );
                for k in ["file", "http_status", "body_sha256"] {
                    assert!(l.get(k).is_none(), "a failed line has {k}: {l}");
                }
                assert!(
                    r.stderr.contains(u.as_str()),
                    "stderr does not name the failure {u}: {}",
                    r.describe()
                );
            }
        }
    }
    assert_eq!(kept.len(), 303);
    assert_eq!(transcripts(&out).len(), 303);
    r.assert_stderr_mentions(
        "signed 308 URL(s): 300 ok, 3 HTTP error, 5 failed, 0 skipped (already signed)",
    );

    // Every transcript verifies, as one batch, and says what the manifest
    // says.
    let v = batch_verify(&kept, &pki)
        .timeout(Duration::from_secs(120))
        .run();
    v.assert_code(0);
    let report = lines_by(&v.stdout_str(), "file");
    assert_eq!(
        report.keys().map(PathBuf::from).collect::<BTreeSet<_>>(),
        kept.iter().cloned().collect::<BTreeSet<_>>(),
        "the report does not cover every file"
    );
    for l in lines.values().filter(|l| l.get("file").is_some()) {
        let file = out.join(str_field(l, "file"));
        let rl = &report[&file.display().to_string()];
        assert_eq!(str_field(rl, "status"), "verified", "{rl}");
        assert_eq!(str_field(rl, "url"), str_field(l, "url"), "{rl}");
        assert_eq!(rl["http_status"], l["http_status"], "{rl} vs {l}");
        assert_eq!(rl["body_sha256"], l["body_sha256"], "{rl} vs {l}");
        assert_eq!(rl["signed_at"], l["signed_at"], "{rl} vs {l}");
    }
    v.assert_stderr_mentions("checked 303 transcript(s): 303 verified, 0 did not");

    // Rerun: what was signed is skipped and left alone; only the failures
    // are tried again.
    let before = stamps(&out);
    let signed_lines: Vec<String> = std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"status\":\"failed\""))
        .map(str::to_string)
        .collect();
    assert_eq!(signed_lines.len(), 303);
    let r2 = run();
    r2.assert_code(3);
    r2.assert_stderr_mentions("signed 5 URL(s): 0 ok, 5 failed, 303 skipped (already signed)");
    assert_eq!(stamps(&out), before, "a rerun touched signed transcripts");
    assert_clean(&out);
    assert_manifest_matches_files(&out);
    let lines2 = manifest_by_url(&out);
    assert_eq!(
        lines2.len(),
        urls.len(),
        "each URL exactly once after a rerun"
    );
    let text2 = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    for l in &signed_lines {
        assert!(text2.lines().any(|x| x == l), "a rerun lost or changed {l}");
    }
    for (u, w) in &want {
        if let Want::Failed(_) = w {
            assert_eq!(str_field(&lines2[u], "status"), "failed", "{}", lines2[u]);
            assert!(r2.stderr.contains(u.as_str()), "{}", r2.describe());
        } else {
            assert!(
                !r2.stderr.contains(u.as_str()),
                "{u} retried: {}",
                r2.describe()
            );
        }
    }
}

/// A unique string for the URLs of one batch, hence for the command lines
/// of its clients.
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// The client zygote a batch (`parent`) started, if it runs: the process
/// showing `__zygote` whose parent is the batch.
fn zygote_of(parent: i32) -> Option<i32> {
    processes_where(|args| args.iter().any(|a| a == "__zygote"))
        .into_iter()
        .map(|(pid, _)| pid)
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["PPid:", &parent.to_string()])
        })
}

/// Whether `pid` is still a client zygote (not gone, not reused).
fn is_zygote(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|&b| b == 0).any(|a| a == b"__zygote"))
        .unwrap_or(false)
}

/// Starts a batch of `n` URLs to `nginx` (each with `marker`) into `out`,
/// interrupts it with SIGINT once it has signed something and is running
/// clients (to the batch alone, or to its whole process group as a
/// terminal's Ctrl-C does), and checks what it left: exit 130, nothing
/// partial, the manifest and the files agreeing, only ok lines, no client
/// left running. Returns the batch's arguments, its URLs and how many it
/// signed.
fn interrupt_mid_batch(
    d: &Path,
    pki: &Pki,
    nginx: &Nginx,
    out: &Path,
    n: usize,
    after: Duration,
    group: bool,
) -> (Vec<OsString>, Vec<String>, usize) {
    let marker = marker("interrupt");
    let urls: Vec<String> = (0..n)
        .map(|i| nginx.url(&format!("/?n={i}&tag={marker}")))
        .collect();
    let list = write_list(d, "urls.txt", &urls);
    let mut args = batch_args(&list, out, pki);
    args.extend(["-j", "4", "--timeout", "20", "--resolve"].map(OsString::from));
    args.push(nginx.resolve().into());

    let mut bg = Background::spawn(&args, d, "interrupted");
    let started = Instant::now();
    let mut clients_seen = false;
    let mut zygote = None;
    loop {
        // Control: the orphan check below looks for these.
        clients_seen = clients_seen || !processes_with(&marker).is_empty();
        zygote = zygote.or_else(|| zygote_of(bg.pid()));
        let done = std::fs::read_to_string(out.join("manifest.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if started.elapsed() > after && done >= 1 && clients_seen {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no URL signed in 30 s, or no client seen (clients seen: {clients_seen})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    bg.signal(libc::SIGINT, group);
    let (code, stderr) = bg.wait(Duration::from_secs(20));
    assert_no_process_with(&marker);
    // The zygote the clients were forked from went with the batch.
    let zygote = zygote.expect("the batch's client zygote was never seen");
    assert!(
        !is_zygote(zygote),
        "the client zygote {zygote} outlived its batch"
    );
    assert_clean(out);
    assert_manifest_matches_files(out);
    assert_eq!(
        code,
        Some(130),
        "SIGINT to the {}: stderr:\n{stderr}",
        if group { "process group" } else { "batch" }
    );
    assert!(stderr.contains("interrupted"), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
    let lines = manifest(out);
    assert!(
        (1..urls.len()).contains(&lines.len()),
        "the interrupt did not come mid-batch: {} of {} lines",
        lines.len(),
        urls.len()
    );
    for l in &lines {
        assert_eq!(
            str_field(l, "status"),
            "ok",
            "an interrupted client got a line: {l}"
        );
    }
    let signed = transcripts(out);
    assert_eq!(signed.len(), lines.len());
    // Whole transcripts only.
    for n in &signed {
        read_transcript(&out.join(n));
    }
    (args, urls, signed.len())
}

/// The client zygote killed in the middle of a batch: the clients it was
/// running fail (their parent-death signal kills them) and are reported,
/// a new zygote serves the rest, nothing is left running or half-written,
/// and a rerun signs what failed.
#[test]
fn a_killed_zygote_fails_only_its_running_clients() {
    let (dir, pki) = setup();
    let d = dir.path();
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    let out = d.join("out");
    let marker = marker("zygote");
    let urls: Vec<String> = (0..600)
        .map(|i| nginx.url(&format!("/?n={i}&tag={marker}")))
        .collect();
    let list = write_list(d, "urls.txt", &urls);
    let mut args = batch_args(&list, &out, &pki);
    args.extend(["-j", "4", "--retries", "0", "--resolve"].map(OsString::from));
    args.push(nginx.resolve().into());
    let mut bg = Background::spawn(&args, d, "zygote-killed");
    let started = Instant::now();
    let first = loop {
        let done = std::fs::read_to_string(out.join("manifest.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if let Some(z) = zygote_of(bg.pid()).filter(|_| done >= 20) {
            break z;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no zygote or no progress in 30 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    // SAFETY: kill has no memory-safety preconditions; `first` was just
    // seen as this batch's zygote, its child, which it has not reaped.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let (code, stderr) = bg.wait(Duration::from_secs(60));
    assert_no_process_with(&marker);
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
    assert_clean(&out);
    assert_manifest_matches_files(&out);
    let by_url = manifest_by_url(&out);
    assert_eq!(by_url.len(), urls.len(), "every URL has one line");
    let failed: Vec<&Value> = by_url
        .values()
        .filter(|l| str_field(l, "status") != "ok")
        .collect();
    // At most the -j clients running when it died; the batch went on.
    assert!(failed.len() <= 4, "{} failed: {failed:?}", failed.len());
    // Killed, said either way: by its signal, or (killed while its connect
    // waited for the supervisor) by the connect it never finished.
    for l in &failed {
        let e = str_field(l, "error");
        assert!(
            e.contains("SIGKILL") || e.contains("was withdrawn before it was answered"),
            "{l}"
        );
    }
    assert_eq!(
        code,
        Some(if failed.is_empty() { 0 } else { 3 }),
        "stderr:\n{stderr}"
    );
    let r = Cmd::tlsign()
        .args(&args)
        .timeout(Duration::from_secs(120))
        .run();
    r.assert_code(0);
    assert_eq!(transcripts(&out).len(), urls.len());
}

/// SIGINT in the middle of a large batch: exit 130, no partial file, the
/// manifest and the files agree, no client left running (the batch kills
/// them itself: the signal reaches it alone); a rerun finishes the list
/// and every transcript verifies.
#[test]
fn interrupted_batch_is_consistent_and_resumes() {
    let (dir, pki) = setup();
    let d = dir.path();
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    let out = d.join("out");
    let (args, urls, first) = interrupt_mid_batch(
        d,
        &pki,
        &nginx,
        &out,
        // Far more than can be signed before the signal, on any machine.
        1500,
        Duration::from_millis(700),
        false,
    );

    // Resume.
    let r = Cmd::tlsign()
        .args(&args)
        .timeout(Duration::from_secs(120))
        .run();
    r.assert_code(0);
    r.assert_stderr_mentions(&format!(
        "URL(s): {} ok, 0 failed, {first} skipped (already signed)",
        urls.len() - first
    ));
    assert_clean(&out);
    assert_manifest_matches_files(&out);
    let by_url = manifest_by_url(&out);
    assert_eq!(
        by_url.keys().collect::<BTreeSet<_>>(),
        urls.iter().collect::<BTreeSet<_>>()
    );
    assert!(by_url.values().all(|l| str_field(l, "status") == "ok"));
    assert_eq!(transcripts(&out).len(), urls.len());

    // A sample verifies (every transcript of a batch is verified in
    // mixed_batch_manifest_verify_and_rerun), fed as a list.
    let sample: Vec<PathBuf> = transcripts(&out)
        .iter()
        .step_by(10)
        .map(|n| out.join(n))
        .collect();
    let listed = d.join("files.txt");
    std::fs::write(
        &listed,
        sample
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect::<String>(),
    )
    .unwrap();
    let v = Cmd::tlsign()
        .arg("verify")
        .arg("--input")
        .arg(&listed)
        .arg("--ca-file")
        .arg(&pki.ca)
        .args(["-j", "4", "--progress", "quiet"])
        .run();
    v.assert_code(0);
    let report = lines_by(&v.stdout_str(), "file");
    assert_eq!(report.len(), sample.len());
    assert!(report
        .values()
        .all(|l| str_field(l, "status") == "verified"));
}

/// Ctrl-C at a terminal: SIGINT to the whole process group, clients
/// included, at a few moments of a batch. Each time: exit 130 and a
/// consistent directory.
#[test]
fn ctrl_c_to_the_process_group_exits_130() {
    let (dir, pki) = setup();
    let d = dir.path();
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    for k in 0..20 {
        let out = d.join(format!("out-{k}"));
        let after = Duration::from_millis(200 + 29 * k);
        // Far more than can be signed before the signal, on any machine.
        interrupt_mid_batch(d, &pki, &nginx, &out, 3000, after, true);
    }
}

/// `--shard 0/2` and `--shard 1/2` into one DIR: each signs its part (with
/// a manifest of its own), together all of the list, none twice.
#[test]
fn shards_split_a_list() {
    let (dir, pki) = setup();
    let d = dir.path();
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    let (urls, list) = query_list(&nginx, d, "shard", 24);
    let out = d.join("out");
    let mut seen = BTreeMap::new();
    for k in 0..2 {
        let r = batch_sign(&list, &out, &pki)
            .args(["--shard", &format!("{k}/2"), "--resolve", &nginx.resolve()])
            .run();
        r.assert_code(0);
        let text = std::fs::read_to_string(out.join(format!("manifest-{k}-of-2.jsonl"))).unwrap();
        let lines = lines_by(&text, "url");
        assert!(
            (1..urls.len()).contains(&lines.len()),
            "shard {k}/2 signed {} of {} URLs",
            lines.len(),
            urls.len()
        );
        r.assert_stderr_mentions(&format!(
            "{} ok, 0 failed, 0 skipped (already signed), {} for other shards",
            lines.len(),
            urls.len() - lines.len()
        ));
        for (u, l) in lines {
            assert_eq!(str_field(&l, "status"), "ok", "{l}");
            assert!(out.join(str_field(&l, "file")).is_file(), "{l}");
            assert!(
                seen.insert(u.clone(), k).is_none(),
                "{u} signed by both shards"
            );
        }
    }
    assert_eq!(
        seen.keys().collect::<BTreeSet<_>>(),
        urls.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(transcripts(&out).len(), urls.len());
}

/// A reset is transient: tried again after 1 s, then 2 s, until a later
/// connection gets through (or the retries run out). A refused connection
/// is not tried again.
#[test]
fn transient_resets_are_retried_and_refusals_are_not() {
    let (dir, pki) = setup();
    let d = dir.path();
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    let flaky = ResetProxy::start(nginx.addr(), 2);
    let dead = ResetProxy::start(nginx.addr(), usize::MAX);
    let refused = free_port();
    let (u_flaky, u_dead, u_refused) = (
        url(flaky.port(), "/"),
        url(dead.port(), "/"),
        url(refused, "/"),
    );
    let list = write_list(
        d,
        "urls.txt",
        &[u_flaky.clone(), u_dead.clone(), u_refused.clone()],
    );
    let out = d.join("out");
    // The default --retries (2).
    let r = batch_sign(&list, &out, &pki)
        .args(["--timeout", "20"])
        .args(["--resolve", &resolve(flaky.port())])
        .args(["--resolve", &resolve(dead.port())])
        .args(["--resolve", &resolve(refused)])
        .run();
    r.assert_code(3);
    let lines = manifest_by_url(&out);
    assert_eq!(lines.len(), 3);

    let l = &lines[&u_flaky];
    assert_eq!(str_field(l, "status"), "ok", "{l}\n{}", r.describe());
    assert_eq!(num_field(l, "attempts"), 3, "{l}");
    assert!(
        num_field(l, "duration_ms") >= 3000,
        "two backoffs (1 s, 2 s) took less than 3 s: {l}"
    );
    assert_eq!(flaky.accepted(), 3);

    let l = &lines[&u_dead];
    assert_eq!(str_field(l, "status"), "failed", "{l}");
    assert_eq!(num_field(l, "attempts"), 3, "1 + --retries 2: {l}");
    assert!(
        str_field(l, "error").to_lowercase().contains("reset"),
        "{l}"
    );
    assert_eq!(dead.accepted(), 3);

    let l = &lines[&u_refused];
    assert_eq!(str_field(l, "status"), "failed", "{l}");
    assert_eq!(num_field(l, "attempts"), 1, "a refusal was retried: {l}");
    assert!(
        str_field(l, "error").to_lowercase().contains("refused"),
        "{l}"
    );

    // What got through after the resets is a transcript like any other.
    let file = out.join(str_field(&lines[&u_flaky], "file"));
    assert_bytes_eq(
        "verified body",
        &verify_ok(&file, &pki),
        &nginx.site().index,
    );

    // --retries 0: one attempt only.
    let out0 = d.join("out0");
    let list0 = write_list(d, "dead.txt", std::slice::from_ref(&u_dead));
    let r = batch_sign(&list0, &out0, &pki)
        .args(["--retries", "0", "--timeout", "20"])
        .args(["--resolve", &resolve(dead.port())])
        .run();
    r.assert_code(3);
    assert_eq!(num_field(&manifest_by_url(&out0)[&u_dead], "attempts"), 1);
}

/// `--per-host 2`: never more than two connections to one host at once,
/// however many jobs; two host names (on one server) get two each.
#[test]
fn per_host_limit_is_per_host() {
    let (dir, pki) = setup();
    let d = dir.path();
    // Signs 8 URLs (made for the probe's port) at --per-host 2 -j 8; the
    // most connections the probe saw at once.
    let peak = |name: &str, urls: &dyn Fn(u16) -> Vec<String>| {
        let probe = ConcurrencyProbe::start(Duration::from_millis(700));
        let port = probe.port();
        let urls = urls(port);
        let list = write_list(d, &format!("{name}.txt"), &urls);
        let r = batch_sign(&list, &d.join(name), &pki)
            .args(["-j", "8", "--per-host", "2", "--retries", "0"])
            .args(["--timeout", "20", "--resolve", &resolve(port)])
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .run();
        // The probe speaks no TLS: every sign fails, after holding its
        // connection for a while.
        r.assert_code(3);
        assert_eq!(manifest(&d.join(name)).len(), urls.len(), "{name}");
        assert_eq!(probe.total(), urls.len(), "{name}: one connection per URL");
        probe.peak()
    };

    let one = peak("one", &|port| {
        (0..8).map(|i| url(port, &format!("/{i}"))).collect()
    });
    assert_eq!(
        one, 2,
        "8 URLs on one host at --per-host 2 -j 8: want at most 2 connections at once (and 2 seen)"
    );

    let two = peak("two", &|port| {
        (0..8)
            .map(|i| match i % 2 {
                0 => url(port, &format!("/{i}")),
                _ => format!("https://localhost:{port}/{i}"),
            })
            .collect()
    });
    assert!(
        (3..=4).contains(&two),
        "two hosts at --per-host 2: want 3 or 4 connections at once, saw {two}"
    );
}

/// `verify --input -` with a good, a tampered, a garbage and a missing
/// transcript, and `--report FILE`: exit 1, one line each with the right
/// status, nothing on stdout.
#[test]
fn verify_batch_with_bad_members() {
    let (dir, pki) = setup();
    let d = dir.path();
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    let good = d.join("good.tlsign");
    let t = sign_ok(&nginx, &pki, "/", &good);
    nginx.stop();
    let tampered = d.join("tampered.tlsign");
    let half = server_bytes(&t.connections[0]).len() / 2;
    write_transcript(&tampered, &flip_stream(&t, Side::Server, half));
    let garbage = d.join("garbage.tlsign");
    std::fs::write(&garbage, b"TLSIGN? no, just some garbage bytes\x00\xff").unwrap();
    let missing = d.join("missing.tlsign");

    let reports = d.join("reports");
    std::fs::create_dir(&reports).unwrap();
    let report = reports.join("report.jsonl");
    let list: String = [&good, &tampered, &garbage, &missing]
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    let cmd = Cmd::tlsign()
        .args(["verify", "--input", "-", "--progress", "quiet", "--report"])
        .arg(&report)
        .arg("--ca-file")
        .arg(&pki.ca);
    let r = with_stdin(cmd, d, list.as_bytes()).run();
    r.assert_code(1);
    assert!(
        r.stdout.is_empty(),
        "stdout with --report: {}",
        r.describe()
    );
    r.assert_stderr_mentions("checked 4 transcript(s): 1 verified, 3 did not");
    let text = std::fs::read_to_string(&report).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    let lines = lines_by(&text, "file");
    let status = |p: &Path| str_field(&lines[&p.display().to_string()], "status").to_string();
    assert_eq!(status(&good), "verified");
    assert_eq!(status(&tampered), "failed");
    assert_eq!(status(&garbage), "unreadable");
    assert_eq!(status(&missing), "unreadable");
    let g = &lines[&good.display().to_string()];
    assert_eq!(str_field(g, "body_sha256"), sha256_hex(&t.response.body));
    assert_eq!(num_field(g, "http_status"), 200);
    for p in [&tampered, &garbage, &missing] {
        let l = &lines[&p.display().to_string()];
        assert!(!str_field(l, "error").is_empty(), "{l}");
        assert!(
            r.stderr.contains(&p.display().to_string()),
            "{}",
            r.describe()
        );
    }
    // The report is written atomically: nothing else in its directory.
    assert_eq!(
        names(&reports),
        BTreeSet::from(["report.jsonl".to_string()])
    );
}

/// Bad options and inputs: exit 2, one `error: ` line, no panic.
#[test]
fn bad_batch_options_exit_2() {
    let (dir, pki) = setup();
    let d = dir.path();
    let list = write_list(d, "urls.txt", &["https://tlsign.test:1/".to_string()]);
    let out = d.join("out");
    let cases: Vec<(&str, Cmd, &str)> = vec![
        (
            "missing --input file",
            batch_sign(&d.join("no-such-list"), &out, &pki),
            "no-such-list",
        ),
        (
            "--shard 4/4",
            batch_sign(&list, &out, &pki).args(["--shard", "4/4"]),
            "shard",
        ),
        (
            "-j 0",
            batch_sign(&list, &out, &pki).args(["-j", "0"]),
            "jobs",
        ),
        (
            "--input without --out-dir",
            Cmd::tlsign().arg("sign").arg("--input").arg(&list),
            // It should name --out-dir too: see
            // missing_out_dir_is_named_in_the_error.
            "required",
        ),
        (
            "verify --body with two files",
            Cmd::tlsign().args(["verify", "--body", "x", "a", "b"]),
            "body",
        ),
        (
            "verify -j 0",
            Cmd::tlsign().args(["verify", "-j", "0", "a", "b"]),
            "jobs",
        ),
        (
            "verify --input of a missing list",
            Cmd::tlsign()
                .args(["verify", "--input"])
                .arg(d.join("no-such-files")),
            "no-such-files",
        ),
    ];
    for (what, cmd, word) in cases {
        let r = cmd.run();
        assert_eq!(r.code, Some(2), "{what}: {}", r.describe());
        r.assert_one_error_line();
        r.assert_stderr_mentions(word);
    }

    // A second batch on a DIR that one is using.
    let silent = SilentServer::start();
    let stall = write_list(d, "stall.txt", &[url(silent.port(), "/")]);
    let busy = d.join("busy");
    let mut args = batch_args(&stall, &busy, &pki);
    args.extend(["--timeout", "60", "--resolve"].map(OsString::from));
    args.push(resolve(silent.port()).into());
    let mut first = Background::spawn(&args, d, "first");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !busy.join(".manifest.jsonl.lock").exists() {
        assert!(Instant::now() < deadline, "the first batch took no lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let r = batch_sign(&list, &busy, &pki).run();
    assert_eq!(r.code, Some(2), "{}", r.describe());
    r.assert_one_error_line();
    r.assert_stderr_mentions("in use by another batch");
    // The first goes on until stopped: SIGTERM (to it alone) stops it like
    // Ctrl-C, and the stalled URL gets no line. (Its exit code should be
    // 130: see interrupted_sign_after_the_input_is_read_exits_130.)
    first.signal(libc::SIGTERM, false);
    let (code, stderr) = first.wait(Duration::from_secs(20));
    assert!(matches!(code, Some(0 | 130)), "stderr:\n{stderr}");
    assert!(manifest(&busy).is_empty(), "{:?}", manifest(&busy));
    assert_clean(&busy);
    assert_no_process_with(&format!("tlsign.test:{}/", silent.port()));
    // And the directory is free again.
    let r = batch_sign(&list, &busy, &pki)
        .args(["--timeout", "5"])
        .run();
    r.assert_code(3);
    assert_eq!(manifest(&busy).len(), 1);
}

/// A batch of one URL to a server that never answers, started in the
/// background with `env` added, once its client runs.
struct Stalled {
    bg: Background,
    /// The batch's arguments.
    args: Vec<OsString>,
    /// In the URL, hence in the client's command line.
    marker: String,
    clients: Vec<(i32, String)>,
    out: PathBuf,
    _server: SilentServer,
}

impl Stalled {
    fn start(d: &Path, pki: &Pki, env: &[(&str, &str)]) -> Stalled {
        let server = SilentServer::start();
        let marker = marker("stall");
        let list = write_list(d, "stall.txt", &[url(server.port(), &format!("/{marker}"))]);
        let out = d.join("out");
        let mut args = batch_args(&list, &out, pki);
        args.extend(["--timeout", "60", "--resolve"].map(OsString::from));
        args.push(resolve(server.port()).into());
        let bg = Background::spawn_env(&args, d, "stalled", env);
        let deadline = Instant::now() + Duration::from_secs(20);
        let clients = loop {
            let found = processes_with(&marker);
            if !found.is_empty() {
                break found;
            }
            assert!(Instant::now() < deadline, "no client started");
            std::thread::sleep(Duration::from_millis(10));
        };
        Stalled {
            bg,
            args,
            marker,
            clients,
            out,
            _server: server,
        }
    }
}

/// An interrupt once the whole list has been read, while its last URL is
/// still being signed, is an interrupt like any other: exit 130, and the
/// summary says so.
#[test]
fn interrupted_sign_after_the_input_is_read_exits_130() {
    let (dir, pki) = setup();
    let mut b = Stalled::start(dir.path(), &pki, &[]);
    std::thread::sleep(Duration::from_millis(300));
    b.bg.signal(libc::SIGINT, false);
    let (code, stderr) = b.bg.wait(Duration::from_secs(20));
    assert_no_process_with(&b.marker);
    assert!(manifest(&b.out).is_empty(), "{:?}", manifest(&b.out));
    assert_eq!(code, Some(130), "stderr:\n{stderr}");
    assert!(stderr.contains("interrupted"), "stderr:\n{stderr}");
}

/// While a batch has CPUs to spare, a client runs on the one CPU of the
/// thread supervising it (`batch::placement`: a wake-up across CPUs cost
/// 20 times one on the same CPU here), whether it was executed by that
/// thread or forked from the zygote, which runs anywhere.
#[test]
fn a_lone_client_runs_on_one_cpu_however_started() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("SKIP: a_lone_client_runs_on_one_cpu_however_started: one CPU, nothing to place");
        return;
    }
    let (dir, pki) = setup();
    for launch in ["fork", "exec"] {
        let d = dir.path().join(launch);
        std::fs::create_dir_all(&d).unwrap();
        let mut b = Stalled::start(&d, &pki, &[("TLSIGN_SECCOMP_LAUNCH", launch)]);
        let allowed_of = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|l| l.trim().to_string())
                .unwrap_or_default()
        };
        let allowed = allowed_of(b.clients[0].0);
        // The zygote itself runs anywhere the batch may, not on the CPU of
        // the thread that happened to start it.
        let zygote = zygote_of(b.bg.pid()).map(allowed_of);
        let batch = allowed_of(b.bg.pid());
        b.bg.signal(libc::SIGINT, false);
        b.bg.wait(Duration::from_secs(20));
        assert_no_process_with(&b.marker);
        assert!(
            !allowed.is_empty() && allowed.parse::<usize>().is_ok(),
            "{launch}: the client may run on CPUs {allowed:?}, not one"
        );
        if launch == "fork" {
            assert_eq!(zygote.as_deref(), Some(batch.as_str()), "the zygote's CPUs");
        }
    }
}

/// Lines mode (a log file, a CI job) prints a progress line every 10 s
/// even while nothing ends: here the only client hangs on a server that
/// never answers, until its timeout. Before, lines came only when an entry
/// ended, so such a batch said nothing for the whole timeout.
#[test]
fn lines_mode_reports_a_batch_whose_clients_all_hang() {
    let (dir, pki) = setup();
    let d = dir.path();
    let silent = SilentServer::start();
    let list = write_list(d, "stall.txt", &[url(silent.port(), "/hang")]);
    let out = d.join("out");
    let mut args = batch_args(&list, &out, &pki);
    let quiet = args
        .iter()
        .position(|a| a == "quiet")
        .expect("batch_args sets --progress");
    args[quiet] = "lines".into();
    args.extend(["--timeout", "13", "--retries", "0", "--resolve"].map(OsString::from));
    args.push(resolve(silent.port()).into());
    let r = Cmd::tlsign()
        .args(&args)
        .timeout(Duration::from_secs(60))
        .run();
    r.assert_no_panic().assert_code(3);
    let stderr = &r.stderr;
    let (before, after) = stderr
        .split_once("failed: ")
        .unwrap_or_else(|| panic!("no failure line; stderr:\n{stderr}"));
    assert!(
        before
            .lines()
            .any(|l| l.starts_with("progress: 0 signed") && l.contains("1 running")),
        "no progress line while the client hung; stderr:\n{stderr}"
    );
    assert!(after.contains("timed out"), "stderr:\n{stderr}");
}

/// A batch runs with glibc's per-thread cache of freed chunks off (with
/// it, the supervisor's memory grew with the length of the list: see
/// `without_tcache` in src/sys.rs). It re-executes itself once with the
/// tunable added to the user's own and its arguments kept; its clients,
/// which start with a fixed environment, see neither.
#[test]
fn a_batch_runs_without_glibcs_thread_cache_and_its_clients_never_see_it() {
    if !cfg!(target_env = "gnu") {
        return skip("a_batch_runs_without_glibcs_thread_cache", "not glibc");
    }
    let (dir, pki) = setup();
    let mut b = Stalled::start(
        dir.path(),
        &pki,
        &[("GLIBC_TUNABLES", "glibc.malloc.perturb=0")],
    );
    // glibc 2.36 splits the value it parsed at its colons, in place: the
    // environment then reads as two strings.
    let batch = format!("\n{}\n", proc_strings(b.bg.pid(), "environ").join("\n"));
    assert!(
        [":", "\n"].iter().any(|sep| batch.contains(&format!(
            "\nGLIBC_TUNABLES=glibc.malloc.perturb=0{sep}glibc.malloc.tcache_count=0\n"
        ))),
        "the batch's environment:\n{batch}"
    );
    assert!(
        batch.lines().any(|v| v == "TLSIGN_SECCOMP_REEXECUTED=1"),
        "the batch's environment:\n{batch}"
    );
    // Named after its binary, as any process is, not after /proc/self/exe,
    // the file it re-executed: `pgrep -x tlsign-seccomp` finds it.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", b.bg.pid())).unwrap();
    assert_eq!(comm.trim_end(), "tlsign-seccomp", "the batch's name");
    let args: Vec<String> = b.args.iter().map(|a| a.to_string_lossy().into()).collect();
    assert_eq!(
        proc_strings(b.bg.pid(), "cmdline").get(1..),
        Some(&args[..]),
        "the batch's arguments"
    );
    for (pid, _) in &b.clients {
        let env = proc_strings(*pid, "environ");
        assert!(
            !env.iter()
                .any(|v| v.starts_with("GLIBC_TUNABLES=") || v.starts_with("TLSIGN_SECCOMP")),
            "client {pid}'s environment: {env:?}"
        );
    }
    b.bg.signal(libc::SIGINT, false);
    let (code, stderr) = b.bg.wait(Duration::from_secs(20));
    assert_no_process_with(&b.marker);
    assert_eq!(code, Some(130), "stderr:\n{stderr}");
}

/// The NUL-separated strings of /proc/PID/`file` (environ, cmdline).
fn proc_strings(pid: i32, file: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/{file}"))
        .unwrap()
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The same for verify: an interrupt during the last replays exits 130,
/// not 0 with lines missing from the report.
#[test]
fn interrupted_verify_after_the_list_is_read_exits_130() {
    let (dir, pki) = setup();
    let d = dir.path();
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    // A 3 MiB body: each replay takes a while.
    let big = d.join("big.tlsign");
    sign_ok(&nginx, &pki, "/big.bin", &big);
    let files: Vec<PathBuf> = (0..4)
        .map(|i| {
            let p = d.join(format!("copy-{i}.tlsign"));
            std::fs::copy(&big, &p).unwrap();
            p
        })
        .collect();
    let mut args: Vec<OsString> = ["verify", "-j", "4", "--progress", "quiet", "--ca-file"]
        .map(OsString::from)
        .to_vec();
    args.push(pki.ca.clone().into());
    args.extend(files.iter().map(OsString::from));
    let mut bg = Background::spawn(&args, d, "verify");
    // The replayed clients run the recorded URL.
    let marker = format!(":{}/big.bin", nginx.port());
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes_with(&marker).len() < 2 {
        assert!(Instant::now() < deadline, "no replay started");
        std::thread::sleep(Duration::from_millis(2));
    }
    bg.signal(libc::SIGINT, false);
    let (code, stderr) = bg.wait(Duration::from_secs(20));
    assert_no_process_with(&marker);
    assert_eq!(code, Some(130), "stderr:\n{stderr}");
    assert!(stderr.contains("interrupted"), "stderr:\n{stderr}");
}

/// `sign --input LIST` alone: the one error line says what is missing.
#[test]
fn missing_out_dir_is_named_in_the_error() {
    let dir = tempdir();
    let list = write_list(
        dir.path(),
        "urls.txt",
        &["https://tlsign.test/".to_string()],
    );
    let r = Cmd::tlsign().arg("sign").arg("--input").arg(&list).run();
    r.assert_code(2);
    r.assert_one_error_line();
    r.assert_stderr_mentions("--out-dir");
}

/// The batch needs no privileges: as `nobody`, sign a list into a new
/// directory and verify it.
#[test]
fn batch_as_nobody() {
    if let Err(why) = can_drop_privileges() {
        return skip("batch_as_nobody", &why);
    }
    let (dir, pki) = setup();
    let d = dir.path();
    open_up(d);
    open_up(&pki.dir);
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    let (_, list) = query_list(&nginx, d, "nobody", 10);
    let out = d.join("out");
    let r = batch_sign(&list, &out, &pki)
        .args(["-j", "4", "--resolve", &nginx.resolve()])
        .wrapped(NOBODY)
        .run();
    r.assert_code(0);
    r.assert_stderr_mentions("signed 10 URL(s): 10 ok, 0 failed, 0 skipped");
    assert_clean(&out);
    assert_manifest_matches_files(&out);
    assert_eq!(manifest_by_url(&out).len(), 10);
    let files: Vec<PathBuf> = transcripts(&out).iter().map(|n| out.join(n)).collect();
    assert_eq!(files.len(), 10);
    for f in &files {
        assert_eq!(
            std::fs::metadata(f).unwrap().uid(),
            65534,
            "{}",
            f.display()
        );
    }
    let v = batch_verify(&files, &pki).wrapped(NOBODY).run();
    v.assert_code(0);
    let report = lines_by(&v.stdout_str(), "file");
    assert_eq!(report.len(), 10);
    assert!(report
        .values()
        .all(|l| str_field(l, "status") == "verified"));
}

/// The usual soft limit of 1024 open files let a batch start at most about
/// -j 110 ("cannot start an async runtime: Too many open files"): the
/// batch raises it within the hard limit, and gives each client the old
/// limit back. A hard limit too low for -j is one clear usage error.
#[test]
fn a_large_j_raises_the_open_files_limit() {
    let (dir, pki) = setup();
    let d = dir.path();
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    let (urls, list) = query_list(&nginx, d, "fds", 200);
    // Forked from the zygote (the default), the clients inherit the limit
    // the zygote restored once at its exec; executed, each restores it
    // just before its own exec.
    for launch in ["fork", "exec"] {
        let out = d.join(format!("out-{launch}"));
        let log = d.join(format!("limits-{launch}.strace"));
        let mut wrapper: Vec<OsString> = ["prlimit", "--nofile=1024:8192", "--"]
            .map(OsString::from)
            .to_vec();
        let traced = !strace_missing("a_large_j_raises_the_open_files_limit (the clients' limit)");
        if traced {
            wrapper.extend(
                ["strace", "-f", "-qq", "-e", "trace=prlimit64,execve", "-o"].map(OsString::from),
            );
            wrapper.push(log.clone().into());
        }
        let r = batch_sign(&list, &out, &pki)
            .args([
                "-j",
                "200",
                "--per-host",
                "0",
                "--resolve",
                &nginx.resolve(),
            ])
            .env("TLSIGN_SECCOMP_LAUNCH", launch)
            .wrapped(wrapper)
            .run();
        r.assert_code(0);
        r.assert_stderr_mentions("signed 200 URL(s): 200 ok, 0 failed, 0 skipped");
        assert_clean(&out);
        assert_manifest_matches_files(&out);
        if !traced {
            continue;
        }
        let log = std::fs::read_to_string(&log).unwrap();
        // The pids that set the batch's starting limit, and those that
        // then executed a client or the zygote.
        let pid = |l: &str| l.split_whitespace().next().unwrap_or("").to_string();
        let mut restored: Vec<String> = log
            .lines()
            .filter(|l| l.contains("prlimit64(0, RLIMIT_NOFILE, {rlim_cur=1024,"))
            .map(pid)
            .collect();
        restored.sort();
        let started = |arg: &str| -> Vec<String> {
            let mut pids: Vec<String> = log
                .lines()
                .filter(|l| l.contains("execve(") && l.contains(arg))
                .map(pid)
                .collect();
            pids.sort();
            pids
        };
        let (clients, zygotes) = (started("\"__client\""), started("\"__zygote\""));
        if launch == "exec" {
            assert_eq!(restored, clients, "{log}");
            assert_eq!(clients.len(), urls.len(), "{log}");
        } else {
            assert_eq!(restored, zygotes, "{log}");
            assert_eq!((zygotes.len(), clients.len()), (1, 0), "{log}");
        }
    }

    let low = batch_sign(&list, &d.join("low"), &pki)
        .args(["-j", "200", "--resolve", &nginx.resolve()])
        .wrapped(["prlimit", "--nofile=1024:1024", "--"])
        .run();
    low.assert_code(2);
    low.assert_one_error_line();
    low.assert_stderr_mentions("-j 200 needs about 2064 open files");
}

/// A full output directory stops the batch at once with one error line and
/// exit 4, instead of fetching every later URL to fail it with "No space
/// left on device"; what was signed stays consistent with the manifest.
/// DIR is a 150 KiB tmpfs mounted in a mount namespace of the batch's own.
#[test]
fn a_full_out_dir_stops_the_batch() {
    let unshare: &[&str] = if is_root() {
        &["unshare", "-m"]
    } else {
        &["unshare", "-Urm"]
    };
    let can = std::process::Command::new(unshare[0])
        .args(&unshare[1..])
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !can {
        return skip(
            "a_full_out_dir_stops_the_batch",
            "cannot make a mount namespace (unshare)",
        );
    }
    let (dir, pki) = setup();
    let d = dir.path();
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    let (_, list) = query_list(&nginx, d, "full", 200);
    let mnt = d.join("small");
    std::fs::create_dir(&mnt).unwrap();
    let out = mnt.join("out");
    let mount = format!(
        "mount -t tmpfs -o size=150k none {} && exec \"$@\"",
        mnt.display()
    );
    let mut wrapper: Vec<&str> = unshare.to_vec();
    wrapper.extend(["sh", "-c", &mount, "sh"]);
    // The check runs inside the namespace too: the tmpfs is gone after.
    let r = batch_sign(&list, &out, &pki)
        .args(["-j", "4", "--per-host", "0", "--resolve", &nginx.resolve()])
        .wrapped(wrapper)
        .run();
    r.assert_code(4);
    let line = r.assert_one_error_line().to_string();
    assert!(
        line.contains("No space left on device") && line.contains("the batch stopped"),
        "{line}"
    );
}

/// Comments, blank lines, CRLF, a line that is not UTF-8, one longer than
/// 8192 bytes, a duplicate, and input on stdin: bad lines become failed
/// manifest lines with their line number, good ones are signed.
#[test]
fn odd_input_lines_from_stdin() {
    let (dir, pki) = setup();
    let d = dir.path();
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    let (a, b, c) = (nginx.url("/?a"), nginx.url("/?b"), nginx.url("/?c"));
    let long = nginx.url(&format!("/?{}", "x".repeat(9000)));
    let mut input = Vec::new();
    for l in [
        b"# a comment".to_vec(),                  // 1
        b"".to_vec(),                             // 2
        format!("  {a}  \r").into_bytes(),        // 3: CRLF, spaces
        b"   ".to_vec(),                          // 4
        b"https://tlsign.test/\xff\xfe".to_vec(), // 5: not UTF-8
        long.clone().into_bytes(),                // 6: too long
        format!("{b}\r").into_bytes(),            // 7
        b"not a url".to_vec(),                    // 8
        b"http://tlsign.test/plain".to_vec(),     // 9
        a.clone().into_bytes(),                   // 10: listed twice
        b"\t# an indented comment\r".to_vec(),    // 11
    ] {
        input.extend_from_slice(&l);
        input.push(b'\n');
    }
    input.extend_from_slice(c.as_bytes()); // 12: no final newline
    let out = d.join("out");
    let cmd = Cmd::tlsign()
        .args(["sign", "--input", "-", "--out-dir"])
        .arg(&out)
        .arg("--ca-file")
        .arg(&pki.ca)
        .args(["--progress", "quiet", "--resolve", &nginx.resolve()]);
    let r = with_stdin(cmd, d, &input).run();
    r.assert_code(3);
    r.assert_stderr_mentions("signed 7 URL(s): 3 ok, 4 failed, 1 skipped (already signed)");
    assert_clean(&out);
    assert_manifest_matches_files(&out);
    let lines = manifest(&out);
    assert_eq!(lines.len(), 7, "{lines:#?}");
    let by_line: BTreeMap<u64, &Value> = lines.iter().map(|l| (num_field(l, "line"), l)).collect();
    assert_eq!(
        by_line.keys().copied().collect::<Vec<_>>(),
        [3, 5, 6, 7, 8, 9, 12],
        "{lines:#?}"
    );
    for (n, u) in [(3, &a), (7, &b), (12, &c)] {
        let l = by_line[&n];
        assert_eq!(str_field(l, "status"), "ok", "{l}");
        assert_eq!(str_field(l, "url"), u.as_str(), "{l}");
        assert_eq!(
            str_field(l, "body_sha256"),
            sha256_hex(&nginx.site().index),
            "{l}"
        );
    }
    for (n, word) in [(5, "utf-8"), (6, "8192"), (8, "url"), (9, "http")] {
        let l = by_line[&n];
        assert_eq!(str_field(l, "status"), "failed", "{l}");
        assert!(
            str_field(l, "error").to_lowercase().contains(word),
            "line {n}: want an error mentioning {word:?}: {l}"
        );
        assert!(
            r.stderr.contains(&format!("(line {n})")),
            "stderr does not name line {n}: {}",
            r.describe()
        );
    }
    // The long line is shown, not kept whole.
    assert!(str_field(by_line[&6], "url").len() < 200, "{}", by_line[&6]);
}

/// Without `--no-sync`, every transcript is durable before its name
/// appears: in the supervisor's syscalls (under strace), a `syncfs` starts
/// after the last write of the transcript's temporary file and ends
/// before the rename into place. With it, there is not a single fsync,
/// fdatasync or syncfs.
#[test]
fn transcripts_are_synced_before_they_get_their_names_unless_no_sync() {
    if strace_missing("transcripts_are_synced_before_renamed_unless_no_sync") {
        return;
    }
    let (dir, pki) = setup();
    let d = dir.path();
    let nginx = Nginx::start(d, &pki, Cert::Valid);
    let (urls, list) = query_list(&nginx, d, "sync", 8);
    let trace = |name: &str, extra: &[&str]| -> String {
        let out = d.join(name);
        let log = d.join(format!("{name}.strace"));
        let calls = "trace=clone,clone3,openat,write,close,rename,linkat,fsync,fdatasync,syncfs";
        let mut args: Vec<OsString> = ["-f", "-qq", "-s", "0", "-e", calls, "-o"]
            .map(OsString::from)
            .to_vec();
        args.push(log.clone().into());
        args.push(bin().into());
        args.extend(batch_args(&list, &out, &pki));
        args.extend(["--resolve", &nginx.resolve(), "-j", "2"].map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        let r = Cmd::new("strace").args(args).run();
        r.assert_code(0);
        r.assert_stderr_mentions(&format!("{} ok, 0 failed", urls.len()));
        assert_manifest_matches_files(&out);
        assert_eq!(transcripts(&out).len(), urls.len());
        std::fs::read_to_string(&log).unwrap()
    };
    let synced = trace("synced", &[]);
    let order = SyncOrder::read(&synced);
    assert_eq!(order.renamed.len(), urls.len(), "renames seen:\n{synced}");
    for (tmp, renamed_at) in &order.renamed {
        let written = order.last_write[tmp];
        assert!(
            order
                .syncs
                .iter()
                .any(|&(start, end)| written < start && end < *renamed_at),
            "{tmp}: no syncfs between its last write (line {written}) and its rename (line {renamed_at})"
        );
    }
    let unsynced = trace("unsynced", &["--no-sync"]);
    let sync_calls = |l: &&str| {
        ["fsync(", "fdatasync(", "syncfs("]
            .iter()
            .any(|c| l.contains(c))
    };
    assert_eq!(unsynced.lines().filter(sync_calls).count(), 0, "{unsynced}");
}

/// What `strace -f` saw of transcripts and syncs, by line number: when each
/// staged file (unnamed, or `.NAME.tmp`) was last written and put into
/// place (linked or renamed), and when each `syncfs` started and ended.
#[derive(Default)]
struct SyncOrder {
    last_write: HashMap<String, usize>,
    renamed: Vec<(String, usize)>,
    syncs: Vec<(usize, usize)>,
}

impl SyncOrder {
    fn read(log: &str) -> SyncOrder {
        let mut o = SyncOrder::default();
        // Descriptors belong to processes, and strace -f names threads:
        // each thread's process (its group's first thread), from the
        // clones it saw. A client closing its own fd 35 says nothing of
        // the batch's fd 35.
        let mut process: HashMap<String, String> = HashMap::new();
        let process_of =
            |p: &HashMap<String, String>, tid: &str| p.get(tid).cloned().unwrap_or(tid.to_string());
        // (process, fd) -> staged file: `.NAME.tmp`, or an unnamed one,
        // which the committing thread links, not the one that wrote it.
        let mut open: HashMap<(String, i64), String> = HashMap::new();
        // A thread's call in progress.
        let mut pending: HashMap<&str, (usize, &str)> = HashMap::new();
        let result =
            |l: &str| -> Option<i64> { l.rsplit_once(" = ")?.1.split(' ').next()?.parse().ok() };
        for (n, line) in log.lines().enumerate() {
            let Some((tid, rest)) = line.split_once(char::is_whitespace) else {
                continue;
            };
            let rest = rest.trim_start();
            // A call split over two lines completes on its "resumed" line.
            let (start, call) = if let Some(r) = rest.strip_prefix("<... ") {
                match pending.remove(tid) {
                    // A close was taken at its start.
                    Some(p) if p.1.starts_with("close(") => continue,
                    Some(p) if r.starts_with(p.1.split('(').next().unwrap_or("")) => p,
                    _ => continue,
                }
            } else if rest.ends_with("<unfinished ...>") {
                pending.insert(tid, (n, rest));
                // A descriptor is free once its close starts: another
                // thread's open may get its number before this close
                // returns (the rest of the close is done then).
                if !rest.starts_with("close(") {
                    continue;
                }
                (n, rest)
            } else {
                (n, rest)
            };
            let me = process_of(&process, tid);
            let quoted = |i: usize| call.split('"').nth(i).unwrap_or("").to_string();
            let fd = || {
                call.split_once('(')?
                    .1
                    .split([',', ')', ' '])
                    .next()?
                    .parse::<i64>()
                    .ok()
            };
            if call.starts_with("clone") {
                if let Some(child) = result(line).filter(|&c| c > 0) {
                    let owner = if call.contains("CLONE_THREAD") {
                        me.clone()
                    } else {
                        child.to_string()
                    };
                    process.insert(child.to_string(), owner);
                }
            } else if call.starts_with("openat(") {
                if let Some(fd) = result(line) {
                    let path = quoted(1);
                    if path.ends_with(".tmp") && call.contains("O_CREAT") {
                        open.insert((me, fd), path);
                    } else if call.contains("O_TMPFILE") {
                        open.insert((me, fd), format!("unnamed file {fd} opened on line {n}"));
                    } else {
                        open.remove(&(me, fd));
                    }
                }
            } else if call.starts_with("write(") {
                if let Some(path) = fd().and_then(|fd| open.get(&(me, fd))) {
                    o.last_write.insert(path.clone(), n);
                }
            } else if call.starts_with("close(") {
                if let Some(fd) = fd() {
                    open.remove(&(me, fd));
                }
            } else if call.starts_with("linkat(") && result(line) == Some(0) {
                let linked = quoted(1)
                    .strip_prefix("/proc/self/fd/")
                    .and_then(|fd| fd.parse::<i64>().ok())
                    .and_then(|fd| open.get(&(me, fd)));
                if let Some(file) = linked {
                    if o.last_write.contains_key(file) {
                        o.renamed.push((file.clone(), start));
                    }
                }
            } else if call.starts_with("syncfs(") && result(line) == Some(0) {
                o.syncs.push((start, n));
            } else if call.starts_with("rename(") && result(line) == Some(0) {
                let tmp = quoted(1);
                if o.last_write.contains_key(&tmp) {
                    o.renamed.push((tmp, start));
                }
            }
        }
        o
    }
}
