//! Name resolution as the world answers it.
//!
//! glibc's getaddrinfo reads /etc/nsswitch.conf, /etc/hosts and
//! /etc/resolv.conf, then asks the nameserver. The world serves all three
//! files itself (the host's copies differ between machines and could make
//! static glibc load NSS modules), names a nameserver at a reserved address
//! and forces DNS over TCP (`options use-vc`), so the query arrives through
//! the same connect redirection as every other connection. It answers every
//! A query with a synthetic address from 198.18.0.0/15 (RFC 2544: never
//! routed) in order of first query; a later connect to that address is
//! mapped back to the name. The client therefore sees the same answers on
//! sign and verify, and nothing is looked up on verify.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The nameserver /etc/resolv.conf names.
pub const NAMESERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 53);

/// Why glibc must use TCP: over UDP it compares the reply's source address
/// with the nameserver's, and a redirected socket's peer is the supervisor.
/// `ndots:0` makes every name be tried as given before any search domain,
/// so the host's own domain name never enters a query.
pub const RESOLV_CONF: &str = "\
# served by tlsign-seccomp: lookups are answered by the supervisor
nameserver 198.18.0.53
search tlsign.invalid
options use-vc ndots:0 attempts:1 timeout:30
";

pub const NSSWITCH_CONF: &str = "\
# served by tlsign-seccomp
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
";

pub const HOSTS: &str = "\
# served by tlsign-seccomp
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
";

/// The synthetic addresses handed out so far.
#[derive(Default)]
pub struct Names {
    by_name: HashMap<String, Ipv4Addr>,
    by_addr: HashMap<Ipv4Addr, String>,
}

impl Names {
    /// The address of `name`, handing out the next free one on first use.
    pub fn address_of(&mut self, name: &str) -> Ipv4Addr {
        let name = normalize(name);
        if let Some(a) = self.by_name.get(&name) {
            return *a;
        }
        // 198.18.1.0 upwards; 198.18.0.0/24 is kept for the world's servers.
        let n = u32::try_from(self.by_name.len())
            .unwrap_or(u32::MAX)
            .saturating_add(256);
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (n & 0x1_ffff));
        self.by_name.insert(name.clone(), addr);
        self.by_addr.insert(addr, name);
        addr
    }

    /// The name behind a synthetic address, if it is one.
    pub fn name_of(&self, addr: IpAddr) -> Option<&str> {
        let v4 = match addr {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => a.to_ipv4_mapped()?,
        };
        self.by_addr.get(&v4).map(String::as_str)
    }

    /// Is this the nameserver of our resolv.conf?
    pub fn is_nameserver(addr: SocketAddr) -> bool {
        let ip = match addr.ip() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        ip == Some(NAMESERVER) && addr.port() == 53
    }

    /// Answers one DNS query message (RFC 1035 §4.1). Returns `None` for a
    /// message too broken to answer at all (shorter than a header).
    pub fn answer(&mut self, query: &[u8]) -> Option<Vec<u8>> {
        let header = query.get(..12)?;
        let id = &header[..2];
        let rd = header[2] & 0x01;
        let opcode = (header[2] >> 3) & 0x0f;
        let qdcount = u16::from_be_bytes([header[4], header[5]]);
        let reply = |rcode: u8, question: &[u8], answers: &[[u8; 4]]| {
            let mut m = Vec::with_capacity(12 + question.len() + 16 * answers.len());
            m.extend_from_slice(id);
            m.push(0x80 | (opcode << 3) | 0x04 | rd); // QR, AA, RD copied
            m.push(0x80 | rcode); // RA
            m.extend_from_slice(&u16::from(!question.is_empty()).to_be_bytes());
            m.extend_from_slice(&u16::try_from(answers.len()).unwrap_or(0).to_be_bytes());
            m.extend_from_slice(&[0, 0, 0, 0]);
            m.extend_from_slice(question);
            for a in answers {
                // A name pointer to the question at offset 12, TYPE A, CLASS IN, TTL 60.
                m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                m.extend_from_slice(a);
            }
            m
        };
        if opcode != 0 || qdcount != 1 {
            return Some(reply(4, &[], &[])); // NOTIMP
        }
        let Some((name, qtype, qend)) = parse_question(query) else {
            return Some(reply(1, &[], &[])); // FORMERR
        };
        let question = &query[12..qend];
        const TYPE_A: u16 = 1;
        Some(if qtype == TYPE_A {
            let a = self.address_of(&name);
            reply(0, question, &[a.octets()])
        } else {
            // AAAA and everything else: the name exists but has no such
            // record, so the client uses IPv4, the same way every time.
            reply(0, question, &[])
        })
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Parses the one question: (name, qtype, offset just past it). Compression
/// pointers are not allowed in a question a stub resolver sends.
fn parse_question(m: &[u8]) -> Option<(String, u16, usize)> {
    let mut pos = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = usize::from(*m.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = m.get(pos..pos + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += len;
        if pos > 12 + 255 {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*m.get(pos)?, *m.get(pos + 1)?]);
    m.get(pos + 2..pos + 4)?; // QCLASS
    Some((labels.join("."), qtype, pos + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn a_query_gets_a_stable_synthetic_address() {
        let mut n = Names::default();
        let r = n.answer(&query("Example.test", 1)).unwrap();
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        let addr = Ipv4Addr::new(
            r[r.len() - 4],
            r[r.len() - 3],
            r[r.len() - 2],
            r[r.len() - 1],
        );
        assert_eq!(addr, Ipv4Addr::new(198, 18, 1, 0));
        assert_eq!(n.name_of(IpAddr::V4(addr)), Some("example.test"));
        assert_eq!(n.address_of("example.test."), addr);
        assert_eq!(n.address_of("other.test"), Ipv4Addr::new(198, 18, 1, 1));
    }

    #[test]
    fn aaaa_gets_no_data_and_garbage_gets_errors() {
        let mut n = Names::default();
        let r = n.answer(&query("example.test", 28)).unwrap();
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
        assert!(n.answer(&[1, 2, 3]).is_none());
        let mut bad = query("example.test", 1);
        bad.truncate(20);
        assert_eq!(n.answer(&bad).unwrap()[3] & 0x0f, 1);
        // A label length pointing past the end must not panic.
        let mut bad = query("example.test", 1);
        bad[12] = 63;
        assert_eq!(n.answer(&bad).unwrap()[3] & 0x0f, 1);
    }

    #[test]
    fn nameserver_is_recognised_in_both_families() {
        assert!(Names::is_nameserver("198.18.0.53:53".parse().unwrap()));
        assert!(Names::is_nameserver(
            "[::ffff:198.18.0.53]:53".parse().unwrap()
        ));
        assert!(!Names::is_nameserver("198.18.0.53:54".parse().unwrap()));
    }
}
