//! tlsign-seccomp turns one HTTPS fetch into a transcript anyone can
//! re-check later, offline.
//!
//! The built-in client runs under a supervisor that makes its execution
//! deterministic: every random byte comes from a seeded ChaCha20 stream, the
//! clock is faked, name lookups are answered locally and every TCP connect
//! is routed into the supervisor, which records the bytes exchanged with the
//! server. Verifying replays the same client with the same seed and clock
//! against the recorded server bytes.
//!
//! The layers, each using only those below it:
//! - [`sign`], [`verify`], [`run`]: one job each, the public API;
//! - `intercept` (internal): backends that catch syscalls and carry out
//!   answers;
//! - `relay` (internal): the two ends a redirected connection can reach;
//! - `world` (internal): what the deterministic world answers; knows no
//!   backend;
//! - [`transcript`]: plain data and its one codec;
//! - [`client`]: the built-in HTTPS client, run as the supervised child.
//!
//! Signing and verifying from Rust (needs a reachable server, so not run
//! here):
//!
//! ```no_run
//! use std::time::Duration;
//! use tlsign_seccomp::{sign, verify};
//!
//! let signed = sign::sign(sign::SignOptions {
//!     url: "https://example.org/".into(),
//!     output: "example.tlsign".into(),
//!     ca_files: vec![],
//!     resolve: vec![],
//!     time: None,
//!     seed: None,
//!     timeout: Duration::from_secs(30),
//!     backend: tlsign_seccomp::Backend::Seccomp,
//!     recorder: None, // the backend's default
//! })?;
//! println!("{} body bytes", signed.transcript.response.body.len());
//!
//! let verified = verify::verify(verify::VerifyOptions {
//!     file: "example.tlsign".into(),
//!     ca_files: vec![],
//!     timeout: Duration::from_secs(30),
//!     backend: tlsign_seccomp::Backend::Ptrace, // any backend verifies any other's
//! })?;
//! assert_eq!(verified.transcript.response, signed.transcript.response);
//! # Ok::<(), tlsign_seccomp::Error>(())
//! ```
//!
//! Transcripts are hostile input: decoding names what is wrong instead of
//! trusting the file.
//!
//! ```
//! use tlsign_seccomp::transcript::{decode, Limits};
//!
//! let err = decode(b"GIF89a, not a transcript", &Limits::default()).unwrap_err();
//! assert!(err.to_string().starts_with("not a tlsign transcript"));
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod batch;
pub mod cli;
pub mod client;
mod error;
pub mod inspect;
pub(crate) mod intercept;
pub(crate) mod relay;
pub mod run;
mod session;
pub mod sign;
#[allow(unsafe_code)]
mod sys;
pub mod transcript;
pub mod verify;
pub(crate) mod world;

pub use error::{exit, Error};
pub use intercept::{Backend, Stats};
pub use session::Recorder;

/// The client zygote's entry points, for the binary's `main`: the hidden
/// argument that makes the binary the zygote, its loop, and the stop that
/// comes after the last client. Clients are forked from it rather than
/// executed (internal `intercept::zygote`).
pub mod zygote {
    pub use crate::intercept::zygote::{serve, shutdown, LAUNCH_ENV, ZYGOTE_ARG};
}
