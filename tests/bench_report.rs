//! The benchmark's report module (medians, per-call arithmetic, the doc
//! block rewrite) is plain code with unit tests; a `harness = false` bench
//! never runs them, so this file does.

#[path = "../benches/report/mod.rs"]
#[allow(dead_code)]
mod report;
