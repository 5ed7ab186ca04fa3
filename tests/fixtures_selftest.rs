//! Checks the test fixtures themselves, with curl and openssl instead of the
//! binary: the PKI, nginx and s_server serve what the end-to-end tests
//! expect, the command runner kills what hangs, and the C probe builds. When
//! an end-to-end test fails, this file says whether to blame the fixture.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// curl with the test CA and tlsign.test resolved to the server.
fn curl_to(server: &impl HttpsServer, pki: &Pki) -> Cmd {
    curl()
        .arg("--cacert")
        .arg(&pki.ca)
        .arg("--resolve")
        .arg(server.resolve())
}

#[test]
fn nginx_serves_every_route() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let site = nginx.site();

    for path in ["/", "/index.html"] {
        let r = curl_to(&nginx, &pki).arg(nginx.url(path)).run();
        r.assert_code(0);
        assert_bytes_eq(path, &r.stdout, &site.index);
    }

    let r = curl_to(&nginx, &pki).arg(nginx.url("/big.bin")).run();
    r.assert_code(0);
    assert_bytes_eq("/big.bin", &r.stdout, &site.big);

    // gzip on the fly, only when asked for.
    let headers = dir.path().join("gz.headers");
    let r = curl_to(&nginx, &pki)
        .args(["-H", "Accept-Encoding: gzip", "-D"])
        .arg(&headers)
        .arg(nginx.url("/gz.html"))
        .run();
    r.assert_code(0);
    let h = std::fs::read_to_string(&headers).unwrap().to_lowercase();
    assert!(h.contains("content-encoding: gzip"), "no gzip: {h}");
    assert!(
        h.contains("transfer-encoding: chunked"),
        "gzip on the fly should be chunked: {h}"
    );
    assert!(
        r.stdout.len() < site.gz_page.len() / 4,
        "gzip did not compress: {} bytes",
        r.stdout.len()
    );
    assert_bytes_eq("/gz.html gunzipped", &gunzip(&r.stdout), &site.gz_page);
    let r = curl_to(&nginx, &pki).arg(nginx.url("/gz.html")).run();
    assert_bytes_eq("/gz.html without Accept-Encoding", &r.stdout, &site.gz_page);

    // Stored gzip, sent as gzip even when not asked for.
    let r = curl_to(&nginx, &pki)
        .arg("-D")
        .arg(&headers)
        .arg(nginx.url("/forced-gz.html"))
        .run();
    r.assert_code(0);
    let h = std::fs::read_to_string(&headers).unwrap().to_lowercase();
    assert!(h.contains("content-encoding: gzip"), "no gzip: {h}");
    assert_bytes_eq(
        "/forced-gz.html gunzipped",
        &gunzip(&r.stdout),
        &site.forced_gz_page,
    );

    // Redirects: where they point, and where following them ends.
    let w = ["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"];
    let cases = [
        ("/redirect", format!("302 {}", nginx.url("/"))),
        ("/chain1", format!("302 {}", nginx.url("/chain2"))),
        ("/chain2", format!("301 {}", nginx.url("/"))),
        (
            "/to-http",
            format!("302 http://tlsign.test:{}/", nginx.port()),
        ),
    ];
    for (path, want) in cases {
        let r = curl_to(&nginx, &pki).args(w).arg(nginx.url(path)).run();
        r.assert_code(0);
        assert_eq!(r.stdout_str(), want, "{path}");
    }
    for (path, hops) in [("/redirect", "1"), ("/chain1", "2")] {
        let r = curl_to(&nginx, &pki)
            .args(["-L", "-w", "%{num_redirects}"])
            .arg(nginx.url(path))
            .run();
        r.assert_code(0);
        let mut want = site.index.clone();
        want.extend_from_slice(hops.as_bytes());
        assert_bytes_eq(path, &r.stdout, &want);
    }

    // The IP literal matches the certificate's IP SAN.
    let r = curl()
        .arg("--cacert")
        .arg(&pki.ca)
        .arg(nginx.ip_url("/"))
        .run();
    r.assert_code(0);
    assert_bytes_eq("IP literal", &r.stdout, &site.index);

    // The unrelated CA does not vouch for the server (curl: 60).
    curl()
        .arg("--cacert")
        .arg(&pki.other_ca)
        .arg("--resolve")
        .arg(nginx.resolve())
        .arg(nginx.url("/"))
        .run()
        .assert_code(60);
}

#[test]
fn expired_and_past_window_certs_are_rejected_today() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    for cert in [Cert::Expired, Cert::PastWindow] {
        let nginx = Nginx::start(dir.path(), &pki, cert);
        let r = curl_to(&nginx, &pki).arg(nginx.url("/")).run();
        r.assert_code(60);
        r.assert_stderr_mentions("expired");
    }
    assert!(!Cert::Expired.valid_at(now_secs()) && !Cert::PastWindow.valid_at(now_secs()));
    assert!(Cert::Valid.valid_at(now_secs()));

    // At 2020-06-01 the past-window certificate is fine, the expired one not.
    let at = "1590969600";
    assert!(Cert::PastWindow.valid_at(1_590_969_600) && !Cert::Expired.valid_at(1_590_969_600));
    let verify_at = |cert| {
        Cmd::new("openssl")
            .args(["verify", "-attime", at, "-CAfile"])
            .arg(&pki.ca)
            .arg(pki.cert(cert))
            .run()
    };
    verify_at(Cert::PastWindow).assert_code(0);
    verify_at(Cert::Valid).assert_code(0);
    assert_ne!(verify_at(Cert::Expired).code, Some(0));
    // And today only the valid one.
    for (cert, ok) in [
        (Cert::Valid, true),
        (Cert::Expired, false),
        (Cert::PastWindow, false),
    ] {
        let r = Cmd::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(&pki.ca)
            .arg(pki.cert(cert))
            .run();
        assert_eq!(r.code == Some(0), ok, "{cert:?}: {}", r.describe());
    }
}

#[test]
fn s_server_serves_tls12_and_tls13() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    for (version, curl_flags, other_flags) in [
        (
            TlsVersion::Tls13,
            ["--tlsv1.3", "--tls-max", "1.3"],
            ["--tlsv1.2", "--tls-max", "1.2"],
        ),
        (
            TlsVersion::Tls12,
            ["--tlsv1.2", "--tls-max", "1.2"],
            ["--tlsv1.3", "--tls-max", "1.3"],
        ),
    ] {
        let server = SServer::start(dir.path(), &pki, Cert::Valid, version);
        let r = curl_to(&server, &pki)
            .args(curl_flags)
            .arg(server.url("/index.html"))
            .run();
        r.assert_code(0);
        assert_bytes_eq(
            &format!("{version:?} /index.html"),
            &r.stdout,
            &server.site().index,
        );
        // The server really is limited to that version.
        let r = curl_to(&server, &pki)
            .args(other_flags)
            .arg(server.url("/index.html"))
            .run();
        assert_ne!(
            r.code,
            Some(0),
            "{version:?} server accepted another version: {}",
            r.describe()
        );
    }
}

#[test]
fn servers_stop_on_drop() {
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let addr = nginx.addr();
    nginx.stop();
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "nginx still listens"
    );

    let server = SServer::start(dir.path(), &pki, Cert::Valid, TlsVersion::Tls13);
    let addr = server.addr();
    server.stop();
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "s_server still listens"
    );
}

#[test]
fn cmd_runner_kills_what_hangs() {
    let dir = tempdir();
    let pidfile = dir.path().join("grandchild.pid");

    // A hang: killed at the timeout, with its background grandchild.
    let script = format!(
        "sleep 30 & echo $! > {}; echo started; sleep 30",
        pidfile.display()
    );
    let err = Cmd::new("sh")
        .args(["-c", &script])
        .timeout(Duration::from_secs(1))
        .try_run()
        .unwrap_err();
    assert!(
        err.contains("timed out") && err.contains("started"),
        "{err}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signal 0 only checks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid);
    assert!(!alive, "the grandchild {pid} survived the timeout");

    // A command that exits but leaves a grandchild holding its stdout:
    // returns after the grace period with what it printed.
    let r = Cmd::new("sh")
        .args(["-c", "sleep 30 & echo done"])
        .timeout(Duration::from_secs(20))
        .run();
    r.assert_code(0);
    assert_eq!(r.stdout_str(), "done\n");

    // A Ctrl-C-like SIGINT to the group reaches the command.
    let r = Cmd::new("sh")
        .args(["-c", "trap 'exit 130' INT; sleep 20"])
        .signal_after(Duration::from_millis(300), libc::SIGINT)
        .timeout(Duration::from_secs(10))
        .run();
    r.assert_code(130);
    assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);

    // Exit codes and stderr come through.
    let r = Cmd::new("sh").args(["-c", "echo oops >&2; exit 7"]).run();
    r.assert_code(7);
    assert_eq!(r.assert_one_line(), "oops");
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn world_probe_builds_and_reports_the_real_world() {
    let dir = tempdir();
    let probe = cc_build(dir.path(), "world_probe", WORLD_PROBE_C);
    let a = Cmd::new(&probe).run();
    a.assert_code(0);
    let b = Cmd::new(&probe).run();
    let (a, b) = (parse_probe(&a.stdout), parse_probe(&b.stdout));
    // Outside the deterministic world: fresh randomness everywhere.
    assert_ne!(a["getrandom"], b["getrandom"]);
    assert_ne!(a["getrandom"], a["child-getrandom"]);
    assert_ne!(a["urandom"], a["child-urandom"]);
    for key in ["realtime", "gettimeofday", "time", "child-realtime"] {
        assert!(
            (probe_secs(&a[key]) - now_secs()).abs() < 60,
            "{key} = {}",
            a[key]
        );
    }
}

#[test]
fn silent_server_never_answers() {
    let server = SilentServer::start();
    let r = curl()
        .args(["--max-time", "1", "--insecure"])
        .arg(format!("https://127.0.0.1:{}/", server.port()))
        .run();
    r.assert_code(28); // curl: operation timed out
}

#[test]
fn deny_seccomp_wrapper_installs_its_filter() {
    let dir = tempdir();
    let deny = cc_build(dir.path(), "deny_seccomp", DENY_SECCOMP_C);
    Cmd::new(&deny)
        .args(["sh", "-c", "exit 5"])
        .run()
        .assert_code(5);
    let r = Cmd::new(&deny)
        .args(["grep", "^Seccomp:", "/proc/self/status"])
        .run();
    r.assert_code(0);
    assert_eq!(
        r.stdout_str().split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "2"]
    );
}
