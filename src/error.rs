//! The library's error type and the exit code each kind maps to.

use crate::transcript::DecodeError;

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    /// Signed, verified, or `run`'s command succeeded.
    pub const OK: i32 = 0;
    /// The transcript does not verify.
    pub const VERIFY_FAILED: i32 = 1;
    /// Bad input: unreadable or malformed transcript, future format
    /// version, another client, bad URL, bad option.
    pub const BAD_INPUT: i32 = 2;
    /// Signing failed: network, TLS or HTTP error, including a certificate
    /// the client does not trust at signing time.
    pub const SIGN_FAILED: i32 = 3;
    /// The supervisor could not run: the kernel or system refused something
    /// it needs (seccomp user notification, /proc/PID/mem, ...).
    pub const ENVIRONMENT: i32 = 4;
    /// A bug in tlsign-seccomp (a panic); nothing was written.
    pub const INTERNAL: i32 = 70;
    /// Interrupted (SIGINT/SIGTERM); nothing was written.
    pub const INTERRUPTED: i32 = 130;
}

/// Whether a network error is worth trying again later: the network, not
/// the server's answer, failed (a reset, a timeout). A refused connection is
/// not: as in curl's --retry, nothing listens there.
pub(crate) fn transient_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut
    )
}

/// Everything that can go wrong, sorted by blame: each kind has its exit
/// code ([`Error::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad option, URL or command line.
    #[error("{0}")]
    Usage(String),
    /// The transcript file could not be read or decoded.
    #[error(transparent)]
    Transcript(#[from] DecodeError),
    /// A well-formed transcript this build cannot check (another client).
    #[error("{0}")]
    Unsupported(String),
    /// The fetch failed: network, TLS (an untrusted certificate too), HTTP.
    #[error("signing failed: {0}")]
    SignFailed(String),
    /// The transcript does not verify; the message says why and where.
    #[error("verification failed: {0}")]
    VerifyFailed(String),
    /// The supervisor could not run: the kernel or system refused it.
    #[error("{0}")]
    Environment(String),
    /// Stopped by SIGINT or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Transcript(_) | Error::Unsupported(_) => exit::BAD_INPUT,
            Error::SignFailed(_) => exit::SIGN_FAILED,
            Error::VerifyFailed(_) => exit::VERIFY_FAILED,
            Error::Environment(_) => exit::ENVIRONMENT,
            Error::Interrupted => exit::INTERRUPTED,
        }
    }
}
