//! Starting a program under the filter.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, Command};

use nix::sys::socket::{
    recv, recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

use crate::sys;

/// The environment every supervised program starts with, whatever the
/// caller's: variables change behaviour (locale, time zone, proxies), and
/// two machines never agree on them.
pub const MINIMAL_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("HOME", "/"),
    ("LANG", "C"),
    ("LC_ALL", "C"),
    ("TZ", "UTC"),
    // RDRAND/RDSEED are instructions no filter sees: tell OpenSSL (bit 62
    // of the first word, bit 18 of the third) and systemd not to use them.
    ("OPENSSL_ia32cap", "~0x4000000000000000:0:~0x40000"),
    ("SYSTEMD_RDRAND", "0"),
];

/// The seccomp listener of one supervised program.
pub struct Listener {
    pub fd: OwnedFd,
    /// Signals wait for answers (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV).
    pub killable: bool,
    /// Synchronous wake-ups are on (Linux 6.6+).
    pub sync_wakeup: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("cannot set up the seccomp listener: {0}")]
    Listener(io::Error),
    /// The supervisor could not prepare (filter, vDSO patch, thread).
    #[error("{0}")]
    Setup(String),
    #[error("the kernel refused the seccomp user-notification filter ({0}); tlsign-seccomp needs Linux 5.14 or newer with seccomp enabled, and no outer filter that blocks seccomp()")]
    FilterRefused(io::Error),
}

/// Spawns `cmd` with ASLR off, no_new_privs, and `filter` installed with a
/// listener, which is returned. The caller sets the environment and stdio.
pub fn spawn(
    cmd: &mut Command,
    filter: Vec<libc::sock_filter>,
) -> Result<(Child, Listener), SpawnError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| SpawnError::Listener(e.into()))?;
    sys::install_filter_before_exec(cmd, filter, theirs.as_raw_fd());
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(source) => {
            // A failed pre-exec step and a failed exec look alike from here:
            // the child says which it was.
            let mut tag = [0u8; 1];
            let refused = recv(ours.as_raw_fd(), &mut tag, MsgFlags::MSG_DONTWAIT)
                .is_ok_and(|n| n == 1 && tag[0] == sys::FILTER_REFUSED);
            return Err(if refused {
                SpawnError::FilterRefused(source)
            } else {
                SpawnError::Spawn { program, source }
            });
        }
    };
    drop(theirs);
    let (fd, killable) = receive_listener(&ours).map_err(SpawnError::Listener)?;
    let sync_wakeup = sys::notif_set_sync_wakeup(fd.as_fd()).is_ok();
    Ok((
        child,
        Listener {
            fd,
            killable,
            sync_wakeup,
        },
    ))
}

fn receive_listener(sock: &OwnedFd) -> io::Result<(OwnedFd, bool)> {
    let mut tag = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut tag)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                let fd = sys::own_received_fd(fd);
                return Ok((fd, tag[0] == sys::LISTENER_KILLABLE));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the child sent no listener (did exec fail before the filter was installed?)",
    ))
}
