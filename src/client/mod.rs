//! The built-in HTTPS client: the program the supervisor runs in its
//! deterministic world.
//!
//! It does one HTTPS GET (following redirects) with rustls and a hand-written
//! HTTP/1.1, and reports a [`ClientOutcome`]. Whatever it sends must be a pure
//! function of its arguments, the random bytes it draws (getrandom), the
//! clock readings it makes (`SystemTime`, for certificate validity) and the
//! bytes it receives, so that a verifier re-running it against the recorded
//! server bytes sees it send exactly the recorded client bytes. Hence:
//!
//! - no threads, no timers, no `HashMap` iteration, and no socket option
//!   whose failure would matter (TCP_NODELAY is tried and its error ignored);
//! - every hop is a fresh connection made with `TcpStream` (getaddrinfo, then
//!   connect), which the supervisor answers and replaces;
//! - each connection is read and closed the same way every time: the whole
//!   body is consumed (also for redirects), then everything up to the
//!   server's close_notify, then our close_notify, then close.
//!
//! The supervisor re-executes its own binary as
//! `tlsign-seccomp __client URL [--ca-file PATH]...`; `main` hands those
//! arguments to [`child_main`], which prints the outcome and its record of the wire ([`encode_output`])
//! to stdout.
//!
//! **Any change that could change what the client sends, or what it accepts,
//! must change [`CLIENT_VERSION`].** Transcripts name the client version, and
//! a verifier refuses transcripts of another version.
#![forbid(unsafe_code)]

mod http;
mod records;
mod tls;
mod wire;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use url::{Host, Url};

use crate::transcript::{ClientId, Event, Response};

/// The client's name in transcripts.
pub const CLIENT_NAME: &str = "tlsign-seccomp-client";

/// The client's version in transcripts: changes whenever wire behaviour
/// could change.
///
/// Bump the `http-vN` part on any change to this module that can change the
/// bytes sent or the outcome for given received bytes (request format,
/// parsing rules, limits, TLS configuration, redirect rules). The rustls and
/// ring versions are named exactly because an update of either can change
/// the ClientHello or how randomness is drawn; a test checks them against
/// Cargo.lock.
pub const CLIENT_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "+rustls-0.23.46+ring-0.17.14+http-v3+clock-once+rand-pool"
);

/// The identity recorded in transcripts.
pub fn client_id() -> ClientId {
    ClientId {
        name: CLIENT_NAME.to_string(),
        version: CLIENT_VERSION.to_string(),
    }
}

/// The hidden `argv[1]` that makes the binary run as the client.
pub const CHILD_ARG: &str = "__client";

/// [`child_main`] exit code: the outcome written is `Fetched`.
pub const EXIT_FETCHED: i32 = 0;
/// [`child_main`] exit code: the outcome written is `Failed`.
pub const EXIT_FAILED: i32 = 1;
/// [`child_main`] exit code: bad arguments, nothing was fetched or written.
pub const EXIT_USAGE: i32 = 2;
/// [`child_main`] exit code: the outcome could not be written to stdout.
pub const EXIT_OUTPUT: i32 = 3;

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 10;

/// What the client process prints: its outcome, and its own record of
/// every connection it opened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientOutput {
    /// The response, or why there is none.
    pub outcome: ClientOutcome,
    /// Per connection, in the order they were opened: what the client wrote
    /// and read on it, one event per call (see `wire`). A signer whose
    /// server connections were handed to the client takes its events from
    /// here; under a relay they are ignored.
    pub wire: Vec<Vec<Event>>,
}

/// What the client produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientOutcome {
    /// The final response, after redirects.
    Fetched(Response),
    /// Why there is none.
    Failed(ClientFailure),
}

/// Why the client produced no response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientFailure {
    /// What kind of failure, for the exit code and for sorting blame.
    pub kind: FailureKind,
    /// One line for people, naming the host or value at fault.
    pub message: String,
    /// The network failed in a way a later attempt may not
    /// (`error::transient_io`): a batch may retry.
    pub transient: bool,
}

impl ClientFailure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        ClientFailure {
            kind,
            message: message.into(),
            transient: false,
        }
    }

    fn transient_if(mut self, transient: bool) -> Self {
        self.transient = transient;
        self
    }
}

impl std::fmt::Display for ClientFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Sorts failures by where they happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The URL (given, or a redirect target) cannot be fetched: not a URL,
    /// not https, has credentials, host not usable as a TLS name.
    BadUrl,
    /// getaddrinfo failed or found nothing.
    Resolve,
    /// No address accepted the TCP connection.
    Connect,
    /// The server's certificate chain was rejected.
    CertificateNotTrusted,
    /// Any other TLS failure, including a close-delimited body ended without
    /// close_notify.
    Tls,
    /// The response is not HTTP/1.1 we can read, or exceeds a limit.
    Http,
    /// A redirect to plain http://.
    InsecureRedirect,
    /// More than [`MAX_REDIRECTS`] redirects.
    TooManyRedirects,
    /// A CA file could not be used, or the socket failed.
    Io,
}

/// What to fetch and which extra roots to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientArgs {
    /// The https:// URL to fetch.
    pub url: String,
    /// PEM files whose certificates are trusted in addition to the
    /// compiled-in Mozilla roots.
    pub ca_files: Vec<PathBuf>,
}

/// The whole job: fetch `args.url`, following redirects. Prints nothing.
pub fn fetch(args: &ClientArgs) -> ClientOutcome {
    fetch_recorded(args).outcome
}

/// [`fetch`], with the client's record of its connections.
pub fn fetch_recorded(args: &ClientArgs) -> ClientOutput {
    let mut wire = wire::Wire::default();
    let outcome = match run(args, &mut wire) {
        Ok(response) => ClientOutcome::Fetched(response),
        Err(failure) => ClientOutcome::Failed(failure),
    };
    ClientOutput {
        outcome,
        wire: wire.into_events(),
    }
}

fn run(args: &ClientArgs, wire: &mut wire::Wire) -> Result<Response, ClientFailure> {
    let mut url = Url::parse(&args.url).map_err(|e| {
        ClientFailure::new(
            FailureKind::BadUrl,
            format!("invalid URL {:?}: {e}", args.url),
        )
    })?;
    check_url(&url, "")?;
    let config = tls::config(&args.ca_files)?;
    let limits = http::Limits::DEFAULT;
    let mut redirects = Vec::new();
    loop {
        let (head, body) = exchange(&config, &url, &limits, wire)?;
        let Some(next) = redirect_target(&url, &head)? else {
            let body =
                http::decode_content(&head, body, &limits).map_err(|e| http_failure(&url, e))?;
            return Ok(Response {
                final_url: url.to_string(),
                redirects,
                status: head.status,
                headers: head.headers,
                body,
            });
        };
        if redirects.len() == MAX_REDIRECTS {
            return Err(ClientFailure::new(
                FailureKind::TooManyRedirects,
                format!("more than {MAX_REDIRECTS} redirects (the next was to {next})"),
            ));
        }
        if next.scheme() == "http" {
            return Err(ClientFailure::new(
                FailureKind::InsecureRedirect,
                format!("redirect to {next} refused: plain HTTP has nothing to sign"),
            ));
        }
        check_url(&next, &format!("redirect from {url}: "))?;
        redirects.push(url.to_string());
        url = next;
    }
}

/// Refuses what cannot be fetched or signed.
fn check_url(url: &Url, context: &str) -> Result<(), ClientFailure> {
    let bad = |m: String| ClientFailure::new(FailureKind::BadUrl, format!("{context}{m}"));
    match url.scheme() {
        "https" => {}
        "http" => return Err(bad("plain http:// has nothing to sign; use https://".into())),
        other => {
            return Err(bad(format!(
                "unsupported URL scheme {other:?}: only https:// can be signed"
            )))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(format!(
            "URL {url} carries credentials, which the client does not send"
        )));
    }
    if url.host().is_none() {
        return Err(bad(format!("URL {url} has no host")));
    }
    Ok(())
}

/// Where a response sends us, if it is a redirect we follow: 301, 302, 303,
/// 307 or 308 with a Location (RFC 9110 section 15.4). Without a Location
/// the response is final.
fn redirect_target(url: &Url, head: &http::Head) -> Result<Option<Url>, ClientFailure> {
    if !matches!(head.status, 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let mut locations = head.values("location");
    let Some(location) = locations.next() else {
        return Ok(None);
    };
    if locations.next().is_some() {
        return Err(ClientFailure::new(
            FailureKind::Http,
            format!(
                "{} response from {url} has several Location fields",
                head.status
            ),
        ));
    }
    let location = std::str::from_utf8(location).map_err(|_| {
        ClientFailure::new(
            FailureKind::Http,
            format!(
                "Location {:?} from {url} is not UTF-8",
                String::from_utf8_lossy(location)
            ),
        )
    })?;
    let mut next = url.join(location).map_err(|e| {
        ClientFailure::new(
            FailureKind::Http,
            format!("invalid Location {location:?} from {url}: {e}"),
        )
    })?;
    // RFC 9110 section 10.2.2: a Location without a fragment inherits the
    // fragment of the URL it was resolved against.
    if next.fragment().is_none() {
        next.set_fragment(url.fragment());
    }
    Ok(Some(next))
}

/// One hop: connect, handshake, send the request, read the response head and
/// its whole body, close.
fn exchange(
    config: &Arc<rustls::ClientConfig>,
    url: &Url,
    limits: &http::Limits,
    wire: &mut wire::Wire,
) -> Result<(http::Head, Vec<u8>), ClientFailure> {
    let host = url.host().expect("check_url: https URLs have a host");
    let port = url
        .port_or_known_default()
        .expect("https has a default port");
    let host_str = url.host_str().expect("check_url: https URLs have a host");
    let server_name = match host {
        Host::Domain(d) => ServerName::try_from(d.to_string()).map_err(|e| {
            ClientFailure::new(
                FailureKind::BadUrl,
                format!("host {d:?} cannot be used as a TLS server name: {e}"),
            )
        })?,
        Host::Ipv4(a) => ServerName::from(std::net::IpAddr::from(a)),
        Host::Ipv6(a) => ServerName::from(std::net::IpAddr::from(a)),
    };
    let sock = wire.record(connect(&host, port)?);
    let peer = format!("{host_str}:{port}");
    let mut tls = tls::handshake(config, server_name, sock, &peer)?;

    // The Host field carries the port only when it is not the default
    // (RFC 9110 section 7.2); `url.port()` is `None` exactly then.
    let host_field = match url.port() {
        Some(port) => format!("{host_str}:{port}"),
        None => host_str.to_string(),
    };
    let path_and_query = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let request = http::request(path_and_query, &host_field, USER_AGENT);
    tls.write_all(&request)
        .and_then(|()| tls.flush())
        .map_err(|e| tls::io_failure(e, &format!("sending the request to {peer}")))?;

    let read_failure = |e: http::Error| match e {
        http::Error::Io(e) => tls::io_failure(e, &format!("reading the response from {peer}")),
        http::Error::UncleanClose => ClientFailure::new(FailureKind::Tls, e.to_string()),
        e => http_failure(url, e),
    };
    let head = http::read_head(&mut tls, limits).map_err(read_failure)?;
    let framing = http::framing(&head, limits).map_err(read_failure)?;
    let body = http::read_body(&mut tls, framing, limits).map_err(read_failure)?;
    // Read on to the server's close_notify: then every byte the server sent
    // has been authenticated by the client, and no recorded server byte can
    // be changed without the replayed client noticing.
    tls::drain_to_close(&mut tls, &peer)?;
    tls::close(tls);
    Ok((head, body))
}

const USER_AGENT: &str = concat!("tlsign-seccomp/", env!("CARGO_PKG_VERSION"));

fn http_failure(url: &Url, e: http::Error) -> ClientFailure {
    ClientFailure::new(FailureKind::Http, format!("response from {url}: {e}"))
}

/// Resolves (getaddrinfo, unless the host is an address) and connects to
/// each address in order, as `TcpStream::connect((host, port))` does, but
/// telling a failed lookup from a failed connect. No socket options are set
/// before the connect: the supervisor replaces the socket with its own.
fn connect(host: &Host<&str>, port: u16) -> Result<TcpStream, ClientFailure> {
    let addrs: Vec<SocketAddr> = match *host {
        Host::Domain(name) => (name, port)
            .to_socket_addrs()
            .map_err(|e| {
                ClientFailure::new(FailureKind::Resolve, format!("cannot resolve {name}: {e}"))
            })?
            .collect(),
        Host::Ipv4(a) => vec![SocketAddr::from((a, port))],
        Host::Ipv6(a) => vec![SocketAddr::from((a, port))],
    };
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect(addr) {
            Ok(sock) => {
                // On a real TCP socket (the client run bare, or a signer's
                // socket handed over already connected), Nagle would hold the
                // request behind the Finished until the server's delayed
                // ACK: ~40 ms. On a relay's AF_UNIX socket this fails. It
                // changes no byte either way: the error is ignored.
                let _ = sock.set_nodelay(true);
                return Ok(sock);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, e)) => {
            let target = format!("{host}:{port}");
            let tried = addr.to_string();
            let message = if tried == target {
                format!("cannot connect to {target}: {e}")
            } else {
                format!("cannot connect to {target} (last tried {tried}): {e}")
            };
            ClientFailure::new(FailureKind::Connect, message)
                .transient_if(crate::error::transient_io(&e))
        }
        None => ClientFailure::new(
            FailureKind::Resolve,
            format!("{host} resolved to no addresses"),
        ),
    })
}

/// The client process: `args` is argv after [`CHILD_ARG`]: the URL, then
/// zero or more `--ca-file PATH`. Writes [`encode_output`] of the output to
/// stdout and returns [`EXIT_FETCHED`] or [`EXIT_FAILED`]; [`EXIT_USAGE`] on
/// bad arguments (a message goes to stderr), [`EXIT_OUTPUT`] if stdout
/// fails.
pub fn child_main(args: Vec<OsString>) -> i32 {
    // Under the supervisor the client starts with every signal blocked
    // (`target::Program::unblocks_signals`); started any other way, this
    // changes nothing.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    child_main_to(args, &mut io::stdout().lock())
}

fn child_main_to(args: Vec<OsString>, out: &mut dyn Write) -> i32 {
    let args = match parse_child_args(args) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("tlsign-seccomp {CHILD_ARG}: {msg}");
            return EXIT_USAGE;
        }
    };
    let output = fetch_recorded(&args);
    if let Err(e) = out
        .write_all(&encode_output(&output))
        .and_then(|()| out.flush())
    {
        eprintln!("tlsign-seccomp {CHILD_ARG}: cannot write the outcome: {e}");
        return EXIT_OUTPUT;
    }
    match output.outcome {
        ClientOutcome::Fetched(_) => EXIT_FETCHED,
        ClientOutcome::Failed(_) => EXIT_FAILED,
    }
}

fn parse_child_args(args: Vec<OsString>) -> Result<ClientArgs, String> {
    let mut args = args.into_iter();
    let url = args
        .next()
        .ok_or("usage: URL [--ca-file PATH]...")?
        .into_string()
        .map_err(|u| format!("URL {u:?} is not UTF-8"))?;
    let mut ca_files = Vec::new();
    while let Some(arg) = args.next() {
        if arg != "--ca-file" {
            return Err(format!("unexpected argument {arg:?}"));
        }
        let path = args.next().ok_or("--ca-file needs a PATH")?;
        ca_files.push(PathBuf::from(path));
    }
    Ok(ClientArgs { url, ca_files })
}

/// The output as the child writes it (postcard).
pub fn encode_output(o: &ClientOutput) -> Vec<u8> {
    postcard::to_allocvec(o).expect("postcard serializes plain data")
}

/// Reads what [`encode_output`] wrote; trailing bytes are an error.
pub fn decode_output(b: &[u8]) -> Result<ClientOutput, String> {
    let (outcome, rest) =
        postcard::take_from_bytes(b).map_err(|e| format!("client outcome does not decode: {e}"))?;
    if !rest.is_empty() {
        return Err(format!(
            "{} trailing bytes after the client outcome",
            rest.len()
        ));
    }
    Ok(outcome)
}
