//! Without privileges: sign, verify and run as `nobody` (uid/gid 65534, no
//! groups, no capabilities). The supervisor needs only no_new_privs.
//!
//! Runs when the tests run as root (to drop from); otherwise every other
//! test already runs unprivileged and this file skips.

mod common;

use common::*;

#[test]
fn sign_and_verify_as_nobody() {
    if let Err(why) = can_drop_privileges() {
        return skip("sign_and_verify_as_nobody", &why);
    }
    let dir = tempdir();
    open_up(dir.path());
    let pki = Pki::new(dir.path());
    open_up(&pki.dir);
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);

    let file = dir.path().join("nobody.tlsign");
    let r = sign(&nginx, &pki, "/", &file).wrapped(NOBODY).run();
    r.assert_code(0);
    r.assert_one_line();
    let want = nginx.site().index.clone();
    nginx.stop();

    let r = verify(&file, &pki)
        .args(["--body", "-"])
        .wrapped(NOBODY)
        .run();
    r.assert_code(0);
    assert_bytes_eq("verified body", &r.stdout, &want);
    // And root verifies what nobody signed.
    assert_bytes_eq("verified body (as root)", &verify_ok(&file, &pki), &want);
}

#[test]
fn run_as_nobody_is_deterministic() {
    if let Err(why) = can_drop_privileges() {
        return skip("run_as_nobody_is_deterministic", &why);
    }
    let dir = tempdir();
    open_up(dir.path());
    let prog = cc_build(dir.path(), "world_probe", WORLD_PROBE_C);
    let go = || {
        let r = Cmd::tlsign()
            .args(["run", "--seed", SEED_A, "--time", TIME_2024, "--"])
            .arg(&prog)
            .wrapped(NOBODY)
            .run();
        r.assert_code(0);
        r.stdout
    };
    let (a, b) = (go(), go());
    assert_bytes_eq("the second run's output", &b, &a);
    let p = parse_probe(&a);
    for key in ["realtime", "gettimeofday", "time", "child-realtime"] {
        let got = probe_secs(&p[key]);
        assert!(
            (got - TIME_2024_SECS).abs() <= 5,
            "{key} = {}: the clock was not faked for nobody",
            p[key]
        );
    }
}
