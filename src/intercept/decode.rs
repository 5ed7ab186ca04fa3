//! From a raw syscall (number and six arguments, as every backend sees it)
//! to the world's [`Request`], reading whatever target memory that needs.
//! Shared by every backend, so they all put the same questions to the world.

use std::io;

use super::mem;
use crate::world::{Request, SockAddr, SockType};

/// What one intercepted syscall turned out to be.
pub enum Decoded {
    /// A question for the world.
    Request(Request),
    /// The first syscall of a new image (`brk(NULL)`): time to patch the vDSO.
    NewImage,
    /// Not the world's business (a relative path, a kernel-side error):
    /// let the real syscall run.
    Continue,
    /// Answer with this errno, as the kernel would for a bad argument.
    Errno(i32),
    /// The supervisor could not tell what is being connected: the caller
    /// must fail closed.
    Unknown(io::Error),
}

/// Decodes syscall `nr` of thread `tid` (of process `tgid`).
pub fn decode(nr: i64, a: [u64; 6], tid: i32, tgid: impl FnOnce() -> io::Result<i32>) -> Decoded {
    Decoded::Request(match nr {
        libc::SYS_brk if a[0] == 0 => return Decoded::NewImage,
        libc::SYS_getrandom => Request::Getrandom {
            buf: a[0],
            len: a[1],
            flags: a[2] as u32,
        },
        libc::SYS_clock_gettime => Request::ClockGettime {
            clock: a[0] as i32,
            ts: a[1],
        },
        libc::SYS_clock_getres => Request::ClockGetres {
            clock: a[0] as i32,
            res: a[1],
        },
        libc::SYS_gettimeofday => Request::Gettimeofday { tv: a[0], tz: a[1] },
        libc::SYS_time => Request::Time { tloc: a[0] },
        libc::SYS_open | libc::SYS_openat => {
            let (path_ptr, flags) = if nr == libc::SYS_open {
                (a[0], a[1])
            } else {
                (a[1], a[2])
            };
            match mem::read_cstring(tid, path_ptr) {
                // Relative paths never name the files the world serves.
                Ok(p) if p.first() == Some(&b'/') => Request::Open {
                    path: p,
                    flags: flags as i32,
                },
                _ => return Decoded::Continue,
            }
        }
        libc::SYS_connect => return decode_connect(tid, a, tgid),
        libc::SYS_openat2 | libc::SYS_io_uring_setup => Request::Unavailable,
        _ => return Decoded::Continue,
    })
}

fn decode_connect(tid: i32, a: [u64; 6], tgid: impl FnOnce() -> io::Result<i32>) -> Decoded {
    // Like the kernel: an address too short for its family, or unreadable,
    // fails the call; the world only sees well-formed requests.
    let Ok(len) = usize::try_from(a[2]) else {
        return Decoded::Errno(libc::EINVAL);
    };
    let mut raw = vec![0u8; len.min(128)];
    if raw.len() < 2 {
        return Decoded::Errno(libc::EINVAL);
    }
    if mem::read_mem(tid, a[1], &mut raw).is_err() {
        return Decoded::Errno(libc::EFAULT);
    }
    let family = i32::from(u16::from_ne_bytes([raw[0], raw[1]]));
    let addr = match family {
        libc::AF_INET if raw.len() >= 8 => {
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let ip = std::net::Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            SockAddr::Inet((ip, port).into())
        }
        libc::AF_INET6 if raw.len() >= 24 => {
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&raw[8..24]);
            SockAddr::Inet((std::net::Ipv6Addr::from(octets), port).into())
        }
        libc::AF_INET | libc::AF_INET6 => return Decoded::Errno(libc::EINVAL),
        libc::AF_UNIX => SockAddr::Unix,
        other => SockAddr::Other(other),
    };
    let sock_type = match addr {
        SockAddr::Inet(_) => {
            let ty = tgid()
                .and_then(|tgid| mem::target_fd(tgid, a[0] as i32))
                .and_then(|fd| mem::socket_type(&fd));
            match ty {
                Ok(nix::sys::socket::SockType::Stream) => SockType::Stream,
                Ok(nix::sys::socket::SockType::Datagram) => SockType::Datagram,
                Ok(_) => SockType::Other,
                // Not a socket, or no such fd: the kernel fails the call.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSOCK) | Some(libc::EBADF)) => {
                    return Decoded::Continue
                }
                Err(e) => {
                    return Decoded::Unknown(io::Error::new(
                        e.kind(),
                        format!("cannot examine the socket being connected: {e}"),
                    ))
                }
            }
        }
        _ => SockType::Other,
    };
    Decoded::Request(Request::Connect { addr, sock_type })
}

pub fn syscall_name(nr: i64) -> &'static str {
    match nr {
        libc::SYS_brk => "brk",
        libc::SYS_getrandom => "getrandom",
        libc::SYS_clock_gettime => "clock_gettime",
        libc::SYS_clock_getres => "clock_getres",
        libc::SYS_gettimeofday => "gettimeofday",
        libc::SYS_time => "time",
        libc::SYS_open => "open",
        libc::SYS_openat => "openat",
        libc::SYS_connect => "connect",
        libc::SYS_openat2 => "openat2",
        libc::SYS_io_uring_setup => "io_uring_setup",
        _ => "syscall",
    }
}
