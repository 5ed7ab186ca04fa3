//! Bad input: every malformed transcript, bad option or unusable file must
//! give exit 2 and exactly one stderr line "error: ...", never a panic, and
//! must be quick (a decompression bomb included).

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tlsign_seccomp::transcript::{
    encode, ClientId, Connection, Event, Response, Timestamp, Transcript,
};

/// A well-formed (but never signed) transcript: enough to get valid codec
/// bytes to damage. Its contents are arbitrary.
fn synthetic() -> Transcript {
    let noise = |n: usize, seed: u8| {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
    };
    let url = "https://tlsign.test:8443/index.html".to_string();
    Transcript {
        client: ClientId {
            name: "tlsign-seccomp".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        url: url.clone(),
        seed: [7; 32],
        clock_start: Timestamp {
            secs: TIME_2024_SECS,
            nanos: 0,
        },
        backend: "seccomp".into(),
        connections: vec![Connection {
            host: "tlsign.test".into(),
            port: 8443,
            signed_addr: "127.0.0.1:8443".into(),
            events: vec![
                Event::Client(noise(517, 1)),
                Event::Server(noise(4000, 2)),
                Event::Client(noise(80, 3)),
                Event::Server(noise(9000, 4)),
                Event::ClientEof,
                Event::ServerEof,
            ],
        }],
        response: Response {
            final_url: url,
            redirects: vec![],
            status: 200,
            headers: vec![("Content-Type".into(), b"text/html".to_vec())],
            body: noise(20_000, 5),
        },
    }
}

/// `verify FILE` must be rejected as bad input.
#[track_caller]
fn assert_bad_transcript(what: &str, file: &Path) -> Output {
    let r = Cmd::tlsign()
        .arg("verify")
        .arg(file)
        .timeout(Duration::from_secs(30))
        .run();
    assert_eq!(r.code, Some(2), "{what}: want exit 2: {}", r.describe());
    r.assert_one_error_line();
    r
}

#[track_caller]
fn assert_bad_bytes(what: &str, dir: &Path, bytes: &[u8]) -> Output {
    let file = dir.join("bad.tlsign");
    std::fs::write(&file, bytes).unwrap();
    assert_bad_transcript(what, &file)
}

#[test]
fn empty_file() {
    let dir = tempdir();
    assert_bad_bytes("empty file", dir.path(), b"");
}

#[test]
fn random_bytes() {
    let dir = tempdir();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let junk: Vec<u8> = (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    assert_bad_bytes("1 KiB of random bytes", dir.path(), &junk);
}

#[test]
fn truncated_transcripts() {
    let dir = tempdir();
    let good = encode(&synthetic());
    let len = good.len();
    let mut cuts = vec![
        1,
        4,
        8,
        9,
        10,
        12,
        16,
        32,
        len / 4,
        len / 2,
        len - 16,
        len - 1,
    ];
    cuts.retain(|&c| c > 0 && c < len);
    cuts.dedup();
    for cut in cuts {
        assert_bad_bytes(
            &format!("truncated to {cut} of {len} bytes"),
            dir.path(),
            &good[..cut],
        );
    }
}

#[test]
fn wrong_magic() {
    let dir = tempdir();
    let mut bytes = encode(&synthetic());
    bytes[0] ^= 0xff;
    assert_bad_bytes("first magic byte changed", dir.path(), &bytes);
    let mut bytes = encode(&synthetic());
    bytes[7] ^= 0x01;
    assert_bad_bytes("last magic byte changed", dir.path(), &bytes);
}

#[test]
fn future_major_version() {
    let dir = tempdir();
    let mut bytes = encode(&synthetic());
    // The u16 major version follows the 8-byte magic; keep its byte order.
    match bytes[8..10] {
        [1, 0] => bytes[8] = 2,
        [0, 1] => bytes[9] = 2,
        ref other => panic!("expected major version 1 after the magic, found {other:?}"),
    }
    let r = assert_bad_bytes("major version 2", dir.path(), &bytes);
    r.assert_stderr_mentions("version");
}

#[test]
fn zstd_bomb() {
    let dir = tempdir();
    // Keep the real header (magic, version and whatever else precedes the
    // compressed payload) and replace the payload with a zstd frame that
    // inflates to 1 GiB of zeros.
    let good = encode(&synthetic());
    let zstd_magic = [0x28, 0xb5, 0x2f, 0xfd];
    let start = good
        .windows(4)
        .position(|w| w == zstd_magic)
        .expect("the encoding holds a zstd frame");
    let mut bytes = good[..start].to_vec();
    let before = Instant::now();
    bytes.extend(zero_bomb(1 << 30));
    eprintln!(
        "zstd bomb: {} bytes, made in {:?}",
        bytes.len(),
        before.elapsed()
    );

    let file = dir.path().join("bomb.tlsign");
    std::fs::write(&file, &bytes).unwrap();
    let r = assert_bad_transcript("zstd bomb", &file);
    assert!(
        r.elapsed < Duration::from_secs(10),
        "rejecting the bomb took {:?}",
        r.elapsed
    );
    let max_rss_kib = children_max_rss_kib();
    assert!(
        max_rss_kib < 512 * 1024,
        "a child used {max_rss_kib} KiB of memory: the bomb was inflated?"
    );
}

/// One zstd frame holding `len` zero bytes, by streaming compression.
fn zero_bomb(len: usize) -> Vec<u8> {
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    enc.set_pledged_src_size(Some(len as u64)).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..len / zeros.len() {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap()
}

/// The largest resident set of any child this process has waited for.
fn children_max_rss_kib() -> i64 {
    // SAFETY: rusage is plain data; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    ru.ru_maxrss
}

#[test]
fn missing_file_and_directory() {
    let dir = tempdir();
    assert_bad_transcript("nonexistent file", &dir.path().join("nope.tlsign"));
    assert_bad_transcript("a directory", dir.path());
}

#[test]
fn unreadable_file_when_not_root() {
    if is_root() {
        return skip("unreadable_file_when_not_root", "root reads any file");
    }
    let dir = tempdir();
    let file = dir.path().join("secret.tlsign");
    std::fs::write(&file, encode(&synthetic())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    assert_bad_transcript("unreadable file", &file);
}

/// Bad command lines: rejected before any work, so no file appears.
#[test]
fn bad_options() {
    let dir = tempdir();
    let out = dir.path().join("out.tlsign");
    let out = out.to_str().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let not_pem = not_pem.to_str().unwrap();
    let url = "https://tlsign.test:8443/";
    let long_seed = format!("{SEED_A}00");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("no subcommand", vec![]),
        ("unknown subcommand", vec!["frobnicate"]),
        ("sign without -o", vec!["sign", url]),
        (
            "sign unknown option",
            vec!["sign", url, "-o", out, "--bogus"],
        ),
        ("sign not a URL", vec!["sign", "not a url", "-o", out]),
        (
            "sign ftp URL",
            vec!["sign", "ftp://tlsign.test/", "-o", out],
        ),
        (
            "sign http URL",
            vec!["sign", "http://tlsign.test:8443/", "-o", out],
        ),
        (
            "seed not hex",
            vec!["sign", url, "-o", out, "--seed", "xyz"],
        ),
        (
            "client recorder under ptrace",
            vec![
                "sign",
                url,
                "-o",
                out,
                "--backend",
                "ptrace",
                "--recorder",
                "client",
            ],
        ),
        (
            "unknown recorder",
            vec!["sign", url, "-o", out, "--recorder", "proxy"],
        ),
        (
            "seed too short",
            vec!["sign", url, "-o", out, "--seed", &SEED_A[..62]],
        ),
        (
            "seed too long",
            vec!["sign", url, "-o", out, "--seed", &long_seed],
        ),
        (
            "time not RFC 3339",
            vec!["sign", url, "-o", out, "--time", "yesterday"],
        ),
        (
            "resolve malformed",
            vec!["sign", url, "-o", out, "--resolve", "tlsign.test"],
        ),
        (
            "resolve bad address",
            vec![
                "sign",
                url,
                "-o",
                out,
                "--resolve",
                "tlsign.test:8443:999.1.1.1",
            ],
        ),
        (
            "missing CA file",
            vec!["sign", url, "-o", out, "--ca-file", "/nonexistent/ca.pem"],
        ),
        (
            "CA file without certificates",
            vec!["sign", url, "-o", out, "--ca-file", not_pem],
        ),
        (
            "timeout not a number",
            vec!["sign", url, "-o", out, "--timeout", "soon"],
        ),
        ("verify without file", vec!["verify"]),
        ("run without command", vec!["run"]),
        (
            "run seed not hex",
            vec!["run", "--seed", "xyz", "--", "true"],
        ),
        (
            "run time malformed",
            vec!["run", "--time", "noon", "--", "true"],
        ),
    ];
    let mut problems = Vec::new();
    for (what, args) in cases {
        let r = Cmd::tlsign()
            .args(&args)
            .timeout(Duration::from_secs(30))
            .run();
        let lines = r.stderr_lines();
        let ok = r.code == Some(2)
            && lines.len() == 1
            && lines[0].starts_with("error: ")
            && !r.stderr.contains("panicked")
            && !r.stderr.contains("RUST_BACKTRACE");
        if !ok {
            problems.push(format!(
                "{what}: {:?}: exit {:?}, stderr:\n{}",
                args, r.code, r.stderr
            ));
        }
        if Path::new(out).exists() {
            problems.push(format!("{what}: wrote {out}"));
            std::fs::remove_file(out).unwrap();
        }
    }
    assert!(
        problems.is_empty(),
        "want exit 2 and one \"error: \" line each:\n{}",
        problems.join("\n")
    );
}

/// A FIFO is read once its writer arrives, even a moment after us (as with
/// `mkfifo f; producer > f & tlsign-seccomp verify f`); a writer that leaves
/// without writing makes an empty file (exit 2), not a hang.
#[test]
fn fifo_input_neither_hangs_nor_races() {
    let dir = tempdir();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);

    // A writer that arrives 300 ms after the reader and writes `bytes`.
    let inspect_with_late_writer = |bytes: &'static [u8]| {
        let fifo2 = fifo.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo2)
                .unwrap();
            f.write_all(bytes).unwrap();
        });
        let r = Cmd::tlsign()
            .arg("inspect")
            .arg(&fifo)
            .timeout(Duration::from_secs(20))
            .run();
        writer.join().unwrap();
        r
    };
    // Opens, writes nothing, closes: an empty file.
    let r = inspect_with_late_writer(b"");
    r.assert_code(2);
    r.assert_one_error_line();
    r.assert_stderr_mentions("empty");
    // Not a transcript, but bytes: they must be read and judged.
    let r = inspect_with_late_writer(b"GIF89a and more");
    r.assert_code(2);
    r.assert_stderr_mentions("not a tlsign transcript");
}
