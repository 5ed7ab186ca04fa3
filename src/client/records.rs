//! A check on the one part of the server's bytes that TLS itself leaves
//! unauthenticated: the record-layer version of plaintext records.
//!
//! Everything else a server sends is covered: handshake messages by the
//! Finished MACs, encrypted records (and their headers, as additional data)
//! by the AEAD. But the version field in the header of a plaintext record
//! (the ServerHello, a TLS 1.2 Certificate or ServerKeyExchange, TLS 1.3's
//! ChangeCipherSpec) is ignored by design: "legacy_record_version ... MUST
//! be ignored for all purposes" (RFC 8446 §5.1). A transcript's server bytes
//! could then be edited there without the replayed client noticing. So the
//! client requires every server record to carry the same version, one of
//! 0x0301..=0x0303, so no single byte can change unseen. nginx and
//! OpenSSL's s_server keep one version (tested); a server that varies it,
//! say 0x0301 in its first record and 0x0303 after, cannot be signed, and
//! the error says so. Loosening the rule would reopen exactly that byte.

use std::io::{self, Read, Write};

/// A socket whose incoming bytes are checked record by record.
pub struct RecordChecked<S> {
    inner: S,
    /// Bytes of the current record header seen so far.
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current record still to pass.
    body_left: usize,
    version: Option<u16>,
    records: u64,
}

impl<S> RecordChecked<S> {
    pub fn new(inner: S) -> Self {
        RecordChecked {
            inner,
            header: [0; 5],
            have: 0,
            body_left: 0,
            version: None,
            records: 0,
        }
    }

    fn check(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(rest.len());
                self.body_left -= n;
                rest = &rest[n..];
                continue;
            }
            let n = (5 - self.have).min(rest.len());
            self.header[self.have..self.have + n].copy_from_slice(&rest[..n]);
            self.have += n;
            rest = &rest[n..];
            if self.have < 5 {
                break;
            }
            self.have = 0;
            let version = u16::from_be_bytes([self.header[1], self.header[2]]);
            let record = self.records;
            self.records += 1;
            let bad = |why: String| Err(io::Error::new(io::ErrorKind::InvalidData, why));
            match self.version {
                None if !(0x0301..=0x0303).contains(&version) => {
                    return bad(format!(
                        "server record {record} has record version {version:#06x}"
                    ));
                }
                None => self.version = Some(version),
                Some(v) if v != version => {
                    return bad(format!(
                        "server record {record} has record version {version:#06x}, earlier records {v:#06x}"
                    ));
                }
                Some(_) => {}
            }
            self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
        }
        Ok(())
    }
}

impl<S: Read> Read for RecordChecked<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.check(&buf[..n])?;
        Ok(n)
    }
}

impl<S: Write> Write for RecordChecked<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&[u8]]) -> io::Result<()> {
        let mut r = RecordChecked::new(io::empty());
        for c in chunks {
            r.check(c)?;
        }
        Ok(())
    }

    const HELLO: &[u8] = &[22, 3, 3, 0, 2, 0xaa, 0xbb];
    const CCS: &[u8] = &[20, 3, 3, 0, 1, 1];

    #[test]
    fn consistent_records_pass_whatever_the_read_boundaries() {
        let all = [HELLO, CCS, HELLO].concat();
        assert!(feed(&[&all]).is_ok());
        for cut in 0..all.len() {
            assert!(feed(&[&all[..cut], &all[cut..]]).is_ok(), "cut at {cut}");
        }
        assert!(feed(&all.chunks(1).collect::<Vec<_>>()).is_ok());
    }

    #[test]
    fn one_changed_version_byte_is_caught_anywhere() {
        let all = [HELLO, CCS, HELLO].concat();
        for at in [1, 2, 8, 9, 14, 15] {
            let mut bad = all.clone();
            bad[at] ^= 1;
            assert!(feed(&[&bad]).is_err(), "flip at {at}");
        }
        assert!(feed(&[&[22, 3, 4, 0, 0]]).is_err(), "no such version");
        assert!(feed(&[&[22, 2, 0, 0, 0]]).is_err(), "SSL 2");
    }
}
