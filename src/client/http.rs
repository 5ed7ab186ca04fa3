//! A minimal HTTP/1.1 client side: the request bytes, and a bounded parser for
//! one response read from any [`BufRead`].
//!
//! Nothing here touches a socket, a clock or randomness: given the same bytes
//! it makes the same decisions, which is what replay needs. Limits are data
//! ([`Limits`]) so tests can make them small.
//!
//! References: RFC 9112 (HTTP/1.1 message syntax), RFC 9110 (semantics).

use std::io::{self, BufRead, Read};

/// Bounds on what one response may make us hold in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of status line plus header lines (shared with any interim 1xx
    /// responses before the final one), and separately of a chunked trailer.
    pub header_bytes: usize,
    /// Header fields in one response (or one trailer section).
    pub headers: usize,
    /// Body bytes, both on the wire and after content decoding.
    pub body_bytes: u64,
}

impl Limits {
    /// The limits the client runs with.
    pub const DEFAULT: Limits = Limits {
        header_bytes: 64 * 1024,
        headers: 200,
        body_bytes: 256 * 1024 * 1024,
    };
}

/// Longest chunk-size line (size plus chunk extensions) we accept.
const MAX_CHUNK_LINE: usize = 4096;
/// Interim (1xx) responses skipped before the final one.
const MAX_INTERIM_RESPONSES: usize = 16;

/// Why reading a response failed.
#[derive(Debug)]
pub enum Error {
    /// The bytes are not an HTTP/1.1 response we can read.
    Malformed(String),
    /// A limit in [`Limits`] was exceeded.
    TooLarge(String),
    /// The connection ended before the message did.
    Truncated(String),
    /// A close-delimited body ended with a transport EOF that the transport
    /// reported as unclean (for TLS: no close_notify), so it may be cut short.
    UncleanClose,
    /// The transport failed; the caller knows what is underneath.
    Io(io::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Malformed(m) | Error::TooLarge(m) | Error::Truncated(m) => f.write_str(m),
            Error::UncleanClose => {
                f.write_str("connection closed without close_notify: body may be truncated")
            }
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The request we send, byte for byte. `host` is the Host header value
/// (with `:port` unless the port is 443) and `path_and_query` starts with `/`.
pub fn request(path_and_query: &str, host: &str, user_agent: &str) -> Vec<u8> {
    format!(
        "GET {path_and_query} HTTP/1.1\r\n\
         Host: {host}\r\n\
         User-Agent: {user_agent}\r\n\
         Accept: */*\r\n\
         Accept-Encoding: gzip\r\n\
         Connection: close\r\n\
         \r\n"
    )
    .into_bytes()
}

/// Status and header fields of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Names as received (case preserved), values as raw bytes with the
    /// surrounding whitespace removed, in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// Values of every field called `name` (ASCII case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// How the body of a response is delimited (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (1xx, 204, 304).
    Empty,
    Chunked,
    Length(u64),
    /// Everything until the connection closes.
    UntilClose,
}

/// Reads the final response head, skipping interim 1xx responses.
pub fn read_head<R: BufRead>(r: &mut R, limits: &Limits) -> Result<Head, Error> {
    let mut budget = limits.header_bytes;
    for _ in 0..=MAX_INTERIM_RESPONSES {
        let head = read_one_head(r, &mut budget, limits.headers)?;
        match head.status {
            // We never ask to switch protocols.
            101 => {
                return Err(Error::Malformed(
                    "unrequested 101 Switching Protocols response".into(),
                ))
            }
            // RFC 9110 section 15.2: "A client MUST be able to parse one or
            // more 1xx responses received prior to a final response".
            100..=199 => continue,
            _ => return Ok(head),
        }
    }
    Err(Error::TooLarge(format!(
        "more than {MAX_INTERIM_RESPONSES} interim 1xx responses"
    )))
}

fn read_one_head<R: BufRead>(
    r: &mut R,
    budget: &mut usize,
    max_headers: usize,
) -> Result<Head, Error> {
    const WHAT: &str = "response header";
    let line = read_line(r, budget, WHAT)?;
    let status = parse_status_line(&line)?;
    let headers = read_fields(r, budget, max_headers, WHAT)?;
    Ok(Head { status, headers })
}

/// `status-line = HTTP-version SP status-code SP [ reason-phrase ]`
/// (RFC 9112 section 4). A missing SP before an empty reason is tolerated.
pub fn parse_status_line(line: &[u8]) -> Result<u16, Error> {
    let bad = || {
        Error::Malformed(format!(
            "malformed status line {:?}",
            String::from_utf8_lossy(line)
        ))
    };
    let rest = line.strip_prefix(b"HTTP/1.").ok_or_else(bad)?;
    let (minor, rest) = rest.split_first().ok_or_else(bad)?;
    if !minor.is_ascii_digit() {
        return Err(bad());
    }
    let rest = rest.strip_prefix(b" ").ok_or_else(bad)?;
    if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if rest.len() > 3 && rest[3] != b' ' {
        return Err(bad());
    }
    let status = rest[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err(Error::Malformed(format!(
            "status code {status} is out of range 100-599"
        )));
    }
    Ok(status)
}

/// Reads header (or trailer) field lines up to the empty line.
fn read_fields<R: BufRead>(
    r: &mut R,
    budget: &mut usize,
    max_fields: usize,
    what: &str,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        let line = read_line(r, budget, what)?;
        if line.is_empty() {
            return Ok(fields);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // RFC 9112 section 5.2: a user agent that receives obs-fold "MUST
            // replace each received obs-fold with one or more SP octets".
            let Some((_, value)) = fields.last_mut() else {
                return Err(Error::Malformed(format!(
                    "{what} starts with a continuation line"
                )));
            };
            value.push(b' ');
            value.extend_from_slice(trim_ows(&line));
            continue;
        }
        if fields.len() == max_fields {
            return Err(Error::TooLarge(format!(
                "{what} has more than {max_fields} fields"
            )));
        }
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| {
            Error::Malformed(format!(
                "{what} line without a colon: {:?}",
                String::from_utf8_lossy(&line)
            ))
        })?;
        let name = &line[..colon];
        // RFC 9110 section 5.1: field-name = token. This also rejects
        // whitespace before the colon (RFC 9112 section 5.1).
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(Error::Malformed(format!(
                "invalid {what} field name {:?}",
                String::from_utf8_lossy(name)
            )));
        }
        let name = String::from_utf8(name.to_vec()).expect("tchars are ASCII");
        fields.push((name, trim_ows(&line[colon + 1..]).to_vec()));
    }
}

/// RFC 9110 section 5.6.2: tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Reads one line ending in LF (CRLF or a bare LF, RFC 9112 section 2.2) and
/// returns it without the line ending. Charges the whole line, ending
/// included, to `budget`. A CR anywhere else in the line is malformed.
fn read_line<R: BufRead>(r: &mut R, budget: &mut usize, what: &str) -> Result<Vec<u8>, Error> {
    let mut line = Vec::new();
    loop {
        let (done, used) = {
            let Filled::Data(buf) = fill(r)? else {
                return Err(Error::Truncated(format!(
                    "connection closed in the middle of the {what}"
                )));
            };
            let (done, used) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, buf.len()),
            };
            if used > *budget {
                return Err(Error::TooLarge(format!("{what} is too large")));
            }
            line.extend_from_slice(&buf[..used]);
            (done, used)
        };
        *budget -= used;
        r.consume(used);
        if done {
            break;
        }
    }
    line.pop(); // the LF
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.contains(&b'\r') {
        return Err(Error::Malformed(format!(
            "bare CR in the {what}: {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    Ok(line)
}

/// What the transport has for us next.
enum Filled<'a> {
    Data(&'a [u8]),
    /// End of stream. `clean: false` when the transport reported it as
    /// `UnexpectedEof`, as rustls does for a TCP EOF without close_notify.
    End {
        clean: bool,
    },
}

fn fill<R: BufRead>(r: &mut R) -> Result<Filled<'_>, Error> {
    loop {
        match r.fill_buf() {
            Ok([]) => return Ok(Filled::End { clean: true }),
            // Re-borrow: returning the first slice would keep `r` borrowed
            // across the loop.
            Ok(_) => return r.fill_buf().map(Filled::Data).map_err(Error::Io),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(Filled::End { clean: false })
            }
            Err(e) => return Err(Error::Io(e)),
        }
    }
}

/// Decides how the body of a response to a GET is delimited
/// (RFC 9112 section 6.3).
pub fn framing(head: &Head, limits: &Limits) -> Result<Framing, Error> {
    // Rule 1: 1xx, 204 and 304 responses end at the empty line after the
    // header section. (We never send HEAD.)
    if matches!(head.status, 100..=199 | 204 | 304) {
        return Ok(Framing::Empty);
    }
    // Rules 2-4: Transfer-Encoding overrides Content-Length. We only
    // support "chunked" alone: any other transfer coding would reach us
    // encoded.
    let te = list_values(head, "transfer-encoding");
    if !te.is_empty() {
        if te.len() == 1 && te[0].eq_ignore_ascii_case(b"chunked") {
            return Ok(Framing::Chunked);
        }
        return Err(Error::Malformed(format!(
            "unsupported Transfer-Encoding {:?}",
            lossy_join(&te)
        )));
    }
    // Rule 5: an invalid Content-Length, or several that differ, is an
    // unrecoverable error.
    let cl = list_values(head, "content-length");
    if let Some(first) = cl.first() {
        if cl.iter().any(|v| v != first) {
            return Err(Error::Malformed(format!(
                "conflicting Content-Length values {:?}",
                lossy_join(&cl)
            )));
        }
        let len = parse_decimal(first).ok_or_else(|| {
            Error::Malformed(format!(
                "invalid Content-Length {:?}",
                String::from_utf8_lossy(first)
            ))
        })?;
        if len > limits.body_bytes {
            return Err(body_too_large(limits));
        }
        return Ok(Framing::Length(len));
    }
    // Rule 7: otherwise the body runs until the connection closes.
    Ok(Framing::UntilClose)
}

/// All comma-separated, trimmed, non-empty list elements of every field
/// called `name`.
fn list_values<'a>(head: &'a Head, name: &'a str) -> Vec<&'a [u8]> {
    head.values(name)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|v| !v.is_empty())
        .collect()
}

fn lossy_join(v: &[&[u8]]) -> String {
    v.iter()
        .map(|b| String::from_utf8_lossy(b))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn body_too_large(limits: &Limits) -> Error {
    Error::TooLarge(format!(
        "response body is larger than {} bytes",
        limits.body_bytes
    ))
}

/// Reads the body as `framing` says, removing the chunked transfer coding.
pub fn read_body<R: BufRead>(
    r: &mut R,
    framing: Framing,
    limits: &Limits,
) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    match framing {
        Framing::Empty => {}
        Framing::Length(len) => read_exact_into(r, len, &mut body, "body")?,
        Framing::Chunked => read_chunked(r, limits, &mut body)?,
        Framing::UntilClose => loop {
            let n = match fill(r)? {
                Filled::Data(buf) => {
                    let room = limits.body_bytes - body.len() as u64;
                    if buf.len() as u64 > room {
                        return Err(body_too_large(limits));
                    }
                    body.extend_from_slice(buf);
                    buf.len()
                }
                Filled::End { clean: true } => break,
                Filled::End { clean: false } => return Err(Error::UncleanClose),
            };
            r.consume(n);
        },
    }
    Ok(body)
}

/// Appends exactly `len` bytes to `out`.
fn read_exact_into<R: BufRead>(
    r: &mut R,
    len: u64,
    out: &mut Vec<u8>,
    what: &str,
) -> Result<(), Error> {
    let mut left = len;
    while left > 0 {
        let n = match fill(r)? {
            Filled::Data(buf) => {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                out.extend_from_slice(&buf[..n]);
                n
            }
            // Clean or not, the message is cut short.
            Filled::End { .. } => return Err(truncated(what, len - left, len)),
        };
        r.consume(n);
        left -= n as u64;
    }
    Ok(())
}

fn truncated(what: &str, got: u64, want: u64) -> Error {
    Error::Truncated(format!(
        "connection closed after {got} of {want} {what} bytes"
    ))
}

/// RFC 9112 section 7.1:
/// `chunked-body = *chunk last-chunk trailer-section CRLF`,
/// `chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF`.
/// Chunk extensions and trailer fields are read and ignored.
fn read_chunked<R: BufRead>(r: &mut R, limits: &Limits, body: &mut Vec<u8>) -> Result<(), Error> {
    loop {
        let mut budget = MAX_CHUNK_LINE;
        let line = read_line(r, &mut budget, "chunk size line")?;
        let size = parse_chunk_size(&line)?;
        if size == 0 {
            break;
        }
        if size > limits.body_bytes - body.len() as u64 {
            return Err(body_too_large(limits));
        }
        read_exact_into(r, size, body, "chunk")?;
        let mut budget = 2;
        match read_line(r, &mut budget, "chunk data terminator") {
            Ok(line) if line.is_empty() => {}
            Ok(_) | Err(Error::TooLarge(_)) => {
                return Err(Error::Malformed("chunk data not followed by CRLF".into()))
            }
            Err(e) => return Err(e),
        }
    }
    let mut budget = limits.header_bytes;
    read_fields(r, &mut budget, limits.headers, "chunked trailer section")?;
    Ok(())
}

/// `chunk-size = 1*HEXDIG`, then optional `BWS ; chunk-ext`.
fn parse_chunk_size(line: &[u8]) -> Result<u64, Error> {
    let bad = || {
        Error::Malformed(format!(
            "malformed chunk size line {:?}",
            String::from_utf8_lossy(line)
        ))
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(bad());
    }
    let rest = trim_ows(&line[digits..]);
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(bad());
    }
    let hex = &line[..digits];
    let significant = hex.iter().skip_while(|&&b| b == b'0').count();
    if significant > 16 {
        return Err(Error::TooLarge(format!(
            "chunk size {} does not fit in 64 bits",
            String::from_utf8_lossy(hex)
        )));
    }
    let value = hex.iter().fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16).expect("checked hex digit");
        (n << 4) | u64::from(d)
    });
    Ok(value)
}

/// Removes a content coding we asked for (Accept-Encoding: gzip). Only a
/// single "gzip" or "x-gzip" coding (ignoring "identity") is decoded; no
/// coding, or any other coding or combination, leaves the body as received.
pub fn decode_content(head: &Head, body: Vec<u8>, limits: &Limits) -> Result<Vec<u8>, Error> {
    let codings: Vec<&[u8]> = list_values(head, "content-encoding")
        .into_iter()
        .filter(|c| !c.eq_ignore_ascii_case(b"identity"))
        .collect();
    let is_gzip = matches!(codings.as_slice(), [c]
        if c.eq_ignore_ascii_case(b"gzip") || c.eq_ignore_ascii_case(b"x-gzip"));
    if !is_gzip || body.is_empty() {
        return Ok(body);
    }
    let mut out = Vec::new();
    // RFC 9110 section 8.4.1.3: gzip is the format of RFC 1952, which allows
    // several members one after another.
    flate2::read::MultiGzDecoder::new(body.as_slice())
        .take(limits.body_bytes.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Error::Malformed(format!("gzip body could not be decoded: {e}")))?;
    if out.len() as u64 > limits.body_bytes {
        return Err(Error::TooLarge(format!(
            "decoded gzip body is larger than {} bytes",
            limits.body_bytes
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor, Write};

    const SMALL: Limits = Limits {
        header_bytes: 256,
        headers: 4,
        body_bytes: 64,
    };

    /// Head, framing and body of `bytes`, read as the client does.
    fn parse(bytes: &[u8], limits: &Limits) -> Result<(Head, Vec<u8>), Error> {
        parse_from(&mut Cursor::new(bytes.to_vec()), limits)
    }

    fn parse_from<R: BufRead>(r: &mut R, limits: &Limits) -> Result<(Head, Vec<u8>), Error> {
        let head = read_head(r, limits)?;
        let framing = framing(&head, limits)?;
        let body = read_body(r, framing, limits)?;
        Ok((head, body))
    }

    /// A reader that hands out one byte per read, then fails like rustls
    /// does at a TCP EOF without close_notify.
    struct Unclean(Cursor<Vec<u8>>);
    impl Read for Unclean {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if buf.is_empty() {
                return Ok(0);
            }
            match self.0.read(&mut buf[..1])? {
                0 => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "no close_notify",
                )),
                n => Ok(n),
            }
        }
    }
    fn unclean(bytes: &[u8]) -> BufReader<Unclean> {
        BufReader::with_capacity(3, Unclean(Cursor::new(bytes.to_vec())))
    }

    fn header<'a>(head: &'a Head, name: &'a str) -> Option<&'a [u8]> {
        head.values(name).next()
    }

    #[test]
    fn request_bytes_are_exact() {
        assert_eq!(
            request("/a?b=c", "example.com:8443", "tlsign-seccomp/0.1.0"),
            b"GET /a?b=c HTTP/1.1\r\nHost: example.com:8443\r\n\
              User-Agent: tlsign-seccomp/0.1.0\r\nAccept: */*\r\n\
              Accept-Encoding: gzip\r\nConnection: close\r\n\r\n"
                .to_vec()
        );
    }

    #[test]
    fn content_length_body() {
        let (head, body) = parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Case: MiXed \r\nContent-Length: 5\r\n\r\nhelloEXTRA",
            &SMALL,
        )
        .unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(
            head.headers[0],
            ("Content-Type".to_string(), b"text/plain".to_vec())
        );
        assert_eq!(header(&head, "x-case"), Some(&b"MiXed"[..]));
        assert_eq!(body, b"hello");
    }

    #[test]
    fn content_length_truncated() {
        let err = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
            &SMALL,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::Truncated(ref m) if m.contains("after 5 of 10")),
            "{err}"
        );
        // An unclean EOF inside a Content-Length body is truncation too.
        let err = parse_from(
            &mut unclean(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
            &SMALL,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Truncated(_)), "{err}");
    }

    #[test]
    fn content_length_conflicts_and_garbage() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
            b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad, &SMALL), Err(Error::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Repeated identical values are one length.
        let (_, body) = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nhi",
            &SMALL,
        )
        .unwrap();
        assert_eq!(body, b"hi");
        // Too large is refused before reading anything.
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n", &SMALL),
            Err(Error::TooLarge(_))
        ));
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let (head, body) = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 999\r\n\r\n\
              5;name=value\r\nhello\r\n1 \r\n \r\n0006\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\nNEXT",
            &SMALL,
        )
        .unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(body, b"hello world!");
    }

    #[test]
    fn chunked_bare_lf_and_one_byte_reads() {
        let bytes = b"HTTP/1.1 200 OK\nTransfer-Encoding: Chunked\n\n3\nabc\n0\n\n";
        let (_, body) = parse(bytes, &SMALL).unwrap();
        assert_eq!(body, b"abc");
        // The same through one-byte reads ending in an unclean EOF: the
        // chunked framing ended first, so that EOF is never seen.
        let (_, body) = parse_from(&mut unclean(bytes), &SMALL).unwrap();
        assert_eq!(body, b"abc");
    }

    #[test]
    fn chunked_errors() {
        type Check = fn(&Error) -> bool;
        let cases: [(&[u8], Check); 6] = [
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                |e| matches!(e, Error::Malformed(_)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
                |e| matches!(e, Error::Malformed(_)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                |e| matches!(e, Error::Truncated(_)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                |e| matches!(e, Error::Truncated(_)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n",
                |e| matches!(e, Error::TooLarge(_)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
                |e| matches!(e, Error::TooLarge(_)),
            ),
        ];
        for (bytes, ok) in cases {
            let err = parse(bytes, &SMALL).unwrap_err();
            assert!(ok(&err), "{:?}: {err:?}", String::from_utf8_lossy(bytes));
        }
        // Body limit is over all chunks together.
        let mut many = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..5 {
            many.extend_from_slice(b"10\r\n0123456789abcdef\r\n");
        }
        assert!(matches!(parse(&many, &SMALL), Err(Error::TooLarge(_))));
        // Other transfer codings are refused.
        assert!(matches!(
            parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                &SMALL
            ),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn close_delimited_body() {
        let (head, body) =
            parse(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end", &SMALL).unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(body, b"until the end");
        // Without close_notify the end cannot be trusted.
        let err = parse_from(
            &mut unclean(b"HTTP/1.0 200 OK\r\n\r\nuntil the end"),
            &SMALL,
        )
        .unwrap_err();
        assert!(matches!(err, Error::UncleanClose), "{err:?}");
        assert_eq!(
            err.to_string(),
            "connection closed without close_notify: body may be truncated"
        );
        // Limit.
        let big = [b"HTTP/1.0 200 OK\r\n\r\n".as_slice(), &[b'x'; 65]].concat();
        assert!(matches!(parse(&big, &SMALL), Err(Error::TooLarge(_))));
        let exact = [b"HTTP/1.0 200 OK\r\n\r\n".as_slice(), &[b'x'; 64]].concat();
        assert_eq!(parse(&exact, &SMALL).unwrap().1.len(), 64);
    }

    #[test]
    fn bodiless_statuses_and_interim_responses() {
        for status in ["204 No Content", "304 Not Modified"] {
            let bytes = format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
            let (_, body) = parse(bytes.as_bytes(), &SMALL).unwrap();
            assert!(body.is_empty());
        }
        let (head, body) = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            &SMALL,
        )
        .unwrap();
        assert_eq!((head.status, body.as_slice()), (200, &b"ok"[..]));
        assert_eq!(
            head.headers,
            vec![("Content-Length".to_string(), b"2".to_vec())]
        );
        assert!(matches!(
            parse(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", &SMALL),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn malformed_status_lines() {
        for bad in [
            &b""[..],
            b"HTTP/1.1",
            b"HTTP/2 200 OK",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/1.1 abc OK",
            b"HTTP/1.1 099 Low",
            b"HTTP/1.1 600 High",
            b"http/1.1 200 OK",
            b"ICY 200 OK",
            b"HTTP/1.x 200 OK",
        ] {
            assert!(
                parse_status_line(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK").unwrap(), 200);
        assert_eq!(parse_status_line(b"HTTP/1.0 404").unwrap(), 404);
        assert_eq!(parse_status_line(b"HTTP/1.1 302 ").unwrap(), 302);
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 \xff\xfe obs-text").unwrap(),
            200
        );
        // Truncated before the status line ends.
        assert!(matches!(
            parse(b"HTTP/1.1 200 O", &SMALL),
            Err(Error::Truncated(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nA: b\r\n", &SMALL),
            Err(Error::Truncated(_))
        ));
        // A bare CR inside a line.
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", &SMALL),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn header_fields() {
        let (head, _) = parse(
            b"HTTP/1.1 200 OK\r\nA:\tone \r\nFolded: x\r\n  y\r\nRaw: \xc3\xa9\xff\r\nContent-Length: 0\r\n\r\n",
            &SMALL,
        )
        .unwrap();
        assert_eq!(
            head.headers,
            vec![
                ("A".to_string(), b"one".to_vec()),
                ("Folded".to_string(), b"x y".to_vec()),
                ("Raw".to_string(), b"\xc3\xa9\xff".to_vec()),
                ("Content-Length".to_string(), b"0".to_vec()),
            ]
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\nNo colon\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nSpace : x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n continuation first\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nN\xc3\xa9: x\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad, &SMALL), Err(Error::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn header_limits() {
        // Field count: 4 is fine, 5 is not.
        let four = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse(four, &SMALL).unwrap().0.headers.len(), 4);
        let five = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(parse(five, &SMALL), Err(Error::TooLarge(_))));
        // Byte budget, counted over the whole head including line endings.
        let head_of = |n: usize| {
            let mut v = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
            v.extend(std::iter::repeat_n(b'v', n));
            v.extend_from_slice(b"\r\n\r\n");
            v
        };
        let fits = head_of(256 - 17 - 5 - 2);
        assert_eq!(fits.len(), 256);
        assert!(parse(&fits, &SMALL).is_ok());
        assert!(matches!(
            parse(&head_of(256 - 17 - 5 - 1), &SMALL),
            Err(Error::TooLarge(_))
        ));
        // A header line that never ends is stopped by the budget too.
        let endless = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'v'; 1000]].concat();
        assert!(matches!(parse(&endless, &SMALL), Err(Error::TooLarge(_))));
        // Real limits.
        assert_eq!(Limits::DEFAULT.header_bytes, 65536);
        assert_eq!(Limits::DEFAULT.headers, 200);
        assert_eq!(Limits::DEFAULT.body_bytes, 256 << 20);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn head_with(fields: &[(&str, &str)]) -> Head {
        Head {
            status: 200,
            headers: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn gzip_content_coding() {
        let z = gzip(b"hello gzip");
        for ce in ["gzip", "GZIP", "x-gzip", "identity, gzip"] {
            let head = head_with(&[("Content-Encoding", ce)]);
            assert_eq!(
                decode_content(&head, z.clone(), &SMALL).unwrap(),
                b"hello gzip",
                "{ce}"
            );
        }
        // Two members one after another.
        let two = [gzip(b"ab"), gzip(b"cd")].concat();
        assert_eq!(
            decode_content(&head_with(&[("content-encoding", "gzip")]), two, &SMALL).unwrap(),
            b"abcd"
        );
        // Unknown or stacked codings are kept raw.
        for ce in ["br", "gzip, gzip", "deflate"] {
            let head = head_with(&[("Content-Encoding", ce)]);
            assert_eq!(decode_content(&head, z.clone(), &SMALL).unwrap(), z, "{ce}");
        }
        assert_eq!(
            decode_content(&head_with(&[]), z.clone(), &SMALL).unwrap(),
            z
        );
        // Broken gzip, and a bomb past the limit.
        let head = head_with(&[("Content-Encoding", "gzip")]);
        assert!(matches!(
            decode_content(&head, b"not gzip".to_vec(), &SMALL),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            decode_content(&head, gzip(&[0; 65]), &SMALL),
            Err(Error::TooLarge(_))
        ));
        assert_eq!(
            decode_content(&head, gzip(&[0; 64]), &SMALL).unwrap().len(),
            64
        );
    }
}
