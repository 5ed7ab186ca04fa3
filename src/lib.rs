//! tlsign-seccomp: turn one HTTPS fetch into a transcript anyone can re-check.
pub mod transcript;
pub mod world;
