//! Any input: decode must not panic, and whatever decodes must survive
//! encode then decode unchanged. (Not decode-then-encode giving back the
//! input: zstd output and non-minimal varints need not match byte for byte.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsign_seccomp::transcript::{decode, encode, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(t) = decode(data, &limits) {
        assert_eq!(decode(&encode(&t), &limits).unwrap(), t);
    }
});
