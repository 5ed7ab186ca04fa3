//! The seccomp filter: which syscalls reach the supervisor.
//!
//! Built with libseccomp in the supervisor, before forking, and exported as
//! raw BPF: the child may only make async-signal-safe calls, so it installs
//! the ready program with one raw `seccomp(2)`.

use std::io::{Read, Seek};

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use crate::world::Scope;

#[derive(Debug, thiserror::Error)]
#[error("cannot build the seccomp filter: {0}")]
pub struct FilterError(String);

/// Syscalls the world answers in every scope. The clock calls normally stay
/// in the vDSO; the vDSO patch turns them into real syscalls. `openat2`
/// and `io_uring_setup` are answered ENOSYS (`world::Request::Unavailable`).
const ALWAYS: &[&str] = &[
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "time",
    "open",
    "openat",
    "openat2",
    "io_uring_setup",
];

/// What the filter does with the syscalls the world answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Catch {
    /// SECCOMP_RET_USER_NOTIF: stop for the listener (seccomp backend).
    Notify,
    /// SECCOMP_RET_TRACE: stop for the tracer (ptrace-seccomp backend).
    Trace,
}

/// The BPF program for `scope` and `catch`, built once per process: a
/// batch of signs needs it every time, and libseccomp takes a while.
pub fn program(scope: Scope, catch: Catch) -> Result<Vec<libc::sock_filter>, FilterError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Cache = Mutex<HashMap<(bool, bool), Vec<libc::sock_filter>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (scope == Scope::Networked, catch == Catch::Notify);
    let cache = CACHE.get_or_init(Cache::default);
    if let Some(p) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(p.clone());
    }
    let p = build(scope, catch)?;
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, p.clone());
    Ok(p)
}

fn build(scope: Scope, catch: Catch) -> Result<Vec<libc::sock_filter>, FilterError> {
    let action = match catch {
        Catch::Notify => ScmpAction::Notify,
        Catch::Trace => ScmpAction::Trace(0),
    };
    let err = |what: &str, e: libseccomp::error::SeccompError| FilterError(format!("{what}: {e}"));
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).map_err(|e| err("new context", e))?;
    let mut names: Vec<&str> = ALWAYS.to_vec();
    if scope == Scope::Networked {
        names.push("connect");
    }
    for name in names {
        let sys = ScmpSyscall::from_name(name).map_err(|e| err(name, e))?;
        ctx.add_rule(action, sys).map_err(|e| err(name, e))?;
    }
    // A rule for `name` that applies only when argument `arg` compares to 0
    // as `op` says.
    let when = |ctx: &mut ScmpFilterContext, name: &str, arg: u32, op: ScmpCompareOp| {
        let sys = ScmpSyscall::from_name(name).map_err(|e| err(name, e))?;
        ctx.add_rule_conditional(action, sys, &[ScmpArgCompare::new(arg, op, 0)])
            .map(drop)
            .map_err(|e| err(name, e))
    };
    // getrandom of 0 bytes draws nothing: a probe (the getrandom crate
    // makes one per process) the kernel answers as the world would, 0, or
    // EINVAL for flags it does not know.
    when(&mut ctx, "getrandom", 1, ScmpCompareOp::NotEqual)?;
    if catch == Catch::Trace {
        // The tracer patches the vDSO at the exec event instead.
        return export(&ctx);
    }
    // brk(NULL) is the first syscall of every freshly exec'd glibc image,
    // dynamic or static: the moment to patch its vDSO, before libc has read
    // the clock.
    when(&mut ctx, "brk", 0, ScmpCompareOp::Equal)?;
    export(&ctx)
}

fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, FilterError> {
    let err = |what: &str, e: libseccomp::error::SeccompError| FilterError(format!("{what}: {e}"));
    let mut file = tempfile::tempfile().map_err(|e| FilterError(format!("temporary file: {e}")))?;
    ctx.export_bpf(&file).map_err(|e| err("export", e))?;
    let mut raw = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut raw))
        .map_err(|e| FilterError(format!("reading exported program: {e}")))?;
    if raw.is_empty() || raw.len() % 8 != 0 {
        return Err(FilterError(format!(
            "exported program has {} bytes, not a multiple of 8",
            raw.len()
        )));
    }
    Ok(raw
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// `base` behind a prefix that lets each (syscall number, instruction
/// address) of `exempt` through without a notification (see `learned.rs`
/// for when that is sound). Classic BPF only jumps forward, so the prefix
/// either returns "allow" or falls through into `base` unchanged.
pub fn exempting(base: Vec<libc::sock_filter>, exempt: &[(i64, u64)]) -> Vec<libc::sock_filter> {
    // struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; ...
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    const IP_LO: u32 = 8;
    const IP_HI: u32 = 12;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const RET_ALLOW: u32 = 0x7fff_0000;
    // Six instructions per entry keep every jump within a u8.
    let exempt = &exempt[..exempt.len().min(32)];
    if exempt.is_empty() || !cfg!(target_arch = "x86_64") {
        return base;
    }
    let op = |code, k, jt, jf| libc::sock_filter { code, jt, jf, k };
    let len = 4 + 6 * exempt.len();
    let allow = len - 1;
    let to = |from: usize, target: usize| (target - from - 1) as u8;
    let mut p = Vec::with_capacity(len + base.len());
    p.push(op(LD_ABS, ARCH, 0, 0));
    p.push(op(JEQ, AUDIT_ARCH_X86_64, 0, to(1, len)));
    for &(nr, ip) in exempt {
        let at = p.len();
        p.push(op(LD_ABS, NR, 0, 0));
        p.push(op(JEQ, nr as u32, 0, 4));
        p.push(op(LD_ABS, IP_HI, 0, 0));
        p.push(op(JEQ, (ip >> 32) as u32, 0, 2));
        p.push(op(LD_ABS, IP_LO, 0, 0));
        p.push(op(JEQ, ip as u32, to(at + 5, allow), 0));
    }
    p.push(op(JA, 1, 0, 0));
    p.push(op(RET, RET_ALLOW, 0, 0));
    debug_assert_eq!(p.len(), len);
    p.extend(base);
    p
}
