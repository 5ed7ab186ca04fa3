//! End to end: sign against real servers, verify offline, compare the
//! verified body with what the server serves.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// A test's directory and PKI.
fn setup() -> (tempfile::TempDir, Pki) {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    (dir, pki)
}

/// An empty directory for a sign that must leave nothing behind.
fn empty_out_dir(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    out
}

#[track_caller]
fn assert_left_nothing(out_dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "a failed sign left files behind: {left:?}");
}

#[test]
fn nginx_small_page() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("small.tlsign");
    let t = sign_ok(&nginx, &pki, "/", &file);

    assert_eq!(t.url, nginx.url("/"));
    assert_eq!(t.response.status, 200);
    assert_eq!(t.response.final_url, nginx.url("/"));
    assert!(
        t.response.redirects.is_empty(),
        "{:?}",
        t.response.redirects
    );
    assert_bytes_eq("recorded body", &t.response.body, &nginx.site().index);
    assert_eq!(t.connections.len(), 1, "one fetch, one connection");
    let c = &t.connections[0];
    assert_eq!((c.host.as_str(), c.port), ("tlsign.test", nginx.port()));
    assert!(
        !client_bytes(c).is_empty() && !server_bytes(c).is_empty(),
        "no bytes recorded: {:?}",
        c.events.len()
    );

    assert_bytes_eq(
        "verified body",
        &verify_ok(&file, &pki),
        &nginx.site().index,
    );
}

#[test]
fn nginx_ip_literal_url() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("ip.tlsign");
    let url = nginx.ip_url("/");
    Cmd::tlsign()
        .arg("sign")
        .arg(&url)
        .arg("-o")
        .arg(&file)
        .arg("--ca-file")
        .arg(&pki.ca)
        .run()
        .assert_code(0);

    let t = read_transcript(&file);
    assert_eq!(t.url, url);
    assert_eq!(t.connections[0].host, "127.0.0.1");
    assert_bytes_eq(
        "verified body",
        &verify_ok(&file, &pki),
        &nginx.site().index,
    );
}

/// IPv6: the client's AF_INET6 socket is replaced like an AF_INET one, for
/// an address literal and for a name resolved (by the signer) to ::1.
#[test]
fn ipv6_literal_and_resolved() {
    let (dir, pki) = setup();
    let server = SServer::start_on(dir.path(), &pki, Cert::Valid, TlsVersion::Tls13, "[::1]");
    let port = server.port();
    for (name, url, resolve) in [
        ("literal", format!("https://[::1]:{port}/index.html"), None),
        (
            "resolved",
            format!("https://tlsign.test:{port}/index.html"),
            Some(format!("tlsign.test:{port}:[::1]")),
        ),
    ] {
        let file = dir.path().join(format!("v6-{name}.tlsign"));
        let mut cmd = Cmd::tlsign()
            .arg("sign")
            .arg(&url)
            .arg("-o")
            .arg(&file)
            .arg("--ca-file")
            .arg(&pki.ca);
        if let Some(r) = resolve {
            cmd = cmd.arg("--resolve").arg(r);
        }
        cmd.run().assert_code(0);
        let t = read_transcript(&file);
        assert_eq!(t.connections.len(), 1, "{name}");
        assert!(
            t.connections[0].signed_addr.starts_with("[::1]:"),
            "{name}: {}",
            t.connections[0].signed_addr
        );
        assert_bytes_eq(
            &format!("{name}: verified body"),
            &verify_ok(&file, &pki),
            &server.site().index,
        );
    }
}

#[test]
fn nginx_big_body() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("big.tlsign");
    let t = sign_ok(&nginx, &pki, "/big.bin", &file);
    assert_bytes_eq("recorded body", &t.response.body, &nginx.site().big);
    let server = server_bytes(&t.connections[0]);
    assert!(
        server.len() > nginx.site().big.len(),
        "3 MiB body but only {} server bytes",
        server.len()
    );
    assert_bytes_eq("verified body", &verify_ok(&file, &pki), &nginx.site().big);
}

#[test]
fn nginx_gzip_body_is_decoded() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("gz.tlsign");
    let t = sign_ok(&nginx, &pki, "/gz.html", &file);
    // nginx compresses /gz.html only for a client that accepts gzip.
    assert_eq!(
        header(&t.response, "content-encoding"),
        Some(&b"gzip"[..]),
        "the client did not get /gz.html gzipped (does it send Accept-Encoding: gzip?); headers: {:?}",
        t.response.headers
    );
    assert_bytes_eq("recorded body", &t.response.body, &nginx.site().gz_page);
    assert_bytes_eq(
        "verified body",
        &verify_ok(&file, &pki),
        &nginx.site().gz_page,
    );
}

#[test]
fn nginx_forced_gzip_body_is_decoded() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("forced-gz.tlsign");
    let t = sign_ok(&nginx, &pki, "/forced-gz.html", &file);
    assert_bytes_eq(
        "recorded body",
        &t.response.body,
        &nginx.site().forced_gz_page,
    );
    assert_bytes_eq(
        "verified body",
        &verify_ok(&file, &pki),
        &nginx.site().forced_gz_page,
    );
}

#[test]
fn nginx_redirect() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("redirect.tlsign");
    let t = sign_ok(&nginx, &pki, "/redirect", &file);
    assert_eq!(t.response.redirects, vec![nginx.url("/redirect")]);
    assert_eq!(t.response.final_url, nginx.url("/"));
    assert_eq!(t.response.status, 200);
    assert_bytes_eq("recorded body", &t.response.body, &nginx.site().index);
    assert_bytes_eq(
        "verified body",
        &verify_ok(&file, &pki),
        &nginx.site().index,
    );
}

#[test]
fn nginx_redirect_chain_two_hops() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("chain.tlsign");
    let t = sign_ok(&nginx, &pki, "/chain1", &file);
    // /chain1 -> /chain2 (absolute Location) -> / (relative Location).
    assert_eq!(
        t.response.redirects,
        vec![nginx.url("/chain1"), nginx.url("/chain2")]
    );
    assert_eq!(t.response.final_url, nginx.url("/"));
    assert_bytes_eq(
        "verified body",
        &verify_ok(&file, &pki),
        &nginx.site().index,
    );
}

fn s_server_small_page(version: TlsVersion) {
    let (dir, pki) = setup();
    let server = SServer::start(dir.path(), &pki, Cert::Valid, version);
    let file = dir.path().join("s_server.tlsign");
    // s_server -WWW answers HTTP/1.0 without Content-Length: the body ends
    // when the server closes the connection.
    let t = sign_ok(&server, &pki, "/index.html", &file);
    assert_eq!(t.response.status, 200);
    assert_bytes_eq("recorded body", &t.response.body, &server.site().index);
    server.stop();
    assert_bytes_eq("verified body", &verify_ok(&file, &pki), &t.response.body);
}

#[test]
fn s_server_tls13() {
    s_server_small_page(TlsVersion::Tls13);
}

#[test]
fn s_server_tls12() {
    s_server_small_page(TlsVersion::Tls12);
}

/// The four kinds of response the issue names: a small page, a few MB, a
/// gzip-encoded response, a redirect; with what the verified body must be.
fn every_kind(site: &Site) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("/", site.index.clone()),
        ("/big.bin", site.big.clone()),
        ("/gz.html", site.gz_page.clone()),
        ("/redirect", site.index.clone()),
    ]
}

#[test]
fn verify_after_server_stopped() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let kinds = every_kind(nginx.site());
    let mut files = Vec::new();
    for (i, (path, _)) in kinds.iter().enumerate() {
        let file = dir.path().join(format!("stopped-{i}.tlsign"));
        sign_ok(&nginx, &pki, path, &file);
        files.push(file);
    }
    let addr = nginx.addr();
    nginx.stop();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the server is still up"
    );
    for (file, (path, want)) in files.iter().zip(&kinds) {
        assert_bytes_eq(
            &format!("{path}: verified body"),
            &verify_ok(file, &pki),
            want,
        );
    }
}

#[test]
fn verify_in_empty_network_namespace() {
    if Cmd::new("unshare").args(["-n", "true"]).run().code != Some(0) {
        return skip(
            "verify_in_empty_network_namespace",
            "`unshare -n true` fails here (needs root or user namespaces)",
        );
    }
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let kinds = every_kind(nginx.site());
    let mut files = Vec::new();
    for (i, (path, _)) in kinds.iter().enumerate() {
        let file = dir.path().join(format!("netns-{i}.tlsign"));
        sign_ok(&nginx, &pki, path, &file);
        files.push(file);
    }
    nginx.stop();

    // A fresh network namespace has only `lo`, and it is down: nothing at
    // all is reachable, not even 127.0.0.1.
    for (i, (file, (path, want))) in files.iter().zip(&kinds).enumerate() {
        let body = dir.path().join(format!("netns-{i}.body"));
        let r = verify(file, &pki)
            .arg("--body")
            .arg(&body)
            .wrapped(["unshare", "-n"])
            .run();
        assert_eq!(
            r.code,
            Some(0),
            "{path}: verify must need no network at all (note: in `unshare -n` even connecting to \
             127.0.0.1 fails with ENETUNREACH, lo is down): {}",
            r.describe()
        );
        assert_bytes_eq(
            &format!("{path}: verified body"),
            &std::fs::read(&body).unwrap(),
            want,
        );
    }
}

#[test]
fn verify_body_to_stdout() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("stdout.tlsign");
    sign_ok(&nginx, &pki, "/", &file);
    let r = verify(&file, &pki).args(["--body", "-"]).run();
    r.assert_code(0);
    assert_bytes_eq("stdout of --body -", &r.stdout, &nginx.site().index);

    // Without --body nothing goes to stdout.
    let r = verify(&file, &pki).run();
    r.assert_code(0);
    assert!(
        r.stdout.is_empty(),
        "verify without --body printed to stdout: {}",
        r.describe()
    );
}

#[test]
fn two_signs_use_fresh_seeds() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let (a, b) = (dir.path().join("a.tlsign"), dir.path().join("b.tlsign"));
    let ta = sign_ok(&nginx, &pki, "/", &a);
    let tb = sign_ok(&nginx, &pki, "/", &b);
    assert_ne!(
        ta.seed, tb.seed,
        "two signs without --seed used the same seed"
    );
    assert_ne!(
        first_client_flight(&ta.connections[0]),
        first_client_flight(&tb.connections[0]),
        "same ClientHello twice"
    );
    assert_ne!(
        client_bytes(&ta.connections[0]),
        client_bytes(&tb.connections[0])
    );
    for f in [&a, &b] {
        assert_bytes_eq("verified body", &verify_ok(f, &pki), &nginx.site().index);
    }
}

#[test]
fn fixed_seed_and_time_are_recorded_and_reproduce_the_client_hello() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let files = [
        dir.path().join("a.tlsign"),
        dir.path().join("b.tlsign"),
        dir.path().join("c.tlsign"),
    ];
    let seeds = [SEED_A, SEED_A, SEED_B];
    let mut ts = Vec::new();
    for (file, seed) in files.iter().zip(seeds) {
        sign(&nginx, &pki, "/", file)
            .args(["--seed", seed, "--time", TIME_2024])
            .run()
            .assert_code(0);
        let t = read_transcript(file);
        assert_eq!(hex(&t.seed), seed);
        assert_eq!(
            (t.clock_start.secs, t.clock_start.nanos),
            (TIME_2024_SECS, 0)
        );
        ts.push(t);
    }
    // The ClientHello depends on the seed only (the server's randomness
    // shows from its first byte on, so later client bytes differ anyway).
    let hello = |i: usize| first_client_flight(&ts[i].connections[0]);
    assert!(!hello(0).is_empty());
    assert_bytes_eq("ClientHello with the same seed", &hello(1), &hello(0));
    assert_ne!(hello(2), hello(0), "another seed gave the same ClientHello");
    for f in &files {
        assert_bytes_eq("verified body", &verify_ok(f, &pki), &nginx.site().index);
    }
}

/// The client recorder (seccomp's default: the client gets a socket to the
/// server and reports its bytes) and the relay see the same client. With
/// one seed and time the client's first flight, recorded by each, is the
/// same; both transcripts verify; and the client's record holds the whole
/// exchange, from the ClientHello to its own close.
#[test]
fn client_and_relay_recorders_record_the_same_client() {
    use tlsign_seccomp::transcript::Event;
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let mut ts = Vec::new();
    for (recorder, said) in [("client", "recorded by the client"), ("relay", "relayed")] {
        let f = dir.path().join(format!("{recorder}.tlsign"));
        let r = sign(&nginx, &pki, "/", &f)
            .args([
                "--seed",
                SEED_A,
                "--time",
                TIME_2024,
                "--recorder",
                recorder,
            ])
            .run();
        r.assert_code(0);
        let line = r.assert_one_line();
        assert!(line.contains(said), "--recorder {recorder}: {line}");
        assert_bytes_eq("verified body", &verify_ok(&f, &pki), &nginx.site().index);
        ts.push(read_transcript(&f));
    }
    let (client, relay) = (&ts[0].connections[0], &ts[1].connections[0]);
    let hello = first_client_flight(client);
    assert!(
        hello.len() > 100 && hello[0] == 0x16,
        "no ClientHello recorded"
    );
    assert_bytes_eq(
        "ClientHello, client recorder vs relay",
        &hello,
        &first_client_flight(relay),
    );
    assert_eq!(client.signed_addr, relay.signed_addr);
    assert_eq!(client.events.last(), Some(&Event::ClientEof));
    // The same response, so about the same number of server bytes (the
    // server's key share and signature differ in length by a few bytes).
    let (a, b) = (server_bytes(client).len(), server_bytes(relay).len());
    assert!(
        a.abs_diff(b) < 64,
        "client recorder {a} server bytes, relay {b}"
    );
}

/// A client forked from the zygote (the default) and one executed from
/// the binary (`TLSIGN_SECCOMP_LAUNCH=exec`) are the same client: with one
/// seed and time they send the same ClientHello, and a transcript signed
/// by either verifies with the other. Verifiers may start the client
/// either way, so this is what keeps old and new transcripts verifying.
#[test]
fn forked_and_executed_clients_are_the_same_client() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let mut ts = Vec::new();
    for (signed, verified) in [("fork", "exec"), ("exec", "fork")] {
        let f = dir.path().join(format!("{signed}.tlsign"));
        sign(&nginx, &pki, "/", &f)
            .args(["--seed", SEED_A, "--time", TIME_2024])
            .env("TLSIGN_SECCOMP_LAUNCH", signed)
            .run()
            .assert_code(0);
        let body = f.with_extension("body");
        verify(&f, &pki)
            .arg("--body")
            .arg(&body)
            .env("TLSIGN_SECCOMP_LAUNCH", verified)
            .run()
            .assert_code(0);
        assert_bytes_eq(
            &format!("body signed by {signed}, verified by {verified}"),
            &std::fs::read(&body).unwrap(),
            &nginx.site().index,
        );
        ts.push(read_transcript(&f));
    }
    let (forked, executed) = (&ts[0].connections[0], &ts[1].connections[0]);
    let hello = first_client_flight(forked);
    assert!(
        hello.len() > 100 && hello[0] == 0x16,
        "no ClientHello recorded"
    );
    assert_bytes_eq(
        "ClientHello, forked vs executed",
        &hello,
        &first_client_flight(executed),
    );
}

#[test]
fn expired_cert_fails_signing() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Expired);
    let out = empty_out_dir(dir.path());
    let r = sign(&nginx, &pki, "/", &out.join("t.tlsign")).run();
    r.assert_code(3);
    r.assert_one_error_line();
    r.assert_stderr_mentions("certificate");
    assert_left_nothing(&out);
}

#[test]
fn past_window_cert_signed_in_its_window_verifies_years_later() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::PastWindow);
    let file = dir.path().join("past.tlsign");
    sign(&nginx, &pki, "/", &file)
        .args(["--time", TIME_2020])
        .run()
        .assert_code(0);
    assert_eq!(read_transcript(&file).clock_start.secs, TIME_2020_SECS);
    let want = nginx.site().index.clone();
    nginx.stop();
    // Today the certificate is long expired; the transcript still verifies:
    // the replay runs at the recorded clock.
    assert!(!Cert::PastWindow.valid_at(now_secs()));
    assert_bytes_eq("verified body", &verify_ok(&file, &pki), &want);
}

#[test]
fn untrusted_ca_fails_signing() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let out = empty_out_dir(dir.path());
    let r = Cmd::tlsign()
        .arg("sign")
        .arg(nginx.url("/"))
        .arg("-o")
        .arg(out.join("t.tlsign"))
        .arg("--resolve")
        .arg(nginx.resolve())
        .arg("--ca-file")
        .arg(&pki.other_ca)
        .run();
    r.assert_code(3);
    r.assert_one_error_line();
    r.assert_stderr_mentions("certificate");
    assert_left_nothing(&out);
}

#[test]
fn verify_with_another_ca_fails() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("t.tlsign");
    sign_ok(&nginx, &pki, "/", &file);
    nginx.stop();

    // The verifier brings its own trust anchors: an unrelated CA, or none
    // beyond the built-in roots, must not vouch for the test server.
    let other = Cmd::tlsign()
        .arg("verify")
        .arg(&file)
        .arg("--ca-file")
        .arg(&pki.other_ca)
        .run();
    let none = Cmd::tlsign().arg("verify").arg(&file).run();
    for r in [other, none] {
        r.assert_code(1);
        r.assert_one_line();
        r.assert_stderr_mentions("certificate");
        r.assert_stderr_mentions("trust");
    }
}

#[test]
fn http_url_is_bad_input() {
    let dir = tempdir();
    let out = empty_out_dir(dir.path());
    let r = Cmd::tlsign()
        .arg("sign")
        .arg("http://tlsign.test/")
        .arg("-o")
        .arg(out.join("t.tlsign"))
        .run();
    r.assert_code(2);
    r.assert_one_error_line();
    assert_left_nothing(&out);
}

#[test]
fn redirect_to_http_fails_signing() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let out = empty_out_dir(dir.path());
    let r = sign(&nginx, &pki, "/to-http", &out.join("t.tlsign")).run();
    r.assert_code(3);
    r.assert_one_error_line();
    let without_https = r.stderr.to_lowercase().replace("https", "");
    assert!(
        without_https.contains("http"),
        "the error should say the redirect leaves HTTPS: {}",
        r.describe()
    );
    assert_left_nothing(&out);
}

#[test]
fn connection_refused_fails_signing() {
    let (dir, pki) = setup();
    let port = free_port(); // nothing listens there
    let out = empty_out_dir(dir.path());
    let r = Cmd::tlsign()
        .arg("sign")
        .arg(format!("https://tlsign.test:{port}/"))
        .arg("-o")
        .arg(out.join("t.tlsign"))
        .arg("--resolve")
        .arg(format!("tlsign.test:{port}:127.0.0.1"))
        .arg("--ca-file")
        .arg(&pki.ca)
        .args(["--timeout", "20"])
        .run();
    r.assert_code(3);
    r.assert_one_error_line();
    assert_left_nothing(&out);
}

#[test]
fn output_into_missing_directory_fails_cleanly() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("no-such-dir").join("t.tlsign");
    let r = sign(&nginx, &pki, "/", &file).run();
    assert!(
        matches!(r.code, Some(2) | Some(3)),
        "want exit 2 or 3: {}",
        r.describe()
    );
    r.assert_one_error_line();
    assert!(!dir.path().join("no-such-dir").exists());
}

/// `sign` against `server` (which never answers) with the test CA.
fn sign_silent(server: &SilentServer, pki: &Pki, out: &Path) -> Cmd {
    Cmd::tlsign().args(silent_sign_args(server, pki, out))
}

#[test]
fn silent_server_times_out() {
    let (dir, pki) = setup();
    let server = SilentServer::start();
    let out = empty_out_dir(dir.path());
    let r = sign_silent(&server, &pki, &out.join("t.tlsign"))
        .args(["--timeout", "2"])
        .run();
    r.assert_code(3);
    r.assert_one_error_line();
    assert!(
        r.elapsed < Duration::from_secs(15),
        "--timeout 2 took {:?}",
        r.elapsed
    );
    assert_left_nothing(&out);
}

#[test]
fn interrupted_sign_exits_130() {
    let (dir, pki) = setup();
    let server = SilentServer::start();
    let out = empty_out_dir(dir.path());
    // Ctrl-C: SIGINT to the whole foreground group, mid-handshake.
    let r = sign_silent(&server, &pki, &out.join("t.tlsign"))
        .signal_after(Duration::from_secs(1), libc::SIGINT)
        .timeout(Duration::from_secs(20))
        .run();
    r.assert_code(130);
    assert!(r.stderr_lines().len() <= 1, "{}", r.describe());
    assert_left_nothing(&out);
}

/// Where seccomp() fails (as on a kernel without it), the supervisor cannot
/// run: exit 4 with one error line, for sign and run alike.
#[test]
fn no_seccomp_exits_4() {
    let (dir, pki) = setup();
    let deny = cc_build(dir.path(), "deny_seccomp", DENY_SECCOMP_C);
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let out = empty_out_dir(dir.path());
    let r = sign(&nginx, &pki, "/", &out.join("t.tlsign"))
        .wrapped([&deny])
        .run();
    r.assert_code(4);
    r.assert_one_error_line();
    r.assert_stderr_mentions("seccomp");
    assert_left_nothing(&out);

    let r = Cmd::tlsign()
        .args(["run", "--", "true"])
        .wrapped([&deny])
        .run();
    r.assert_code(4);
    r.assert_one_error_line();
}

/// `inspect` shows the claims without replaying: URL, status, the body's
/// size and SHA-256, each connection; and refuses what is not a transcript.
#[test]
fn inspect_shows_the_claims() {
    use sha2::{Digest, Sha256};
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let file = dir.path().join("inspect.tlsign");
    sign_ok(&nginx, &pki, "/redirect", &file);
    let url = nginx.url("/redirect");
    nginx.stop();
    let r = Cmd::tlsign().arg("inspect").arg(&file).run();
    r.assert_code(0);
    let out = r.stdout_str();
    let index = &read_transcript(&file).response.body;
    let sha: String = Sha256::digest(index)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(out.starts_with("UNVERIFIED"), "{out}");
    for want in [
        format!("url:         {url}"),
        "status:      200".to_string(),
        format!("body:        {} bytes, SHA-256 {sha}", index.len()),
        "connection 0: tlsign.test:".to_string(),
        "connection 1: tlsign.test:".to_string(),
        format!("redirected:  {url}"),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"certainly not a transcript").unwrap();
    let r = Cmd::tlsign().arg("inspect").arg(&junk).run();
    r.assert_code(2);
    r.assert_one_error_line();
}

/// No fixed port, no shared state between supervisors: many signs run at
/// once on one machine, and every transcript verifies.
#[test]
fn concurrent_signs_do_not_interfere() {
    let (dir, pki) = setup();
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let paths = [
        "/",
        "/gz.html",
        "/redirect",
        "/big.bin",
        "/",
        "/chain1",
        "/gz.html",
        "/",
    ];
    let files: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let (nginx, pki, dir) = (&nginx, &pki, dir.path());
                s.spawn(move || {
                    let file = dir.join(format!("concurrent-{i}.tlsign"));
                    sign(nginx, pki, path, &file).run().assert_code(0);
                    file
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seeds = std::collections::HashSet::new();
    for (file, path) in files.iter().zip(paths) {
        let t = read_transcript(file);
        assert!(seeds.insert(t.seed), "two signs drew the same seed");
        let body = verify_ok(file, &pki);
        let want = match path {
            "/gz.html" => &nginx.site().gz_page,
            "/big.bin" => &nginx.site().big,
            _ => &nginx.site().index,
        };
        assert_bytes_eq(&format!("{path}: verified body"), &body, want);
    }
}
