//! Where each URL's transcript goes, and which shard signs it. Both come
//! from the SHA-256 of the normalized URL, so they are the same on every
//! machine and every run: a rerun finds what an earlier one signed, and N
//! machines given the same list split it without talking to each other.

use sha2::{Digest, Sha256};

/// The file name for `url` (already normalized): a readable slug of host
/// and path, then 16 hex digits of the URL's SHA-256, then `.tlsign`. Only
/// `[a-z0-9._-]`, at most 90 bytes, never starting with a dot.
///
/// `https://Example.org/a b?x=1` gives `example.org_a_20b_x_1-<hash>.tlsign`.
pub fn file_name(url: &url::Url) -> String {
    let mut slug = String::new();
    let host = url.host_str().unwrap_or("");
    let rest = &url[url::Position::BeforePath..url::Position::AfterQuery];
    for c in host.chars().chain(rest.chars()) {
        let c = c.to_ascii_lowercase();
        let keep = c.is_ascii_alphanumeric() || c == '.' || c == '-';
        let c = if keep { c } else { '_' };
        // One underscore for any run of separators.
        if c == '_' && slug.ends_with('_') {
            continue;
        }
        slug.push(c);
        if slug.len() >= 64 {
            break;
        }
    }
    let slug = slug.trim_matches(|c| c == '_' || c == '.' || c == '-');
    format!("{slug}-{}.tlsign", &hex(&digest(url.as_str()))[..16])
}

/// A shard of a list: `index` of `count`, 0-based (`--shard K/N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// K: which shard, from 0.
    pub index: u64,
    /// N: how many shards.
    pub count: u64,
}

impl Shard {
    /// Parses `K/N` with 0 <= K < N.
    pub fn parse(s: &str) -> Result<Shard, crate::Error> {
        let bad =
            |why: &str| crate::Error::Usage(format!("--shard must be K/N {why}, but {s:?} is not"));
        let (k, n) = s.split_once('/').ok_or_else(|| bad("(as in 0/4)"))?;
        let index: u64 = k.trim().parse().map_err(|_| bad("with whole numbers"))?;
        let count: u64 = n.trim().parse().map_err(|_| bad("with whole numbers"))?;
        if count == 0 || index >= count {
            return Err(bad("with 0 <= K < N (shards count from 0)"));
        }
        Ok(Shard { index, count })
    }

    /// Whether `key` (a normalized URL, or the raw line if it is none)
    /// belongs to this shard: the first 8 bytes of its SHA-256, big-endian,
    /// modulo N.
    pub fn owns(&self, key: &str) -> bool {
        shard_of(key, self.count) == self.index
    }
}

/// The shard `key` falls in, of `count`.
pub fn shard_of(key: &str, count: u64) -> u64 {
    let d = digest(key);
    let first = u64::from_be_bytes(d[..8].try_into().expect("a SHA-256 has 32 bytes"));
    first % count
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Lowercase hex.
pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(u: &str) -> String {
        file_name(&url::Url::parse(u).unwrap())
    }

    #[test]
    fn names_are_safe_stable_and_distinct() {
        let a = name("https://Example.org/a b?x=1");
        assert!(a.starts_with("example.org_a_20b_x_1-"), "{a}");
        assert!(a.ends_with(".tlsign"));
        // Stable: the same URL in another spelling normalizes alike.
        assert_eq!(a, name("https://example.org:443/a%20b?x=1"));
        assert_ne!(a, name("https://example.org/a b?x=2"));
        // Pinned: a rerun with a later version must find earlier files.
        // Independently: printf %s https://a.test/ | sha256sum
        assert_eq!(name("https://a.test/"), "a.test-72745e75dfc5db5e.tlsign");
        let long = name(&format!("https://a.test/{}", "../".repeat(500)));
        assert!(long.len() <= 90, "{long}");
        for n in [a, long, name("https://[::1]:8443/..%2f..")] {
            assert!(!n.starts_with('.'), "{n}");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
                "{n}"
            );
        }
    }

    #[test]
    fn shards_partition_the_list() {
        let urls: Vec<String> = (0..1000)
            .map(|i| format!("https://h{}.test/{i}", i % 7))
            .collect();
        let n = 4;
        let mut sizes = [0u32; 4];
        for u in &urls {
            let owners: Vec<u64> = (0..n)
                .filter(|&k| Shard { index: k, count: n }.owns(u))
                .collect();
            assert_eq!(owners.len(), 1, "{u}");
            sizes[owners[0] as usize] += 1;
        }
        // A hash, not a round robin, but an even one.
        assert!(sizes.iter().all(|&s| (200..300).contains(&s)), "{sizes:?}");
        // Pinned, like the names.
        // 0x72745e75dfc5db5e % 1000, by Python.
        assert_eq!(shard_of("https://a.test/", 1000), 294);
    }

    #[test]
    fn shard_syntax() {
        assert_eq!(Shard::parse("2/5").unwrap(), Shard { index: 2, count: 5 });
        for bad in ["5/5", "1/0", "x/2", "3", "-1/2", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }
}
