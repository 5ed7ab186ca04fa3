//! Reading and writing transcripts from the tests: the one place that
//! touches the codec's API.
//!
//! The spec promises `transcript::{read_file, write_file_atomic}` and
//! `Limits::default()`; the skeleton these tests were written against has
//! only `encode`/`decode` and a unit `Limits`. Everything here goes through
//! `encode`/`decode`, which exist in both, so the tests compile before and
//! after the codec lands. TODO(after the codec merge): use `read_file` /
//! `write_file_atomic` / `Limits::default()` directly and drop the probe.

use std::io::Write;
use std::path::Path;

use tlsign_seccomp::transcript::{decode, encode, Limits, Transcript};

/// Decode the transcript at `path` with the default limits; panic on error.
#[track_caller]
pub fn read_transcript(path: &Path) -> Transcript {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    decode(&bytes, &default_limits()).unwrap_or_else(|e| panic!("decode {}: {e}", path.display()))
}

/// Encode `t` and replace `path` with it atomically (temp file + rename in
/// the same directory).
#[track_caller]
pub fn write_transcript(path: &Path, t: &Transcript) {
    let dir = path.parent().expect("transcript path has a parent");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).unwrap();
    tmp.write_all(&encode(t)).unwrap();
    tmp.persist(path).unwrap();
}

/// `Limits::default()` when `Limits: Default` (the spec), a clear panic when
/// not (the pre-codec skeleton, whose `decode` fails anyway). Picked at
/// compile time by method resolution: the `&self` method on `Probe<T>`
/// (needs `T: Default`) is found before the one on `&Probe<T>`.
fn default_limits() -> Limits {
    use std::marker::PhantomData;

    struct Probe<T>(PhantomData<T>);
    trait ViaDefault<T> {
        fn make(&self) -> T;
    }
    impl<T: Default> ViaDefault<T> for Probe<T> {
        fn make(&self) -> T {
            T::default()
        }
    }
    trait NoDefault<T> {
        fn make(&self) -> T;
    }
    impl<T> NoDefault<T> for &Probe<T> {
        fn make(&self) -> T {
            panic!("transcript::Limits has no Default yet: the codec has not landed on this branch")
        }
    }
    #[allow(clippy::needless_borrow)]
    (&Probe::<Limits>(PhantomData)).make()
}
