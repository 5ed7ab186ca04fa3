//! Interception backends: they catch the syscalls the world answers and
//! carry out its answers, and decide nothing themselves.

pub mod filter;
pub mod procfs;
pub mod seccomp;
pub mod target;
pub mod vdso;
