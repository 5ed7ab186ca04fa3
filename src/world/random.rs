//! The world's randomness: ChaCha20 streams keyed by one 256-bit world key.
//!
//! Every consumer (a traced thread's `getrandom`, one open of `/dev/urandom`)
//! gets its own stream, so an extra consumer, or threads running in another
//! order, cannot shift the bytes another consumer sees.

use std::collections::HashMap;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::transcript::Timestamp;

/// Domain separation for [`world_key`]: bump the version if the derivation
/// ever changes, since old transcripts must keep their meaning.
const WORLD_KEY_CONTEXT: &[u8] = b"tlsign-seccomp world v1\0";

/// Derives the key of every random stream from the seed *and* the clock start
/// and URL. The ClientHello random is drawn from these streams, and the
/// server signs the ClientHello: so neither the claimed time nor the URL can
/// be edited in a transcript without changing the client's first bytes.
pub fn world_key(seed: &[u8; 32], clock_start: Timestamp, url: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(WORLD_KEY_CONTEXT);
    h.update(seed);
    h.update(clock_start.secs.to_le_bytes());
    h.update(clock_start.nanos.to_le_bytes());
    // A URL longer than 4 GiB cannot reach here: the CLI and the codec bound it.
    h.update(u32::try_from(url.len()).unwrap_or(u32::MAX).to_le_bytes());
    h.update(url.as_bytes());
    h.finalize().into()
}

/// Which stream a consumer draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamId {
    /// `getrandom` with flags `flags` (GRND_NONBLOCK, GRND_RANDOM,
    /// GRND_INSECURE: the low 8 bits) of the `thread`-th thread of the
    /// `process`-th process, both counted in order of first appearance.
    ///
    /// The flags separate consumers: glibc draws its start-up randomness
    /// (malloc's tcache key) with GRND_NONBLOCK, Rust's std its hash keys
    /// with GRND_INSECURE, ring its TLS secrets with no flags. Another libc
    /// drawing more or fewer bytes at start-up then leaves the TLS stack's
    /// bytes unchanged, and a transcript replays across libc versions.
    Thread {
        process: u32,
        thread: u32,
        flags: u8,
    },
    /// The `open`-th open of a random device by the `process`-th process.
    Device { process: u32, open: u32 },
}

impl StreamId {
    fn number(self) -> u64 {
        match self {
            // process: 23 bits, thread: 32 bits, flags: 8 bits.
            StreamId::Thread {
                process,
                thread,
                flags,
            } => {
                (u64::from(process & 0x7f_ffff) << 40) | (u64::from(thread) << 8) | u64::from(flags)
            }
            StreamId::Device { process, open } => {
                (1 << 63) | (u64::from(process) << 32) | u64::from(open)
            }
        }
    }
}

/// All streams of one world. Drawing does not advance a stream: the caller
/// commits the advanced state only once the target has accepted the answer,
/// because a notification can be withdrawn (the target got a signal) and the
/// syscall re-issued.
pub struct Streams {
    key: [u8; 32],
    live: HashMap<StreamId, ChaCha20Rng>,
}

impl Streams {
    pub fn new(key: [u8; 32]) -> Self {
        Streams {
            key,
            live: HashMap::new(),
        }
    }

    /// A fresh generator positioned at the start of `id`'s stream.
    pub fn fresh(&self, id: StreamId) -> ChaCha20Rng {
        let mut rng = ChaCha20Rng::from_seed(self.key);
        rng.set_stream(id.number());
        rng
    }

    /// The next `len` bytes of `id`, and the generator state after them.
    pub fn draw(&self, id: StreamId, len: usize) -> (Vec<u8>, ChaCha20Rng) {
        let mut rng = self
            .live
            .get(&id)
            .cloned()
            .unwrap_or_else(|| self.fresh(id));
        let mut out = vec![0u8; len];
        rng.fill_bytes(&mut out);
        (out, rng)
    }

    pub fn commit(&mut self, id: StreamId, state: ChaCha20Rng) {
        self.live.insert(id, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp {
        secs: 1_700_000_000,
        nanos: 0,
    };

    #[test]
    fn key_depends_on_every_input() {
        let base = world_key(&[7; 32], T, "https://a.test/");
        let mut seed = [7; 32];
        seed[31] ^= 1;
        assert_ne!(base, world_key(&seed, T, "https://a.test/"));
        assert_ne!(
            base,
            world_key(
                &[7; 32],
                Timestamp {
                    secs: T.secs + 1,
                    nanos: 0
                },
                "https://a.test/"
            )
        );
        assert_ne!(
            base,
            world_key(
                &[7; 32],
                Timestamp {
                    secs: T.secs,
                    nanos: 1
                },
                "https://a.test/"
            )
        );
        assert_ne!(base, world_key(&[7; 32], T, "https://b.test/"));
        assert_eq!(base, world_key(&[7; 32], T, "https://a.test/"));
    }

    #[test]
    fn uncommitted_draws_repeat_and_committed_ones_advance() {
        let mut s = Streams::new([1; 32]);
        let id = StreamId::Thread {
            process: 0,
            thread: 0,
            flags: 0,
        };
        let (a, _) = s.draw(id, 16);
        let (b, state) = s.draw(id, 16);
        assert_eq!(a, b, "a withdrawn answer must not consume the stream");
        s.commit(id, state);
        let (c, _) = s.draw(id, 16);
        assert_ne!(a, c);
    }

    #[test]
    fn streams_are_independent_and_split_reads_concatenate() {
        let mut s = Streams::new([1; 32]);
        let t0 = StreamId::Thread {
            process: 0,
            thread: 0,
            flags: 0,
        };
        let t1 = StreamId::Thread {
            process: 0,
            thread: 1,
            flags: 0,
        };
        let dev = StreamId::Device {
            process: 0,
            open: 0,
        };
        let (whole, _) = s.draw(t0, 32);
        assert_ne!(whole, s.draw(t1, 32).0);
        assert_ne!(whole, s.draw(dev, 32).0);
        // The same sequence of calls gives the same bytes (call boundaries
        // matter: the generator consumes whole 32-bit words).
        let (first, st) = s.draw(t0, 10);
        s.commit(t0, st);
        let (second, _) = s.draw(t0, 22);
        let mut again = Streams::new([1; 32]);
        let (first2, st2) = again.draw(t0, 10);
        again.commit(t0, st2);
        assert_eq!((first, second), (first2, again.draw(t0, 22).0));
    }
}
