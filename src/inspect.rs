//! `inspect`: what a transcript claims, without checking any of it.

use std::fmt::Write;

use sha2::{Digest, Sha256};

use crate::transcript::Transcript;

/// A plain-text account of `t`, for people. Nothing in it is verified.
pub fn describe(t: &Transcript) -> String {
    let mut s = String::new();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    // Writing to a String cannot fail.
    let _ = writeln!(
        s,
        "UNVERIFIED: this is what the transcript claims; `verify` checks it."
    );
    let _ = writeln!(s, "url:         {}", t.url);
    let _ = writeln!(s, "clock start: {}", t.clock_start.to_rfc3339());
    let _ = writeln!(s, "client:      {} {}", t.client.name, t.client.version);
    let _ = writeln!(s, "signed with: {}", t.backend);
    let _ = writeln!(s, "seed:        {}", hex(&t.seed));
    for (i, c) in t.connections.iter().enumerate() {
        let client: usize = c.client_chunks().map(<[u8]>::len).sum();
        let server: usize = c.server_chunks().map(<[u8]>::len).sum();
        let reads = c.server_chunks().count();
        let _ = writeln!(
            s,
            "connection {i}: {}:{} (signer connected to {}): {client} bytes from the client, {server} from the server in {reads} reads",
            c.host,
            c.port,
            if c.signed_addr.is_empty() { "-" } else { &c.signed_addr }
        );
    }
    let r = &t.response;
    for u in &r.redirects {
        let _ = writeln!(s, "redirected:  {u}");
    }
    let _ = writeln!(s, "final url:   {}", r.final_url);
    let _ = writeln!(s, "status:      {}", r.status);
    for (name, value) in &r.headers {
        let _ = writeln!(
            s,
            "header:      {name}: {}",
            String::from_utf8_lossy(value).escape_debug()
        );
    }
    let _ = writeln!(
        s,
        "body:        {} bytes, SHA-256 {}",
        r.body.len(),
        hex(&Sha256::digest(&r.body))
    );
    s
}
