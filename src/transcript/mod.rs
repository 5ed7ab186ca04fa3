//! The transcript: plain data describing one signed fetch, and its one codec.
//!
//! A transcript holds everything a verifier needs to re-run the client in the
//! same deterministic world: the seed, the clock start, the URL, every byte
//! the server sent (with read boundaries) and every byte the client sent, and
//! the response the client produced. It never holds trust anchors: the
//! verifier brings its own.
//!
//! This module knows nothing of the supervisor or the relays; they fill and
//! read these plain structs.
//!
//! The field order of these types and the order of [`Event`]'s variants are
//! the file format (`docs/transcript-format.md`): changing either needs a new
//! [`FORMAT_MAJOR`] and the same change in the codec's shape check, which the
//! codec's round-trip tests catch if forgotten.

mod codec;

pub use codec::{
    decode, encode, read_file, write_file_atomic, DecodeError, Limits, FORMAT_MAJOR, FORMAT_MINOR,
    MAGIC,
};

use serde::{Deserialize, Serialize};

/// One signed fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    /// Which client produced the recorded bytes. A verifier refuses a
    /// transcript made by another client or version: the client's exact
    /// behaviour is part of what the transcript means.
    pub client: ClientId,
    /// The URL given to `sign`.
    pub url: String,
    /// The 256-bit seed every random stream of the world is derived from.
    pub seed: [u8; 32],
    /// The world's clock at the client's start (CLOCK_REALTIME).
    pub clock_start: Timestamp,
    /// Which interception backend signed it (informational only: every
    /// backend gives the same world).
    pub backend: String,
    /// Every TCP connection the client opened, in the order it opened them.
    pub connections: Vec<Connection>,
    /// What the client produced from those bytes.
    pub response: Response,
}

/// The name and version of the client that ran under the supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientId {
    /// `tlsign-seccomp-client` for the built-in client.
    pub name: String,
    /// Changes whenever what the client sends or accepts could change.
    pub version: String,
}

/// Seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    /// Whole seconds; negative before 1970.
    pub secs: i64,
    /// Nanoseconds within the second, below 10^9.
    pub nanos: u32,
}

/// One TCP connection as the client opened it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The host name the client asked for (or the address literal it used).
    pub host: String,
    /// The TCP port the client connected to.
    pub port: u16,
    /// The address the signer actually connected to (informational: the
    /// verifier never connects anywhere).
    pub signed_addr: String,
    /// Both directions, in the order the recorder saw them, each chunk one
    /// read from its side.
    pub events: Vec<Event>,
}

/// One thing that happened on a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Bytes the client wrote (one read by the recorder).
    Client(#[serde(with = "serde_bytes_compat")] Vec<u8>),
    /// Bytes the server sent (one read by the recorder).
    Server(#[serde(with = "serde_bytes_compat")] Vec<u8>),
    /// The client shut down its sending side or closed the socket.
    ClientEof,
    /// The server shut down its sending side or closed the socket.
    ServerEof,
}

impl Event {
    /// The bytes of a client write, or `None` for any other event.
    pub fn client_data(&self) -> Option<&[u8]> {
        match self {
            Event::Client(d) => Some(d),
            _ => None,
        }
    }

    /// The bytes of a server read, or `None` for any other event.
    pub fn server_data(&self) -> Option<&[u8]> {
        match self {
            Event::Server(d) => Some(d),
            _ => None,
        }
    }
}

impl Connection {
    /// The client's writes, in order.
    pub fn client_chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.events.iter().filter_map(Event::client_data)
    }

    /// The recorder's reads from the server, in order.
    pub fn server_chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.events.iter().filter_map(Event::server_data)
    }
}

/// The response the client produced: the final one after redirects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The URL the final response came from.
    pub final_url: String,
    /// Every URL fetched before the final one (redirects followed).
    pub redirects: Vec<String>,
    /// The HTTP status code of the final response.
    pub status: u16,
    /// Header names as sent (case preserved), values as raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body after transfer and content decoding (chunked, gzip).
    #[serde(with = "serde_bytes_compat")]
    pub body: Vec<u8>,
}

/// Serialize `Vec<u8>` as one byte string rather than a sequence of u8s: the
/// same wire bytes in postcard, but one length check instead of one per byte.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl Timestamp {
    /// Converts a `SystemTime`; times before 1970 are negative seconds.
    pub fn from_system_time(t: std::time::SystemTime) -> Timestamp {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if d.subsec_nanos() == 0 {
                    Timestamp { secs, nanos: 0 }
                } else {
                    Timestamp {
                        secs: secs - 1,
                        nanos: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }

    /// RFC 3339 in UTC, e.g. 2020-06-01T00:00:00Z.
    pub fn to_rfc3339(self) -> String {
        match u64::try_from(self.secs) {
            Ok(s) => humantime::format_rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::new(s, self.nanos),
            )
            .to_string(),
            Err(_) => format!("{}s before 1970", -self.secs),
        }
    }
}
