//! The replayer: plays one recorded connection back to the client and checks
//! that the client sends exactly the recorded bytes.
//!
//! Events are replayed in recorded order. That order is causal: the recorder
//! saw each client chunk before it forwarded the server bytes that came
//! after, so a deterministic client never waits for server bytes that the
//! replay holds back.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Client;

use crate::transcript::{Connection, Event};

/// How a client departed from the recording, with the offset into the
/// client's byte stream where it did.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Divergence {
    #[error("connection {conn}: client bytes diverge at offset {offset}")]
    Bytes { conn: usize, offset: u64 },
    #[error("connection {conn}: the client stopped sending at offset {offset}; the transcript has {expected} client bytes")]
    ClosedEarly {
        conn: usize,
        offset: u64,
        expected: u64,
    },
    #[error(
        "connection {conn}: the client sent more than the transcript holds, from offset {offset}"
    )]
    Extra { conn: usize, offset: u64 },
    #[error("connection {conn}: the client sent nothing for {} s at offset {offset}; the transcript expects more client bytes there", STALL.as_secs())]
    Stalled { conn: usize, offset: u64 },
}

/// How long the replay waits for client bytes the transcript expects. A
/// replay runs on one machine with no network: a real client answers in
/// milliseconds, so a long silence means the client is itself waiting for
/// server bytes that the transcript put later (a transcript that was edited,
/// or made by something other than the recorder).
pub const STALL: Duration = Duration::from_secs(10);

pub async fn replay(
    mut client: Client,
    conn: usize,
    expected: &Connection,
) -> Result<(), Divergence> {
    let total: u64 = expected.client_chunks().map(|d| d.len() as u64).sum();
    let mut offset: u64 = 0;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Whether a write found the client gone. It is then told nothing more,
    // but the replay goes on: what the client sent before it went decides
    // the verdict, whether it went before or after the server bytes were
    // all written, which is a race.
    let mut gone = false;
    for ev in &expected.events {
        match ev {
            Event::Client(want) => {
                let mut matched = 0;
                while matched < want.len() {
                    if pending.is_empty() {
                        let at = offset + matched as u64;
                        let n = match tokio::time::timeout(STALL, client.read(&mut buf)).await {
                            Ok(r) => r.unwrap_or(0),
                            Err(_) => return Err(Divergence::Stalled { conn, offset: at }),
                        };
                        if n == 0 {
                            return Err(Divergence::ClosedEarly {
                                conn,
                                offset: offset + matched as u64,
                                expected: total,
                            });
                        }
                        pending.extend_from_slice(&buf[..n]);
                    }
                    let take = pending.len().min(want.len() - matched);
                    if let Some(i) = (0..take).find(|&i| pending[i] != want[matched + i]) {
                        return Err(Divergence::Bytes {
                            conn,
                            offset: offset + (matched + i) as u64,
                        });
                    }
                    pending.drain(..take);
                    matched += take;
                }
                offset += want.len() as u64;
            }
            Event::Server(data) => {
                if !gone && client.write_all(data).await.is_err() {
                    gone = true;
                }
            }
            Event::ServerEof => {
                let _ = client.shutdown().await;
            }
            Event::ClientEof => {
                if !pending.is_empty() {
                    return Err(Divergence::Extra { conn, offset });
                }
                match tokio::time::timeout(STALL, client.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => {}
                    Ok(Ok(_)) => return Err(Divergence::Extra { conn, offset }),
                    Err(_) => return Err(Divergence::Stalled { conn, offset }),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording() -> Connection {
        Connection {
            host: "a.test".into(),
            port: 443,
            signed_addr: "127.0.0.1:443".into(),
            events: vec![
                Event::Client(b"hello ".to_vec()),
                Event::Client(b"world".to_vec()),
                Event::Server(b"answer".to_vec()),
                Event::ServerEof,
                Event::ClientEof,
            ],
        }
    }

    fn pair() -> (super::super::Client, super::super::Client) {
        use crate::intercept::ClientEnd;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (
            super::super::into_async(ClientEnd::Unix(a)).unwrap(),
            super::super::into_async(ClientEnd::Unix(b)).unwrap(),
        )
    }

    async fn client_sends(chunks: &[&[u8]]) -> (Result<(), Divergence>, Vec<u8>) {
        let (a, mut b) = pair();
        let rec = recording();
        let replayer = tokio::spawn(async move { replay(a, 0, &rec).await });
        for c in chunks {
            b.write_all(c).await.unwrap();
        }
        b.shutdown().await.unwrap();
        let mut got = Vec::new();
        let _ = b.read_to_end(&mut got).await;
        drop(b);
        (replayer.await.unwrap(), got)
    }

    #[tokio::test]
    async fn same_bytes_in_other_boundaries_pass() {
        let (r, got) = client_sends(&[b"hel", b"lo world"]).await;
        assert_eq!(r, Ok(()));
        assert_eq!(got, b"answer");
    }

    #[tokio::test]
    async fn first_different_byte_is_reported() {
        let (r, _) = client_sends(&[b"hello w0rld"]).await;
        assert_eq!(r, Err(Divergence::Bytes { conn: 0, offset: 7 }));
    }

    /// A transcript that holds server bytes back until after client bytes
    /// the client only sends once it has them: both would wait forever.
    #[tokio::test(start_paused = true)]
    async fn a_deadlocked_replay_is_reported_not_waited_out() {
        let (a, mut b) = pair();
        let rec = recording();
        let replayer = tokio::spawn(async move { replay(a, 3, &rec).await });
        // The client waits for a server byte first, as a TLS client reading
        // a ServerHello would.
        let mut one = [0u8; 1];
        let client = tokio::spawn(async move { b.read(&mut one).await.map(|_| b) });
        assert_eq!(
            replayer.await.unwrap(),
            Err(Divergence::Stalled { conn: 3, offset: 0 })
        );
        drop(client);
    }

    #[tokio::test]
    async fn short_and_long_clients_are_caught() {
        let (r, _) = client_sends(&[b"hello"]).await;
        assert_eq!(
            r,
            Err(Divergence::ClosedEarly {
                conn: 0,
                offset: 5,
                expected: 11
            })
        );
        let (r, _) = client_sends(&[b"hello world!"]).await;
        assert_eq!(
            r,
            Err(Divergence::Extra {
                conn: 0,
                offset: 11
            })
        );
    }

    /// A client that goes while the replayer is still writing server bytes
    /// (it stopped reading: say a record failed to decrypt) gets the same
    /// verdict as one that goes after they all landed: where its own bytes
    /// stopped. Which of the two happens is a race; the verdict was not.
    #[tokio::test]
    async fn a_client_gone_mid_write_is_reported_where_it_stopped() {
        let (a, mut b) = pair();
        let rec = Connection {
            host: "a.test".into(),
            port: 443,
            signed_addr: "127.0.0.1:443".into(),
            events: vec![
                Event::Client(b"hello ".to_vec()),
                // Far more than a socket buffer holds: the write is still
                // under way when the client goes.
                Event::Server(vec![7u8; 8 << 20]),
                Event::Client(b"world".to_vec()),
                Event::ClientEof,
            ],
        };
        let replayer = tokio::spawn(async move { replay(a, 0, &rec).await });
        b.write_all(b"hello ").await.unwrap();
        let mut some = [0u8; 1024];
        b.read_exact(&mut some).await.unwrap();
        drop(b);
        assert_eq!(
            replayer.await.unwrap(),
            Err(Divergence::ClosedEarly {
                conn: 0,
                offset: 6,
                expected: 11
            })
        );
    }
}
