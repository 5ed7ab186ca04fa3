//! The deterministic world: what randomness, the clock, name lookups and
//! connections look like to a supervised program.
//!
//! The world never knows which interception backend asked. A backend decodes
//! a syscall into a [`Request`] (reading whatever target memory the request
//! needs), asks [`World::decide`], carries out the [`Answer`], and, only if
//! the target accepted the answer, hands back its [`Commit`]. Every backend
//! therefore gives the same world, and a transcript signed with one verifies
//! with another.

pub mod clock;
pub mod names;
pub mod random;

use std::collections::HashMap;
use std::net::SocketAddr;

use rand_chacha::ChaCha20Rng;

use crate::transcript::Timestamp;
use clock::{classify, Clock, ClockKind, Unfaked};
use names::Names;
use random::{StreamId, Streams};

/// The most bytes one `getrandom` answer carries. Larger requests get a
/// short count, which the kernel also gives (and callers must handle).
const MAX_GETRANDOM: usize = 1 << 20;

// errno values (asm-generic/errno-base.h), spelled out so the world stays
// free of libc.
pub const ENOENT: i32 = 2;
pub const EACCES: i32 = 13;
pub const EINVAL: i32 = 22;
pub const ENETUNREACH: i32 = 101;
const O_ACCMODE: i32 = 0o3;
const O_CLOEXEC: i32 = 0o2_000_000;
const O_NONBLOCK: i32 = 0o4000;

/// How much of the world is faked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Randomness and the clock (`run`): the network is the host's.
    Local,
    /// Also name resolution and every TCP connection (`sign`, `verify`).
    Networked,
}

#[derive(Clone, Debug)]
pub struct WorldConfig {
    pub key: [u8; 32],
    pub clock_start: Timestamp,
    pub scope: Scope,
}

/// Who made the syscall, as the kernel names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub tid: i32,
    pub tgid: i32,
}

/// The syscalls the world answers, decoded by a backend. Pointers are target
/// addresses, only ever handed back in the `writes` of [`Answer::Return`].
#[derive(Clone, Debug)]
pub enum Request {
    Getrandom {
        buf: u64,
        len: u64,
        flags: u32,
    },
    ClockGettime {
        clock: i32,
        ts: u64,
    },
    ClockGetres {
        clock: i32,
        res: u64,
    },
    Gettimeofday {
        tv: u64,
        tz: u64,
    },
    Time {
        tloc: u64,
    },
    /// `open`/`openat` of an absolute path (relative ones never reach here).
    Open {
        path: Vec<u8>,
        flags: i32,
    },
    Connect {
        addr: SockAddr,
        sock_type: SockType,
    },
    /// A syscall that would reach what the world answers by a way the
    /// world cannot see: `openat2` (its path in a struct the world does not
    /// read) and `io_uring_setup` (a ring's opens, reads and connects never
    /// pass through a syscall at all). The world has neither.
    Unavailable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SockAddr {
    Inet(SocketAddr),
    Unix,
    Other(i32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockType {
    Stream,
    Datagram,
    Other,
}

/// Where a redirected connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The world's DNS-over-TCP nameserver.
    Nameserver,
    /// The `index`-th server connection of the run, to `host`:`port`.
    Server {
        index: usize,
        host: String,
        port: u16,
    },
}

/// What the backend must make the target see.
#[derive(Debug)]
pub enum Answer {
    /// Let the real syscall run.
    Continue,
    /// Fail with this errno.
    Errno(i32),
    /// Write these bytes to target memory, then return `ret`.
    Return {
        writes: Vec<(u64, Vec<u8>)>,
        ret: i64,
    },
    /// Install a file with `content` as a new fd; return its number.
    File { content: Vec<u8>, cloexec: bool },
    /// Install the read end of an endless random byte stream as a new fd.
    RandomDevice {
        stream: Box<ChaCha20Rng>,
        cloexec: bool,
        nonblock: bool,
    },
    /// Replace the connecting socket with one connected to `to`; return 0.
    Redirect { to: Destination },
}

/// State to apply once the target has accepted an answer.
#[derive(Debug)]
pub enum Commit {
    None,
    Random {
        id: StreamId,
        state: Box<ChaCha20Rng>,
    },
    ClockRead {
        thread: ThreadKey,
    },
    DeviceOpened {
        process: u32,
    },
    Connected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThreadKey {
    process: u32,
    thread: u32,
}

/// One world: every process and thread of one supervised run.
pub struct World {
    cfg: WorldConfig,
    streams: Streams,
    clock: Clock,
    names: Names,
    processes: HashMap<i32, u32>,
    threads: HashMap<i32, ThreadKey>,
    threads_per_process: HashMap<u32, u32>,
    clock_reads: HashMap<ThreadKey, u64>,
    device_opens: HashMap<u32, u32>,
    connections: usize,
}

impl World {
    pub fn new(cfg: WorldConfig) -> World {
        World {
            streams: Streams::new(cfg.key),
            clock: Clock::new(cfg.clock_start),
            cfg,
            names: Names::default(),
            processes: HashMap::new(),
            threads: HashMap::new(),
            threads_per_process: HashMap::new(),
            clock_reads: HashMap::new(),
            device_opens: HashMap::new(),
            connections: 0,
        }
    }

    /// Locks a shared world. A panic elsewhere while holding the lock
    /// leaves the world as consistent as any answer left it (state only
    /// changes in `commit`), so a poisoned lock is still used.
    pub fn lock(w: &std::sync::Mutex<World>) -> std::sync::MutexGuard<'_, World> {
        w.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers processes and threads in order of first appearance: that
    /// order, not the kernel's ids, keys their streams and clocks.
    fn thread_key(&mut self, c: Caller) -> ThreadKey {
        if let Some(k) = self.threads.get(&c.tid) {
            return *k;
        }
        let next = u32::try_from(self.processes.len()).unwrap_or(u32::MAX);
        let process = *self.processes.entry(c.tgid).or_insert(next);
        let count = self.threads_per_process.entry(process).or_insert(0);
        let key = ThreadKey {
            process,
            thread: *count,
        };
        *count += 1;
        self.threads.insert(c.tid, key);
        key
    }

    /// Decides the answer to one request. Nothing changes until the
    /// returned [`Commit`] is applied.
    pub fn decide(&mut self, caller: Caller, req: &Request) -> (Answer, Commit) {
        let key = self.thread_key(caller);
        match *req {
            Request::Getrandom { buf, len, flags } => {
                let len = usize::try_from(len)
                    .unwrap_or(usize::MAX)
                    .min(MAX_GETRANDOM);
                let id = StreamId::Thread {
                    process: key.process,
                    thread: key.thread,
                    // Unknown high bits would fail in the kernel; keep the
                    // low byte, where every defined flag lives.
                    flags: (flags & 0xff) as u8,
                };
                let (bytes, state) = self.streams.draw(id, len);
                // `len` is at most MAX_GETRANDOM, far below i64::MAX.
                let ret = i64::try_from(len).unwrap_or(0);
                (
                    Answer::Return {
                        writes: vec![(buf, bytes)],
                        ret,
                    },
                    Commit::Random {
                        id,
                        state: Box::new(state),
                    },
                )
            }
            Request::ClockGettime { clock, ts } => match classify(clock) {
                Ok(kind) => {
                    let t = self.read_clock(key, kind);
                    (
                        Answer::Return {
                            writes: vec![(ts, timespec(t))],
                            ret: 0,
                        },
                        Commit::ClockRead { thread: key },
                    )
                }
                Err(Unfaked::PassThrough) => (Answer::Continue, Commit::None),
                Err(Unfaked::Invalid) => (Answer::Errno(EINVAL), Commit::None),
            },
            Request::ClockGetres { clock, res } => match classify(clock) {
                Ok(_) => {
                    let one_ns = timespec(Timestamp { secs: 0, nanos: 1 });
                    let writes = if res == 0 {
                        vec![]
                    } else {
                        vec![(res, one_ns)]
                    };
                    (Answer::Return { writes, ret: 0 }, Commit::None)
                }
                Err(Unfaked::PassThrough) => (Answer::Continue, Commit::None),
                Err(Unfaked::Invalid) => (Answer::Errno(EINVAL), Commit::None),
            },
            Request::Gettimeofday { tv, tz } => {
                let t = self.read_clock(key, ClockKind::Wall);
                let mut writes = Vec::new();
                if tv != 0 {
                    let mut b = t.secs.to_ne_bytes().to_vec();
                    b.extend_from_slice(&i64::from(t.nanos / 1000).to_ne_bytes());
                    writes.push((tv, b));
                }
                if tz != 0 {
                    writes.push((tz, vec![0; 8])); // struct timezone: UTC, no DST
                }
                (
                    Answer::Return { writes, ret: 0 },
                    Commit::ClockRead { thread: key },
                )
            }
            Request::Time { tloc } => {
                let t = self.read_clock(key, ClockKind::Wall);
                let writes = if tloc == 0 {
                    vec![]
                } else {
                    vec![(tloc, t.secs.to_ne_bytes().to_vec())]
                };
                (
                    Answer::Return {
                        writes,
                        ret: t.secs,
                    },
                    Commit::ClockRead { thread: key },
                )
            }
            Request::Open { ref path, flags } => self.open(key, path, flags),
            // ENOSYS, as on a kernel without them: programs fall back to
            // `openat` and plain syscalls, which the world does see.
            Request::Unavailable => (Answer::Errno(libc::ENOSYS), Commit::None),
            Request::Connect {
                ref addr,
                sock_type,
            } => self.connect(addr, sock_type),
        }
    }

    fn read_clock(&self, key: ThreadKey, kind: ClockKind) -> Timestamp {
        let readings = self.clock_reads.get(&key).copied().unwrap_or(0);
        self.clock.read(kind, readings)
    }

    fn open(&mut self, key: ThreadKey, path: &[u8], flags: i32) -> (Answer, Commit) {
        let cloexec = flags & O_CLOEXEC != 0;
        let read_only = flags & O_ACCMODE == 0;
        if path == b"/dev/urandom" || path == b"/dev/random" {
            if !read_only {
                return (Answer::Continue, Commit::None);
            }
            let open = self.device_opens.get(&key.process).copied().unwrap_or(0);
            let stream = Box::new(self.streams.fresh(StreamId::Device {
                process: key.process,
                open,
            }));
            let nonblock = flags & O_NONBLOCK != 0;
            return (
                Answer::RandomDevice {
                    stream,
                    cloexec,
                    nonblock,
                },
                Commit::DeviceOpened {
                    process: key.process,
                },
            );
        }
        if self.cfg.scope == Scope::Local {
            return (Answer::Continue, Commit::None);
        }
        let content = match path {
            b"/etc/resolv.conf" => names::RESOLV_CONF,
            b"/etc/nsswitch.conf" => names::NSSWITCH_CONF,
            b"/etc/hosts" => names::HOSTS,
            // Files whose host copies would change lookup behaviour: absent.
            b"/etc/host.conf" | b"/etc/gai.conf" | b"/etc/localtime" => {
                return (Answer::Errno(ENOENT), Commit::None)
            }
            _ => return (Answer::Continue, Commit::None),
        };
        if !read_only {
            return (Answer::Errno(EACCES), Commit::None);
        }
        (
            Answer::File {
                content: content.as_bytes().to_vec(),
                cloexec,
            },
            Commit::None,
        )
    }

    fn connect(&mut self, addr: &SockAddr, sock_type: SockType) -> (Answer, Commit) {
        if self.cfg.scope == Scope::Local {
            return (Answer::Continue, Commit::None);
        }
        match (addr, sock_type) {
            (SockAddr::Inet(a), SockType::Stream) => {
                let to = if Names::is_nameserver(*a) {
                    return (
                        Answer::Redirect {
                            to: Destination::Nameserver,
                        },
                        Commit::None,
                    );
                } else {
                    let host = match self.names.name_of(a.ip()) {
                        Some(name) => name.to_owned(),
                        None => a.ip().to_string(),
                    };
                    Destination::Server {
                        index: self.connections,
                        host,
                        port: a.port(),
                    }
                };
                (Answer::Redirect { to }, Commit::Connected)
            }
            // UDP: glibc connects datagram sockets only to sort addresses
            // (RFC 6724); make that fail the same way everywhere.
            (SockAddr::Inet(_), _) => (Answer::Errno(ENETUNREACH), Commit::None),
            // nscd and other local daemons: as if none were running.
            (SockAddr::Unix, _) => (Answer::Errno(ENOENT), Commit::None),
            (SockAddr::Other(_), _) => (Answer::Continue, Commit::None),
        }
    }

    /// Applies the state change of an answer the target accepted.
    pub fn commit(&mut self, c: Commit) {
        match c {
            Commit::None => {}
            Commit::Random { id, state } => self.streams.commit(id, *state),
            Commit::ClockRead { thread } => *self.clock_reads.entry(thread).or_insert(0) += 1,
            Commit::DeviceOpened { process } => *self.device_opens.entry(process).or_insert(0) += 1,
            Commit::Connected => self.connections += 1,
        }
    }

    /// Answers one DNS query sent to the world's nameserver.
    pub fn answer_dns(&mut self, query: &[u8]) -> Option<Vec<u8>> {
        self.names.answer(query)
    }
}

/// `struct timespec` as x86_64 lays it out: two native i64s.
fn timespec(t: Timestamp) -> Vec<u8> {
    let mut b = t.secs.to_ne_bytes().to_vec();
    b.extend_from_slice(&i64::from(t.nanos).to_ne_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(scope: Scope) -> World {
        World::new(WorldConfig {
            key: [3; 32],
            clock_start: Timestamp {
                secs: 1_000_000,
                nanos: 0,
            },
            scope,
        })
    }

    const MAIN: Caller = Caller {
        tid: 500,
        tgid: 500,
    };

    fn random(w: &mut World, c: Caller) -> Vec<u8> {
        random_with(w, c, 0)
    }

    fn random_with(w: &mut World, c: Caller, flags: u32) -> Vec<u8> {
        let (a, commit) = w.decide(
            c,
            &Request::Getrandom {
                buf: 0x1000,
                len: 8,
                flags,
            },
        );
        w.commit(commit);
        match a {
            Answer::Return { mut writes, ret: 8 } => writes.remove(0).1,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// What libc draws with GRND_NONBLOCK at start-up does not move the
    /// bytes a TLS stack draws with no flags.
    #[test]
    fn consumers_with_other_flags_do_not_shift_each_other() {
        const GRND_NONBLOCK: u32 = 1;
        let mut quiet_libc = world(Scope::Local);
        let mut busy_libc = world(Scope::Local);
        random_with(&mut quiet_libc, MAIN, GRND_NONBLOCK);
        for _ in 0..3 {
            random_with(&mut busy_libc, MAIN, GRND_NONBLOCK);
        }
        assert_eq!(random(&mut quiet_libc, MAIN), random(&mut busy_libc, MAIN));
        assert_ne!(
            random_with(&mut world(Scope::Local), MAIN, GRND_NONBLOCK),
            random(&mut world(Scope::Local), MAIN)
        );
    }

    #[test]
    fn same_key_same_bytes_whatever_the_kernel_ids() {
        let mut a = world(Scope::Local);
        let mut b = world(Scope::Local);
        assert_eq!(
            random(&mut a, MAIN),
            random(
                &mut b,
                Caller {
                    tid: 9000,
                    tgid: 9000
                }
            )
        );
        // A second thread of the same process gets its own stream.
        let t2 = Caller {
            tid: 501,
            tgid: 500,
        };
        assert_ne!(random(&mut a, t2), random(&mut a, MAIN));
    }

    #[test]
    fn clock_advances_only_on_commit() {
        let mut w = world(Scope::Local);
        let req = Request::Time { tloc: 0 };
        let (first, _) = w.decide(MAIN, &req);
        let (again, commit) = w.decide(MAIN, &req);
        assert!(matches!(
            (&first, &again),
            (
                Answer::Return { ret: 1_000_000, .. },
                Answer::Return { ret: 1_000_000, .. }
            )
        ));
        w.commit(commit);
        for _ in 0..999 {
            let (_, c) = w.decide(MAIN, &req);
            w.commit(c);
        }
        assert!(matches!(
            w.decide(MAIN, &req).0,
            Answer::Return { ret: 1_000_001, .. }
        ));
    }

    #[test]
    fn connections_route_by_name_and_count() {
        let mut w = world(Scope::Networked);
        let addr = w.names.address_of("example.test");
        let req = Request::Connect {
            addr: SockAddr::Inet(SocketAddr::new(addr.into(), 443)),
            sock_type: SockType::Stream,
        };
        let (a, c) = w.decide(MAIN, &req);
        w.commit(c);
        let want = Destination::Server {
            index: 0,
            host: "example.test".into(),
            port: 443,
        };
        assert!(matches!(a, Answer::Redirect { to } if to == want));
        let lit = Request::Connect {
            addr: SockAddr::Inet("127.0.0.1:8443".parse().unwrap()),
            sock_type: SockType::Stream,
        };
        let (a, _) = w.decide(MAIN, &lit);
        let want = Destination::Server {
            index: 1,
            host: "127.0.0.1".into(),
            port: 8443,
        };
        assert!(matches!(a, Answer::Redirect { to } if to == want));
        let udp = Request::Connect {
            addr: SockAddr::Inet("1.2.3.4:53".parse().unwrap()),
            sock_type: SockType::Datagram,
        };
        assert!(matches!(w.decide(MAIN, &udp).0, Answer::Errno(ENETUNREACH)));
        assert!(matches!(
            world(Scope::Local).decide(MAIN, &lit).0,
            Answer::Continue
        ));
    }

    #[test]
    fn name_files_are_served_only_when_networked() {
        let open = |w: &mut World, p: &str| {
            w.decide(
                MAIN,
                &Request::Open {
                    path: p.as_bytes().to_vec(),
                    flags: O_CLOEXEC,
                },
            )
            .0
        };
        let mut net = world(Scope::Networked);
        assert!(matches!(
            open(&mut net, "/etc/resolv.conf"),
            Answer::File { cloexec: true, .. }
        ));
        assert!(matches!(
            open(&mut net, "/etc/gai.conf"),
            Answer::Errno(ENOENT)
        ));
        assert!(matches!(open(&mut net, "/etc/passwd"), Answer::Continue));
        let mut local = world(Scope::Local);
        assert!(matches!(
            open(&mut local, "/etc/resolv.conf"),
            Answer::Continue
        ));
        assert!(matches!(
            open(&mut local, "/dev/urandom"),
            Answer::RandomDevice { .. }
        ));
    }
}
