//! `run`: any command in the deterministic world, nothing recorded.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};

use crate::intercept::{self, target, Backend, Stats};
use crate::transcript::Timestamp;
use crate::world::{random::world_key, Scope, World, WorldConfig};
use crate::Error;

/// The world `run` gives when no seed is named: all-zero, so two runs
/// without options are already alike.
pub const DEFAULT_SEED: [u8; 32] = [0; 32];
/// The clock start `run` uses when no time is named: 2000-01-01T00:00:00Z.
pub const DEFAULT_TIME: Timestamp = Timestamp {
    secs: 946_684_800,
    nanos: 0,
};

/// A command and the world to run it in.
pub struct RunOptions {
    /// The world's seed.
    pub seed: [u8; 32],
    /// The world's clock at the start.
    pub time: Timestamp,
    /// Extra environment variables on top of the fixed minimal environment.
    pub env: Vec<(OsString, OsString)>,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// How the command's syscalls are intercepted.
    pub backend: Backend,
}

/// What the command did, and what supervising it cost.
pub struct RunOutcome {
    /// The command's exit code, or 128 + the signal that killed it, as a
    /// shell reports it.
    pub code: i32,
    /// What supervising the command cost.
    pub stats: Stats,
}

/// Runs the command and its children under the supervisor with
/// deterministic randomness and clocks (the network is the host's), and
/// waits until every process under the filter has exited.
pub fn run(opts: RunOptions) -> Result<RunOutcome, Error> {
    let (program, args) = opts
        .command
        .split_first()
        .ok_or_else(|| Error::Usage("run needs a command after --".into()))?;
    let cfg = WorldConfig {
        key: world_key(&opts.seed, opts.time, ""),
        clock_start: opts.time,
        scope: Scope::Local,
    };
    let world = Arc::new(Mutex::new(World::new(cfg)));
    let mut env: Vec<(OsString, OsString)> = target::MINIMAL_ENV
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    // A later KEY replaces an earlier one, as in Command::env.
    for (k, v) in &opts.env {
        env.retain(|(old, _)| old != k);
        env.push((k.clone(), v.clone()));
    }
    let cmd = target::Program {
        path: program.clone(),
        args: args.to_vec(),
        env,
        cwd: None,
        capture: false,
        unblocks_signals: false,
        forkable: false,
    };
    let running = intercept::start(opts.backend, cmd, Scope::Local, world, Box::new(|_, _| {}))
        .map_err(|e| match e {
            target::SpawnError::Spawn { .. } => Error::Usage(e.to_string()),
            target::SpawnError::Interrupted => Error::Interrupted,
            _ => Error::Environment(e.to_string()),
        })?;
    // Ctrl-C reaches the whole foreground group: let the command decide what
    // it means and report how it ended. (Set after the spawn: an ignored
    // signal would be inherited across exec.)
    crate::sys::ignore_interrupts();
    let finished = running
        .done
        .wait_blocking()
        .map_err(|e| Error::Environment(e.to_string()))?;
    let status = finished.status;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(RunOutcome {
        code,
        stats: finished.stats,
    })
}
