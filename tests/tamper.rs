//! Tampering: sign once, change one thing in the transcript, verify.
//!
//! Every change below must make verify exit 1 with a one-line reason. The
//! one exception is pinned on purpose: moving the recorded clock by a small
//! amount inside the certificate's validity is not detectable (see
//! `tamper_clock`).
//!
//! All tests share one signed transcript (signed once per test binary, with
//! a fixed seed and time); the server is stopped before any verify, so
//! every verify here also runs with nothing to connect to.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use tlsign_seccomp::transcript::{Event, Transcript};

struct Signed {
    dir: PathBuf,
    ca: PathBuf,
    t: Transcript,
}

/// The path every tamper test signs: long enough to tamper with its letters.
const PATH: &str = "/index.html";

fn signed() -> &'static Signed {
    static SIGNED: OnceLock<Signed> = OnceLock::new();
    SIGNED.get_or_init(|| {
        // Lives for the whole test binary, so under target/tmp rather than a
        // TempDir; it holds only the CA certificate and small transcripts.
        let dir = tempfile::Builder::new()
            .prefix("tamper-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        let servers = tempdir();
        let pki = Pki::new(servers.path());
        let ca = dir.join("ca.pem");
        std::fs::copy(&pki.ca, &ca).unwrap();

        let nginx = Nginx::start(servers.path(), &pki, Cert::Valid);
        let file = dir.join("original.tlsign");
        sign(&nginx, &pki, PATH, &file)
            .args(["--seed", SEED_A, "--time", TIME_2024])
            .run()
            .assert_code(0);
        let want = nginx.site().index.clone();
        nginx.stop();
        let t = read_transcript(&file);
        assert_eq!(t.connections.len(), 1, "one fetch, one connection");
        assert_bytes_eq("recorded body", &t.response.body, &want);

        // Control: the untouched transcript, written back the way every
        // tampered one is, verifies. Without this, a writer that broke
        // transcripts would make every tamper test pass.
        let control = dir.join("control.tlsign");
        write_transcript(&control, &t);
        let r = verify_file(&control, &ca);
        r.assert_code(0);
        Signed { dir, ca, t }
    })
}

fn verify_file(file: &std::path::Path, ca: &std::path::Path) -> Output {
    Cmd::tlsign()
        .arg("verify")
        .arg(file)
        .arg("--ca-file")
        .arg(ca)
        .args(["--timeout", "15"])
        .timeout(Duration::from_secs(30))
        .run()
}

enum Expect {
    /// Exit 1, one stderr line mentioning each of these (case-insensitive).
    Fails(Vec<String>),
}

struct Case {
    name: String,
    t: Transcript,
    expect: Expect,
}

fn fails(name: impl Into<String>, t: Transcript, mentions: &[&str]) -> Case {
    Case {
        name: name.into(),
        t,
        expect: Expect::Fails(mentions.iter().map(|s| s.to_string()).collect()),
    }
}

/// Verify every case; report all that went wrong at once.
fn run_cases(group: &str, cases: Vec<Case>) {
    let s = signed();
    let mut problems = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        assert_ne!(
            case.t, s.t,
            "{group}/{}: the tampering changed nothing",
            case.name
        );
        let file = s.dir.join(format!("{group}-{i}.tlsign"));
        write_transcript(&file, &case.t);
        let r = verify_file(&file, &s.ca);
        let stderr = r.stderr.to_lowercase();
        let lines = r.stderr_lines().len();
        let problem = match &case.expect {
            _ if r.stderr.contains("panicked") || r.stderr.contains("RUST_BACKTRACE") => {
                Some("panicked".to_string())
            }
            Expect::Fails(_) if r.code != Some(1) => Some("want exit 1".to_string()),
            Expect::Fails(_) if lines != 1 => Some(format!("want one stderr line, got {lines}")),
            Expect::Fails(mentions) => {
                let missing: Vec<_> = mentions
                    .iter()
                    .filter(|m| !stderr.contains(&m.to_lowercase()))
                    .collect();
                (!missing.is_empty()).then(|| format!("the reason should mention {missing:?}"))
            }
        };
        if let Some(p) = problem {
            problems.push(format!(
                "{group}/{}: {p}: exit {:?}: {}",
                case.name,
                r.code,
                r.stderr.trim()
            ));
        } else {
            let _ = std::fs::remove_file(&file);
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} cases wrong:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
}

/// First, last, middle and eight positions spread between, in `0..len`.
fn spread(len: usize) -> Vec<usize> {
    assert!(len > 0);
    let mut v = vec![0, len / 2, len - 1];
    v.extend((1..=8).map(|i| len * i / 9));
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn tamper_server_bytes() {
    let s = signed();
    let len = server_bytes(&s.t.connections[0]).len();
    let cases = spread(len)
        .into_iter()
        .map(|pos| {
            fails(
                format!("server byte {pos} of {len}"),
                flip_stream(&s.t, Side::Server, pos),
                &[],
            )
        })
        .collect();
    run_cases("server", cases);
}

#[test]
fn tamper_client_bytes() {
    let s = signed();
    let len = client_bytes(&s.t.connections[0]).len();
    // The replayed client sends the original byte where the transcript has
    // the flipped one: the reason names that exact offset.
    let cases = spread(len)
        .into_iter()
        .map(|pos| {
            let offset = format!("offset {pos}");
            fails(
                format!("client byte {pos} of {len}"),
                flip_stream(&s.t, Side::Client, pos),
                &["diverge", &offset],
            )
        })
        .collect();
    run_cases("client", cases);
}

#[test]
fn tamper_seed() {
    let s = signed();
    let cases = [0, 1, 7, 15, 16, 24, 30, 31]
        .into_iter()
        .map(|i| {
            let mut t = s.t.clone();
            t.seed[i] ^= 0x01;
            // Another seed, another ClientHello.
            fails(format!("seed byte {i}"), t, &["diverge"])
        })
        .collect();
    run_cases("seed", cases);
}

/// The clock start is one of the inputs of the world key (with the seed
/// and the URL), so the ClientHello random depends on it: a clock moved by
/// one second, inside the certificate's validity or outside it, makes the
/// client's first bytes differ: the ClientHello random, offsets 11 to 42
/// after the 5-byte record header, 4-byte handshake header and 2-byte
/// version (usually 11; later when the two randoms agree in a byte by chance).
/// Without that binding only a clock outside the validity window could be
/// told apart, because no time reaches the wire.
#[test]
fn tamper_clock() {
    let s = signed();
    assert_eq!(s.t.clock_start.secs, TIME_2024_SECS);
    let mut cases: Vec<Case> = [0u32, 1, 8, 20, 30, 33]
        .into_iter()
        .map(|bit| {
            let mut t = s.t.clone();
            t.clock_start.secs ^= 1i64 << bit;
            let name = format!("clock bit {bit} ({})", t.clock_start.secs);
            fails(name, t, &["client bytes diverge at offset"])
        })
        .collect();
    let mut t = s.t.clone();
    t.clock_start.nanos ^= 1;
    cases.push(fails(
        "clock nanoseconds bit 0",
        t,
        &["client bytes diverge at offset"],
    ));
    run_cases("clock", cases);
}

/// Replace the alphanumeric at `i` with another one: still a valid URL.
fn other_alnum(c: u8) -> u8 {
    match c {
        b'0'..=b'8' | b'a'..=b'y' | b'A'..=b'Y' => c + 1,
        b'9' => b'0',
        b'z' => b'a',
        b'Z' => b'A',
        _ => panic!("not alphanumeric: {c}"),
    }
}

#[test]
fn tamper_url() {
    let s = signed();
    let url = s.t.url.clone();
    let path_start = url.rfind(PATH).expect("the URL ends with the signed path");
    let alnum: Vec<usize> = (path_start..url.len())
        .filter(|&i| url.as_bytes()[i].is_ascii_alphanumeric())
        .collect();
    let host_start = url.find("tlsign.test").expect("the URL names tlsign.test");
    let mut picks = vec![
        alnum[0],
        alnum[2],
        alnum[alnum.len() / 2],
        alnum[alnum.len() - 1],
    ];
    picks.dedup();
    picks.push(host_start + 1); // tlsign.test -> tmsign.test
    let cases = picks
        .into_iter()
        .map(|i| {
            let mut bytes = url.clone().into_bytes();
            bytes[i] = other_alnum(bytes[i]);
            let mut t = s.t.clone();
            t.url = String::from_utf8(bytes).unwrap();
            fails(format!("url {:?}", t.url), t, &[])
        })
        .collect();
    run_cases("url", cases);
}

#[test]
fn tamper_response() {
    let s = signed();
    let r = &s.t.response;
    let mut cases = Vec::new();
    let mut with = |name: &str, mentions: &[&str], f: &dyn Fn(&mut Transcript)| {
        let mut t = s.t.clone();
        f(&mut t);
        cases.push(fails(name, t, mentions));
    };
    let len = r.body.len();
    for pos in [0, len / 2, len - 1] {
        with(
            &format!("body byte {pos} of {len}"),
            &["response differs"],
            &|t| t.response.body[pos] ^= 0x01,
        );
    }
    with("body one byte longer", &["response differs"], &|t| {
        t.response.body.push(b'\n')
    });
    with("body one byte shorter", &["response differs"], &|t| {
        t.response.body.pop();
    });
    with("status 200 -> 201", &["response"], &|t| {
        t.response.status = 201
    });
    with(
        "first header value",
        &["response", "header 0 differs"],
        &|t| t.response.headers[0].1[0] ^= 0x01,
    );
    with("last header removed", &["response"], &|t| {
        t.response.headers.pop();
    });
    with("final_url", &["response"], &|t| {
        t.response.final_url.push('x')
    });
    with("a redirect added", &["response"], &|t| {
        t.response.redirects.push(t.url.clone())
    });
    run_cases("response", cases);
}

/// The tamper helpers themselves (no binary needed).
#[test]
fn helpers_flip_the_byte_they_say() {
    use tlsign_seccomp::transcript::{ClientId, Connection, Response, Timestamp};
    let t = Transcript {
        client: ClientId {
            name: "c".into(),
            version: "0".into(),
        },
        url: "https://tlsign.test:1/index.html".into(),
        seed: [0; 32],
        clock_start: Timestamp { secs: 0, nanos: 0 },
        backend: "b".into(),
        connections: vec![Connection {
            host: "tlsign.test".into(),
            port: 1,
            signed_addr: "127.0.0.1:1".into(),
            events: vec![
                Event::Client(vec![0; 3]),
                Event::Server(vec![0; 5]),
                Event::Client(vec![0; 4]),
                Event::Server(vec![0; 2]),
                Event::ClientEof,
            ],
        }],
        response: Response {
            final_url: String::new(),
            redirects: vec![],
            status: 200,
            headers: vec![],
            body: vec![],
        },
    };
    assert_eq!(spread(9), (0..9).collect::<Vec<_>>());
    assert_eq!(
        spread(1000),
        [0, 111, 222, 333, 444, 500, 555, 666, 777, 888, 999]
    );
    for (side, len) in [(Side::Client, 7), (Side::Server, 7)] {
        for pos in 0..len {
            let f = flip_stream(&t, side, pos);
            let bytes = match side {
                Side::Client => client_bytes(&f.connections[0]),
                Side::Server => server_bytes(&f.connections[0]),
            };
            let mut want = vec![0u8; len];
            want[pos] = 1;
            assert_eq!(bytes, want);
            // The other side is untouched.
            let other = match side {
                Side::Client => server_bytes(&f.connections[0]),
                Side::Server => client_bytes(&f.connections[0]),
            };
            assert!(other.iter().all(|&b| b == 0));
        }
    }
    assert_eq!(other_alnum(b'z'), b'a');
    assert_eq!(other_alnum(b'9'), b'0');
    assert_eq!(other_alnum(b'i'), b'j');
}

/// The client's exact behaviour is part of what a transcript means: a
/// transcript naming another client (or another version of ours) is refused
/// as unverifiable here (exit 2), not judged (exit 1).
#[test]
fn another_client_is_refused() {
    let s = signed();
    for (what, edit) in [
        (
            "version",
            (|t: &mut Transcript| t.client.version.push_str("-other")) as fn(&mut Transcript),
        ),
        ("name", |t: &mut Transcript| t.client.name = "curl".into()),
    ] {
        let mut t = s.t.clone();
        edit(&mut t);
        let file = s.dir.join(format!("client-{what}.tlsign"));
        write_transcript(&file, &t);
        let r = verify_file(&file, &s.ca);
        r.assert_code(2);
        r.assert_one_error_line();
        r.assert_stderr_mentions("client");
    }
}

/// Connections are checked against where the replayed client connects: a
/// transcript whose connection names another host or port fails.
#[test]
fn tamper_connection_endpoint() {
    let s = signed();
    let mut host = s.t.clone();
    host.connections[0].host = "other.test".into();
    let mut port = s.t.clone();
    port.connections[0].port ^= 1;
    let mut extra = s.t.clone();
    extra.connections.push(extra.connections[0].clone());
    run_cases(
        "endpoint",
        vec![
            fails("host", host, &["connection 0", "other.test"]),
            fails("port", port, &["connection 0"]),
            fails("extra connection", extra, &["connection"]),
        ],
    );
}

/// Events reordered so that the server's first flight comes after the
/// client's second: the client waits for the server, the replay for the
/// client. Verify must say so within the stall limit, not wait out its
/// whole timeout.
#[test]
fn reordered_events_stall_and_fail() {
    let s = signed();
    let mut t = s.t.clone();
    let events = &mut t.connections[0].events;
    let first_server = events
        .iter()
        .position(|e| matches!(e, Event::Server(_)))
        .expect("a server event");
    let next_client = first_server
        + events[first_server..]
            .iter()
            .position(|e| matches!(e, Event::Client(_)))
            .expect("a later client event");
    let moved = events.remove(first_server);
    events.insert(next_client, moved);
    let file = s.dir.join("reordered.tlsign");
    write_transcript(&file, &t);
    let r = verify_file(&file, &s.ca);
    r.assert_code(1);
    r.assert_one_error_line();
    r.assert_stderr_mentions("sent nothing");
    assert!(r.elapsed < Duration::from_secs(25), "took {:?}", r.elapsed);
}

/// Regression: the record-layer version of a plaintext record (a TLS 1.2
/// ServerKeyExchange, a TLS 1.3 ServerHello) is authenticated by nothing in
/// TLS itself, and a flip there once verified. The client now requires one
/// record version throughout. Flip the version bytes of every server record
/// header, for TLS 1.2 and TLS 1.3 servers: each must fail.
#[test]
fn record_version_bytes_are_checked() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let server = SServer::start(dir.path(), &pki, Cert::Valid, version);
        let file = dir.path().join(format!("records-{version:?}.tlsign"));
        let t = sign_ok(&server, &pki, PATH, &file);
        drop(server);
        // Offsets of each record's two version bytes in the server stream.
        let stream = server_bytes(&t.connections[0]);
        let mut at = 0;
        let mut positions = Vec::new();
        while at + 5 <= stream.len() {
            positions.extend([at + 1, at + 2]);
            at += 5 + usize::from(u16::from_be_bytes([stream[at + 3], stream[at + 4]]));
        }
        assert!(
            positions.len() >= 8,
            "{version:?}: only {} record header bytes",
            positions.len()
        );
        let mut problems = Vec::new();
        for pos in positions {
            let bad = dir.path().join(format!("records-{version:?}-{pos}.tlsign"));
            write_transcript(&bad, &flip_stream(&t, Side::Server, pos));
            let r = verify_file(&bad, &pki.ca);
            if r.code != Some(1) {
                problems.push(format!(
                    "{version:?} byte {pos}: exit {:?}: {}",
                    r.code,
                    r.stderr.trim()
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "record version flips that verified:\n{}",
            problems.join("\n")
        );
    }
}
