//! Reading and writing a target's memory, and what a target's fd is.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

use crate::sys;

pub fn read_mem(tid: i32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let len = buf.len();
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let n = process_vm_readv(Pid::from_raw(tid), &mut [IoSliceMut::new(buf)], &remote)?;
    if n != len {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(())
}

pub fn write_mem(tid: i32, addr: u64, data: &[u8]) -> io::Result<()> {
    let remote = [RemoteIoVec {
        base: addr as usize,
        len: data.len(),
    }];
    let n = process_vm_writev(Pid::from_raw(tid), &[IoSlice::new(data)], &remote)?;
    if n != data.len() {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(())
}

/// Reads a NUL-terminated string of at most PATH_MAX bytes, one page at a
/// time so a string ending just before an unmapped page still reads.
pub fn read_cstring(tid: i32, addr: u64) -> io::Result<Vec<u8>> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let chunk = (PAGE - at % PAGE) as usize;
        let mut buf = vec![0u8; chunk];
        read_mem(tid, at, &mut buf)?;
        if let Some(end) = buf.iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&buf);
        at += chunk as u64;
    }
    Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG))
}

/// A duplicate of fd `fd` of process `tgid` (pidfd_getfd, Linux 5.6).
pub fn target_fd(tgid: i32, fd: i32) -> io::Result<OwnedFd> {
    let pidfd = sys::pidfd_open(tgid)?;
    sys::pidfd_getfd(pidfd.as_fd(), fd)
}

/// SO_TYPE of a socket.
pub fn socket_type(sock: &OwnedFd) -> io::Result<nix::sys::socket::SockType> {
    Ok(getsockopt(sock, sockopt::SockType)?)
}
