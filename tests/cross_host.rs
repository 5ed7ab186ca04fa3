//! Across C libraries: a transcript signed on this host verifies inside a
//! Debian 13 (trixie) root whose glibc differs, and one signed there
//! verifies here. The binary is dynamically linked, so inside the root it
//! runs on the root's glibc and libseccomp.
//!
//! The root comes from scripts/cross-root.sh (scripts/test.sh runs it and
//! exports TLSIGN_CROSS_ROOT). The tests skip, with a `SKIP:` line on
//! stderr, when TLSIGN_CROSS_ROOT is unset, the root is missing, or they do
//! not run as root; anything else that goes wrong fails them.
//!
//! The shared root is never changed outside one directory per test
//! (`<root>/tlsign-test-XXXX/`, removed at the end) holding the binary, the
//! CA certificate and the transcripts. Commands run there through
//! `unshare --mount --propagation private --fork`, so the /proc mounted for
//! the chroot exists only in that private mount namespace; each test checks
//! that no new mount under the root shows on the host afterwards. The chroot
//! shares the host's network namespace: a client in it reaches the host's
//! nginx on 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// `sh -c` script: mount a fresh /proc on `$ROOT/proc` (in the private
/// mount namespace unshare made) and run `"$@"` chrooted into `$ROOT`.
const IN_ROOT: &str = r#"mount -t proc proc "$ROOT/proc" && exec chroot "$ROOT" "$@""#;

/// `verify --timeout`, and the hard limit on any one command.
const VERIFY_TIMEOUT: &str = "20";
const CMD_TIMEOUT: Duration = Duration::from_secs(40);

/// One test's view of the root.
struct Cross {
    /// The root, canonical.
    root: PathBuf,
    /// This test's directory in the root; removed on drop.
    work: tempfile::TempDir,
    /// The host's mounts under the root before the test (see [`mounts_under`]).
    mounts_before: Vec<String>,
}

impl Cross {
    /// The cross root for `test`, with the binary copied in; `None` (after
    /// a SKIP line) when the test cannot run here.
    fn new(test: &str) -> Option<Cross> {
        let skip = |reason: String| {
            say(&format!("SKIP: cross_host::{test}: {reason}"));
            None
        };
        let Some(root) = std::env::var_os("TLSIGN_CROSS_ROOT") else {
            return skip(
                "TLSIGN_CROSS_ROOT is unset (scripts/test.sh sets it; \
                 scripts/cross-root.sh makes the Debian 13 root)"
                    .into(),
            );
        };
        let root = PathBuf::from(root);
        if !root.is_dir() {
            return skip(format!(
                "TLSIGN_CROSS_ROOT={} does not exist (scripts/cross-root.sh makes it)",
                root.display()
            ));
        }
        if !is_root() {
            return skip("not root: chroot and mount need it".into());
        }
        let root = root.canonicalize().expect("canonicalize TLSIGN_CROSS_ROOT");
        let mounts_before = mounts_under(&root);

        let work = tempfile::Builder::new()
            .prefix("tlsign-test-")
            .tempdir_in(&root)
            .unwrap_or_else(|e| panic!("create a directory in {}: {e}", root.display()));
        std::fs::copy(bin(), work.path().join("tlsign-seccomp"))
            .expect("copy the binary into the root");
        let cross = Cross {
            root,
            work,
            mounts_before,
        };
        cross.assert_glibc_differs();
        Some(cross)
    }

    /// `argv` run chrooted into the root, in a private mount namespace.
    fn in_root<S: AsRef<std::ffi::OsStr>>(&self, argv: impl IntoIterator<Item = S>) -> Cmd {
        Cmd::new("unshare")
            .args(["--mount", "--propagation", "private", "--fork", "--"])
            .args(["sh", "-c", IN_ROOT, "sh"])
            .args(argv)
            .env("ROOT", &self.root)
            .timeout(CMD_TIMEOUT)
    }

    /// The binary copied into the root, run there.
    fn tlsign_in_root(&self) -> Cmd {
        self.in_root([self.inside("tlsign-seccomp")])
    }

    /// The path, as seen inside the root, of `name` in this test's directory.
    fn inside(&self, name: &str) -> String {
        let dir = self.work.path().file_name().unwrap().to_str().unwrap();
        format!("/{dir}/{name}")
    }

    /// The host path of `name` in this test's directory.
    fn host(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Copy `src` into this test's directory as `name`; its path inside.
    fn put(&self, src: &Path, name: &str) -> String {
        std::fs::copy(src, self.host(name))
            .unwrap_or_else(|e| panic!("copy {} into the root: {e}", src.display()));
        self.inside(name)
    }

    /// `verify FILE --ca-file CA --body -` inside the root (paths inside).
    fn verify_in_root(&self, file: &str, ca: &str) -> Output {
        self.tlsign_in_root()
            .args(["verify", file, "--ca-file", ca, "--body", "-"])
            .args(["--timeout", VERIFY_TIMEOUT])
            .run()
    }

    /// Print both glibc versions; fail when they are the same, since the
    /// test would then prove nothing.
    fn assert_glibc_differs(&self) {
        let script = "ldd --version | head -n 1";
        let host = Cmd::new("sh").args(["-c", script]).run();
        host.assert_code(0);
        let inside = self.in_root(["sh", "-c", script]).run();
        inside.assert_code(0);
        let (host, inside) = (host.stdout_str(), inside.stdout_str());
        let (host, inside) = (host.trim(), inside.trim());
        say(&format!(
            "cross_host: glibc on the host: {host}; in the root {}: {inside}",
            self.root.display()
        ));
        let version = |line: &str| line.split_whitespace().last().unwrap_or("").to_string();
        assert!(
            !version(host).is_empty() && version(host) != version(inside),
            "the host and the root {} have the same glibc ({host} / {inside}): \
             crossing them proves nothing; point TLSIGN_CROSS_ROOT at a root \
             with another glibc",
            self.root.display()
        );
    }

    /// Remove this test's directory and check no mount leaked onto the host.
    fn finish(self) {
        let Cross {
            root,
            work,
            mounts_before,
        } = self;
        let dir = work.path().to_path_buf();
        work.close()
            .unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
        let leaked: Vec<_> = mounts_under(&root)
            .into_iter()
            .filter(|m| !mounts_before.contains(m))
            .collect();
        assert!(
            leaked.is_empty(),
            "mounts under {} leaked onto the host: {leaked:?}",
            root.display()
        );
    }
}

/// One line straight to stderr: libtest captures `eprintln!` of passing
/// tests, and a skip or the glibc pair crossed must show in the log.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The mounts of this (the host's) mount namespace at or under `root`, as
/// "ID MOUNT-POINT" (the ID tells apart mounts stacked on one point).
fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.to_str().expect("the root's path is UTF-8");
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let (id, point) = (fields.first()?, fields.get(4)?);
            let under = *point == root || point.starts_with(&format!("{root}/"));
            under.then(|| format!("{id} {point}"))
        })
        .collect()
}

/// A verify that exited 0 and printed `want` as the body.
#[track_caller]
fn assert_verified(what: &str, r: &Output, want: &[u8]) {
    r.assert_code(0);
    assert_bytes_eq(what, &r.stdout, want);
}

/// Host signs, the root verifies: a page, a redirect and the gzip page,
/// with the server up and again after it stopped.
#[test]
fn host_signs_root_verifies() {
    let Some(cross) = Cross::new("host_signs_root_verifies") else {
        return;
    };
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let ca = cross.put(&pki.ca, "ca.pem");

    let mut cases = Vec::new();
    for (name, path, want) in [
        ("page", "/", &nginx.site().index),
        ("redirect", "/redirect", &nginx.site().index),
        ("gzip", "/gz.html", &nginx.site().gz_page),
    ] {
        let file = dir.path().join(format!("{name}.tlsign"));
        let t = sign_ok(&nginx, &pki, path, &file);
        assert_bytes_eq(&format!("{name}: recorded body"), &t.response.body, want);
        if name == "redirect" {
            assert_eq!(t.response.redirects, vec![nginx.url("/redirect")]);
        }
        if name == "gzip" {
            assert_eq!(
                header(&t.response, "content-encoding"),
                Some(&b"gzip"[..]),
                "/gz.html was not sent gzipped"
            );
        }
        let inside = cross.put(&file, &format!("{name}.tlsign"));
        let r = cross.verify_in_root(&inside, &ca);
        assert_verified(&format!("{name}: body verified in the root"), &r, want);
        cases.push((name, inside, want.clone()));
    }

    nginx.stop();
    for (name, inside, want) in &cases {
        let r = cross.verify_in_root(inside, &ca);
        assert_verified(
            &format!("{name}: body verified in the root, server stopped"),
            &r,
            want,
        );
    }
    cross.finish();
}

/// The root signs against the host's nginx, the host verifies.
#[test]
fn root_signs_host_verifies() {
    let Some(cross) = Cross::new("root_signs_host_verifies") else {
        return;
    };
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let ca = cross.put(&pki.ca, "ca.pem");

    for (name, path, want) in [
        ("page", "/", nginx.site().index.clone()),
        ("gzip", "/gz.html", nginx.site().gz_page.clone()),
    ] {
        let out = format!("{name}.tlsign");
        let r = cross
            .tlsign_in_root()
            .arg("sign")
            .arg(nginx.url(path))
            .args(["--resolve", &nginx.resolve(), "--ca-file", &ca])
            .args(["-o", &cross.inside(&out)])
            .run();
        r.assert_code(0);
        r.assert_one_line();
        let file = cross.host(&out);
        let t = read_transcript(&file);
        assert_bytes_eq(&format!("{name}: recorded body"), &t.response.body, &want);
        assert_bytes_eq(
            &format!("{name}: body verified on the host"),
            &verify_ok(&file, &pki),
            &want,
        );
    }
    cross.finish();
}

/// The check can fail in the root: one flipped server byte makes verify
/// there exit 1, while the same transcript written back untouched verifies.
#[test]
fn root_rejects_tampered_transcript() {
    let Some(cross) = Cross::new("root_rejects_tampered_transcript") else {
        return;
    };
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let ca = cross.put(&pki.ca, "ca.pem");
    let file = dir.path().join("signed.tlsign");
    let t = sign_ok(&nginx, &pki, "/", &file);
    let want = nginx.site().index.clone();
    nginx.stop();

    // Control: written back through the same writer, untouched, it verifies.
    write_transcript(&cross.host("control.tlsign"), &t);
    let r = cross.verify_in_root(&cross.inside("control.tlsign"), &ca);
    assert_verified("control: body verified in the root", &r, &want);

    let len = server_bytes(&t.connections[0]).len();
    let tampered = flip_stream(&t, Side::Server, len / 2);
    assert_ne!(tampered, t, "the tampering changed nothing");
    write_transcript(&cross.host("tampered.tlsign"), &tampered);
    let r = cross.verify_in_root(&cross.inside("tampered.tlsign"), &ca);
    assert_eq!(
        r.code,
        Some(1),
        "server byte {} of {len} flipped: want exit 1 from {}",
        len / 2,
        r.describe()
    );
    r.assert_one_error_line();
    assert!(
        r.stdout.is_empty(),
        "a failed verify printed a body: {}",
        r.describe()
    );
    cross.finish();
}
