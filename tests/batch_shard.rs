//! The sharding example of docs/batch.md, run word for word: GNU parallel
//! signs one list as 4 shards into one directory, and the union is each URL
//! exactly once, in the shard the documented hash names.
//!
//! The docs' commands carry no test-only options. A `tlsign-seccomp` first
//! in PATH adds them (the test CA, and --resolve for the test host name)
//! before running the real binary.

#![allow(dead_code)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};

/// The lines of the block docs/batch.md marks for this test.
fn documented_commands() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/batch.md"))
        .expect("read docs/batch.md");
    let after = doc
        .split_once("<!-- the test extracts the block below")
        .expect("docs/batch.md has the marked block")
        .1;
    let block = after
        .split_once("```sh\n")
        .expect("a sh block follows the marker")
        .1
        .split_once("```")
        .expect("the block ends")
        .0;
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The shard the docs say a URL falls in: the first 8 bytes of its SHA-256,
/// big-endian, modulo N. Computed here, not by the library.
fn documented_shard(url: &str, n: u64) -> u64 {
    let d = Sha256::digest(url.as_bytes());
    u64::from_be_bytes(d[..8].try_into().unwrap()) % n
}

fn run_line(dir: &Path, path: &str, line: &str) -> std::process::Output {
    Command::new("bash")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run bash")
}

#[test]
fn the_documented_gnu_parallel_example_splits_a_list_into_disjoint_shards() {
    if Command::new("parallel").arg("--version").output().is_err() {
        // scripts/setup.sh installs it; without it the example cannot run.
        panic!("GNU parallel is not installed (bash scripts/setup.sh installs it)");
    }
    let dir = tempdir();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki, Cert::Valid);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();

    let urls: Vec<String> = (0..48).map(|i| nginx.url(&format!("/?page={i}"))).collect();
    std::fs::write(work.join("urls.txt"), urls.join("\n") + "\n").unwrap();

    // The wrapper the docs' commands find first in PATH.
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let wrapper = bin_dir.join("tlsign-seccomp");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nsub=$1; shift\ncase $sub in\n  sign) exec '{bin}' sign \"$@\" --ca-file '{ca}' --resolve '{resolve}' ;;\n  *) exec '{bin}' \"$sub\" \"$@\" --ca-file '{ca}' ;;\nesac\n",
            bin = bin().display(),
            ca = pki.ca.display(),
            resolve = nginx.resolve(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );

    let lines = documented_commands();
    assert_eq!(lines.len(), 3, "the documented block changed: {lines:#?}");
    let (sign_line, count_line, verify_line) = (&lines[0], &lines[1], &lines[2]);
    assert!(sign_line.starts_with("parallel ") && sign_line.contains("--shard {}/4"));

    let out = run_line(&work, &path, sign_line);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{sign_line}\n{stderr}");
    // --tag: each shard's summary comes prefixed with its index.
    for k in 0..4 {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("{k}\t")) && l.contains("signed")),
            "no summary tagged {k}:\n{stderr}"
        );
    }

    // Each shard's manifest holds exactly the URLs of its shard.
    let mut owner: BTreeMap<String, u64> = BTreeMap::new();
    for k in 0..4u64 {
        let m = std::fs::read_to_string(work.join(format!("signed/manifest-{k}-of-4.jsonl")))
            .unwrap_or_else(|e| panic!("shard {k}'s manifest: {e}"));
        for line in m.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["status"], "ok", "{line}");
            let url = v["url"].as_str().unwrap().to_string();
            assert_eq!(documented_shard(&url, 4), k, "{url} in shard {k}");
            assert!(work
                .join("signed")
                .join(v["file"].as_str().unwrap())
                .is_file());
            assert!(owner.insert(url.clone(), k).is_none(), "{url} signed twice");
        }
    }
    assert_eq!(owner.len(), urls.len(), "every URL in exactly one shard");
    // A hash, not one machine doing all the work.
    let used: std::collections::BTreeSet<_> = owner.values().collect();
    assert!(used.len() >= 3, "48 URLs over 4 shards landed in {used:?}");

    let out = run_line(&work, &path, count_line);
    assert!(out.status.success(), "{count_line}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "48");

    let out = run_line(&work, &path, verify_line);
    assert!(
        out.status.success(),
        "{verify_line}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = std::fs::read_to_string(work.join("report.jsonl")).unwrap();
    assert_eq!(report.lines().count(), 48);
    for line in report.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["status"], "verified", "{line}");
    }

    // Rerunning the example resumes: nothing left to sign in any shard.
    let out = run_line(&work, &path, sign_line);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let skipped: u64 = stderr
        .lines()
        .filter_map(|l| {
            l.split(", ")
                .find(|p| p.ends_with("skipped (already signed)"))
        })
        .map(|p| p.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(skipped, 48, "{stderr}");
}
