//! What the supervisor reads about its targets from /proc.

use std::fs;
use std::io::{self, Read};

/// Reads a small /proc file whole. `fs::read` would first ask for the size
/// (always 0 here): one syscall per read saved on a per-client path.
fn read_small(path: &str) -> io::Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    let mut buf = Vec::with_capacity(1024);
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

fn read_small_string(path: &str) -> io::Result<String> {
    String::from_utf8(read_small(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The thread-group (process) id of thread `tid`.
pub fn tgid_of(tid: i32) -> io::Result<i32> {
    let status = read_small_string(&format!("/proc/{tid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no Tgid in /proc/{tid}/status"),
            )
        })
}

/// [`tgid_of`] through `cache`: a thread's process never changes while the
/// thread lives, and a supervisor asks for the same few threads again and
/// again.
pub fn tgid_cached(cache: &mut std::collections::HashMap<i32, i32>, tid: i32) -> io::Result<i32> {
    if let Some(t) = cache.get(&tid) {
        return Ok(*t);
    }
    let t = tgid_of(tid)?;
    cache.insert(tid, t);
    Ok(t)
}

/// The file status flags (O_NONBLOCK, ...) and close-on-exec flag of fd
/// `fd` in process `pid`, from /proc/PID/fdinfo/FD.
pub fn fd_flags(pid: i32, fd: i32) -> io::Result<i32> {
    let info = read_small_string(&format!("/proc/{pid}/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no flags in /proc/{pid}/fdinfo/{fd}"),
            )
        })
}

/// Where the vDSO of thread `tid`'s process starts (AT_SYSINFO_EHDR in its
/// auxiliary vector); `None` if it has none. Much cheaper than
/// [`vdso_range`], which makes the kernel format every mapping.
pub fn vdso_base(tid: i32) -> io::Result<Option<u64>> {
    const AT_SYSINFO_EHDR: u64 = 33;
    let auxv = read_small(&format!("/proc/{tid}/auxv"))?;
    Ok(auxv
        .chunks_exact(16)
        .map(|e| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
            (word(&e[..8]), word(&e[8..]))
        })
        .find(|&(key, _)| key == AT_SYSINFO_EHDR)
        .map(|(_, value)| value)
        .filter(|&v| v != 0))
}

/// The address range of the `[vdso]` mapping of `pid` ("self" for our own).
pub fn vdso_range(pid: &str) -> io::Result<Option<(u64, u64)>> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    for line in maps.lines() {
        if line.trim_end().ends_with("[vdso]") {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                    return Ok(Some((a, b)));
                }
            }
        }
    }
    Ok(None)
}
