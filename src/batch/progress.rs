//! What a batch tells the person watching: a bar on a terminal, a plain
//! line every few seconds otherwise (a log file, a CI job, a cluster
//! scheduler), and each failure as one line either way.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown (`--progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A bar if standard error is a terminal, lines otherwise.
    Auto,
    /// Always the bar.
    Bar,
    /// Always plain lines.
    Lines,
    /// Nothing but failures and the final summary.
    Quiet,
}

/// The counts of one batch, shared by its tasks.
#[derive(Default)]
pub struct Counts {
    /// Entries taken from the input, including those left to other shards.
    pub seen: AtomicU64,
    pub ok: AtomicU64,
    /// Signed, but the final HTTP status is not 2xx (sign only).
    pub http_error: AtomicU64,
    pub failed: AtomicU64,
    /// Already in the output directory, or listed twice.
    pub skipped: AtomicU64,
    /// Belong to another shard.
    pub other_shard: AtomicU64,
    pub running: AtomicU64,
}

impl Counts {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(c: &AtomicU64) {
        c.fetch_sub(1, Ordering::Relaxed);
    }

    /// Entries finished with a result (not skipped, not another shard's).
    pub fn done(&self) -> u64 {
        Self::get(&self.ok) + Self::get(&self.http_error) + Self::get(&self.failed)
    }
}

/// The display of one batch.
pub struct Progress {
    verb: &'static str,
    started: Instant,
    counts: Arc<Counts>,
    bar: Option<ProgressBar>,
    /// Lines mode: when the last line was printed.
    last_line: Option<Mutex<Instant>>,
}

/// How often lines mode prints.
const LINE_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    /// `verb` is "signed" or "verified"; `total` the input's entries, if
    /// known in advance.
    pub fn new(
        mode: Mode,
        verb: &'static str,
        total: Option<u64>,
        counts: Arc<Counts>,
    ) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = matches!((mode, tty), (Mode::Bar, _) | (Mode::Auto, true)).then(|| {
            let bar = match total {
                Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            let template = if total.is_some() {
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}"
            } else {
                "{elapsed_precise} {spinner} {pos} {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let lines = matches!((mode, tty), (Mode::Lines, _) | (Mode::Auto, false));
        Progress {
            verb,
            started: Instant::now(),
            counts,
            bar,
            last_line: lines.then(|| Mutex::new(Instant::now())),
        }
    }

    /// Whether this prints lines (rather than a bar, or nothing).
    pub fn prints_lines(&self) -> bool {
        self.last_line.is_some()
    }

    /// Call when the counts change; in lines mode, also now and then
    /// while they do not.
    pub fn update(&self) {
        let c = &self.counts;
        if let Some(bar) = &self.bar {
            bar.set_position(Counts::get(&c.seen).min(bar.length().unwrap_or(u64::MAX)));
            bar.set_message(self.tally());
        }
        if let Some(last) = &self.last_line {
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= LINE_EVERY {
                *last = Instant::now();
                eprintln!("progress: {}", self.tally());
            }
        }
    }

    /// One line about one entry (a failure), above the bar if there is one.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// "120 signed (118 ok, 2 failed), 3 skipped, 16 running, 41.2/s".
    pub fn tally(&self) -> String {
        let c = &self.counts;
        let mut s = format!("{} {} ({} ok", c.done(), self.verb, Counts::get(&c.ok));
        let http = Counts::get(&c.http_error);
        if http > 0 {
            s.push_str(&format!(", {http} HTTP error"));
        }
        s.push_str(&format!(", {} failed)", Counts::get(&c.failed)));
        let skipped = Counts::get(&c.skipped);
        if skipped > 0 {
            s.push_str(&format!(", {skipped} skipped"));
        }
        let other = Counts::get(&c.other_shard);
        if other > 0 {
            s.push_str(&format!(", {other} for other shards"));
        }
        let running = Counts::get(&c.running);
        if running > 0 {
            s.push_str(&format!(", {running} running"));
        }
        s.push_str(&format!(", {:.1}/s", self.rate()));
        s
    }

    /// Results per second so far.
    pub fn rate(&self) -> f64 {
        self.counts.done() as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    /// Removes the bar, so the summary line stands alone.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
