//! The world's clock: deterministic readings that start at the signing time.
//!
//! Each traced thread has its own clock, advancing by [`TICK_NS`] per
//! reading. A shared clock would make the value a thread sees depend on how
//! the scheduler interleaved the others.

use crate::transcript::Timestamp;

/// How far a thread's clock moves per reading: enough that code measuring an
/// interval sees time pass, small enough that a fetch's hundred readings
/// stay well inside a second.
pub const TICK_NS: u64 = 1_000_000;

/// Where CLOCK_MONOTONIC and friends start: an arbitrary but fixed uptime.
const MONOTONIC_BASE_SECS: i64 = 1000;

// Clock ids from <linux/time.h>.
const CLOCK_REALTIME: i32 = 0;
const CLOCK_MONOTONIC: i32 = 1;
const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
const CLOCK_MONOTONIC_RAW: i32 = 4;
const CLOCK_REALTIME_COARSE: i32 = 5;
const CLOCK_MONOTONIC_COARSE: i32 = 6;
const CLOCK_BOOTTIME: i32 = 7;
const CLOCK_REALTIME_ALARM: i32 = 8;
const CLOCK_BOOTTIME_ALARM: i32 = 9;
const CLOCK_TAI: i32 = 11;

/// What kind of time a clock id asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockKind {
    /// Calendar time: the signing time plus elapsed ticks.
    Wall,
    /// Time since an arbitrary start: uptime, CPU time.
    Elapsed,
}

/// Classifies a clock id. `None` means an id the world does not fake:
/// negative ids name per-process CPU clocks and dynamic (fd) clocks, which
/// pass through; unknown positive ids get EINVAL like the kernel gives.
pub fn classify(clock: i32) -> Result<ClockKind, Unfaked> {
    match clock {
        CLOCK_REALTIME | CLOCK_REALTIME_COARSE | CLOCK_REALTIME_ALARM | CLOCK_TAI => {
            Ok(ClockKind::Wall)
        }
        CLOCK_MONOTONIC
        | CLOCK_MONOTONIC_RAW
        | CLOCK_MONOTONIC_COARSE
        | CLOCK_BOOTTIME
        | CLOCK_BOOTTIME_ALARM
        | CLOCK_PROCESS_CPUTIME_ID
        | CLOCK_THREAD_CPUTIME_ID => Ok(ClockKind::Elapsed),
        c if c < 0 => Err(Unfaked::PassThrough),
        _ => Err(Unfaked::Invalid),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfaked {
    PassThrough,
    Invalid,
}

/// A deterministic clock: `start` plus `readings` ticks.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Timestamp,
}

impl Clock {
    pub fn new(start: Timestamp) -> Self {
        Clock { start }
    }

    /// The reading a thread that has already read its clock `readings` times
    /// gets next.
    pub fn read(&self, kind: ClockKind, readings: u64) -> Timestamp {
        let elapsed = readings.saturating_mul(TICK_NS);
        let base = match kind {
            ClockKind::Wall => self.start,
            ClockKind::Elapsed => Timestamp {
                secs: MONOTONIC_BASE_SECS,
                nanos: 0,
            },
        };
        add_ns(base, elapsed)
    }
}

fn add_ns(t: Timestamp, ns: u64) -> Timestamp {
    let total = u64::from(t.nanos) + ns % 1_000_000_000;
    let secs = t
        .secs
        .saturating_add(i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX))
        .saturating_add(i64::try_from(total / 1_000_000_000).unwrap_or(0));
    // The remainder of a division by 10^9 always fits in u32.
    let nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Timestamp { secs, nanos }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_starts_at_start_and_ticks() {
        let c = Clock::new(Timestamp {
            secs: 100,
            nanos: 999_500_000,
        });
        assert_eq!(
            c.read(ClockKind::Wall, 0),
            Timestamp {
                secs: 100,
                nanos: 999_500_000
            }
        );
        assert_eq!(
            c.read(ClockKind::Wall, 1),
            Timestamp {
                secs: 101,
                nanos: 500_000
            }
        );
        assert_eq!(
            c.read(ClockKind::Elapsed, 2000).secs,
            MONOTONIC_BASE_SECS + 2
        );
    }

    #[test]
    fn clock_ids() {
        assert_eq!(classify(0), Ok(ClockKind::Wall));
        assert_eq!(classify(1), Ok(ClockKind::Elapsed));
        assert_eq!(classify(-2), Err(Unfaked::PassThrough));
        assert_eq!(classify(10), Err(Unfaked::Invalid));
        assert_eq!(classify(99), Err(Unfaked::Invalid));
    }
}
