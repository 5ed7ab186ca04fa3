//! The two ends a redirected connection can reach: the recorder (sign),
//! which proxies to the real server and keeps both byte streams, and the
//! replayer (verify), which plays the recorded server bytes back and checks
//! the client's bytes as they arrive. Plus the world's nameserver, which
//! both share.
//!
//! A signer under the seccomp backend can skip the relay: the recorder
//! connects to the server and hands that socket to the client
//! (`record::hand_over`), and the built-in client reports the bytes it
//! exchanged on it (`client::ClientOutput::wire`).

pub mod dns;
pub mod record;
pub mod replay;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::intercept::ClientEnd;

/// A byte stream to the client, whatever socket carries it.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for T {}

/// The client's side of a redirected connection, as the relays use it.
pub type Client = Box<dyn ClientStream>;

/// Turns the supervisor's end of a redirected socket into a tokio stream.
pub fn into_async(end: ClientEnd) -> std::io::Result<Client> {
    Ok(match end {
        ClientEnd::Unix(s) => {
            s.set_nonblocking(true)?;
            Box::new(tokio::net::UnixStream::from_std(s)?)
        }
        ClientEnd::Tcp(s) => {
            s.set_nonblocking(true)?;
            Box::new(tokio::net::TcpStream::from_std(s)?)
        }
        // Answered with a socket to the server, not relayed: see
        // `record::hand_over`.
        ClientEnd::Pending(_) => {
            return Err(std::io::Error::other(
                "a connect waiting to be handed a socket cannot be relayed",
            ))
        }
    })
}
