//! `verify`: replay a transcript offline and judge it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{self, ClientOutcome};
use crate::session::{self, ConnectionResult, Ends, Spec};
use crate::transcript::{self, Limits, Response, Transcript};
use crate::world::{random::world_key, Scope, WorldConfig};
use crate::Error;

/// What to verify and with which trust anchors.
pub struct VerifyOptions {
    /// The transcript file.
    pub file: PathBuf,
    /// PEM files of CA certificates trusted besides Mozilla's roots. Trust
    /// anchors never come from the transcript.
    pub ca_files: Vec<PathBuf>,
    /// Give up (failing the verification) after this long.
    pub timeout: Duration,
    /// How the client's syscalls are intercepted; any backend verifies a
    /// transcript signed with any other.
    pub backend: crate::Backend,
}

/// A transcript that verified.
pub struct Verified {
    /// The transcript; its response is what the replay produced.
    pub transcript: Transcript,
    /// What supervising the replayed client cost.
    pub stats: crate::Stats,
    /// Wall time of the whole verify.
    pub elapsed: Duration,
}

/// Reads `opts.file` and replays it: see [`verify_transcript`].
pub fn verify(opts: VerifyOptions) -> Result<Verified, Error> {
    let t = transcript::read_file(&opts.file, &Limits::default())?;
    let ca_files = session::check_ca_files(&opts.ca_files)?;
    verify_transcript(t, ca_files, opts.timeout, opts.backend)
}

/// Replays `t` with the verifier's own trust anchors (`ca_files`, checked
/// by the caller), on a small runtime of its own.
pub fn verify_transcript(
    t: Transcript,
    ca_files: Vec<PathBuf>,
    timeout: Duration,
    backend: crate::Backend,
) -> Result<Verified, Error> {
    session::one_shot(|cancel| replay(t, ca_files, timeout, backend, cancel))
}

/// [`verify_transcript`] on the current runtime; many may run at once.
pub(crate) async fn replay(
    t: Transcript,
    ca_files: Vec<PathBuf>,
    timeout: Duration,
    backend: crate::Backend,
    cancel: session::Cancel,
) -> Result<Verified, Error> {
    let ours = client::client_id();
    if t.client != ours {
        return Err(Error::Unsupported(format!(
            "the transcript was made by client {} {}, but this is {} {}: it can only be verified by that client",
            t.client.name, t.client.version, ours.name, ours.version
        )));
    }
    crate::sign::check_url(&t.url)
        .map_err(|e| Error::Unsupported(format!("the transcript's URL is unusable: {e}")))?;
    let world = WorldConfig {
        key: world_key(&t.seed, t.clock_start, &t.url),
        clock_start: t.clock_start,
        scope: Scope::Networked,
    };
    let spec = Spec {
        backend,
        url: t.url.clone(),
        ca_files,
        world,
        timeout,
        on_exit: None,
    };
    let connections = Arc::new(t.connections.clone());
    let report = session::run(
        spec,
        Ends::Replay {
            connections: Arc::clone(&connections),
        },
        cancel,
    )
    .await?;

    // The first thing that went wrong on the wire, if anything did.
    let mut wire: Option<String> = None;
    let opened = report.connections.len();
    for c in &report.connections {
        let problem = match c {
            ConnectionResult::Replayed(Ok(())) => None,
            ConnectionResult::Replayed(Err(d)) => Some(d.to_string()),
            ConnectionResult::Unexpected(e) => Some(e.clone()),
            ConnectionResult::Recorded(_) => unreachable!("verify only replays"),
        };
        if wire.is_none() {
            wire = problem;
        }
    }
    let fail = |msg: String| Err(Error::VerifyFailed(msg));
    match report.outcome {
        // The client's own account comes first: "certificate not trusted"
        // says more than the alert bytes it caused.
        Ok(ClientOutcome::Failed(f)) => match wire {
            Some(w) => fail(format!("{} ({w})", f.message)),
            None => fail(f.message),
        },
        Err(why) => fail(wire.map_or(why.clone(), |w| format!("{why} ({w})"))),
        Ok(ClientOutcome::Fetched(resp)) => {
            if let Some(w) = wire {
                return fail(w);
            }
            if opened != connections.len() {
                return fail(format!(
                    "the client opened {opened} connection(s), but the transcript has {}",
                    connections.len()
                ));
            }
            if let Some(diff) = describe_difference(&t.response, &resp) {
                return fail(format!("response differs: {diff}"));
            }
            Ok(Verified {
                transcript: t,
                stats: report.stats,
                elapsed: report.elapsed,
            })
        }
    }
}

/// The first difference between the recorded and the replayed response.
fn describe_difference(recorded: &Response, replayed: &Response) -> Option<String> {
    if recorded.status != replayed.status {
        return Some(format!(
            "the transcript says status {}, the replay gave {}",
            recorded.status, replayed.status
        ));
    }
    if recorded.final_url != replayed.final_url || recorded.redirects != replayed.redirects {
        return Some(format!(
            "the transcript says the redirects led to {}, the replay reached {}",
            recorded.final_url, replayed.final_url
        ));
    }
    if recorded.headers != replayed.headers {
        let i = recorded
            .headers
            .iter()
            .zip(&replayed.headers)
            .position(|(a, b)| a != b)
            .unwrap_or(recorded.headers.len().min(replayed.headers.len()));
        let name = |h: &[(String, Vec<u8>)]| {
            h.get(i)
                .map_or_else(|| "none".to_string(), |(n, _)| format!("{n:?}"))
        };
        return Some(format!(
            "header {i} differs (the transcript has {}, the replay gave {})",
            name(&recorded.headers),
            name(&replayed.headers)
        ));
    }
    if recorded.body != replayed.body {
        let i = recorded
            .body
            .iter()
            .zip(&replayed.body)
            .position(|(a, b)| a != b)
            .unwrap_or(recorded.body.len().min(replayed.body.len()));
        return Some(format!(
            "body differs at byte {i} (the transcript has {} bytes, the replay gave {})",
            recorded.body.len(),
            replayed.body.len()
        ));
    }
    if recorded != replayed {
        return Some("the responses differ".into());
    }
    None
}
