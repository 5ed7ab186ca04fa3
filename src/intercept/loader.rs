//! The dynamic loader's own `openat` calls, learned once and then let
//! through by the filter.
//!
//! A dynamically linked client opens five files before its `main` runs
//! (`/etc/ld.so.cache` and one per shared library). BPF cannot read the
//! path, so each of them used to be a notification, answered "continue",
//! and a notification costs about as much CPU as a whole TLS key exchange
//! (docs/benchmarks.md). What BPF can read is the address of the `syscall`
//! instruction. With ASLR off, the loader of a given program is mapped at
//! the same address in every run, so the instruction that makes its opens
//! has the same address too: once the supervisor has seen an `openat` come
//! from inside the loader's mapping, later filters let that one
//! instruction's `openat` through without asking.
//!
//! Why that cannot change what a client sees: the loader opens its cache
//! and libraries, never a file the world serves (the name-service files
//! under /etc and the random devices), so the world's answer to every open
//! from that instruction is "continue", which is what the filter's "allow"
//! does. An address is learned only after the world answered "continue" to
//! it and /proc showed it inside the mapping of the program's interpreter
//! (`AT_BASE`). A program whose loader lands elsewhere, or a static one, is
//! simply asked about every open, as before; the first client of a process
//! always is, so a single sign or verify behaves exactly as before.
//!
//! Only the seccomp backend learns and uses this: the ptrace baselines keep
//! the filter they were measured with.

use std::sync::Mutex;

use super::procfs;

/// Learned addresses kept at most: one loader has one or two open sites.
const MAX_LEARNED: usize = 4;
/// Addresses found outside the loader, remembered so /proc is read once
/// per address, not once per client; more distinct ones than this stop
/// the learning.
const MAX_REJECTED: usize = 64;

#[derive(Default)]
struct Learned {
    /// Addresses of `openat` instructions inside the loader.
    loader: Vec<u64>,
    /// Addresses looked at and found elsewhere (libc's own `openat`).
    elsewhere: Vec<u64>,
}

static LEARNED: Mutex<Learned> = Mutex::new(Learned {
    loader: Vec::new(),
    elsewhere: Vec::new(),
});

fn learned() -> std::sync::MutexGuard<'static, Learned> {
    LEARNED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `openat` instruction addresses a new filter may let through.
pub fn exempt_openat() -> Vec<u64> {
    learned().loader.clone()
}

/// Called after the world answered "continue" to an `openat` that process
/// `tgid` made from instruction address `ip`: learns `ip` if it lies in
/// that process's dynamic loader. Failing /proc reads (the process has
/// gone) learn nothing.
pub fn saw_continued_openat(tgid: i32, ip: u64) {
    {
        let l = learned();
        if l.loader.contains(&ip)
            || l.elsewhere.contains(&ip)
            || l.loader.len() >= MAX_LEARNED
            || l.elsewhere.len() >= MAX_REJECTED
        {
            return;
        }
    }
    let Ok(inside) = in_interpreter(tgid, ip) else {
        return;
    };
    let mut l = learned();
    let list = if inside {
        &mut l.loader
    } else {
        &mut l.elsewhere
    };
    if !list.contains(&ip) {
        list.push(ip);
    }
}

/// Whether `ip` lies in an executable mapping of the same file as the one
/// `AT_BASE` (the interpreter's load address) points into.
fn in_interpreter(tgid: i32, ip: u64) -> std::io::Result<bool> {
    let Some(base) = procfs::interpreter_base(tgid)? else {
        return Ok(false);
    };
    let maps = procfs::maps(tgid)?;
    let file_at = |addr: u64| maps.iter().find(|m| m.start <= addr && addr < m.end);
    Ok(match (file_at(base), file_at(ip)) {
        (Some(interp), Some(code)) => {
            code.executable
                && code.inode != 0
                && code.inode == interp.inode
                && code.dev == interp.dev
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own open sites: this test process is dynamically linked, so the
    /// loader's mapping holds `_dl_...` code and libc's does not.
    #[test]
    fn addresses_in_our_own_loader_and_libc_are_told_apart() {
        let me = std::process::id() as i32;
        let Ok(Some(base)) = procfs::interpreter_base(me) else {
            // A static test binary has no loader to find.
            return;
        };
        let maps = procfs::maps(me).expect("our own maps");
        let interp = maps
            .iter()
            .find(|m| m.start == base)
            .expect("AT_BASE mapped");
        let loader_code = maps
            .iter()
            .find(|m| m.executable && m.inode == interp.inode && m.dev == interp.dev)
            .expect("an executable mapping of the loader");
        assert!(in_interpreter(me, loader_code.start).unwrap());
        // libc's open wrapper is in libc, a different file.
        let libc_open = libc::open as *const () as usize as u64;
        assert!(!in_interpreter(me, libc_open).unwrap());
        // Our own code is not the loader either.
        let ours = addresses_in_our_own_loader_and_libc_are_told_apart as *const () as usize as u64;
        assert!(!in_interpreter(me, ours).unwrap());
    }
}
