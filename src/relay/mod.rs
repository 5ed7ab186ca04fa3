//! The two ends a redirected connection can reach: the recorder (sign),
//! which proxies to the real server and keeps both byte streams, and the
//! replayer (verify), which plays the recorded server bytes back and checks
//! the client's bytes as they arrive. Plus the world's nameserver, which
//! both share.

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
    })
}
