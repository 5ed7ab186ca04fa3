//! Finding processes a test started, to prove none outlived its supervisor.

use std::time::{Duration, Instant};

/// Processes (other than this test) whose argv satisfies `wanted`, with
/// their command line joined by spaces.
pub fn processes_where(wanted: impl Fn(&[String]) -> bool) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if pid != me && wanted(&args) {
            found.push((pid, args.join(" ")));
        }
    }
    found
}

/// What `find` still lists after the kernel had a second to tear killed
/// processes down; those are then killed, so a failing test leaves nothing
/// behind. Empty means no orphan.
pub fn left_running(find: impl Fn() -> Vec<(i32, String)>) -> Vec<(i32, String)> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut left = find();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = find();
    }
    for (pid, _) in &left {
        // SAFETY: kill has no memory-safety preconditions; `find` lists only
        // processes the calling test started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    left
}
