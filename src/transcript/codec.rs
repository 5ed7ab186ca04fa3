//! The transcript file format: a 12-byte header, then one zstd frame holding
//! the postcard encoding of a [`Transcript`].
//!
//! ```text
//! offset  size  field
//! 0       8     MAGIC  "TLSIGN\0\x01"
//! 8       2     format major, u16 little-endian
//! 10      2     format minor, u16 little-endian
//! 12      ..    one zstd frame; decompressed, exactly one postcard Transcript
//! ```
//!
//! The full description, field by field, is in `docs/transcript-format.md`.
//!
//! Decoding treats every file as hostile. Each stage is bounded before it
//! allocates: the file size, the decompressed size (and the zstd window), and
//! then every count and length in the postcard data, which `check_shape`
//! walks once without allocating before serde builds anything. Without that
//! walk a 1-byte `ClientEof` event would grow into 32 bytes in memory and an
//! empty redirect into 24, so a file within the decompressed limit could still
//! ask for many gigabytes.

use std::fs::{File, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Transcript;

/// The first 8 bytes of every transcript file. The trailing `00 01` are part
/// of the magic, not a version: the version follows it.
pub const MAGIC: &[u8; 8] = b"TLSIGN\x00\x01";

/// Bumped when the encoding changes in a way old readers cannot decode.
pub const FORMAT_MAJOR: u16 = 1;

/// Bumped when the encoding changes compatibly for new readers. postcard is
/// not self-describing, so an old reader cannot skip fields it does not know:
/// a reader decodes a minor version no newer than its own and refuses newer
/// ones as [`DecodeError::TooNew`].
pub const FORMAT_MINOR: u16 = 0;

/// Magic plus the two version numbers.
const HEADER_LEN: usize = MAGIC.len() + 4;

/// Transcripts are mostly TLS ciphertext, which no level compresses; what
/// does compress (the page the client printed, headers) needs no entropy
/// coding to shrink. 100 transcripts of the bench's pages (1 081 589
/// bytes) came to 665 268 at level 1 and 665 698 at level -1 (`zstd -b1
/// --fast=1`), compressed at 370 and 1600 MB/s: about 22 µs less per URL,
/// under 1% of what a URL costs and below what a comparison of whole
/// builds resolves (docs/benchmarks.md). A batch writes one per URL, so
/// the fast level. Readers need nothing new:
/// a negative level changes how the frame is found, not its format.
const ZSTD_LEVEL: i32 = -1;

/// The writer's zstd window: 2 MiB, what level 3 would use for large input.
/// Pinned so a future level change cannot produce files old readers refuse.
const ZSTD_WINDOW_LOG: u32 = 21;

/// The largest window a reader accepts: 8 MiB, the minimum the zstd format
/// recommends every decoder to support (RFC 8878 §3.1.1.1.2). It bounds the
/// decoder's own memory whatever the frame header asks for.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// The most the decoder reserves up front from a frame's declared size; past
/// that the buffer grows with the data actually decompressed.
const PREALLOC_MAX: u64 = 64 << 20;

/// Bounds applied while decoding. Each protects memory or time against a
/// hostile file; the defaults are far above what a real fetch produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file, in bytes, header and compressed data together.
    pub max_file: u64,
    /// Largest postcard data, in bytes, once decompressed.
    pub max_decompressed: u64,
    /// Most TCP connections.
    pub max_connections: usize,
    /// Most events, over all connections together.
    pub max_events: usize,
    /// Longest URL, in bytes: applies to `url`, `final_url` and each redirect.
    pub max_url_len: usize,
    /// Most response headers.
    pub max_headers: usize,
    /// Most redirects.
    pub max_redirects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file: 256 << 20,
            max_decompressed: 512 << 20,
            max_connections: 64,
            max_events: 4_000_000,
            max_url_len: 16 << 10,
            max_headers: 1000,
            max_redirects: 64,
        }
    }
}

/// Why a byte string is not a transcript this build can read.
///
/// Each variant is documented by its message (`#[error]`), which names the
/// value at fault; causes (I/O, zstd, postcard) are in `source()`.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum DecodeError {
    #[error("file is empty")]
    Empty,
    #[error("file is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort { len: usize },
    #[error("not a tlsign transcript: magic bytes are {found:02x?}")]
    BadMagic { found: Vec<u8> },
    #[error(
        "transcript format version {major}.{minor} is newer than this tlsign-seccomp \
         supports ({FORMAT_MAJOR}.0 to {FORMAT_MAJOR}.{FORMAT_MINOR})"
    )]
    TooNew { major: u16, minor: u16 },
    #[error(
        "transcript format version {major}.{minor} is older than this tlsign-seccomp \
         supports ({FORMAT_MAJOR}.0 to {FORMAT_MAJOR}.{FORMAT_MINOR})"
    )]
    TooOld { major: u16, minor: u16 },
    #[error("file is {size} bytes, over the limit of {max}")]
    FileTooLarge { size: u64, max: u64 },
    #[error("transcript decompresses to more than the limit of {max} bytes")]
    DecompressedTooLarge { max: u64 },
    #[error("compressed data is corrupt")]
    Zstd(#[source] io::Error),
    #[error("transcript data is malformed")]
    Malformed(#[from] postcard::Error),
    #[error("transcript data is malformed: unknown event kind {kind} (known kinds are 0 to 3)")]
    BadEventKind { kind: u64 },
    #[error("{len} unexpected bytes after the {after}")]
    TrailingBytes { len: usize, after: &'static str },
    #[error("{what} is {value}, over the limit of {max}")]
    LimitExceeded {
        what: &'static str,
        value: u64,
        max: u64,
    },
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Encodes a transcript into the bytes of a transcript file.
pub fn encode(t: &Transcript) -> Vec<u8> {
    let data = postcard::to_allocvec(t)
        .expect("postcard fails only on a full fixed buffer or a sequence of unknown length");
    with_header(&data).expect("zstd into memory fails only on a bad parameter or out of memory")
}

/// The header, then `data` compressed into one zstd frame, in one buffer.
fn with_header(data: &[u8]) -> io::Result<Vec<u8>> {
    use zstd::stream::raw::CParameter;
    // A compression context costs more to set up (allocate and zero its
    // tables) than a small transcript costs to compress: a batch keeps one
    // per thread.
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let c = match &mut *cell {
            Some(c) => c,
            None => {
                let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
                c.set_parameter(CParameter::WindowLog(ZSTD_WINDOW_LOG))?;
                c.set_parameter(CParameter::ChecksumFlag(true))?;
                // The whole input is given at once, so the frame header
                // carries the decompressed size: a reader can refuse an
                // oversized file before decompressing anything.
                c.set_parameter(CParameter::ContentSizeFlag(true))?;
                cell.insert(c)
            }
        };
        // The frame goes straight after the header, with no second buffer
        // to copy from.
        let mut out = Vec::with_capacity(HEADER_LEN + zstd::zstd_safe::compress_bound(data.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
        out.extend_from_slice(&FORMAT_MINOR.to_le_bytes());
        let mut cursor = io::Cursor::new(out);
        cursor.set_position(HEADER_LEN as u64);
        c.compress_to_buffer(data, &mut cursor)?;
        Ok(cursor.into_inner())
    })
}

/// Decodes the bytes of a transcript file, checking every bound in `limits`.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Transcript, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let size = bytes.len() as u64;
    if size > limits.max_file {
        return Err(DecodeError::FileTooLarge {
            size,
            max: limits.max_file,
        });
    }
    let frame = check_header(bytes)?;
    let data = decompress(frame, limits.max_decompressed)?;
    check_shape(&data, limits)?;
    let (transcript, rest) = postcard::take_from_bytes::<Transcript>(&data)?;
    // check_shape has already refused trailing bytes; this keeps the rule
    // true even if the two ever disagree.
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            len: rest.len(),
            after: "transcript data",
        });
    }
    Ok(transcript)
}

/// How long `read_file` waits for a writer on a FIFO.
const FIFO_WAIT_MS: u16 = 30_000;

/// Reads and decodes a transcript file, refusing one larger than
/// `limits.max_file` before reading it. A FIFO is read once a writer comes
/// (waiting at most 30 s), a pipe to its end.
pub fn read_file(path: &Path, limits: &Limits) -> Result<Transcript, DecodeError> {
    let io_error = |source| DecodeError::Io {
        path: path.to_owned(),
        source,
    };
    // Opened without blocking: a FIFO nobody writes to would otherwise hang
    // the open. Reads then block again, so a pipe with a writer (`verify
    // <(curl ...)`) is read to its end, and one without reads as empty.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    if meta.file_type().is_fifo() {
        // Give a writer that opens the FIFO just after us time to arrive
        // (Linux reports no hang-up before a writer has come and gone).
        let mut fds = [nix::poll::PollFd::new(
            file.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(FIFO_WAIT_MS))
            .map_err(|e| io_error(e.into()))?;
        if ready == 0 {
            return Err(io_error(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "nothing was written to this FIFO for {} s",
                    FIFO_WAIT_MS / 1000
                ),
            )));
        }
    }
    nix::fcntl::fcntl(
        file.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(|e| io_error(e.into()))?;
    let size = meta.len();
    if size > limits.max_file {
        return Err(DecodeError::FileTooLarge {
            size,
            max: limits.max_file,
        });
    }
    // The size can change between the stat and the read (or be 0 for a
    // pipe): the read itself is bounded too, and decode checks the result.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limits.max_file.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    decode(&bytes, limits)
}

/// Writes a transcript file so that `path` holds either its old contents or
/// the whole new transcript, never part of one: write to a temporary file in
/// the same directory, sync it, then rename it over `path`.
pub fn write_file_atomic(path: &Path, t: &Transcript) -> io::Result<()> {
    let bytes = encode(t);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tlsign-")
        .suffix(".tmp")
        // Like File::create: the umask decides, not tempfile's private 0600.
        // A transcript is meant to be handed to others.
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    // On failure the PersistError drops the temporary file, which deletes it.
    tmp.persist(path).map_err(|e| e.error)?;
    // Make the rename itself durable. Best effort: the transcript is already
    // complete under its name, and some file systems refuse fsync on a
    // directory, which must not turn a good write into an error.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Checks magic and version; returns the compressed data after the header.
fn check_header(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let Some((magic, rest)) = bytes.split_first_chunk::<8>() else {
        // A prefix of the magic is a cut-off transcript; anything else is
        // some other file.
        return Err(if MAGIC.starts_with(bytes) {
            DecodeError::TooShort { len: bytes.len() }
        } else {
            DecodeError::BadMagic {
                found: bytes.to_vec(),
            }
        });
    };
    if magic != MAGIC {
        return Err(DecodeError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let Some((&[a, b, c, d], frame)) = rest.split_first_chunk::<4>() else {
        return Err(DecodeError::TooShort { len: bytes.len() });
    };
    let (major, minor) = (u16::from_le_bytes([a, b]), u16::from_le_bytes([c, d]));
    if major < FORMAT_MAJOR {
        return Err(DecodeError::TooOld { major, minor });
    }
    if major > FORMAT_MAJOR || minor > FORMAT_MINOR {
        return Err(DecodeError::TooNew { major, minor });
    }
    Ok(frame)
}

/// Decompresses exactly one zstd frame of at most `max` bytes.
///
/// A frame that declares its size (ours always do) is refused at once if the
/// size is over `max`, and decompressed with output bounded by the declared
/// size. A frame that does not is first decompressed into nothing, counting,
/// so a zstd bomb costs time bounded by `max` but no memory.
fn decompress(frame: &[u8], max: u64) -> Result<Vec<u8>, DecodeError> {
    let too_large = DecodeError::DecompressedTooLarge { max };
    // An unreadable header is left for the decoder to report.
    let declared = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten();
    let (bound, reserve) = match declared {
        Some(size) if size > max => return Err(too_large),
        // Declared but not yet proven: reserve only a bounded amount.
        Some(size) => (size, size.min(PREALLOC_MAX)),
        None => {
            let mut decoder = frame_decoder(frame)?;
            let size = io::copy(
                &mut decoder.by_ref().take(max.saturating_add(1)),
                &mut io::sink(),
            )
            .map_err(DecodeError::Zstd)?;
            if size > max {
                return Err(too_large);
            }
            (size, size)
        }
    };
    let mut data = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
    let mut decoder = frame_decoder(frame)?;
    decoder
        .by_ref()
        .take(bound.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(DecodeError::Zstd)?;
    // More than declared: zstd would report it at the frame's end, but the
    // take above stopped reading one byte past the bound.
    if data.len() as u64 > bound {
        return Err(if bound < max {
            DecodeError::Zstd(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame holds more than the {bound} bytes its header declares"),
            ))
        } else {
            too_large
        });
    }
    let rest = decoder.finish();
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            len: rest.len(),
            after: "zstd frame",
        });
    }
    Ok(data)
}

fn frame_decoder(frame: &[u8]) -> Result<zstd::stream::read::Decoder<'static, &[u8]>, DecodeError> {
    let mut decoder = zstd::stream::read::Decoder::with_buffer(frame)
        .map_err(DecodeError::Zstd)?
        .single_frame();
    decoder
        .window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(DecodeError::Zstd)?;
    Ok(decoder)
}

/// Walks the postcard encoding of a [`Transcript`] once, allocating nothing,
/// and checks every count and length against `limits` as soon as it is read,
/// so that serde never allocates for a count the limits refuse.
///
/// This mirrors the field order of the types in `super`: a change there that
/// is not made here fails the round-trip tests.
fn check_shape(data: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    let mut r = Reader { rest: data };

    // client: ClientId { name, version }
    r.bytes()?;
    r.bytes()?;
    let url = r.bytes()?;
    at_most("url length", url.len() as u64, limits.max_url_len as u64)?;
    let _seed = r.take(32)?;
    let _secs = r.varint(64)?;
    let nanos = r.varint(32)?;
    at_most("clock_start.nanos", nanos, 999_999_999)?;
    let _backend = r.bytes()?;

    let connections = r.len()?;
    at_most("connections", connections, limits.max_connections as u64)?;
    let mut events_total: u64 = 0;
    for _ in 0..connections {
        let _host = r.bytes()?;
        let _port = r.varint(16)?;
        let _signed_addr = r.bytes()?;
        let events = r.len()?;
        events_total = events_total.saturating_add(events);
        at_most("events", events_total, limits.max_events as u64)?;
        for _ in 0..events {
            match r.varint(32)? {
                // Client(bytes), Server(bytes)
                0 | 1 => {
                    r.bytes()?;
                }
                // ClientEof, ServerEof
                2 | 3 => {}
                kind => return Err(DecodeError::BadEventKind { kind }),
            }
        }
    }

    // response: Response { final_url, redirects, status, headers, body }
    let final_url = r.bytes()?;
    at_most(
        "final_url length",
        final_url.len() as u64,
        limits.max_url_len as u64,
    )?;
    let redirects = r.len()?;
    at_most("redirects", redirects, limits.max_redirects as u64)?;
    for _ in 0..redirects {
        let url = r.bytes()?;
        at_most(
            "redirect url length",
            url.len() as u64,
            limits.max_url_len as u64,
        )?;
    }
    let _status = r.varint(16)?;
    let headers = r.len()?;
    at_most("headers", headers, limits.max_headers as u64)?;
    for _ in 0..headers {
        let _name = r.bytes()?;
        let _value = r.bytes()?;
    }
    let _body = r.bytes()?;

    if !r.rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            len: r.rest.len(),
            after: "transcript data",
        });
    }
    Ok(())
}

fn at_most(what: &'static str, value: u64, max: u64) -> Result<(), DecodeError> {
    if value > max {
        return Err(DecodeError::LimitExceeded { what, value, max });
    }
    Ok(())
}

/// A cursor over postcard bytes that never allocates and never reads past
/// the end (in the manner of rustls' `codec::Reader`).
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: u64) -> Result<&'a [u8], postcard::Error> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= self.rest.len())
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, postcard::Error> {
        let (&byte, tail) = self
            .rest
            .split_first()
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.rest = tail;
        Ok(byte)
    }

    /// The varint of an unsigned integer `bits` wide, accepted exactly as
    /// postcard accepts it: 7 bits per byte, least significant first, at most
    /// ceil(bits / 7) bytes, the last of which may not carry bits beyond
    /// `bits`. Non-minimal encodings (`80 00` for 0) pass, as in postcard.
    fn varint(&mut self, bits: u32) -> Result<u64, postcard::Error> {
        let max_len = bits.div_ceil(7);
        let last_max = (1u8 << (bits % 7)) - 1;
        let mut value = 0u64;
        for i in 0..max_len {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == max_len - 1 && byte > last_max {
                    break;
                }
                return Ok(value);
            }
        }
        Err(postcard::Error::DeserializeBadVarint)
    }

    /// A length prefix: postcard writes `usize` as a varint.
    fn len(&mut self) -> Result<u64, postcard::Error> {
        self.varint(usize::BITS)
    }

    /// A length-prefixed byte string (also how a `str` is written).
    fn bytes(&mut self) -> Result<&'a [u8], postcard::Error> {
        let len = self.len()?;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::{ClientId, Connection, Event, Response, Timestamp};
    use std::time::{Duration, Instant};

    /// Deterministic bytes that do not compress (xorshift64).
    fn noise(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn small() -> Transcript {
        Transcript {
            client: ClientId {
                name: "tlsign-client".into(),
                version: "0.1.0".into(),
            },
            url: "https://example.org/".into(),
            seed: [7; 32],
            clock_start: Timestamp {
                secs: 1_700_000_000,
                nanos: 5,
            },
            backend: "seccomp-unotify".into(),
            connections: vec![Connection {
                host: "example.org".into(),
                port: 443,
                signed_addr: "93.184.215.14:443".into(),
                events: vec![
                    Event::Client(b"\x16\x03\x01hello".to_vec()),
                    Event::Server(b"\x16\x03\x03world".to_vec()),
                    Event::ClientEof,
                    Event::ServerEof,
                ],
            }],
            response: Response {
                final_url: "https://example.org/".into(),
                redirects: vec![],
                status: 200,
                headers: vec![("Content-Type".into(), b"text/html".to_vec())],
                body: b"<p>hi</p>".to_vec(),
            },
        }
    }

    fn realistic() -> Transcript {
        let connection = |host: &str, seed: u64| Connection {
            host: host.into(),
            port: 443,
            signed_addr: format!("[2001:db8::{seed}]:443"),
            events: vec![
                Event::Client(noise(517, seed)),
                Event::Server(noise(4096, seed + 1)),
                Event::Server(noise(1200, seed + 2)),
                Event::Client(noise(80, seed + 3)),
                Event::Server(noise(16_384, seed + 4)),
                Event::Server(Vec::new()),
                Event::ClientEof,
                Event::ServerEof,
            ],
        };
        Transcript {
            client: ClientId {
                name: "tlsign-client".into(),
                version: "0.1.0".into(),
            },
            url: "http://example.org/a?b=c".into(),
            seed: *b"0123456789abcdef0123456789abcdef",
            clock_start: Timestamp {
                secs: -12_345,
                nanos: 999_999_999,
            },
            backend: "seccomp-unotify".into(),
            connections: vec![
                connection("example.org", 1),
                connection("www.example.org", 10),
                connection("cdn.example.net", 20),
            ],
            response: Response {
                final_url: "https://cdn.example.net/a?b=c".into(),
                redirects: vec![
                    "http://example.org/a?b=c".into(),
                    "https://www.example.org/a?b=c".into(),
                ],
                status: 200,
                headers: vec![
                    ("Content-Type".into(), b"text/html; charset=utf-8".to_vec()),
                    ("X-Bin".into(), vec![0, 0xff, b'\r']),
                    ("Set-Cookie".into(), "caf\u{e9}=1".into()),
                ],
                body: noise(1 << 20, 99),
            },
        }
    }

    /// A file with our header around an arbitrary payload.
    fn with_header(major: u16, minor: u16, payload: &[u8]) -> Vec<u8> {
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&major.to_le_bytes());
        file.extend_from_slice(&minor.to_le_bytes());
        file.extend_from_slice(payload);
        file
    }

    fn compress(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    #[test]
    fn round_trip_realistic() {
        let t = realistic();
        let file = encode(&t);
        assert_eq!(&file[..8], MAGIC);
        assert_eq!(&file[8..12], &[1, 0, 0, 0]);
        let declared = zstd::zstd_safe::get_frame_content_size(&file[HEADER_LEN..]).unwrap();
        assert!(declared.is_some(), "encode must declare the content size");
        assert_eq!(decode(&file, &Limits::default()).unwrap(), t);
    }

    /// Pins the postcard encoding that docs/transcript-format.md describes.
    #[test]
    fn postcard_wire_bytes() {
        let t = Transcript {
            client: ClientId {
                name: "c".into(),
                version: "1".into(),
            },
            url: "u".into(),
            seed: [7; 32],
            clock_start: Timestamp {
                secs: -1,
                nanos: 300,
            },
            backend: "b".into(),
            connections: vec![Connection {
                host: "h".into(),
                port: 443,
                signed_addr: "a".into(),
                events: vec![Event::Client(vec![1, 2]), Event::ServerEof],
            }],
            response: Response {
                final_url: "u".into(),
                redirects: vec![],
                status: 200,
                headers: vec![("k".into(), vec![9])],
                body: vec![5],
            },
        };
        let mut want = vec![1, b'c', 1, b'1', 1, b'u'];
        want.extend([7; 32]); // [u8; 32]: 32 raw bytes, no length
        want.extend([0x01]); // secs -1: zigzag 1
        want.extend([0xac, 0x02]); // nanos 300: varint
        want.extend([1, b'b']);
        want.extend([1, 1, b'h', 0xbb, 0x03, 1, b'a']); // 1 connection, port 443
        want.extend([2, 0, 2, 1, 2, 3]); // Client([1, 2]), ServerEof
        want.extend([1, b'u', 0, 0xc8, 0x01]); // final_url, no redirects, 200
        want.extend([1, 1, b'k', 1, 9, 1, 5]); // one header, body
        assert_eq!(postcard::to_allocvec(&t).unwrap(), want);
        // i64 zigzag and the u64 bound of a varint, as the format doc says.
        assert_eq!(
            postcard::to_allocvec(&i64::MIN).unwrap(),
            [0xff; 9].iter().chain(&[1]).copied().collect::<Vec<_>>()
        );
        assert_eq!(postcard::to_allocvec(&1i64).unwrap(), [2]);
        assert_eq!(
            postcard::to_allocvec(&u32::MAX).unwrap(),
            [0xff, 0xff, 0xff, 0xff, 0x0f]
        );
        let file = with_header(1, 0, &compress(&want));
        assert_eq!(decode(&file, &Limits::default()).unwrap(), t);
    }

    #[test]
    fn empty_input() {
        assert!(matches!(
            decode(b"", &Limits::default()),
            Err(DecodeError::Empty)
        ));
    }

    #[test]
    fn garbage_prefixes() {
        let l = Limits::default();
        let cases: [&[u8]; 7] = [
            b"\x00",
            b"TLSIG",
            b"\x28\xb5\x2f\xfd\x00\x00\x00\x00\x00\x00\x00\x00", // a bare zstd frame
            b"{\"url\": \"https://example.org/\"}",
            b"GIF89a\x01\x00\x01\x00",
            b"TLSIGN\x00\x01\x01\x00",
            b"TLSIGN\x00\x01\x01\x00\x00\x00\xde\xad\xbe\xef",
        ];
        let results: Vec<_> = cases.iter().map(|c| decode(c, &l)).collect();
        assert!(matches!(results[0], Err(DecodeError::BadMagic { .. })));
        assert!(matches!(results[1], Err(DecodeError::TooShort { len: 5 })));
        assert!(matches!(results[2], Err(DecodeError::BadMagic { .. })));
        assert!(matches!(results[3], Err(DecodeError::BadMagic { .. })));
        assert!(matches!(results[4], Err(DecodeError::BadMagic { .. })));
        assert!(matches!(results[5], Err(DecodeError::TooShort { len: 10 })));
        assert!(matches!(results[6], Err(DecodeError::Zstd(_))));
        let header_only = with_header(1, 0, b"");
        assert!(matches!(
            decode(&header_only, &l),
            Err(DecodeError::Zstd(_))
        ));
    }

    #[test]
    fn every_truncation_fails() {
        let file = encode(&small());
        for len in 0..file.len() {
            assert!(
                decode(&file[..len], &Limits::default()).is_err(),
                "len {len}"
            );
        }
    }

    #[test]
    fn every_byte_flip_is_handled() {
        let t = small();
        let file = encode(&t);
        // zstd's checksum catches flips in the compressed data; flips in the
        // header are caught by magic and version checks.
        for i in 0..file.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bad = file.clone();
                bad[i] ^= mask;
                assert!(
                    decode(&bad, &Limits::default()).is_err(),
                    "byte {i} ^ {mask:#x}"
                );
            }
        }
        // Without a checksum, flips reach postcard: they must not panic.
        let data = postcard::to_allocvec(&t).unwrap();
        for i in 0..data.len() {
            for mask in [0x01, 0x7f, 0x80, 0xff] {
                let mut bad = data.clone();
                bad[i] ^= mask;
                let _ = decode(&with_header(1, 0, &compress(&bad)), &Limits::default());
            }
        }
    }

    #[test]
    fn wrong_magic() {
        let mut file = encode(&small());
        file[0] = b't';
        let err = decode(&file, &Limits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::BadMagic { .. }));
        assert!(err
            .to_string()
            .starts_with("not a tlsign transcript: magic bytes are [74, 4c"));
    }

    #[test]
    fn newer_versions_are_refused() {
        let frame = &encode(&small())[HEADER_LEN..];
        for (major, minor) in [(2, 0), (1, 1), (u16::MAX, u16::MAX)] {
            let err = decode(&with_header(major, minor, frame), &Limits::default()).unwrap_err();
            assert!(
                matches!(err, DecodeError::TooNew { .. }),
                "{major}.{minor}: {err}"
            );
        }
        let err = decode(&with_header(2, 0, frame), &Limits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "transcript format version 2.0 is newer than this tlsign-seccomp supports (1.0 to 1.0)"
        );
    }

    #[test]
    fn older_versions_are_refused() {
        let frame = &encode(&small())[HEADER_LEN..];
        for minor in [0, 9] {
            let err = decode(&with_header(0, minor, frame), &Limits::default()).unwrap_err();
            assert!(matches!(err, DecodeError::TooOld { major: 0, .. }), "{err}");
        }
    }

    /// `len` zeros in one zstd frame, compressed chunk by chunk so the test
    /// never holds them in memory. `pledge` writes the size into the header.
    /// Every level turns a block of zeros into a 4-byte RLE block (1 GiB into
    /// 32 KiB), so level 1 makes the same bomb as level 19, several times faster.
    fn zeros_frame(len: u64, pledge: bool) -> Vec<u8> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        if pledge {
            encoder.set_pledged_src_size(Some(len)).unwrap();
        }
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..len / chunk.len() as u64 {
            encoder.write_all(&chunk).unwrap();
        }
        encoder.finish().unwrap()
    }

    #[test]
    fn zstd_bomb_without_declared_size() {
        let frame = zeros_frame(1 << 30, false);
        assert!(frame.len() < 1 << 20, "{} bytes", frame.len());
        let file = with_header(1, 0, &frame);
        let start = Instant::now();
        let err = decode(&file, &Limits::default()).unwrap_err();
        assert!(
            matches!(err, DecodeError::DecompressedTooLarge { max } if max == 512 << 20),
            "{err}"
        );
        // Counting 512 MiB of zeros takes well under a second, even unoptimized.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn zstd_bomb_with_declared_size() {
        let file = with_header(1, 0, &zeros_frame(1 << 30, true));
        let start = Instant::now();
        let err = decode(&file, &Limits::default()).unwrap_err();
        assert!(
            matches!(err, DecodeError::DecompressedTooLarge { .. }),
            "{err}"
        );
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
    }

    /// A header that declares less than the frame holds does not lift the bound.
    #[test]
    fn zstd_bomb_with_lying_size() {
        let mut frame = zeros_frame(64 << 20, true);
        // Frame_Header_Descriptor (RFC 8878 §3.1.1.1.1): 4-byte content size,
        // a window descriptor, no dictionary id; so the size is at 6..10.
        assert_eq!(frame[4] >> 6, 2);
        assert_eq!(frame[4] & 0x23, 0);
        frame[6..10].copy_from_slice(&(1u32 << 20).to_le_bytes());
        let err = decode(&with_header(1, 0, &frame), &Limits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Zstd(_)), "{err}");
    }

    #[test]
    fn wide_window_is_refused() {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(27).unwrap();
        encoder.write_all(&noise(1 << 20, 5)).unwrap();
        let file = with_header(1, 0, &encoder.finish().unwrap());
        let err = decode(&file, &Limits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Zstd(_)), "{err}");
    }

    #[test]
    fn trailing_bytes_inside_frame() {
        let mut data = postcard::to_allocvec(&small()).unwrap();
        data.push(0);
        let err = decode(&with_header(1, 0, &compress(&data)), &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TrailingBytes {
                    len: 1,
                    after: "transcript data"
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn trailing_bytes_after_frame() {
        let mut file = encode(&small());
        file.extend_from_slice(b"junk");
        let err = decode(&file, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TrailingBytes {
                    len: 4,
                    after: "zstd frame"
                }
            ),
            "{err}"
        );
        // A second frame is trailing data too.
        let mut file = encode(&small());
        file.extend_from_slice(&compress(b"more"));
        let err = decode(&file, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TrailingBytes {
                    after: "zstd frame",
                    ..
                }
            ),
            "{err}"
        );
    }

    fn limit_error(t: &Transcript, limits: &Limits) -> (&'static str, u64, u64) {
        match decode(&encode(t), limits) {
            Err(DecodeError::LimitExceeded { what, value, max }) => (what, value, max),
            other => panic!("expected LimitExceeded, got {other:?}"),
        }
    }

    #[test]
    fn limits_are_enforced() {
        let t = realistic();
        let l = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        assert_eq!(limit_error(&t, &l), ("connections", 3, 2));
        let l = Limits {
            max_events: 20,
            ..Limits::default()
        };
        assert_eq!(limit_error(&t, &l), ("events", 24, 20));
        let l = Limits {
            max_url_len: 10,
            ..Limits::default()
        };
        assert_eq!(limit_error(&t, &l), ("url length", 24, 10));
        let l = Limits {
            max_headers: 2,
            ..Limits::default()
        };
        assert_eq!(limit_error(&t, &l), ("headers", 3, 2));
        let l = Limits {
            max_redirects: 1,
            ..Limits::default()
        };
        assert_eq!(limit_error(&t, &l), ("redirects", 2, 1));
        let mut bad = small();
        bad.clock_start.nanos = 1_000_000_000;
        assert_eq!(
            limit_error(&bad, &Limits::default()),
            ("clock_start.nanos", 1_000_000_000, 999_999_999)
        );
        let l = Limits {
            max_decompressed: 100,
            ..Limits::default()
        };
        let err = decode(&encode(&t), &l).unwrap_err();
        assert!(
            matches!(err, DecodeError::DecompressedTooLarge { max: 100 }),
            "{err}"
        );
        let l = Limits {
            max_file: 100,
            ..Limits::default()
        };
        let err = decode(&encode(&t), &l).unwrap_err();
        assert!(
            matches!(err, DecodeError::FileTooLarge { max: 100, .. }),
            "{err}"
        );
    }

    /// A huge count is refused when it is read, before anything is allocated.
    #[test]
    fn huge_counts_fail_before_allocating() {
        let data = postcard::to_allocvec(&small()).unwrap();
        // Everything before the connections count, encoded the same way.
        let prefix_len = postcard::to_allocvec(&(
            &small().client.name,
            &small().client.version,
            &small().url,
            small().seed,
            small().clock_start,
            &small().backend,
        ))
        .unwrap()
        .len();
        let mut hostile = data[..prefix_len].to_vec();
        hostile.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        let err = decode(&with_header(1, 0, &compress(&hostile)), &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::LimitExceeded {
                    what: "connections",
                    value: u64::MAX,
                    ..
                }
            ),
            "{err}"
        );

        // 4 million ClientEof events are 4 MB on the wire, ~100 MB in memory:
        // one more than the limit is refused by count, not after building it.
        let mut t = small();
        t.connections[0].events = vec![Event::ClientEof; 10];
        let data = postcard::to_allocvec(&t).unwrap();
        let l = Limits {
            max_events: 9,
            ..Limits::default()
        };
        let err = decode(&with_header(1, 0, &compress(&data)), &l).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::LimitExceeded {
                    what: "events",
                    value: 10,
                    max: 9
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_event_kind() {
        let mut t = small();
        t.connections[0].events = vec![Event::ClientEof];
        let mut data = postcard::to_allocvec(&t).unwrap();
        // The event kind directly follows the events count (1) after signed_addr.
        let addr = t.connections[0].signed_addr.as_bytes();
        let at = data.windows(addr.len()).position(|w| w == addr).unwrap() + addr.len();
        assert_eq!(&data[at..at + 2], &[1, 2]);
        data[at + 1] = 9;
        let err = decode(&with_header(1, 0, &compress(&data)), &Limits::default()).unwrap_err();
        assert!(
            matches!(err, DecodeError::BadEventKind { kind: 9 }),
            "{err}"
        );
    }

    #[test]
    fn bad_utf8_is_malformed() {
        let mut data = postcard::to_allocvec(&small()).unwrap();
        let at = data.windows(5).position(|w| w == b"https").unwrap();
        data[at] = 0xff;
        let err = decode(&with_header(1, 0, &compress(&data)), &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Malformed(postcard::Error::DeserializeBadUtf8)
            ),
            "{err}"
        );
    }

    #[test]
    fn write_file_atomic_leaves_only_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fetch.tlsign");
        let t = realistic();
        write_file_atomic(&path, &t).unwrap();
        // Overwriting goes through a fresh temporary file too.
        write_file_atomic(&path, &small()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["fetch.tlsign"]);
        assert_eq!(read_file(&path, &Limits::default()).unwrap(), small());
    }

    #[test]
    fn read_file_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.tlsign");
        let err = read_file(&missing, &Limits::default()).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Io { path, .. } if *path == missing),
            "{err}"
        );
        assert!(err.to_string().contains("missing.tlsign"));

        let path = dir.path().join("big.tlsign");
        write_file_atomic(&path, &small()).unwrap();
        let l = Limits {
            max_file: 20,
            ..Limits::default()
        };
        let err = read_file(&path, &l).unwrap_err();
        assert!(
            matches!(err, DecodeError::FileTooLarge { max: 20, .. }),
            "{err}"
        );
    }
}
