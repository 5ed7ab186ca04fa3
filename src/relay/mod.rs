//! The two ends a redirected connection can reach: the recorder (sign),
//! which proxies to the real server and keeps both byte streams, and the
//! replayer (verify), which plays the recorded server bytes back and checks
//! the client's bytes as they arrive. Plus the world's nameserver, which
//! both share.

pub mod dns;
pub mod record;
pub mod replay;

/// Turns the supervisor's end of a redirected socket into a tokio stream.
pub fn into_async(s: std::os::unix::net::UnixStream) -> std::io::Result<tokio::net::UnixStream> {
    s.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(s)
}
