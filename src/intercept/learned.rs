//! Notifications learned to be useless, and let through by later filters.
//!
//! BPF sees a syscall's number, its arguments as numbers, and the address
//! of the `syscall` instruction, never the memory arguments point to. So
//! every `openat` stops for the supervisor, which reads the path, and most
//! of the time answers "continue"; every `brk(NULL)` stops too, because the
//! first one of a new image is the moment to patch its vDSO. A stop costs
//! about 40 µs of CPU between the two sides on the machines we measured
//! (docs/benchmarks.md), and a dynamically linked client made six such
//! useless stops per run:
//!
//! - the dynamic loader opens `/etc/ld.so.cache` and each shared library;
//! - libc's malloc calls `brk(NULL)` again, in an image already patched.
//!
//! With ASLR off, a program's loader and libraries are mapped at the same
//! addresses in every run, so the instructions making those calls have the
//! same addresses too. Once the supervisor has seen such a call, and /proc
//! has shown where it came from, later filters let that one instruction's
//! calls through (`filter::exempting`):
//!
//! - `openat` from inside the program's interpreter (the mapping `AT_BASE`
//!   points into). The loader opens its cache and libraries, never a file
//!   the world serves (the name-service files under /etc, the random
//!   devices), so the world's answer to it is always "continue", which is
//!   what the filter's "allow" does. An address is learned only once the
//!   world has decided "continue" for a call from it.
//! - `brk(NULL)` from inside a shared library (neither the interpreter nor
//!   the main program, `AT_ENTRY`) in an image whose vDSO was already
//!   patched. The first `brk(NULL)` of an image is made by its loader, or
//!   by the program itself if static, never by a library, which is only
//!   mapped later: no image misses its patch.
//!
//! The /proc files are read while the call waits for its answer, and the
//! verdict kept only if it still waits after: a process that exited and
//! whose pid was taken by another could otherwise teach the layout of the
//! wrong program.
//!
//! A program mapped differently is simply asked about every call, as
//! before. The first program a process runs always is, so a single sign or
//! verify behaves exactly as before; a batch learns from its first client.
//! One thing does move: a process is numbered in the world when it first
//! asks the world something (`World::thread_key`), and an exempted call is
//! never asked. A program whose processes start concurrently is numbered
//! in a racy order anyway; our client is one process.
//!
//! Only the seccomp backend learns and uses this: the ptrace baselines keep
//! the filter they were measured with.

use std::sync::Mutex;

use super::procfs;

/// Learned addresses kept at most, per syscall: a loader has one or two
/// open sites, libc one brk.
const MAX_LEARNED: usize = 4;
/// Addresses found not to qualify, remembered so /proc is read once per
/// address, not once per client; more distinct ones than this stop the
/// learning.
const MAX_REJECTED: usize = 64;

/// The calls a new filter may let through: (syscall number, address of
/// the instruction after the `syscall`, as the kernel reports it).
pub fn exemptions() -> Vec<(i64, u64)> {
    let l = learned();
    l.openat
        .accepted
        .iter()
        .map(|&ip| (libc::SYS_openat, ip))
        .chain(l.brk.accepted.iter().map(|&ip| (libc::SYS_brk, ip)))
        .collect()
}

/// The world answers "continue" to an `openat` that process `tgid` is
/// making from instruction address `ip`: learns `ip` if it lies in that
/// process's dynamic loader. `pending` tells whether the call still waits
/// for its answer.
pub fn saw_continued_openat(tgid: i32, ip: u64, pending: impl FnOnce() -> bool) {
    consider(
        |l| &mut l.openat,
        tgid,
        ip,
        pending,
        |w| w.code == w.interpreter,
    );
}

/// Process `tgid` is calling `brk(NULL)` from `ip` in an image whose vDSO
/// was already patched: learns `ip` if it lies in a shared library.
pub fn saw_repeated_brk(tgid: i32, ip: u64, pending: impl FnOnce() -> bool) {
    consider(
        |l| &mut l.brk,
        tgid,
        ip,
        pending,
        |w| w.code != w.interpreter && w.code != w.program,
    );
}

#[derive(Default)]
struct Sites {
    accepted: Vec<u64>,
    rejected: Vec<u64>,
}

#[derive(Default)]
struct Learned {
    openat: Sites,
    brk: Sites,
}

static LEARNED: Mutex<Learned> = Mutex::new(Learned {
    openat: Sites {
        accepted: Vec::new(),
        rejected: Vec::new(),
    },
    brk: Sites {
        accepted: Vec::new(),
        rejected: Vec::new(),
    },
});

fn learned() -> std::sync::MutexGuard<'static, Learned> {
    LEARNED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which file (device and inode) holds the code at an address, the
/// interpreter and the main program.
#[derive(Debug)]
struct Where {
    code: (String, u64),
    interpreter: (String, u64),
    program: (String, u64),
}

/// Reads where `ip` lies in process `tgid` and records the verdict, but
/// only if the call that brought us here still waits (`pending`) after the
/// reads: until it is answered, `tgid` cannot exit, so the /proc files
/// read were its own and not those of a process that took over its pid.
fn consider(
    sites: fn(&mut Learned) -> &mut Sites,
    tgid: i32,
    ip: u64,
    pending: impl FnOnce() -> bool,
    qualifies: fn(&Where) -> bool,
) {
    {
        let mut l = learned();
        let s = sites(&mut l);
        if s.accepted.contains(&ip)
            || s.rejected.contains(&ip)
            || s.accepted.len() >= MAX_LEARNED
            || s.rejected.len() >= MAX_REJECTED
        {
            return;
        }
    }
    // A process gone meanwhile teaches nothing.
    let Ok(Some(w)) = locate(tgid, ip) else {
        return;
    };
    if !pending() {
        return;
    }
    let ok = qualifies(&w);
    let mut l = learned();
    let s = sites(&mut l);
    let list = if ok { &mut s.accepted } else { &mut s.rejected };
    if !list.contains(&ip) {
        list.push(ip);
    }
}

/// Where `ip` is in process `tgid`: `None` unless it lies in executable
/// code mapped from a file, and the process has an interpreter.
fn locate(tgid: i32, ip: u64) -> std::io::Result<Option<Where>> {
    let [Some(interp), Some(entry)] = procfs::auxv_values(tgid, [libc::AT_BASE, libc::AT_ENTRY])?
    else {
        return Ok(None);
    };
    let maps = procfs::maps(tgid)?;
    let file_at = |addr: u64| {
        maps.iter()
            .find(|m| m.start <= addr && addr < m.end && m.inode != 0)
            .map(|m| (m, (m.dev.clone(), m.inode)))
    };
    Ok(match (file_at(ip), file_at(interp), file_at(entry)) {
        (Some((code_map, code)), Some((_, interpreter)), Some((_, program)))
            if code_map.executable =>
        {
            Some(Where {
                code,
                interpreter,
                program,
            })
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of our own loader's code, or `None` if this test binary
    /// is static (no loader to find).
    fn our_loader_code() -> Option<u64> {
        let me = std::process::id() as i32;
        let base = procfs::auxv_value(me, libc::AT_BASE).ok()??;
        let maps = procfs::maps(me).expect("our own maps");
        let interp = maps
            .iter()
            .find(|m| m.start == base)
            .expect("AT_BASE mapped");
        let code = maps
            .iter()
            .find(|m| m.executable && m.inode == interp.inode && m.dev == interp.dev)
            .expect("an executable mapping of the loader");
        Some(code.start)
    }

    /// Our own code: this test process is dynamically linked, so the
    /// loader, libc and the test binary are three different files.
    #[test]
    fn addresses_in_the_loader_a_library_and_the_program_are_told_apart() {
        let me = std::process::id() as i32;
        let Some(loader_code) = our_loader_code() else {
            return;
        };
        let at = |ip: u64| locate(me, ip).unwrap().expect("in a file's code");
        let loader = at(loader_code);
        assert_eq!(loader.code, loader.interpreter);
        // libc's open wrapper: a library.
        let lib = at(libc::open as *const () as usize as u64);
        assert!(lib.code != lib.interpreter && lib.code != lib.program);
        // This function: the program.
        let ours = at(
            addresses_in_the_loader_a_library_and_the_program_are_told_apart as *const () as usize
                as u64,
        );
        assert_eq!(ours.code, ours.program);
        // The stack is no file's code.
        let local = 0u8;
        assert!(locate(me, &local as *const u8 as u64).unwrap().is_none());
    }

    /// A verdict reached after the call stopped waiting is dropped: the
    /// pid may have been another process's by then.
    #[test]
    fn nothing_is_learned_from_a_call_no_longer_pending() {
        let me = std::process::id() as i32;
        let Some(loader_code) = our_loader_code() else {
            return;
        };
        let ip = loader_code + 2;
        let learned_now = || exemptions().contains(&(libc::SYS_openat, ip));
        saw_continued_openat(me, ip, || false);
        assert!(!learned_now(), "learned from a call that was gone");
        saw_continued_openat(me, ip, || true);
        assert!(
            learned_now(),
            "a loader address still waiting must be learned"
        );
    }
}
