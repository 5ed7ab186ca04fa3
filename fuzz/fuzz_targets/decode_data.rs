//! The input as the postcard data inside a well-formed file, so mutations
//! reach the shape check and serde instead of stopping at the zstd checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsign_seccomp::transcript::{decode, encode, Limits, FORMAT_MAJOR, FORMAT_MINOR, MAGIC};

fuzz_target!(|data: &[u8]| {
    let mut file = MAGIC.to_vec();
    file.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
    file.extend_from_slice(&FORMAT_MINOR.to_le_bytes());
    file.extend_from_slice(&zstd::bulk::compress(data, 1).unwrap());
    let limits = Limits::default();
    if let Ok(t) = decode(&file, &limits) {
        assert_eq!(decode(&encode(&t), &limits).unwrap(), t);
    }
});
