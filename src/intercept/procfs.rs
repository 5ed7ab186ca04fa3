//! What the supervisor reads about its targets from /proc.

use std::fs;
use std::io::{self, Read};

/// Reads a small /proc file whole. `fs::read` and `read_to_end` first ask
/// for the size and position (0 here): two syscalls saved per read on a
/// per-client path.
fn read_small(path: &str) -> io::Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 1024];
    let mut len = 0;
    loop {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
    }
    buf.truncate(len);
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

/// The value of entry `key` in the auxiliary vector of thread `tid`'s
/// process; `None` if it has none or it is 0.
pub fn auxv_value(tid: i32, key: u64) -> io::Result<Option<u64>> {
    Ok(auxv_values(tid, [key])?[0])
}

/// [`auxv_value`] for several keys, from one read.
pub fn auxv_values<const N: usize>(tid: i32, keys: [u64; N]) -> io::Result<[Option<u64>; N]> {
    let auxv = read_small(&format!("/proc/{tid}/auxv"))?;
    let entries: Vec<(u64, u64)> = auxv
        .chunks_exact(16)
        .map(|e| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
            (word(&e[..8]), word(&e[8..]))
        })
        .collect();
    Ok(keys.map(|key| {
        entries
            .iter()
            .find(|&&(k, _)| k == key)
            .map(|&(_, value)| value)
            .filter(|&v| v != 0)
    }))
}

/// Where the vDSO of thread `tid`'s process starts (AT_SYSINFO_EHDR in its
/// auxiliary vector); `None` if it has none. Much cheaper than
/// [`vdso_range`], which makes the kernel format every mapping.
pub fn vdso_base(tid: i32) -> io::Result<Option<u64>> {
    auxv_value(tid, libc::AT_SYSINFO_EHDR)
}

/// One line of /proc/PID/maps.
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub executable: bool,
    /// The mapped file's device (as /proc prints it) and inode; inode 0
    /// for anonymous memory.
    pub dev: String,
    pub inode: u64,
    /// The file's path or a name like `[vdso]`; empty for anonymous memory.
    pub name: String,
}

/// The mappings of `pid` ("self" for our own), in address order.
pub fn maps(pid: impl std::fmt::Display) -> io::Result<Vec<Mapping>> {
    let text = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(text.lines().filter_map(parse_mapping).collect())
}

fn parse_mapping(line: &str) -> Option<Mapping> {
    // start-end perms offset dev inode [name]
    let mut f = line.splitn(6, ' ');
    let (start, end) = f.next()?.split_once('-')?;
    let perms = f.next()?;
    let _offset = f.next()?;
    let dev = f.next()?.to_string();
    let inode = f.next()?.parse().ok()?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        executable: perms.as_bytes().get(2) == Some(&b'x'),
        dev,
        inode,
        name: f.next().unwrap_or("").trim().to_string(),
    })
}

/// The address range of the `[vdso]` mapping of `pid` ("self" for our own).
pub fn vdso_range(pid: &str) -> io::Result<Option<(u64, u64)>> {
    Ok(maps(pid)?
        .into_iter()
        .find(|m| m.name == "[vdso]")
        .map(|m| (m.start, m.end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let m = parse_mapping(
            "7ffff7fc3000-7ffff7fe9000 r-xp 00001000 fe:01 1311032                    /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        )
        .unwrap();
        assert_eq!((m.start, m.end), (0x7ffff7fc3000, 0x7ffff7fe9000));
        assert!(m.executable);
        assert_eq!((m.dev.as_str(), m.inode), ("fe:01", 1311032));
        assert_eq!(m.name, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
        let anon = parse_mapping("7ffff7d8e000-7ffff7d91000 rw-p 00000000 00:00 0 ").unwrap();
        assert!(!anon.executable);
        assert_eq!((anon.inode, anon.name.as_str()), (0, ""));
        assert!(parse_mapping("garbage").is_none());
    }

    #[test]
    fn our_own_vdso_and_loader_are_found() {
        let me = std::process::id();
        let base = vdso_base(me as i32).unwrap().expect("a vDSO");
        let (start, end) = vdso_range("self").unwrap().expect("a [vdso] line");
        assert!(start <= base && base < end);
        if let Some(interp) = auxv_value(me as i32, libc::AT_BASE).unwrap() {
            let m = maps("self").unwrap();
            assert!(m.iter().any(|m| m.start == interp && m.inode != 0));
        }
    }
}
