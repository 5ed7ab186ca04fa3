//! Real HTTPS servers on 127.0.0.1: nginx (fixtures/nginx.conf.template) and
//! `openssl s_server -WWW`. Each gets its own directory, a free port and a
//! [`Site`]; dropping it stops the server (SIGTERM, then SIGKILL, to its
//! whole process group).

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cmd::{exited_unreaped, kill_group};
use super::{Cert, Pki, Site};

const NGINX_TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/nginx.conf.template"
));
const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the tests need to know of a running server.
pub trait HttpsServer {
    fn port(&self) -> u16;
    fn site(&self) -> &Site;

    /// `https://tlsign.test:PORT{path}` (pair with [`HttpsServer::resolve`]).
    fn url(&self, path: &str) -> String {
        format!("https://tlsign.test:{}{path}", self.port())
    }
    /// `https://127.0.0.1:PORT{path}`: the certificate has an IP SAN.
    fn ip_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port())
    }
    /// The `--resolve` value mapping tlsign.test to this server.
    fn resolve(&self) -> String {
        format!("tlsign.test:{}:127.0.0.1", self.port())
    }
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }
}

/// A port nothing listens on right now (bound to port 0, read, released).
/// Another process may take it before us: starters retry on collision.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child in its own process group, stopped on drop.
struct Daemon {
    child: Child,
    name: &'static str,
}

impl Daemon {
    fn spawn(name: &'static str, mut cmd: Command, log_dir: &Path) -> Daemon {
        let out = File::create(log_dir.join(format!("{name}.stdout"))).unwrap();
        let err = File::create(log_dir.join(format!("{name}.stderr"))).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon { child, name }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn exited(&self) -> bool {
        exited_unreaped(self.pid()).unwrap_or(true)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The child stays unreaped until the end, so its pid (= the group
        // id) cannot be reused while we signal the group.
        kill_group(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_group(self.pid(), libc::SIGKILL);
        if let Err(e) = self.child.wait() {
            eprintln!("warning: reaping {}: {e}", self.name);
        }
    }
}

/// Wait until `ready()` or until the daemon exits. `Ok(())` when ready,
/// `Err(log text)` when it exited; panics after [`READY_TIMEOUT`].
fn wait_ready(d: &Daemon, dir: &Path, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if ready() {
            return Ok(());
        }
        if d.exited() {
            return Err(logs(dir));
        }
        assert!(
            Instant::now() < deadline,
            "{} did not get ready in {READY_TIMEOUT:?}:\n{}",
            d.name,
            logs(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every log file in `dir`, for failure messages.
fn logs(dir: &Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let is_log = p
            .extension()
            .is_some_and(|x| x == "log" || x == "stderr" || x == "stdout");
        if is_log {
            s += &format!(
                "--- {} ---\n{}\n",
                p.display(),
                std::fs::read_to_string(&p).unwrap_or_default()
            );
        }
    }
    s
}

fn port_in_use(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("in use")
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn subdir(dir: &Path, prefix: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(dir)
        .unwrap()
        .keep()
}

/// nginx on 127.0.0.1, configured from fixtures/nginx.conf.template.
pub struct Nginx {
    port: u16,
    site: Site,
    pub prefix: PathBuf,
    _daemon: Daemon,
}

impl Nginx {
    /// Start nginx presenting `cert`; serves a fresh [`Site`] from a new
    /// directory under `dir`.
    pub fn start(dir: &Path, pki: &Pki, cert: Cert) -> Nginx {
        let prefix = subdir(dir, "nginx-");
        std::fs::create_dir_all(prefix.join("tmp")).unwrap();
        let site = Site::create(&prefix);
        let nginx = if Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };

        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let conf = prefix.join("nginx.conf");
            let text = NGINX_TEMPLATE
                .replace("@PREFIX@", prefix.to_str().unwrap())
                .replace("@ROOT@", site.root.to_str().unwrap())
                .replace("@PORT@", &port.to_string())
                .replace("@CERT@", pki.cert(cert).to_str().unwrap())
                .replace("@KEY@", pki.key.to_str().unwrap());
            std::fs::write(&conf, text).unwrap();
            // Start afresh each attempt: an old error.log would say "in use".
            let _ = std::fs::remove_file(prefix.join("error.log"));

            let mut cmd = Command::new(nginx);
            cmd.arg("-e").arg(prefix.join("error.log"));
            cmd.arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"]);
            let daemon = Daemon::spawn("nginx", cmd, &prefix);
            match wait_ready(&daemon, &prefix, || accepts(port)) {
                Ok(()) => {
                    return Nginx {
                        port,
                        site,
                        prefix,
                        _daemon: daemon,
                    }
                }
                Err(log) if port_in_use(&log) => continue,
                Err(log) => panic!("nginx exited at start:\n{log}"),
            }
        }
        panic!("nginx: no free port after {START_ATTEMPTS} attempts");
    }

    /// Stop the server now (same as dropping it).
    pub fn stop(self) {}

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }
}

impl HttpsServer for Nginx {
    fn port(&self) -> u16 {
        self.port
    }
    fn site(&self) -> &Site {
        &self.site
    }
}

/// Which protocol versions an [`SServer`] allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `openssl s_server -WWW`: serves files of its [`Site`] by path (there is
/// no index: ask for `/index.html`), one connection at a time, HTTP/1.0
/// with the body ended by closing the connection.
pub struct SServer {
    port: u16,
    site: Site,
    pub dir: PathBuf,
    _daemon: Daemon,
}

impl SServer {
    pub fn start(dir: &Path, pki: &Pki, cert: Cert, version: TlsVersion) -> SServer {
        Self::start_on(dir, pki, cert, version, "127.0.0.1")
    }

    /// The same, listening on `host` (`[::1]` for IPv6 loopback).
    pub fn start_on(dir: &Path, pki: &Pki, cert: Cert, version: TlsVersion, host: &str) -> SServer {
        let sdir = subdir(dir, "s_server-");
        let site = Site::create(&sdir);
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut cmd = Command::new("openssl");
            cmd.args(["s_server", "-WWW", "-accept", &format!("{host}:{port}")]);
            cmd.arg("-cert")
                .arg(pki.cert(cert))
                .arg("-key")
                .arg(&pki.key);
            cmd.arg(match version {
                TlsVersion::Tls12 => "-tls1_2",
                TlsVersion::Tls13 => "-tls1_3",
            });
            cmd.current_dir(&site.root);
            let daemon = Daemon::spawn("s_server", cmd, &sdir);
            // s_server prints ACCEPT once it listens; probing the port would
            // show up as a failed handshake in its log.
            let stdout = sdir.join("s_server.stdout");
            let ready = || std::fs::read_to_string(&stdout).is_ok_and(|s| s.contains("ACCEPT"));
            match wait_ready(&daemon, &sdir, ready) {
                Ok(()) => {
                    return SServer {
                        port,
                        site,
                        dir: sdir,
                        _daemon: daemon,
                    }
                }
                Err(log) if port_in_use(&log) => continue,
                Err(log) => panic!("openssl s_server exited at start:\n{log}"),
            }
        }
        panic!("s_server: no free port after {START_ATTEMPTS} attempts");
    }

    pub fn stop(self) {}
}

impl HttpsServer for SServer {
    fn port(&self) -> u16 {
        self.port
    }
    fn site(&self) -> &Site {
        &self.site
    }
}

/// A TCP server on 127.0.0.1 that accepts connections, reads whatever comes
/// and never answers: a TLS handshake against it hangs until the client
/// gives up. Stops on drop.
pub struct SilentServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        use std::io::Read;
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true).unwrap();
                    held.push(s);
                }
                let mut buf = [0u8; 4096];
                for s in &mut held {
                    let _ = s.read(&mut buf);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        SilentServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
