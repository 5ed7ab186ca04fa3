//! The content every test server serves, kept in memory for assertions.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Files under `root` (see fixtures/nginx.conf.template for the routes):
/// `/` and `/index.html`, `/gz.html` (gzip on the fly), `/forced-gz.html`
/// (stored gzip, always sent with `Content-Encoding: gzip`), `/big.bin`.
pub struct Site {
    pub root: PathBuf,
    /// `/` and `/index.html`.
    pub index: Vec<u8>,
    /// `/gz.html` as nginx stores it (it compresses it on the way out).
    pub gz_page: Vec<u8>,
    /// What `/forced-gz.html` decodes to (the file on disk is gzip).
    pub forced_gz_page: Vec<u8>,
    /// `/big.bin`: 3 MiB of deterministic pseudo-random bytes.
    pub big: Vec<u8>,
}

pub const BIG_LEN: usize = 3 * 1024 * 1024;

impl Site {
    pub fn create(dir: &Path) -> Site {
        let root = dir.join("www");
        std::fs::create_dir_all(&root).unwrap();

        let index = b"<!doctype html>\n<html><head><title>tlsign test</title></head>\n\
            <body><h1>tlsign test page</h1><p>Small and plain.</p></body></html>\n"
            .to_vec();
        let gz_page = html_lines("compressible", 200);
        let forced_gz_page = html_lines("always-gzipped", 150);
        let big = pseudo_random(BIG_LEN, 0x7153_1a9e_2c4d_0b61);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&forced_gz_page).unwrap();
        let forced_gz_file = gz.finish().unwrap();

        for (name, bytes) in [
            ("index.html", &index),
            ("gz.html", &gz_page),
            ("forced-gz.html", &forced_gz_file),
            ("big.bin", &big),
        ] {
            std::fs::write(root.join(name), bytes).unwrap();
        }
        Site {
            root,
            index,
            gz_page,
            forced_gz_page,
            big,
        }
    }
}

/// An HTML page of `n` similar lines (compresses well, > 1 KiB).
fn html_lines(title: &str, n: usize) -> Vec<u8> {
    let mut s = format!("<!doctype html>\n<html><head><title>{title}</title></head><body>\n");
    for i in 0..n {
        s.push_str(&format!(
            "<p>Line {i} of a page that compresses well: the same words again and again.</p>\n"
        ));
    }
    s.push_str("</body></html>\n");
    s.into_bytes()
}

/// xorshift64*: fixed bytes for a fixed seed, no dependency.
fn pseudo_random(len: usize, mut x: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}
