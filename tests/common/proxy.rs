//! Small TCP servers for the batch tests, on 127.0.0.1, each on a thread of
//! its own and stopped on drop:
//!
//! - [`ResetProxy`] resets its first N connections (after reading the
//!   client's first bytes) and forwards later ones to a real server: a
//!   transient network failure that a retry gets past.
//! - [`ConcurrencyProbe`] accepts, holds each connection for a while and
//!   closes it, counting how many it held at once: what `--per-host` limits.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Accepts on a nonblocking listener until `stop`, handing each connection
/// (blocking again) to `handle` on a thread of its own.
fn serve(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    handle: impl Fn(TcpStream) + Send + Sync + 'static,
) -> JoinHandle<()> {
    listener.set_nonblocking(true).unwrap();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        let mut threads = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let h = Arc::clone(&handle);
                    threads.push(std::thread::spawn(move || h(s)));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        for t in threads {
            let _ = t.join();
        }
    })
}

/// Closes `s` with SO_LINGER 0: the peer gets a RST, not a FIN.
fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `s` owns a valid socket fd for the whole call; the option
    // value is a live `linger` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(s);
}

/// Copies `from` to `to` until EOF or an error, then half-closes `to`.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A proxy that resets its first `resets` connections and forwards the
/// rest to `target`.
pub struct ResetProxy {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ResetProxy {
    pub fn start(target: SocketAddr, resets: usize) -> ResetProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let n = Arc::clone(&accepted);
        let thread = serve(listener, Arc::clone(&stop), move |mut s| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            if i < resets {
                // Read a little first (the ClientHello), so the reset comes
                // mid-handshake rather than before anything was sent.
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.read(&mut [0u8; 64]);
                reset(s);
                return;
            }
            let Ok(up) = TcpStream::connect(target) else {
                return reset(s);
            };
            let (s2, up2) = (s.try_clone().unwrap(), up.try_clone().unwrap());
            let back = std::thread::spawn(move || pump(up2, s2));
            pump(s, up);
            let _ = back.join();
        });
        ResetProxy {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far (reset or forwarded).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ResetProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A server that holds every connection for `hold` (reading what comes),
/// then closes it, and records the most it held at once.
pub struct ConcurrencyProbe {
    port: u16,
    state: Arc<ProbeState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct ProbeState {
    now: AtomicUsize,
    peak: AtomicUsize,
    total: AtomicUsize,
}

impl ConcurrencyProbe {
    pub fn start(hold: Duration) -> ConcurrencyProbe {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProbeState::default());
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&state);
        let thread = serve(listener, Arc::clone(&stop), move |mut s| {
            let n = st.now.fetch_add(1, Ordering::SeqCst) + 1;
            st.peak.fetch_max(n, Ordering::SeqCst);
            st.total.fetch_add(1, Ordering::SeqCst);
            let until = Instant::now() + hold;
            let mut buf = [0u8; 4096];
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let _ = s.set_read_timeout(Some(left));
                // Until the client gives up, or the time is up (a read
                // timeout).
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            // Counted out before the close: the batch can only start the
            // next sign for this host once it sees this one end.
            st.now.fetch_sub(1, Ordering::SeqCst);
            drop(s);
        });
        ConcurrencyProbe {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The most connections held at once so far.
    pub fn peak(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn total(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }
}

impl Drop for ConcurrencyProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
