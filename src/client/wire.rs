//! The client's own record of what it wrote and read on each connection.
//!
//! When the supervisor hands the client a socket already connected to the
//! real server (`session`, seccomp backend), no relay sees the bytes: the
//! client reports them with its outcome, and they become the transcript's
//! connection events. The record sits next to the socket, under the TLS
//! stack and the record check, so it holds the raw bytes on the wire, one
//! event per successful `read` or `write` call, in the order the calls
//! returned. That order is causal in the sense the replayer needs (see
//! `relay::replay`): every server event comes after the client bytes the
//! client sent before reading it.
//!
//! Recording never changes what the client does: it only copies what the
//! calls already moved. So it runs the same way on sign and on verify,
//! where the supervisor ignores it (the replayer checks the bytes itself).

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use crate::transcript::Event;

/// The events of every connection made so far, in the order they were
/// opened.
#[derive(Default)]
pub struct Wire {
    connections: Vec<Rc<RefCell<Vec<Event>>>>,
}

impl Wire {
    /// Starts recording a new connection on `inner`.
    pub fn record<S>(&mut self, inner: S) -> Logged<S> {
        let log = Rc::new(RefCell::new(Vec::new()));
        self.connections.push(Rc::clone(&log));
        Logged {
            inner,
            log,
            server_eof: false,
        }
    }

    /// Every connection's events. A connection whose socket is still open
    /// has no `ClientEof` yet.
    pub fn into_events(self) -> Vec<Vec<Event>> {
        self.connections
            .into_iter()
            .map(|c| std::mem::take(&mut *c.borrow_mut()))
            .collect()
    }
}

/// A socket whose traffic is copied into its connection's events. Dropping
/// it records `ClientEof`: the client never shuts down a direction, it
/// closes.
pub struct Logged<S> {
    inner: S,
    log: Rc<RefCell<Vec<Event>>>,
    server_eof: bool,
}

#[cfg(test)]
impl<S> Logged<S> {
    fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Read> Read for Logged<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.log.borrow_mut().push(Event::Server(buf[..n].to_vec()));
        } else if !buf.is_empty() && !self.server_eof {
            // A zero-length read asked for nothing and says nothing.
            self.server_eof = true;
            self.log.borrow_mut().push(Event::ServerEof);
        }
        Ok(n)
    }
}

impl<S: Write> Write for Logged<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if n > 0 {
            self.log.borrow_mut().push(Event::Client(buf[..n].to_vec()));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S> Drop for Logged<S> {
    fn drop(&mut self) {
        self.log.borrow_mut().push(Event::ClientEof);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads hand out at most `step` bytes; writes take at most `step`.
    struct Trickle {
        input: Vec<u8>,
        output: Vec<u8>,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            Ok(n)
        }
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len());
            self.output.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn records_exactly_what_each_call_moved_in_call_order() {
        let mut wire = Wire::default();
        let mut s = wire.record(Trickle {
            input: b"answer".to_vec(),
            output: Vec::new(),
            step: 4,
        });
        // write_all: two partial writes of 4 and 1 bytes.
        s.write_all(b"hello").unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"answer");
        // Reading past the end again records no second end.
        assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0);
        assert_eq!(s.get_ref().output, b"hello");
        drop(s);
        let second = wire.record(Trickle {
            input: Vec::new(),
            output: Vec::new(),
            step: 1,
        });
        drop(second);
        assert_eq!(
            wire.into_events(),
            vec![
                vec![
                    Event::Client(b"hell".to_vec()),
                    Event::Client(b"o".to_vec()),
                    Event::Server(b"answ".to_vec()),
                    Event::Server(b"er".to_vec()),
                    Event::ServerEof,
                    Event::ClientEof,
                ],
                vec![Event::ClientEof],
            ]
        );
    }

    #[test]
    fn failed_calls_record_nothing() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::ConnectionReset.into())
            }
        }
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut wire = Wire::default();
        let mut s = wire.record(Broken);
        assert!(s.write(b"x").is_err());
        assert!(s.read(&mut [0u8; 4]).is_err());
        drop(s);
        assert_eq!(wire.into_events(), vec![vec![Event::ClientEof]]);
    }
}
