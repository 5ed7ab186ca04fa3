//! The recorder: a relay between the client and the real server that keeps
//! every byte of both directions, in the order it saw them, one event per
//! read. Or, where the backend can install a socket in the client
//! (seccomp's ADDFD), no relay at all: [`hand_over`] connects to the server
//! and gives the client that socket, and the built-in client reports the
//! bytes itself (`client::wire`).
//!
//! Which of the two recorded a transcript makes no difference to what it
//! proves: verify replays the client against the recorded server bytes
//! either way, and trusts nothing about how they were captured (see
//! docs/security.md). Handing over saves the relay's wake-ups and copies:
//! about a tenth of a signed page's CPU (docs/benchmarks.md).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Client;

use crate::intercept::seccomp::PendingConnect;
use crate::transcript::{Connection, Event};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const SERVER_GRACE: Duration = Duration::from_secs(2);

/// One read's worth: a whole TLS record (16 KiB of payload plus header and
/// expansion) fits. Larger buffers only leave larger holes in the heap of
/// a batch running many relays at once.
const RELAY_BUF: usize = 17 * 1024;

/// One recorded connection, and what went wrong on it, if anything.
pub struct Recorded {
    pub connection: Connection,
    pub error: Option<Upstream>,
}

/// What went wrong with the real server.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub message: String,
    /// Worth trying again later (`error::transient_io`).
    pub transient: bool,
}

impl Upstream {
    pub fn new(message: String, transient: bool) -> Upstream {
        Upstream { message, transient }
    }

    fn io(message: String, e: &std::io::Error) -> Upstream {
        Upstream::new(message, crate::error::transient_io(e))
    }
}

/// Connects to the first of `addrs` that answers and relays until both
/// sides have finished sending.
pub async fn record(client: Client, host: String, port: u16, addrs: Vec<SocketAddr>) -> Recorded {
    let mut conn = unrecorded(host, port);
    let server = match connect(&mut conn, &addrs).await {
        Ok(s) => s,
        Err((error, _)) => {
            return Recorded {
                connection: conn,
                error: Some(error),
            }
        }
    };
    // Without TCP_NODELAY every small TLS record waits for the peer's
    // delayed ACK: ~40 ms per round trip.
    let _ = server.set_nodelay(true);
    let error = relay(client, server, &mut conn.events).await.err();
    Recorded {
        connection: conn,
        error,
    }
}

/// Connects to the first of `addrs` that answers and answers the client's
/// waiting connect with that socket, or with the last connect's error. The
/// connection's events stay empty: the client reports them. (TCP_NODELAY
/// is the client's to set, as on any socket of its own.)
pub async fn hand_over(
    pending: PendingConnect,
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
) -> Recorded {
    let mut conn = unrecorded(host, port);
    let answered = match connect(&mut conn, &addrs).await {
        Ok(server) => server.into_std().and_then(|s| pending.complete(s)),
        Err((error, errno)) => {
            let _ = pending.fail(errno);
            return Recorded {
                connection: conn,
                error: Some(error),
            };
        }
    };
    let error = match answered {
        Ok(true) => None,
        Ok(false) => Some(Upstream::new(
            format!(
                "the client's connect to {}:{port} was withdrawn before it was answered",
                conn.host
            ),
            false,
        )),
        Err(e) => Some(Upstream::new(
            format!(
                "cannot hand the connection to {}:{port} to the client: {e}",
                conn.host
            ),
            false,
        )),
    };
    Recorded {
        connection: conn,
        error,
    }
}

/// A connection to `host:port` with nothing recorded on it yet.
pub fn unrecorded(host: String, port: u16) -> Connection {
    Connection {
        host,
        port,
        signed_addr: String::new(),
        events: Vec::new(),
    }
}

/// Connects to the first of `addrs` that answers, noting which in
/// `conn.signed_addr`; or says why none did, with the errno a connect of
/// the client's would have failed with.
async fn connect(
    conn: &mut Connection,
    addrs: &[SocketAddr],
) -> Result<TcpStream, (Upstream, i32)> {
    let mut last_err = (
        Upstream::new(format!("no address for {}:{}", conn.host, conn.port), false),
        libc::EHOSTUNREACH,
    );
    for a in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                conn.signed_addr = a.to_string();
                return Ok(s);
            }
            Ok(Err(e)) => {
                let m = format!("cannot connect to {}:{} ({a}): {e}", conn.host, conn.port);
                let errno = e.raw_os_error().unwrap_or(libc::ECONNREFUSED);
                last_err = (Upstream::io(m, &e), errno);
            }
            Err(_) => {
                let m = format!(
                    "cannot connect to {}:{} ({a}): timed out",
                    conn.host, conn.port
                );
                last_err = (Upstream::new(m, true), libc::ETIMEDOUT);
            }
        }
    }
    Err(last_err)
}

async fn relay(
    client: Client,
    mut server: TcpStream,
    events: &mut Vec<Event>,
) -> Result<(), Upstream> {
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = server.split();
    // Read into spare capacity (`read_buf`): nothing is zeroed first.
    let mut cbuf = Vec::with_capacity(RELAY_BUF);
    let mut sbuf = Vec::with_capacity(RELAY_BUF);
    let (mut client_open, mut server_open) = (true, true);
    while client_open || server_open {
        cbuf.clear();
        sbuf.clear();
        // Once the client has gone, the server gets a grace period to finish:
        // what it sends after the client stopped listening is not evidence
        // of anything, and a server that never closes must not stall a sign.
        let grace = async {
            if client_open {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(SERVER_GRACE).await
            }
        };
        tokio::select! {
            _ = grace => {
                break;
            },
            r = cr.read_buf(&mut cbuf), if client_open => match r {
                Ok(0) | Err(_) => {
                    events.push(Event::ClientEof);
                    client_open = false;
                    let _ = sw.shutdown().await;
                }
                Ok(n) => {
                    events.push(Event::Client(cbuf[..n].to_vec()));
                    if let Err(e) = sw.write_all(&cbuf[..n]).await {
                        return Err(Upstream::io(format!("writing to the server: {e}"), &e));
                    }
                }
            },
            r = sr.read_buf(&mut sbuf), if server_open => match r {
                Ok(0) => {
                    events.push(Event::ServerEof);
                    server_open = false;
                    let _ = cw.shutdown().await;
                }
                Err(e) => {
                    events.push(Event::ServerEof);
                    server_open = false;
                    let _ = cw.shutdown().await;
                    // A reset after the client has finished is harmless.
                    if client_open {
                        return Err(Upstream::io(format!("reading from the server: {e}"), &e));
                    }
                }
                Ok(n) => {
                    events.push(Event::Server(sbuf[..n].to_vec()));
                    // The client may have gone: what it did not read does
                    // not matter, but what the server sent is recorded.
                    if cw.write_all(&sbuf[..n]).await.is_err() {
                        server_open = false;
                    }
                }
            },
        }
    }
    Ok(())
}
