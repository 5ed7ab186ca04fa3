//! The TLS side: one rustls configuration (ring provider, fixed roots, no
//! resumption) and the handshake, with rustls errors sorted into
//! [`FailureKind`]s.

use std::fs;
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::records::RecordChecked;
use super::wire::Logged;
use super::{ClientFailure, FailureKind};

/// A TLS connection over the TCP socket it owns, its raw bytes recorded.
pub type TlsStream = StreamOwned<ClientConnection, RecordChecked<Logged<TcpStream>>>;

/// The one configuration every connection of a fetch uses.
///
/// - *ring*, never aws-lc-rs: ring draws randomness only from getrandom,
///   which the supervisor replays; aws-lc-rs also seeds from CPU timing.
/// - Roots: the compiled-in Mozilla set (webpki-roots) plus every
///   certificate in each `ca_files` PEM file.
/// - ALPN `http/1.1`, SNI on (rustls leaves it out for IP addresses).
/// - Resumption off: each connection stands alone in the transcript, and
///   no ticket age (a clock reading) reaches the wire.
///
/// Certificate validity is checked against the first `SystemTime::now()`
/// of the fetch, which the supervisor fakes ([`FirstReading`]).
pub fn config(ca_files: &[PathBuf]) -> Result<Arc<ClientConfig>, ClientFailure> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for path in ca_files {
        add_ca_file(&mut roots, path)?;
    }
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        secure_random: &POOLED_RANDOM,
        ..rustls::crypto::ring::default_provider()
    });
    let mut config =
        ClientConfig::builder_with_details(provider, Arc::new(FirstReading::default()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientFailure::new(FailureKind::Tls, format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// rustls' clock: the first reading, for the whole fetch. rustls also
/// reads the clock for each session ticket a server sends, which resumption
/// being off makes useless; under the supervisor every reading is a round
/// trip to it. One instant for the fetch also means every hop of a redirect
/// chain is checked at the same time.
#[derive(Debug, Default)]
struct FirstReading(std::sync::OnceLock<Option<rustls::pki_types::UnixTime>>);

impl rustls::time_provider::TimeProvider for FirstReading {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        *self
            .0
            .get_or_init(|| rustls::time_provider::DefaultTimeProvider.current_time())
    }
}

/// rustls' randomness (session id, extension order, ClientHello random),
/// drawn from getrandom a block at a time rather than a call per value:
/// under the supervisor every getrandom is a round trip to it. Still all
/// from getrandom, so still the world's; ring's key exchange draws its own.
static POOLED_RANDOM: PooledRandom = PooledRandom(std::sync::Mutex::new(Vec::new()));

/// Bytes drawn per getrandom.
const RANDOM_BLOCK: usize = 256;

#[derive(Debug)]
struct PooledRandom(std::sync::Mutex<Vec<u8>>);

impl rustls::crypto::SecureRandom for PooledRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        let system = rustls::crypto::ring::default_provider().secure_random;
        if buf.len() > RANDOM_BLOCK {
            return system.fill(buf);
        }
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < buf.len() {
            // What is left is too short: dropped, so which bytes go where
            // depends only on the sizes asked for.
            pool.resize(RANDOM_BLOCK, 0);
            system.fill(&mut pool)?;
        }
        let rest = pool.split_off(buf.len());
        buf.copy_from_slice(&pool);
        *pool = rest;
        Ok(())
    }
}

/// Adds every certificate of a PEM file as a trust anchor. A file that
/// cannot be read, holds no certificate, or holds one that is not a usable
/// anchor is an `Io` failure naming the path.
fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), ClientFailure> {
    let fail = |what: String| {
        ClientFailure::new(
            FailureKind::Io,
            format!("CA file {}: {what}", path.display()),
        )
    };
    let pem = fs::read(path).map_err(|e| fail(e.to_string()))?;
    let mut added = 0usize;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| fail(format!("bad PEM: {e}")))?;
        roots.add(cert).map_err(|e| {
            fail(format!(
                "certificate {} is not usable as a trust anchor: {e}",
                added + 1
            ))
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(fail("no PEM CERTIFICATE block in it".into()));
    }
    Ok(())
}

/// Runs the whole handshake on `sock` before any application data is
/// written, so certificate errors come out as such.
pub fn handshake(
    config: &Arc<ClientConfig>,
    server_name: ServerName<'static>,
    sock: Logged<TcpStream>,
    peer: &str,
) -> Result<TlsStream, ClientFailure> {
    let conn = ClientConnection::new(Arc::clone(config), server_name).map_err(|e| {
        ClientFailure::new(
            FailureKind::Tls,
            format!("TLS setup for {peer} failed: {e}"),
        )
    })?;
    let mut tls = StreamOwned::new(conn, RecordChecked::new(sock));
    while tls.conn.is_handshaking() {
        match tls.conn.complete_io(&mut tls.sock) {
            Ok((0, 0)) if tls.conn.is_handshaking() => {
                return Err(ClientFailure::new(
                    FailureKind::Tls,
                    format!("TLS handshake with {peer} made no progress"),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && rustls_error(&e).is_none() => {
                return Err(ClientFailure::new(
                    FailureKind::Tls,
                    format!("{peer} closed the connection during the TLS handshake"),
                ))
            }
            Err(e) => return Err(io_failure(e, &format!("TLS handshake with {peer}"))),
        }
    }
    Ok(tls)
}

/// Sorts an I/O error from a TLS stream: a rustls error inside is a TLS
/// failure (a certificate one is `CertificateNotTrusted`), anything else is
/// the transport's (`Io`).
pub fn io_failure(e: io::Error, doing: &str) -> ClientFailure {
    match rustls_error(&e) {
        Some(rustls::Error::InvalidCertificate(cert)) => ClientFailure::new(
            FailureKind::CertificateNotTrusted,
            format!("certificate not trusted: {cert}"),
        ),
        Some(other) => ClientFailure::new(FailureKind::Tls, format!("{doing}: {other}")),
        None => ClientFailure::new(FailureKind::Io, format!("{doing}: {e}"))
            .transient_if(crate::error::transient_io(&e)),
    }
}

/// The rustls error `complete_io` wraps in an `InvalidData` I/O error.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Reads until the server ends the connection. Anything after the response
/// is refused (we asked for `Connection: close`); a missing close_notify is
/// tolerated here because the body's own framing already ended it.
pub fn drain_to_close(tls: &mut TlsStream, peer: &str) -> Result<(), ClientFailure> {
    let mut buf = [0u8; 4096];
    loop {
        match io::Read::read(tls, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                return Err(ClientFailure::new(
                    FailureKind::Http,
                    format!("{peer} sent {n} bytes after the response"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && rustls_error(&e).is_none() => {
                return Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(io_failure(
                    e,
                    &format!("reading to the end of the connection with {peer}"),
                ))
            }
        }
    }
}

/// Ends the connection the same way every time: queue close_notify, hand it
/// to the socket, drop the socket. Write errors are ignored: the response is
/// already complete, and the peer may have closed first.
pub fn close(mut tls: TlsStream) {
    tls.conn.send_close_notify();
    let _ = io::Write::flush(&mut tls);
}
