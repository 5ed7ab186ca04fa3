//! The recorder: a relay between the client and the real server that keeps
//! every byte of both directions, in the order it saw them, one event per
//! read.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Client;

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
    /// Worth trying again later: the network, not the server's answer,
    /// failed (a reset, a timeout). A refused connection is not: as in
    /// curl's --retry, nothing listens there.
    pub transient: bool,
}

impl Upstream {
    pub fn new(message: String, transient: bool) -> Upstream {
        Upstream { message, transient }
    }

    fn io(message: String, e: &std::io::Error) -> Upstream {
        use std::io::ErrorKind::*;
        let transient = matches!(
            e.kind(),
            ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut
        );
        Upstream::new(message, transient)
    }
}

/// Connects to the first of `addrs` that answers and relays until both
/// sides have finished sending.
pub async fn record(client: Client, host: String, port: u16, addrs: Vec<SocketAddr>) -> Recorded {
    let mut conn = Connection {
        host,
        port,
        signed_addr: String::new(),
        events: Vec::new(),
    };
    let mut last_err = Upstream::new(format!("no address for {}:{}", conn.host, port), false);
    let mut server = None;
    for a in &addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                conn.signed_addr = a.to_string();
                server = Some(s);
                break;
            }
            Ok(Err(e)) => {
                let m = format!("cannot connect to {}:{} ({a}): {e}", conn.host, port);
                last_err = Upstream::io(m, &e);
            }
            Err(_) => {
                let m = format!("cannot connect to {}:{} ({a}): timed out", conn.host, port);
                last_err = Upstream::new(m, true);
            }
        }
    }
    let Some(server) = server else {
        return Recorded {
            connection: conn,
            error: Some(last_err),
        };
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
