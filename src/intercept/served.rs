//! What the world serves as files, made ready for any backend to hand to a
//! target: a memfd holding a file's content, a pipe fed from a random
//! device's stream.

use std::io::{self, Write};
use std::os::fd::OwnedFd;

/// A memfd holding `content`, read from its start.
pub fn memfd_with(content: &[u8]) -> io::Result<OwnedFd> {
    use std::io::Seek;
    let fd = nix::sys::memfd::memfd_create(
        c"tlsign-world",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    let mut f = std::fs::File::from(fd);
    f.write_all(content)?;
    f.rewind()?;
    Ok(f.into())
}

/// The read end of a pipe fed from a random device's `stream` until every
/// reader has closed it; `nonblock` sets O_NONBLOCK on that end.
pub fn random_device(stream: rand_chacha::ChaCha20Rng, nonblock: bool) -> io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    if nonblock {
        fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&read),
            FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
        )?;
    }
    feed(write, stream)?;
    Ok(read)
}

/// Feeds one random device's stream into a pipe until the reader closes it.
fn feed(write: OwnedFd, mut stream: rand_chacha::ChaCha20Rng) -> io::Result<()> {
    use rand_core::RngCore;
    let mut pipe = std::fs::File::from(write);
    // Fill the pipe before the reader can look, so its first reads are
    // whole whatever the scheduler does. 64 KiB is the default pipe
    // capacity: this write cannot block.
    let mut block = vec![0u8; 64 * 1024];
    stream.fill_bytes(&mut block);
    pipe.write_all(&block)?;
    // The rest on a detached thread, until the reader closes its end.
    std::thread::Builder::new()
        .name("random-device".into())
        .spawn(move || loop {
            stream.fill_bytes(&mut block);
            if pipe.write_all(&block).is_err() {
                return;
            }
        })?;
    Ok(())
}
