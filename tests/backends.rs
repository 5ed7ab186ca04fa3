//! The three interception backends (`--backend seccomp|ptrace-seccomp|ptrace`)
//! give one world: a transcript signed under any of them verifies under any
//! of them, a tampered one fails under each, `run` prints the same world
//! under each, they work as `nobody`, and a client killed mid-run leaves
//! nothing behind. The ptrace backends redirect connections through a
//! loopback listener, so where loopback is down (`unshare -n`) they must say
//! so (exit 4), where the seccomp backend still works.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// Every backend, as the command line names them.
const BACKENDS: [&str; 3] = ["seccomp", "ptrace-seccomp", "ptrace"];
/// The backends that need a working loopback interface.
const PTRACE_BACKENDS: [&str; 2] = ["ptrace-seccomp", "ptrace"];

/// A test's directory and PKI.
fn setup() -> (tempfile::TempDir, Pki) {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    (dir, pki)
}

/// The parts of sign's summary line "... (12 ms, NAME backend, N
/// interceptions[, sync wake-up])": (NAME, N, the rest).
#[track_caller]
fn summary_parts(line: &str) -> (String, u64, Vec<String>) {
    let inner = line
        .rsplit_once(" (")
        .and_then(|(_, s)| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no \"(... backend ...)\" at the end of {line:?}"));
    let parts: Vec<&str> = inner.split(", ").collect();
    assert!(
        parts.len() >= 3 && parts[0].ends_with(" ms"),
        "summary {line:?}: want \"(T ms, NAME backend, N interceptions...)\""
    );
    let name = parts[1]
        .strip_suffix(" backend")
        .unwrap_or_else(|| panic!("summary {line:?}: no \"NAME backend\" after the time"));
    let n = parts[2]
        .strip_suffix(" interceptions")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("summary {line:?}: no \"N interceptions\" after the backend"));
    let rest = parts[3..].iter().map(|s| s.to_string()).collect();
    (name.to_string(), n, rest)
}

/// `inspect FILE`'s "signed with:" value.
#[track_caller]
fn inspected_backend(file: &Path) -> String {
    let r = Cmd::tlsign().arg("inspect").arg(file).run();
    r.assert_code(0);
    let out = r.stdout_str();
    out.lines()
        .find_map(|l| l.strip_prefix("signed with: "))
        .unwrap_or_else(|| panic!("inspect shows no \"signed with: \" line:\n{out}"))
        .trim()
        .to_string()
}

/// Signing under each backend S and verifying under each backend V: all
/// nine pairs verify and give the page nginx serves. The transcript and the
/// summary name S; the same seed and time give the same ClientHello under
/// every S, since the backends only carry out what one world decides.
#[test]
fn every_signing_backend_verifies_under_every_backend() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let want = nginx.site().index.clone();

    let signed: Vec<(&str, PathBuf, Output)> = std::thread::scope(|s| {
        let handles: Vec<_> = BACKENDS
            .iter()
            .map(|&b| {
                let (nginx, pki, dir) = (&nginx, &pki, dir.path());
                s.spawn(move || {
                    let file = dir.join(format!("signed-{b}.tlsign"));
                    let r = sign(nginx, pki, "/", &file)
                        .args(["--backend", b, "--seed", SEED_A, "--time", TIME_2024])
                        .run();
                    (b, file, r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    nginx.stop();

    let mut interceptions = BTreeMap::new();
    let mut hellos = Vec::new();
    for (b, file, r) in &signed {
        r.assert_code(0);
        let line = r.assert_one_line();
        let (name, n, rest) = summary_parts(line);
        assert_eq!(
            &name, b,
            "sign --backend {b}: the summary names another backend: {line:?}"
        );
        assert!(n > 0, "sign --backend {b}: no interceptions: {line:?}");
        // Only the seccomp backend has a wake-up mode to report.
        let wake = rest.iter().any(|p| p.contains("wake-up"));
        assert_eq!(wake, *b == "seccomp", "sign --backend {b}: {line:?}");
        interceptions.insert(*b, n);

        let t = read_transcript(file);
        assert_eq!(&t.backend, b, "the transcript signed with --backend {b}");
        assert_eq!(
            &inspected_backend(file),
            b,
            "inspect of the transcript signed with --backend {b}"
        );
        assert_bytes_eq(&format!("{b}: recorded body"), &t.response.body, &want);
        assert_eq!(t.connections.len(), 1, "{b}: one fetch, one connection");
        hellos.push((*b, first_client_flight(&t.connections[0])));
    }
    // ptrace stops at every syscall's entry and exit; the others only at
    // the few the world answers.
    assert!(
        interceptions["ptrace"] > interceptions["ptrace-seccomp"]
            && interceptions["ptrace"] > interceptions["seccomp"],
        "ptrace should stop far more often than the filtered backends: {interceptions:?}"
    );
    let (first, hello) = &hellos[0];
    assert!(!hello.is_empty());
    for (b, h) in &hellos[1..] {
        assert_bytes_eq(
            &format!("ClientHello under {b} (same seed and time as under {first})"),
            h,
            hello,
        );
    }

    // Nine verifies, the server long gone.
    let failures: Vec<String> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (signer, file, _) in &signed {
            for verifier in BACKENDS {
                let (pki, dir, want) = (&pki, dir.path(), &want);
                handles.push(s.spawn(move || {
                    let body = dir.join(format!("{signer}-by-{verifier}.body"));
                    let r = verify(file, pki)
                        .args(["--backend", verifier])
                        .arg("--body")
                        .arg(&body)
                        .run();
                    let pair = format!("signed under {signer}, verified under {verifier}");
                    if r.code != Some(0) || r.stderr_lines().len() != 1 {
                        return Some(format!("{pair}: {}", r.describe()));
                    }
                    match std::fs::read(&body) {
                        Ok(b) if &b == want => None,
                        Ok(b) => Some(format!(
                            "{pair}: the verified body ({} bytes) is not the page ({} bytes)",
                            b.len(),
                            want.len()
                        )),
                        Err(e) => Some(format!("{pair}: exit 0 but no --body file: {e}")),
                    }
                }));
            }
        }
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of 9 pairs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A transcript signed under seccomp with one server byte flipped fails
/// under every backend: exit 1, one line saying where the replay diverged,
/// the same line under each backend (one world, one divergence).
#[test]
fn tampered_transcript_fails_under_every_backend() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("original.tlsign");
    sign(&nginx, &pki, "/", &file)
        .args([
            "--backend",
            "seccomp",
            "--seed",
            SEED_A,
            "--time",
            TIME_2024,
        ])
        .run()
        .assert_code(0);
    nginx.stop();
    let t = read_transcript(&file);
    let len = server_bytes(&t.connections[0]).len();

    // Control: the untouched transcript, written back as the tampered ones
    // are, verifies under a ptrace backend.
    let control = dir.path().join("control.tlsign");
    write_transcript(&control, &t);
    verify(&control, &pki)
        .args(["--backend", "ptrace"])
        .run()
        .assert_code(0);

    // The first byte of the ServerHello random (5-byte record header,
    // 4-byte handshake header, 2-byte version), and one in the encrypted
    // records that carry the response.
    for pos in [11, len * 3 / 4] {
        let tampered = dir.path().join(format!("server-byte-{pos}.tlsign"));
        write_transcript(&tampered, &flip_stream(&t, Side::Server, pos));
        let mut lines = Vec::new();
        for b in BACKENDS {
            let r = verify(&tampered, &pki)
                .args(["--backend", b, "--timeout", "20"])
                .timeout(Duration::from_secs(40))
                .run();
            let what = format!("server byte {pos} of {len} flipped, verified under {b}");
            assert_eq!(r.code, Some(1), "{what}: want exit 1: {}", r.describe());
            let line = r.assert_one_error_line().to_string();
            // Where the replay parted from the record: "connection 0: client
            // bytes diverge at offset N" or "connection 0: the client stopped
            // sending at offset N".
            assert!(
                line.contains("connection 0") && line.contains("offset"),
                "{what}: the reason should say where the replay diverged: {}",
                r.describe()
            );
            lines.push((b, line));
        }
        let (first, want) = &lines[0];
        for (b, line) in &lines[1..] {
            assert_eq!(
                line, want,
                "server byte {pos}: the reason under {b} differs from the one under {first}"
            );
        }
    }
}

/// `run` with one seed and time prints the same world (random bytes, clock
/// values, in the child too) under every backend; another seed changes the
/// random bytes under the ptrace backends too.
#[test]
fn run_gives_the_same_world_under_every_backend() {
    let dir = tempdir();
    let prog = cc_build(dir.path(), "world_probe", WORLD_PROBE_C);
    let go = |backend: &str, seed: &str| {
        let r = Cmd::tlsign()
            .args([
                "run",
                "--backend",
                backend,
                "--seed",
                seed,
                "--time",
                TIME_2024,
                "--",
            ])
            .arg(&prog)
            .run();
        r.assert_code(0);
        r.stdout_str()
    };
    let outs: Vec<(&str, String)> = BACKENDS.iter().map(|&b| (b, go(b, SEED_A))).collect();
    let (first, want) = &outs[0];
    let p = parse_probe(want.as_bytes());
    for key in [
        "realtime",
        "gettimeofday",
        "time",
        "child-realtime",
        "child-time",
    ] {
        let got = probe_secs(&p[key]);
        assert!(
            (got - TIME_2024_SECS).abs() <= 5,
            "{key} = {} under {first}: the clock was not faked",
            p[key]
        );
    }
    for (b, out) in &outs[1..] {
        assert_eq!(
            out, want,
            "run under {b} saw another world than under {first} with the same seed and time"
        );
    }

    for b in PTRACE_BACKENDS {
        let other = parse_probe(go(b, SEED_B).as_bytes());
        for key in ["getrandom", "urandom", "child-getrandom", "child-urandom"] {
            assert_ne!(
                other[key], p[key],
                "{key} under {b} did not change with the seed"
            );
        }
    }
}

/// `openat2` and io_uring would reach /dev/urandom (and, for io_uring, the
/// network) without a syscall the world sees: under every backend both
/// fail with ENOSYS, as on a kernel without them, so programs fall back to
/// the calls it does see. Outside the world, the same probe's `openat2`
/// works (this kernel has it), so the probe can tell.
#[test]
fn openat2_and_io_uring_are_missing_from_the_world() {
    let dir = tempdir();
    let prog = cc_build(dir.path(), "bypass_probe", include_str!("c/bypass_probe.c"));
    let bare = Cmd::new(&prog).run();
    bare.assert_code(0);
    assert!(
        bare.stdout_str().contains("openat2 ok"),
        "outside the world:\n{}",
        bare.stdout_str()
    );
    let enosys = libc::ENOSYS;
    for b in BACKENDS {
        let r = Cmd::tlsign()
            .args(["run", "--backend", b, "--"])
            .arg(&prog)
            .run();
        r.assert_code(0);
        assert_eq!(
            r.stdout_str(),
            format!("openat2 {enosys}\nio_uring_setup {enosys}\n"),
            "under {b}"
        );
    }
}

/// A supervised program holds exactly the descriptors it would hold
/// unsupervised: nothing of the supervisor's leaks into it. Under seccomp
/// the child creates the listener in the supervisor's own descriptor table
/// before taking a copy of its own, so a listener left open across exec
/// would show up here as one more `anon_inode`.
#[test]
fn a_supervised_program_inherits_no_descriptor_of_ours() {
    // `ls` reads the directory through a descriptor of its own, which
    // names /proc; pipes (the captured output) are new in every run.
    let fds = |out: String| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.split_once(" -> "))
            .filter(|(_, target)| !target.starts_with("/proc/"))
            .map(|(left, target)| {
                let n = left.rsplit(' ').next().unwrap_or("");
                let target = if target.starts_with("pipe:") {
                    "pipe"
                } else {
                    target
                };
                format!("{n} {target}")
            })
            .collect()
    };
    let list = ["ls", "-l", "/proc/self/fd"];
    let bare = Cmd::new(list[0]).args(&list[1..]).run();
    bare.assert_code(0);
    let want = fds(bare.stdout_str());
    assert!(
        want.len() >= 3,
        "bare run listed too little:\n{}",
        bare.stdout_str()
    );
    for b in BACKENDS {
        let r = Cmd::tlsign()
            .args(["run", "--backend", b, "--"])
            .args(list)
            .run();
        r.assert_code(0);
        assert_eq!(fds(r.stdout_str()), want, "descriptors under {b}");
    }
}

/// What is wrong with `r` as the failure of a ptrace backend without
/// loopback: exit 4, one `error: ` line naming loopback. `None` if right.
fn loopback_failure_problem(r: &Output) -> Option<String> {
    let lines = r.stderr_lines();
    let ok = r.code == Some(4)
        && lines.len() == 1
        && lines[0].starts_with("error: ")
        && lines[0].to_lowercase().contains("loopback")
        && !r.stderr.contains("panicked");
    (!ok).then(|| {
        format!(
            "want exit 4 and one \"error: \" line mentioning loopback; got exit {:?}: {}",
            r.code,
            r.stderr.trim()
        )
    })
}

/// In a fresh network namespace `lo` is down. The ptrace backends, which
/// redirect through a loopback listener, must then fail to run (exit 4,
/// one line naming loopback) rather than report the server unreachable or,
/// for verify, the transcript bad. The seccomp backend still verifies
/// there, and when signing it gets as far as the real server (unreachable
/// from the namespace: exit 3, nothing about loopback).
#[test]
fn ptrace_backends_without_loopback_exit_4() {
    if Cmd::new("unshare").args(["-n", "true"]).run().code != Some(0) {
        return skip(
            "ptrace_backends_without_loopback_exit_4",
            "`unshare -n true` fails here (needs root or user namespaces)",
        );
    }
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("t.tlsign");
    sign(&nginx, &pki, "/", &file)
        .args(["--backend", "seccomp"])
        .run()
        .assert_code(0);
    let want = nginx.site().index.clone();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();

    let mut problems = Vec::new();
    for b in PTRACE_BACKENDS {
        // A host name (the world's nameserver is the first connection) and
        // an IP literal (the server is).
        for (what, url, resolve) in [
            ("name", nginx.url("/"), Some(nginx.resolve())),
            ("IP literal", nginx.ip_url("/"), None),
        ] {
            let mut cmd = Cmd::tlsign()
                .arg("sign")
                .arg(&url)
                .arg("-o")
                .arg(out_dir.join(format!("{b}.tlsign")))
                .arg("--ca-file")
                .arg(&pki.ca)
                .args(["--backend", b, "--timeout", "20"]);
            if let Some(r) = resolve {
                cmd = cmd.arg("--resolve").arg(r);
            }
            let r = cmd.wrapped(["unshare", "-n"]).run();
            if let Some(p) = loopback_failure_problem(&r) {
                problems.push(format!(
                    "sign --backend {b} ({what} URL) in unshare -n: {p}"
                ));
            }
        }
        let r = verify(&file, &pki)
            .args(["--backend", b, "--timeout", "20"])
            .wrapped(["unshare", "-n"])
            .run();
        if let Some(p) = loopback_failure_problem(&r) {
            problems.push(format!("verify --backend {b} in unshare -n: {p}"));
        }
    }
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    if !left.is_empty() {
        problems.push(format!("a failed sign left files behind: {left:?}"));
    }

    // The seccomp backend needs no loopback: it verifies in the namespace...
    let body = dir.path().join("netns.body");
    let r = verify(&file, &pki)
        .args(["--backend", "seccomp", "--body"])
        .arg(&body)
        .wrapped(["unshare", "-n"])
        .run();
    r.assert_code(0);
    assert_bytes_eq(
        "verified body (seccomp, unshare -n)",
        &std::fs::read(&body).unwrap(),
        &want,
    );
    // ...and signing fails only at the real server, which is unreachable.
    let r = sign(&nginx, &pki, "/", &out_dir.join("seccomp.tlsign"))
        .args(["--backend", "seccomp", "--timeout", "20"])
        .wrapped(["unshare", "-n"])
        .run();
    r.assert_code(3);
    r.assert_one_error_line();
    assert!(
        !r.stderr.to_lowercase().contains("loopback"),
        "the seccomp backend needs no loopback: {}",
        r.describe()
    );

    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// As `nobody`: sign under one ptrace backend, verify under the other.
#[test]
fn ptrace_backends_as_nobody() {
    if let Err(why) = can_drop_privileges() {
        return skip("ptrace_backends_as_nobody", &why);
    }
    let dir = tempdir();
    open_up(dir.path());
    let pki = Pki::new(dir.path());
    open_up(&pki.dir);
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let want = nginx.site().index.clone();

    let pairs = [("ptrace", "ptrace-seccomp"), ("ptrace-seccomp", "ptrace")];
    let mut files = Vec::new();
    for (signer, _) in pairs {
        let file = dir.path().join(format!("nobody-{signer}.tlsign"));
        let r = sign(&nginx, &pki, "/", &file)
            .args(["--backend", signer])
            .wrapped(NOBODY)
            .run();
        r.assert_code(0);
        let (name, _, _) = summary_parts(r.assert_one_line());
        assert_eq!(name, signer);
        files.push(file);
    }
    nginx.stop();

    for ((signer, verifier), file) in pairs.iter().zip(&files) {
        assert_eq!(&read_transcript(file).backend, signer);
        let r = verify(file, &pki)
            .args(["--backend", verifier, "--body", "-"])
            .wrapped(NOBODY)
            .run();
        r.assert_code(0);
        assert_bytes_eq(
            &format!("signed under {signer} and verified under {verifier}, as nobody"),
            &r.stdout,
            &want,
        );
    }
}

/// [`silent_sign_args`] under `backend`, run outside [`Cmd`] in a process
/// group of its own, so the test alone decides when it and its client
/// die; stdout and stderr are the caller's to set.
fn sign_in_own_group(
    server: &SilentServer,
    out: &Path,
    pki: &Pki,
    backend: &str,
    timeout_s: u32,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(silent_sign_args(server, pki, out))
        .args(["--backend", backend, "--timeout", &timeout_s.to_string()])
        .stdin(Stdio::null())
        .process_group(0);
    cmd
}

/// Processes whose command line is the built-in client's for a URL on
/// `port`: (pid, command line).
fn clients_for_port(port: u16) -> Vec<(i32, String)> {
    let needle = format!(":{port}/");
    processes_where(|args| {
        args.iter().any(|a| a == "__client") && args.iter().any(|a| a.contains(&needle))
    })
}

/// `sign --timeout 1` against a server that never answers, under each
/// ptrace backend: exit 3 (as under seccomp, tests/sign_verify.rs) within a
/// few seconds, and the client it killed is gone. Run outside [`Cmd`],
/// whose clean-up kills the whole process group and would hide a leftover
/// client.
#[test]
fn timed_out_client_leaves_no_orphan_under_ptrace() {
    let (dir, pki) = setup();
    let server = SilentServer::start();
    let port = server.port();
    for b in PTRACE_BACKENDS {
        let out = dir.path().join(format!("{b}.tlsign"));
        let (stdout, stderr) = (
            dir.path().join(format!("{b}.stdout")),
            dir.path().join(format!("{b}.stderr")),
        );
        let start = Instant::now();
        let mut child = sign_in_own_group(&server, &out, &pki, b, 1)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start the binary");

        // Control: while it runs, its client is there to be seen.
        let mut seen = false;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            seen = seen || !clients_for_port(port).is_empty();
            if start.elapsed() > Duration::from_secs(20) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = start.elapsed();
        let Some(status) = status else {
            // Leave nothing behind, then fail.
            // SAFETY: the negative pid names the process group of our own
            // child, which is unreaped (so its pid cannot be reused).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("sign --backend {b} --timeout 1 still running after 20 s");
        };
        let err = std::fs::read_to_string(&stderr).unwrap();

        // Anything of the client still there shortly after is an orphan
        // (allow the kernel a moment to tear a killed process down).
        let left = left_running(|| clients_for_port(port));
        assert!(
            left.is_empty(),
            "sign --backend {b} exited ({status}) but left its client running: {left:?}"
        );
        assert!(
            seen,
            "sign --backend {b}: never saw a client process for port {port} while it ran \
             (the orphan check would see nothing either); stderr: {err}"
        );
        assert_eq!(
            status.code(),
            Some(3),
            "sign --backend {b} --timeout 1: stderr: {err}"
        );
        let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with("error: ") && !err.contains("panicked"),
            "sign --backend {b}: want one \"error: \" line: {err}"
        );
        assert!(
            elapsed < Duration::from_secs(10),
            "sign --backend {b} --timeout 1 took {elapsed:?}"
        );
        assert!(!out.exists(), "a timed-out sign wrote {}", out.display());
    }
}

/// Under every backend the client runs with no signal blocked, whatever
/// its start did: under seccomp it is started with every signal blocked
/// and unblocks them itself (`target::Program::unblocks_signals`), which
/// spares resetting each handler between clone and exec. A client that
/// never unblocked would sit out a Ctrl-C with SIGINT pending.
#[test]
fn the_client_runs_with_no_signal_blocked() {
    let (dir, pki) = setup();
    let server = SilentServer::start();
    let port = server.port();
    for b in ["seccomp", "ptrace-seccomp", "ptrace"] {
        let out = dir.path().join(format!("{b}.tlsign"));
        let mut child = sign_in_own_group(&server, &out, &pki, b, 5)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the binary");
        // The client waits on the silent server: its mask is read until it
        // shows none blocked, for as long as the client runs.
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline && last.as_deref() != Some("0000000000000000") {
            for (pid, _) in clients_for_port(port) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(blk) = status.lines().find_map(|l| l.strip_prefix("SigBlk:")) {
                    last = Some(blk.trim().to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: the negative pid names the process group of our own
        // child, which is unreaped (so its pid cannot be reused).
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
        assert_eq!(
            last.as_deref(),
            Some("0000000000000000"),
            "--backend {b}: the client's blocked signals (None: never saw the client)"
        );
    }
}
