//! Making the vDSO's clock and random functions enter the kernel.
//!
//! `clock_gettime` and friends normally run entirely in user space from the
//! vDSO, where no seccomp filter sees them. Each process's vDSO is patched
//! right after exec: every clock function becomes `mov eax, NR; syscall;
//! ret`, and `getrandom` (glibc 2.41+ draws from it) returns -ENOSYS so libc
//! falls back to the syscall. The image is the same in every process on one
//! kernel, so symbol offsets are read once from the supervisor's own vDSO.
//! The write goes through /proc/PID/mem, which may write read-only private
//! mappings (the kernel's FOLL_FORCE).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;

use super::procfs;

#[derive(Debug, thiserror::Error)]
pub enum VdsoError {
    #[error("cannot read the supervisor's own vDSO: {0}")]
    ReadOwn(io::Error),
    #[error("the vDSO has no usable symbol table: {0}")]
    Elf(&'static str),
    #[error("the vDSO of pid {pid} differs from the supervisor's; refusing to patch it")]
    Mismatch { pid: i32 },
    #[error("cannot patch the vDSO of pid {pid} through /proc/{pid}/mem: {source} (the kernel must allow a parent to write its child's read-only mappings)")]
    Write { pid: i32, source: io::Error },
}

/// `mov eax, imm32; syscall; ret`: the syscall ABI passes the first three
/// arguments in the same registers as the C ABI, all these functions need.
fn syscall_stub(nr: i64) -> Vec<u8> {
    let mut b = vec![0xb8];
    b.extend_from_slice(&u32::try_from(nr).unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&[0x0f, 0x05, 0xc3]);
    b
}

/// `mov rax, -38 (ENOSYS); ret`.
const ENOSYS_STUB: [u8; 8] = [0x48, 0xc7, 0xc0, 0xda, 0xff, 0xff, 0xff, 0xc3];

/// The patch for one kernel's vDSO image.
pub struct VdsoPatch {
    /// The unpatched image, to check a target's vDSO is the same one.
    image: Vec<u8>,
    /// (offset into the image, replacement bytes).
    patches: Vec<(u64, Vec<u8>)>,
}

impl VdsoPatch {
    /// Reads the supervisor's own vDSO and plans the patch. `Ok(None)` if
    /// this process has no vDSO (booted with vdso=0): then the clock calls
    /// are real syscalls already.
    pub fn prepare() -> Result<Option<VdsoPatch>, VdsoError> {
        let Some((start, end)) = procfs::vdso_range("self").map_err(VdsoError::ReadOwn)? else {
            return Ok(None);
        };
        let len = usize::try_from(end - start).map_err(|_| VdsoError::Elf("size"))?;
        let mut image = vec![0u8; len];
        File::open("/proc/self/mem")
            .and_then(|f| f.read_exact_at(&mut image, start))
            .map_err(VdsoError::ReadOwn)?;
        let syms = dynamic_symbols(&image)?;
        let plan: [(&str, Vec<u8>); 5] = [
            (
                "__vdso_clock_gettime",
                syscall_stub(libc::SYS_clock_gettime),
            ),
            ("__vdso_gettimeofday", syscall_stub(libc::SYS_gettimeofday)),
            ("__vdso_time", syscall_stub(libc::SYS_time)),
            ("__vdso_clock_getres", syscall_stub(libc::SYS_clock_getres)),
            ("__vdso_getrandom", ENOSYS_STUB.to_vec()),
        ];
        let mut patches = Vec::new();
        for (name, code) in plan {
            // A missing symbol is fine (older kernels have no getrandom);
            // one too small for the stub is not.
            if let Some(&(off, size)) = syms.iter().find(|(n, _)| n == name).map(|(_, v)| v) {
                if size < code.len() as u64 || off + code.len() as u64 > image.len() as u64 {
                    return Err(VdsoError::Elf("a function is too small to patch"));
                }
                patches.push((off, code));
            }
        }
        // Sorted and disjoint: `apply` checks the image between the sites.
        patches.sort_by_key(|(off, _)| *off);
        if patches
            .windows(2)
            .any(|w| w[0].0 + w[0].1.len() as u64 > w[1].0)
        {
            return Err(VdsoError::Elf("patched functions overlap"));
        }
        if !patches.iter().any(|(_, c)| c[0] == 0xb8) {
            return Err(VdsoError::Elf("no clock functions found"));
        }
        Ok(Some(VdsoPatch { image, patches }))
    }

    /// [`VdsoPatch::prepare`], once per process: every supervised program
    /// on this kernel needs the same patch.
    pub fn shared() -> Result<Option<&'static VdsoPatch>, VdsoError> {
        static SHARED: std::sync::OnceLock<Option<VdsoPatch>> = std::sync::OnceLock::new();
        if let Some(p) = SHARED.get() {
            return Ok(p.as_ref());
        }
        let p = VdsoPatch::prepare()?;
        Ok(SHARED.get_or_init(|| p).as_ref())
    }

    /// Patches the vDSO of thread `tid`'s process. Idempotent: false if
    /// it was already patched (or the process has no vDSO).
    ///
    /// Runs once per exec, so it stays cheap: the image is checked against
    /// ours with one read, at the address the previous image had its vDSO.
    /// Targets run without ASLR, so that guess is right for every client of
    /// a batch, and the auxiliary vector (AT_SYSINFO_EHDR, a /proc open) is
    /// read only when the check fails there.
    pub fn apply(&self, tid: i32) -> Result<bool, VdsoError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static LAST_BASE: AtomicU64 = AtomicU64::new(0);
        let write = |source| VdsoError::Write { pid: tid, source };
        let mem = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{tid}/mem"))
            .map_err(write)?;
        let guess = LAST_BASE.load(Ordering::Relaxed);
        // Any failure at the guess (nothing mapped there, other bytes) only
        // means the guess was wrong: nothing was written.
        if guess != 0 {
            if let Ok(patched) = self.patch_at(&mem, tid, guess) {
                return Ok(patched);
            }
        }
        let Some(start) = procfs::vdso_base(tid).map_err(write)? else {
            return Ok(false);
        };
        let patched = self.patch_at(&mem, tid, start)?;
        LAST_BASE.store(start, Ordering::Relaxed);
        Ok(patched)
    }

    /// [`VdsoPatch::apply`] with the vDSO at `start` in `mem`: writes only
    /// if every byte there is the image's (or a patch already made).
    fn patch_at(&self, mem: &File, tid: i32, start: u64) -> Result<bool, VdsoError> {
        let write = |source| VdsoError::Write { pid: tid, source };
        let mut cur = vec![0u8; self.image.len()];
        mem.read_exact_at(&mut cur, start).map_err(write)?;
        // Every byte must be ours, except that a patch site may already be
        // patched (a second brk(NULL) in the same image).
        let mut todo = Vec::new();
        let mut checked = 0;
        for (off, code) in &self.patches {
            let (a, b) = (*off as usize, *off as usize + code.len());
            if cur[checked..a] != self.image[checked..a] {
                return Err(VdsoError::Mismatch { pid: tid });
            }
            if cur[a..b] == self.image[a..b] {
                todo.push((off, code));
            } else if cur[a..b] != code[..] {
                return Err(VdsoError::Mismatch { pid: tid });
            }
            checked = b;
        }
        if cur[checked..] != self.image[checked..] {
            return Err(VdsoError::Mismatch { pid: tid });
        }
        // One write over the span of the sites still to patch, rewriting
        // what was just read (and checked) in between.
        if let (Some(first), Some(last)) = (todo.first(), todo.last()) {
            let (a, b) = (*first.0 as usize, *last.0 as usize + last.1.len());
            let mut span = cur[a..b].to_vec();
            for (off, code) in &todo {
                let o = **off as usize - a;
                span[o..o + code.len()].copy_from_slice(code);
            }
            mem.write_all_at(&span, start + a as u64).map_err(write)?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// (name, (offset, size)) of every defined function in the image's .dynsym.
/// A symbol's name, and its (offset, size) in the image.
type Symbol = (String, (u64, u64));

fn dynamic_symbols(img: &[u8]) -> Result<Vec<Symbol>, VdsoError> {
    let u16_at = |o: usize| img.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        img.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    };
    let u64_at = |o: usize| {
        img.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let bad = VdsoError::Elf;
    if img.get(..4) != Some(b"\x7fELF") || img.get(4) != Some(&2) {
        return Err(bad("not a 64-bit ELF image"));
    }
    let shoff = u64_at(0x28).ok_or(bad("header"))? as usize;
    let shentsize = usize::from(u16_at(0x3a).ok_or(bad("header"))?);
    let shnum = usize::from(u16_at(0x3c).ok_or(bad("header"))?);
    // The lowest PT_LOAD address: symbol values are relative to it.
    let phoff = u64_at(0x20).ok_or(bad("header"))? as usize;
    let phentsize = usize::from(u16_at(0x36).ok_or(bad("header"))?);
    let phnum = usize::from(u16_at(0x38).ok_or(bad("header"))?);
    let mut load_base = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph) == Some(1) {
            let vaddr = u64_at(ph + 0x10).ok_or(bad("program header"))?;
            load_base = Some(load_base.map_or(vaddr, |b: u64| b.min(vaddr)));
        }
    }
    let load_base = load_base.ok_or(bad("no PT_LOAD"))?;
    let section = |i: usize| -> Option<(u32, u64, u64, u32, u64)> {
        let sh = shoff + i * shentsize;
        // (type, offset, size, link, entsize)
        Some((
            u32_at(sh + 4)?,
            u64_at(sh + 0x18)?,
            u64_at(sh + 0x20)?,
            u32_at(sh + 0x28)?,
            u64_at(sh + 0x38)?,
        ))
    };
    const SHT_DYNSYM: u32 = 11;
    let (_, symoff, symsize, link, entsize) = (0..shnum)
        .filter_map(section)
        .find(|s| s.0 == SHT_DYNSYM)
        .ok_or(bad("no .dynsym"))?;
    let (_, stroff, strsize, _, _) = section(link as usize).ok_or(bad("no .dynstr"))?;
    let strtab = img
        .get(stroff as usize..(stroff + strsize) as usize)
        .ok_or(bad(".dynstr out of range"))?;
    if entsize < 24 {
        return Err(bad("symbol entries too small"));
    }
    let mut out = Vec::new();
    for i in 0..(symsize / entsize) as usize {
        let s = symoff as usize + i * entsize as usize;
        let (Some(name), Some(value), Some(size)) = (u32_at(s), u64_at(s + 8), u64_at(s + 16))
        else {
            return Err(bad("symbol out of range"));
        };
        let name = strtab
            .get(name as usize..)
            .and_then(|t| t.split(|&b| b == 0).next())
            .unwrap_or(b"");
        if value >= load_base && !name.is_empty() {
            out.push((
                String::from_utf8_lossy(name).into_owned(),
                (value - load_base, size),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_vdso_has_the_clock_functions() {
        let p = VdsoPatch::prepare()
            .unwrap()
            .expect("this kernel maps a vDSO");
        assert!(
            p.patches.len() >= 4,
            "clock_gettime, gettimeofday, time, clock_getres at least"
        );
        assert_eq!(
            syscall_stub(228),
            vec![0xb8, 228, 0, 0, 0, 0x0f, 0x05, 0xc3]
        );
    }

    /// `apply` patches a process once, whether the address it guesses from
    /// the last image is right (a second call) or wrong (another process,
    /// with ASLR on here), and a patch aimed at the wrong address writes
    /// nothing.
    #[test]
    fn the_guessed_address_is_checked_and_a_wrong_guess_falls_back() {
        let p = VdsoPatch::shared()
            .unwrap()
            .expect("this kernel maps a vDSO");
        let spawn = || {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap()
        };
        let (mut a, mut b) = (spawn(), spawn());
        let (pa, pb) = (a.id() as i32, b.id() as i32);
        // spawn may return while the child is still inside exec, sharing
        // our memory or with its new auxiliary vector not yet written: wait
        // for both its new program and the vector.
        for pid in [pa, pb] {
            let mut tries = 0;
            let execed = || {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|e| e.file_name().is_some_and(|n| n == "sleep"))
            };
            while !(execed() && matches!(procfs::vdso_base(pid), Ok(Some(_)))) {
                tries += 1;
                assert!(tries < 500, "no vDSO in {pid}'s auxiliary vector");
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        let base = |pid| procfs::vdso_base(pid).expect("auxv").expect("a vDSO");
        let image = |pid| {
            let mut buf = vec![0u8; p.image.len()];
            File::open(format!("/proc/{pid}/mem"))
                .unwrap()
                .read_exact_at(&mut buf, base(pid))
                .unwrap();
            buf
        };
        let mem = |pid| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/proc/{pid}/mem"))
                .unwrap()
        };
        // Aimed one page off: refused, nothing written.
        assert!(p.patch_at(&mem(pa), pa, base(pa) + 4096).is_err());
        assert_eq!(image(pa), p.image);
        assert!(p.apply(pa).unwrap(), "first patch of a");
        assert!(!p.apply(pa).unwrap(), "a is already patched");
        assert_ne!(image(pa), p.image);
        assert_eq!(image(pb), p.image, "patching a left b alone");
        assert!(p.apply(pb).unwrap(), "b patched too, at its own address");
        assert!(!p.apply(pb).unwrap());
        for c in [&mut a, &mut b] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    #[test]
    fn garbage_is_not_an_elf() {
        assert!(dynamic_symbols(b"not an elf at all").is_err());
        assert!(dynamic_symbols(&[0x7f, b'E', b'L', b'F', 2, 0, 0]).is_err());
    }
}
