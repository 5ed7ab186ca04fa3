//! The client against real TLS servers on 127.0.0.1: `openssl s_server` and
//! a small rustls server, with a CA and server certificate made by the
//! `openssl` CLI in a temp dir per test. (Threads and timeouts here are the
//! test's, never the client's.)

use super::*;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = tlsign-seccomp test CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[v3_server]
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
";

/// A temp dir holding `ca.pem` and a server certificate it signed
/// (`server.pem`, `server.key`) for localhost, 127.0.0.1 and ::1.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("openssl.cnf"), OPENSSL_CNF).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            dir.path(),
            &[
                &[
                    "req",
                    "-x509",
                    "-config",
                    "openssl.cnf",
                    "-extensions",
                    "v3_ca",
                ][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            ]
            .concat(),
        );
        openssl(
            dir.path(),
            &[
                &[
                    "req",
                    "-new",
                    "-config",
                    "openssl.cnf",
                    "-subj",
                    "/CN=localhost",
                ][..],
                &ec,
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat(),
        );
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "openssl.cnf",
                "-extensions",
                "v3_server",
            ],
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn args(&self, url: String) -> ClientArgs {
        ClientArgs {
            url,
            ca_files: vec![self.path("ca.pem")],
        }
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        let pem = std::fs::read(self.path("server.pem")).unwrap();
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .unwrap();
        let pem = std::fs::read(self.path("server.key")).unwrap();
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
            .unwrap()
            .unwrap();
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        Arc::new(config)
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl s_server -WWW` serving files from the Pki dir; killed on drop.
struct SServer {
    child: Child,
    port: u16,
}

impl SServer {
    fn start(pki: &Pki, extra: &[&str]) -> SServer {
        // A port that was free a moment ago; s_server reports if it is not.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("openssl")
            .args(["s_server", "-WWW", "-accept", &format!("127.0.0.1:{port}")])
            .args(["-cert", "server.pem", "-key", "server.key"])
            .args(extra)
            .current_dir(pki.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        // It prints ACCEPT once listening.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let server = SServer { child, port };
        loop {
            match lines.next() {
                Some(Ok(line)) if line == "ACCEPT" => return server,
                Some(Ok(_)) => {}
                _ => panic!("openssl s_server did not start on port {port}"),
            }
        }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the rustls test server answers to one request path.
struct Reply {
    bytes: Vec<u8>,
    close_notify: bool,
}

fn reply(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply {
        bytes: bytes.into(),
        close_notify: true,
    }
}

type Routes = dyn Fn(&str, u16) -> Reply + Send + Sync;

/// A one-thread rustls server answering each connection with `routes(path,
/// port)`, recording every request head it reads. Stopped on drop.
struct TestServer {
    port: u16,
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(pki: &Pki, routes: Box<Routes>) -> TestServer {
        Self::start_on(pki, "127.0.0.1:0", routes).unwrap()
    }

    fn start_on(pki: &Pki, bind: &str, routes: Box<Routes>) -> io::Result<TestServer> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let port = addr.port();
        let config = pki.server_config();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            std::thread::spawn(move || {
                for sock in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(sock) = sock else { continue };
                    let conn = ServerConnection::new(Arc::clone(&config)).unwrap();
                    let mut tls = StreamOwned::new(conn, sock);
                    let Some(head) = read_request_head(&mut tls) else {
                        continue;
                    };
                    let path = String::from_utf8_lossy(&head)
                        .split(' ')
                        .nth(1)
                        .unwrap_or("")
                        .to_string();
                    requests.lock().unwrap().push(head);
                    let reply = routes(&path, port);
                    let _ = tls.write_all(&reply.bytes);
                    if reply.close_notify {
                        tls.conn.send_close_notify();
                    }
                    let _ = tls.flush();
                }
            })
        };
        Ok(TestServer {
            port,
            addr,
            requests,
            stop,
            thread: Some(thread),
        })
    }

    fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().unwrap().clone()
    }
}

fn read_request_head(tls: &mut StreamOwned<ServerConnection, TcpStream>) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tls.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(head)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fetched(outcome: ClientOutcome) -> Response {
    match outcome {
        ClientOutcome::Fetched(r) => r,
        ClientOutcome::Failed(f) => panic!("fetch failed: {f:?}"),
    }
}

fn failed(outcome: ClientOutcome) -> ClientFailure {
    match outcome {
        ClientOutcome::Failed(f) => f,
        ClientOutcome::Fetched(r) => panic!("fetch unexpectedly succeeded: {r:?}"),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn fetch_from_openssl_s_server_tls13_and_tls12() {
    let pki = Pki::new();
    std::fs::write(pki.path("page.txt"), "hello from s_server\n").unwrap();
    for extra in [&[][..], &["-tls1_2"]] {
        let server = SServer::start(&pki, extra);
        for host in ["127.0.0.1", "localhost"] {
            let url = format!("https://{host}:{}/page.txt", server.port);
            let r = fetched(fetch(&pki.args(url.clone())));
            assert_eq!(r.status, 200, "{extra:?} {host}");
            assert_eq!(r.final_url, url);
            assert!(r.redirects.is_empty());
            // s_server -WWW answers HTTP/1.0, close-delimited, with close_notify.
            assert_eq!(r.body, b"hello from s_server\n");
            assert!(
                r.headers
                    .iter()
                    .any(|(n, v)| n == "Content-type" && v == b"text/plain"),
                "{:?}",
                r.headers
            );
        }
    }
}

#[test]
fn server_without_trusted_ca_is_refused() {
    let pki = Pki::new();
    std::fs::write(pki.path("page.txt"), "x").unwrap();
    let server = SServer::start(&pki, &[]);
    let args = ClientArgs {
        url: format!("https://localhost:{}/page.txt", server.port),
        ca_files: vec![],
    };
    let f = failed(fetch(&args));
    assert_eq!(f.kind, FailureKind::CertificateNotTrusted, "{f:?}");
    assert!(
        f.message.starts_with("certificate not trusted: "),
        "{}",
        f.message
    );

    // Trusting some other CA does not help.
    let other = Pki::new();
    let args = ClientArgs {
        ca_files: vec![other.path("ca.pem")],
        ..args
    };
    assert_eq!(
        failed(fetch(&args)).kind,
        FailureKind::CertificateNotTrusted
    );
}

#[test]
fn child_main_writes_a_decodable_outcome() {
    let pki = Pki::new();
    std::fs::write(pki.path("index.html"), "<p>child</p>").unwrap();
    let server = SServer::start(&pki, &[]);
    let url = format!("https://127.0.0.1:{}/index.html", server.port);
    let argv = |v: &[&OsStr]| v.iter().map(|s| s.to_os_string()).collect::<Vec<_>>();
    use std::ffi::OsStr;

    let mut out = Vec::new();
    let code = child_main_to(
        argv(&[
            url.as_ref(),
            "--ca-file".as_ref(),
            pki.path("ca.pem").as_os_str(),
        ]),
        &mut out,
    );
    assert_eq!(code, EXIT_FETCHED);
    let output = decode_output(&out).unwrap();
    let ClientOutcome::Fetched(r) = output.outcome else {
        panic!("not fetched")
    };
    assert_eq!(r.body, b"<p>child</p>");
    // One connection, recorded from its ClientHello to its close: the
    // server's bytes (read up to its close_notify, which ends the reading
    // before any TCP end), then our close_notify alert, then the close.
    let [events] = &output.wire[..] else {
        panic!("{} connections recorded", output.wire.len())
    };
    let n = events.len();
    assert!(n >= 4, "{events:?}");
    assert!(
        matches!(&events[0], Event::Client(b) if b[0] == 0x16),
        "starts with a handshake record"
    );
    assert!(
        matches!(&events[1], Event::Server(b) if b[0] == 0x16),
        "the ServerHello answers it"
    );
    assert!(
        matches!(&events[n - 2], Event::Client(b) if b[0] == 0x17),
        "our close_notify, encrypted"
    );
    assert_eq!(events[n - 1], Event::ClientEof);
    assert_eq!(events.iter().filter(|e| **e == Event::ClientEof).count(), 1);
    // The request went out after the handshake and before the response.
    let bytes = |side: fn(&Event) -> Option<&[u8]>| -> usize {
        events.iter().filter_map(side).map(<[u8]>::len).sum()
    };
    let (sent, got) = (bytes(Event::client_data), bytes(Event::server_data));
    assert!(
        sent > 300 && got > "<p>child</p>".len() + 1000,
        "sent {sent}, got {got}"
    );

    let mut out = Vec::new();
    assert_eq!(child_main_to(argv(&[url.as_ref()]), &mut out), EXIT_FAILED);
    let ClientOutcome::Failed(f) = decode_output(&out).unwrap().outcome else {
        panic!("not failed")
    };
    assert_eq!(f.kind, FailureKind::CertificateNotTrusted);
    assert!(!f.transient);

    // Bad argv writes nothing.
    for bad in [
        &[][..],
        &[url.as_ref(), "--ca-file".as_ref()],
        &[url.as_ref(), "--other".as_ref(), "x".as_ref()],
    ] {
        let mut out = Vec::new();
        assert_eq!(child_main_to(argv(bad), &mut out), EXIT_USAGE, "{bad:?}");
        assert!(out.is_empty());
    }
    // Trailing bytes are refused.
    let mut bytes = encode_output(&ClientOutput {
        outcome: ClientOutcome::Failed(ClientFailure::new(FailureKind::Io, "x")),
        wire: vec![vec![Event::ClientEof]],
    });
    assert!(decode_output(&bytes).is_ok());
    bytes.push(0);
    assert!(decode_output(&bytes).is_err());
}

#[test]
fn exact_request_bytes_redirects_chunked_gzip() {
    let pki = Pki::new();
    let server = TestServer::start(
        &pki,
        Box::new(|path, port| {
            match path {
            "/start?q=1" => reply("HTTP/1.1 301 Moved\r\nLocation: /next#frag\r\nContent-Length: 4\r\n\r\nbody"),
            "/next" => reply(format!(
                "HTTP/1.1 302 Found\r\nLocation: https://localhost:{port}/final\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            )),
            "/final" => {
                let z = gzip(b"the final body");
                let mut chunked = format!("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nX-Case: Kept\r\n\r\n{:x}\r\n", z.len()).into_bytes();
                chunked.extend_from_slice(&z);
                chunked.extend_from_slice(b"\r\n0\r\nTrailer: ignored\r\n\r\n");
                reply(chunked)
            }
            _ => reply("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        }
        }),
    );
    let port = server.port;
    let r = fetched(fetch(
        &pki.args(format!("https://127.0.0.1:{port}/start?q=1")),
    ));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"the final body");
    assert_eq!(
        r.redirects,
        vec![
            format!("https://127.0.0.1:{port}/start?q=1"),
            format!("https://127.0.0.1:{port}/next#frag")
        ]
    );
    // A Location without a fragment inherits the current one (RFC 9110
    // section 10.2.2).
    assert_eq!(r.final_url, format!("https://localhost:{port}/final#frag"));
    assert_eq!(
        r.headers,
        vec![
            ("Content-Encoding".to_string(), b"gzip".to_vec()),
            ("Transfer-Encoding".to_string(), b"chunked".to_vec()),
            ("X-Case".to_string(), b"Kept".to_vec()),
        ]
    );
    let ua = format!("tlsign-seccomp/{}", env!("CARGO_PKG_VERSION"));
    let expect = |path: &str, host: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {ua}\r\nAccept: */*\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n").into_bytes()
    };
    assert_eq!(
        server.requests(),
        vec![
            expect("/start?q=1", "127.0.0.1"),
            expect("/next", "127.0.0.1"),
            expect("/final", "localhost")
        ]
    );
}

#[test]
fn redirect_limits_and_refusals() {
    let pki = Pki::new();
    let server = TestServer::start(
        &pki,
        Box::new(|path, _| {
            if let Some(n) = path.strip_prefix("/hop/") {
                let n: u32 = n.parse().unwrap();
                reply(format!(
                    "HTTP/1.1 307 Again\r\nLocation: /hop/{}\r\nContent-Length: 0\r\n\r\n",
                    n + 1
                ))
            } else if let Some(n) = path.strip_prefix("/chain/") {
                let n: u32 = n.parse().unwrap();
                if n < 10 {
                    reply(format!(
                        "HTTP/1.1 302 Found\r\nLocation: /chain/{}\r\nContent-Length: 0\r\n\r\n",
                        n + 1
                    ))
                } else {
                    reply("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                }
            } else if path == "/to-http" {
                reply("HTTP/1.1 308 Permanent\r\nLocation: http://example.com/\r\nContent-Length: 0\r\n\r\n")
            } else if path == "/to-ftp" {
                reply("HTTP/1.1 303 See Other\r\nLocation: ftp://example.com/\r\nContent-Length: 0\r\n\r\n")
            } else if path == "/no-location" {
                reply("HTTP/1.1 302 Found\r\nContent-Length: 2\r\n\r\nhi")
            } else {
                reply("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            }
        }),
    );
    let base = format!("https://127.0.0.1:{}", server.port);

    // /hop/N always redirects: ten redirects are followed, the 11th refused.
    let f = failed(fetch(&pki.args(format!("{base}/hop/1"))));
    assert_eq!(f.kind, FailureKind::TooManyRedirects, "{f:?}");
    assert!(f.message.contains("/hop/12"), "{}", f.message);
    // Every hop was a new connection.
    assert_eq!(server.requests().len(), 11);
    // A chain of exactly ten redirects is followed.
    let r = fetched(fetch(&pki.args(format!("{base}/chain/0"))));
    assert_eq!((r.status, r.redirects.len()), (200, 10));
    assert_eq!(r.final_url, format!("{base}/chain/10"));

    let f = failed(fetch(&pki.args(format!("{base}/to-http"))));
    assert_eq!(f.kind, FailureKind::InsecureRedirect);
    assert_eq!(
        f.message,
        "redirect to http://example.com/ refused: plain HTTP has nothing to sign"
    );

    assert_eq!(
        failed(fetch(&pki.args(format!("{base}/to-ftp")))).kind,
        FailureKind::BadUrl
    );

    let r = fetched(fetch(&pki.args(format!("{base}/no-location"))));
    assert_eq!((r.status, r.body.as_slice()), (302, &b"hi"[..]));

    let r = fetched(fetch(&pki.args(format!("{base}/missing"))));
    assert_eq!(r.status, 404);
}

#[test]
fn close_delimited_body_needs_close_notify() {
    let pki = Pki::new();
    let server = TestServer::start(
        &pki,
        Box::new(|path, _| {
            let bytes = b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec();
            Reply {
                bytes,
                close_notify: path == "/clean",
            }
        }),
    );
    let base = format!("https://127.0.0.1:{}", server.port);
    assert_eq!(
        fetched(fetch(&pki.args(format!("{base}/clean")))).body,
        b"until close"
    );
    let f = failed(fetch(&pki.args(format!("{base}/unclean"))));
    assert_eq!(f.kind, FailureKind::Tls, "{f:?}");
    assert_eq!(
        f.message,
        "connection closed without close_notify: body may be truncated"
    );
}

#[test]
fn ipv6_literal_host() {
    let pki = Pki::new();
    let Ok(server) = TestServer::start_on(
        &pki,
        "[::1]:0",
        Box::new(|_, _| reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv6")),
    ) else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    let r = fetched(fetch(&pki.args(format!("https://[::1]:{}/", server.port))));
    assert_eq!(r.body, b"v6");
    let host = format!("\r\nHost: [::1]:{}\r\n", server.port);
    assert!(server.requests()[0]
        .windows(host.len())
        .any(|w| w == host.as_bytes()));
}

#[test]
fn bad_urls_ca_files_and_connect_errors() {
    let pki = Pki::new();
    let kind = |url: &str, ca_files: Vec<PathBuf>| {
        failed(fetch(&ClientArgs {
            url: url.into(),
            ca_files,
        }))
    };

    let f = kind("http://example.com/", vec![]);
    assert_eq!(
        (f.kind, f.message.as_str()),
        (
            FailureKind::BadUrl,
            "plain http:// has nothing to sign; use https://"
        )
    );
    assert_eq!(kind("ftp://example.com/", vec![]).kind, FailureKind::BadUrl);
    assert_eq!(kind("not a url", vec![]).kind, FailureKind::BadUrl);
    assert_eq!(
        kind("https://user:pw@example.com/", vec![]).kind,
        FailureKind::BadUrl
    );

    // CA files: missing, and not PEM certificates.
    let f = kind("https://127.0.0.1:1/", vec![pki.path("missing.pem")]);
    assert_eq!(f.kind, FailureKind::Io);
    assert!(f.message.contains("missing.pem"), "{}", f.message);
    let f = kind("https://127.0.0.1:1/", vec![pki.path("server.key")]);
    assert_eq!(f.kind, FailureKind::Io, "{f:?}");

    // Nothing listens on a port that was just freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let f = kind(
        &format!("https://127.0.0.1:{port}/"),
        vec![pki.path("ca.pem")],
    );
    assert_eq!(f.kind, FailureKind::Connect, "{f:?}");
}

/// CLIENT_VERSION names the exact rustls and ring in Cargo.lock: updating
/// either must come with a new client version.
#[test]
fn client_version_names_locked_tls_crates() {
    let lock = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"));
    for name in ["rustls", "ring"] {
        let marker = format!("name = \"{name}\"\nversion = \"");
        let at = lock
            .find(&marker)
            .unwrap_or_else(|| panic!("{name} not in Cargo.lock"))
            + marker.len();
        let version = &lock[at..at + lock[at..].find('"').unwrap()];
        assert!(
            CLIENT_VERSION.contains(&format!("+{name}-{version}+")),
            "{CLIENT_VERSION} vs {name} {version}"
        );
    }
    assert_eq!(client_id().name, CLIENT_NAME);
    assert!(CLIENT_VERSION.starts_with(env!("CARGO_PKG_VERSION")));
}
