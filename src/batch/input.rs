//! The batch's input: one entry per line, read on a thread of its own so a
//! slow producer (a pipe fed as links arrive) never blocks the runtime, and
//! handed over through a bounded channel so a huge list is never in memory.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::Error;

/// The longest line taken; the rest of a longer one is skipped, and the
/// entry reported as too long.
pub const MAX_LINE: usize = 8192;

/// Where a list comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    File(PathBuf),
}

impl Source {
    /// `-` is standard input, anything else a path.
    pub fn from_arg(arg: &Path) -> Source {
        if arg.as_os_str() == "-" {
            Source::Stdin
        } else {
            Source::File(arg.to_path_buf())
        }
    }

    /// How many entries a regular file holds, for a progress bar; `None`
    /// for standard input or a pipe. Streams, like the reader.
    pub fn count_entries(&self) -> Option<u64> {
        let Source::File(p) = self else { return None };
        let f = std::fs::File::open(p).ok()?;
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        let mut lines = Lines::new(BufReader::new(f));
        let mut n = 0;
        while let Some(l) = lines.next_line().ok()? {
            if l.entry().is_some() {
                n += 1;
            }
        }
        Some(n)
    }

    fn open(&self) -> Result<Box<dyn Read + Send>, Error> {
        match self {
            Source::Stdin => Ok(Box::new(std::io::stdin())),
            Source::File(p) => std::fs::File::open(p)
                .map(|f| Box::new(f) as Box<dyn Read + Send>)
                .map_err(|e| Error::Usage(format!("--input {}: {e}", p.display()))),
        }
    }

    fn name(&self) -> String {
        match self {
            Source::Stdin => "standard input".into(),
            Source::File(p) => p.display().to_string(),
        }
    }
}

/// One line of the input, as read.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// The line's text, trimmed.
    Text(String),
    /// Longer than [`MAX_LINE`], or not UTF-8: what can be shown of it.
    Bad { shown: String, why: &'static str },
}

impl Line {
    /// The entry on this line: `None` for blank lines and `#` comments.
    pub fn entry(&self) -> Option<Result<&str, (&str, &'static str)>> {
        match self {
            Line::Text(t) if t.is_empty() || t.starts_with('#') => None,
            Line::Text(t) => Some(Ok(t)),
            Line::Bad { shown, why } => Some(Err((shown, why))),
        }
    }
}

/// A line reader that never holds more than [`MAX_LINE`] bytes of a line.
pub struct Lines<R> {
    r: R,
}

impl<R: BufRead> Lines<R> {
    pub fn new(r: R) -> Lines<R> {
        Lines { r }
    }

    pub fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        let mut buf = Vec::new();
        let mut too_long = false;
        let mut any = false;
        loop {
            let chunk = self.r.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            any = true;
            let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], Some(i + 1)),
                None => (chunk, None),
            };
            let room = MAX_LINE.saturating_sub(buf.len());
            if part.len() > room {
                too_long = true;
            }
            buf.extend_from_slice(&part[..part.len().min(room)]);
            let used = done.unwrap_or(chunk.len());
            self.r.consume(used);
            if done.is_some() {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        let shown = |b: &[u8]| {
            let s = String::from_utf8_lossy(&b[..b.len().min(100)]);
            s.trim().to_string()
        };
        if too_long {
            return Ok(Some(Line::Bad {
                shown: shown(&buf),
                why: "longer than 8192 bytes",
            }));
        }
        Ok(Some(match String::from_utf8(buf) {
            Ok(s) => Line::Text(s.trim().to_string()),
            Err(e) => Line::Bad {
                shown: shown(e.as_bytes()),
                why: "not UTF-8",
            },
        }))
    }
}

/// An entry with its line number (1-based), for messages.
pub struct Entry {
    pub line: u64,
    pub text: Result<String, (String, &'static str)>,
}

/// Starts reading `source` on a thread; entries arrive on the returned
/// channel, which holds at most `capacity` of them. A read error ends the
/// stream with `Err`. The thread ends when the input does or the receiver
/// is dropped (a reader blocked on a silent stdin stays blocked until the
/// process exits, which is harmless).
pub fn read(
    source: &Source,
    capacity: usize,
) -> Result<mpsc::Receiver<Result<Entry, Error>>, Error> {
    let r = source.open()?;
    let name = source.name();
    let (tx, rx) = mpsc::channel(capacity.max(1));
    std::thread::Builder::new()
        .name("batch-input".into())
        .spawn(move || {
            let mut lines = Lines::new(BufReader::with_capacity(64 << 10, r));
            let mut n = 0u64;
            loop {
                let item = match lines.next_line() {
                    Ok(None) => return,
                    Ok(Some(l)) => {
                        n += 1;
                        match l.entry() {
                            None => continue,
                            Some(Ok(t)) => Ok(Entry {
                                line: n,
                                text: Ok(t.to_string()),
                            }),
                            Some(Err((s, why))) => Ok(Entry {
                                line: n,
                                text: Err((s.to_string(), why)),
                            }),
                        }
                    }
                    Err(e) => Err(Error::Usage(format!("reading {name}: {e}"))),
                };
                let last = item.is_err();
                if tx.blocking_send(item).is_err() || last {
                    return;
                }
            }
        })
        .map_err(|e| Error::Environment(format!("cannot start the input reader: {e}")))?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<Line> {
        let mut l = Lines::new(std::io::BufReader::with_capacity(16, input));
        let mut out = Vec::new();
        while let Some(x) = l.next_line().unwrap() {
            out.push(x);
        }
        out
    }

    #[test]
    fn lines_trimmed_comments_and_blanks_are_not_entries() {
        let got = all(b"  https://a.test/ \r\n\n# note\nhttps://b.test/x");
        let entries: Vec<_> = got.iter().filter_map(Line::entry).collect();
        assert_eq!(entries, vec![Ok("https://a.test/"), Ok("https://b.test/x")]);
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn long_and_binary_lines_are_bad_entries_and_the_next_line_survives() {
        let mut input = vec![b'a'; MAX_LINE * 3];
        input.extend_from_slice(b"\n\xff\xfe\nhttps://ok.test/\n");
        let got = all(&input);
        assert_eq!(got.len(), 3);
        assert!(
            matches!(&got[0], Line::Bad { why, shown } if why.contains("8192") && shown.len() == 100)
        );
        assert!(matches!(&got[1], Line::Bad { why, .. } if *why == "not UTF-8"));
        assert_eq!(got[2], Line::Text("https://ok.test/".into()));
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_taken() {
        let mut input = vec![b'b'; MAX_LINE];
        input.push(b'\n');
        assert!(matches!(&all(&input)[0], Line::Text(t) if t.len() == MAX_LINE));
    }
}
