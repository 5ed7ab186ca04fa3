//! A test PKI made with the `openssl` CLI (OpenSSL 3.0).
//!
//! `openssl ca` is used for every certificate because it is the one 3.0 tool
//! that takes explicit validity dates (`-startdate`/`-enddate`): that is
//! what gives an expired certificate and one valid only in a past window
//! without faking the clock. All keys are P-256 (quick to make, accepted by
//! rustls with ring, nginx and s_server).

use std::path::{Path, PathBuf};

use super::Cmd;

/// Which server certificate a server presents. All are issued by
/// [`Pki::ca`] for `DNS:tlsign.test, DNS:localhost, IP:127.0.0.1, IP:::1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cert {
    /// 2019-01-01 .. 2049-12-31: valid now and at any `--time` the tests use.
    Valid,
    /// 2015-01-01 .. 2016-01-01: validity entirely in the past.
    Expired,
    /// 2020-01-01 .. 2021-01-01: sign with `--time 2020-06-01T00:00:00Z`.
    PastWindow,
}

/// Validity windows as (not_before, not_after) Unix seconds.
pub const CA_WINDOW: (i64, i64) = (1_262_304_000, 2_524_607_999); // 2010-01-01 .. 2049-12-31T23:59:59
const VALID_DATES: (&str, &str) = ("20190101000000Z", "20491231235959Z");
const EXPIRED_DATES: (&str, &str) = ("20150101000000Z", "20160101000000Z");
const PAST_DATES: (&str, &str) = ("20200101000000Z", "20210101000000Z");

impl Cert {
    pub fn window(self) -> (i64, i64) {
        match self {
            Cert::Valid => (1_546_300_800, 2_524_607_999),
            Cert::Expired => (1_420_070_400, 1_451_606_400),
            Cert::PastWindow => (1_577_836_800, 1_609_459_200),
        }
    }

    /// Whether a client whose clock reads `secs` accepts this certificate
    /// (and its CA) as valid.
    pub fn valid_at(self, secs: i64) -> bool {
        let (a, b) = self.window();
        let (ca_a, ca_b) = CA_WINDOW;
        a <= secs && secs <= b && ca_a <= secs && secs <= ca_b
    }

    fn dates(self) -> (&'static str, &'static str) {
        match self {
            Cert::Valid => VALID_DATES,
            Cert::Expired => EXPIRED_DATES,
            Cert::PastWindow => PAST_DATES,
        }
    }

    fn file(self) -> &'static str {
        match self {
            Cert::Valid => "server.pem",
            Cert::Expired => "expired.pem",
            Cert::PastWindow => "past-window.pem",
        }
    }
}

pub struct Pki {
    pub dir: PathBuf,
    /// The test CA (trust anchor for `--ca-file`).
    pub ca: PathBuf,
    /// An unrelated CA that issued none of the server certificates.
    pub other_ca: PathBuf,
    /// The one server key all server certificates share.
    pub key: PathBuf,
}

const CA_CONFIG: &str = r#"
[ ca ]
default_ca = test_ca

[ test_ca ]
database = @DIR@/index.txt
new_certs_dir = @DIR@/newcerts
serial = @DIR@/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none

[ policy_any ]
commonName = supplied

[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ v3_leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:tlsign.test, DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"#;

fn openssl(args: &[&str]) {
    Cmd::new("openssl").args(args).run().assert_code(0);
}

fn p(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

impl Pki {
    /// Make the CA, the other CA, the server key and every [`Cert`] in
    /// `dir/pki`.
    pub fn new(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(dir.join("newcerts")).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        let config = dir.join("ca.cnf");
        std::fs::write(&config, CA_CONFIG.replace("@DIR@", p(&dir))).unwrap();

        let genkey = |name: &str| {
            let key = dir.join(name);
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                p(&key),
            ]);
            key
        };
        let csr = |key: &Path, cn: &str, name: &str| {
            let csr = dir.join(name);
            openssl(&[
                "req",
                "-new",
                "-key",
                p(key),
                "-subj",
                &format!("/CN={cn}"),
                "-out",
                p(&csr),
            ]);
            csr
        };

        // The CA: self-signed through `openssl ca -selfsign` so its validity
        // (2010..2049) covers every window below.
        let ca_key = genkey("ca.key");
        let ca_csr = csr(&ca_key, "tlsign test CA", "ca.csr");
        let ca = dir.join("ca.pem");
        // `openssl ca` signing `csr` into `out` as `extensions`, valid from
        // `start` to `end`; `issuer` is the first arguments that name the
        // signer (`-selfsign` or `-cert CA`).
        let sign =
            |issuer: &[&str], csr: &Path, out: &Path, extensions: &str, start: &str, end: &str| {
                let head = ["ca", "-batch", "-notext", "-config", p(&config)];
                let tail = [
                    "-keyfile",
                    p(&ca_key),
                    "-in",
                    p(csr),
                    "-out",
                    p(out),
                    "-extensions",
                    extensions,
                    "-startdate",
                    start,
                    "-enddate",
                    end,
                ];
                openssl(&[&head[..], issuer, &tail[..]].concat());
            };
        sign(
            &["-selfsign"],
            &ca_csr,
            &ca,
            "v3_ca",
            "20100101000000Z",
            "20491231235959Z",
        );

        let key = genkey("server.key");
        let server_csr = csr(&key, "tlsign.test", "server.csr");
        for cert in [Cert::Valid, Cert::Expired, Cert::PastWindow] {
            let (start, end) = cert.dates();
            sign(
                &["-cert", p(&ca)],
                &server_csr,
                &dir.join(cert.file()),
                "v3_leaf",
                start,
                end,
            );
        }

        // An unrelated CA: trusting it alone must not make the server
        // certificates acceptable.
        let other_key = genkey("other-ca.key");
        let other_ca = dir.join("other-ca.pem");
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            p(&other_key),
            "-subj",
            "/CN=unrelated test CA",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            p(&other_ca),
        ]);

        Pki {
            dir,
            ca,
            other_ca,
            key,
        }
    }

    /// The certificate file for `cert` (the key is always [`Pki::key`]).
    pub fn cert(&self, cert: Cert) -> PathBuf {
        self.dir.join(cert.file())
    }
}
