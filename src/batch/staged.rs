//! A transcript on its way into DIR: written first, given its name only
//! once its manifest line is durable (see `sign`'s module doc).
//!
//! Where the file system allows it, the file is created without a name
//! (`O_TMPFILE`) and linked into DIR at the end (`linkat`). A batch killed
//! in between, by `kill -9`, the OOM killer or a power cut, then leaves
//! nothing behind: an unnamed file is freed with its last descriptor, or
//! by the file system's recovery. Elsewhere (file systems without
//! `O_TMPFILE`, or no /proc to link through) it is written as `.NAME.tmp`
//! and renamed, and such a batch leaves that file, which the next signing
//! of the URL overwrites.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How a batch stages its transcripts, decided once per batch by
/// [`Staging::probe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staging {
    /// Unnamed files, linked into place.
    Unnamed,
    /// `.NAME.tmp`, renamed into place.
    Named,
}

/// A file written in DIR but not yet under its name.
pub struct Staged {
    dir: PathBuf,
    name: String,
    kind: Kind,
}

enum Kind {
    /// Kept open: the file lives only as long as this descriptor until it
    /// is linked.
    Unnamed(File),
    Named(PathBuf),
}

impl Staging {
    /// Unnamed files if `dir` takes them and one can be linked there;
    /// else named ones. Costs one file created and removed.
    pub fn probe(dir: &Path) -> Staging {
        let Ok(f) = open_unnamed(dir) else {
            return Staging::Named;
        };
        let probe = dir.join(format!(".staging-probe-{}", std::process::id()));
        // A leftover of a killed batch that had our pid.
        let _ = std::fs::remove_file(&probe);
        let linked = link(&f, &probe).is_ok();
        let _ = std::fs::remove_file(&probe);
        if linked {
            Staging::Unnamed
        } else {
            Staging::Named
        }
    }

    /// Writes `bytes` as the future `dir/name`, not yet visible there.
    /// Not synced: the manifest's group commit syncs the file system.
    pub fn write(self, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<Staged> {
        let kind = match self {
            Staging::Unnamed => {
                let mut f = open_unnamed(dir)?;
                f.write_all(bytes)?;
                Kind::Unnamed(f)
            }
            Staging::Named => {
                let tmp = dir.join(format!(".{name}.tmp"));
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o666)
                    .open(&tmp)
                    .and_then(|mut f| f.write_all(bytes));
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
                Kind::Named(tmp)
            }
        };
        Ok(Staged {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            kind,
        })
    }
}

impl Staged {
    /// Gives the file its name, replacing any file of that name. An error
    /// names the path.
    pub fn persist(self) -> io::Result<()> {
        let to = self.dir.join(&self.name);
        let at = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", to.display()));
        let r = match self.kind {
            Kind::Named(tmp) => std::fs::rename(&tmp, &to).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            }),
            Kind::Unnamed(f) => match link(&f, &to) {
                // linkat never replaces: a file of that name appeared
                // since the batch looked (made by hand, say). Linked under
                // a name of its own first, then renamed over it, as
                // `rename` would have done.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let tmp = self.dir.join(format!(".{}.tmp", self.name));
                    let _ = std::fs::remove_file(&tmp);
                    link(&f, &tmp)?;
                    std::fs::rename(&tmp, &to).inspect_err(|_| {
                        let _ = std::fs::remove_file(&tmp);
                    })
                }
                r => r,
            },
        };
        r.map_err(at)
    }

    /// Drops the file: its line was not written.
    pub fn discard(self) {
        if let Kind::Named(tmp) = self.kind {
            let _ = std::fs::remove_file(tmp);
        }
        // An unnamed file goes with its descriptor.
    }
}

fn open_unnamed(dir: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o666)
        .open(dir)
}

/// Links the unnamed file `f` at `to`. Through /proc/self/fd, which any
/// user may do; `AT_EMPTY_PATH` would need CAP_DAC_READ_SEARCH.
fn link(f: &File, to: &Path) -> io::Result<()> {
    let from = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    nix::unistd::linkat(
        None,
        from.as_path(),
        None,
        to,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_unnamed_file_is_invisible_until_persisted_and_gone_if_discarded() {
        let d = tempfile::tempdir().unwrap();
        // The tests' temporary directories are on a file system with
        // O_TMPFILE (tmpfs or ext4) and /proc is mounted.
        assert_eq!(Staging::probe(d.path()), Staging::Unnamed);
        assert!(
            names(d.path()).is_empty(),
            "the probe left {:?}",
            names(d.path())
        );
        let a = Staging::Unnamed
            .write(d.path(), "a.tlsign", b"alpha")
            .unwrap();
        let b = Staging::Unnamed
            .write(d.path(), "b.tlsign", b"beta")
            .unwrap();
        assert!(names(d.path()).is_empty(), "{:?}", names(d.path()));
        a.persist().unwrap();
        b.discard();
        assert_eq!(names(d.path()), ["a.tlsign"]);
        assert_eq!(std::fs::read(d.path().join("a.tlsign")).unwrap(), b"alpha");
    }

    #[test]
    fn persisting_replaces_a_file_that_appeared_meanwhile() {
        let d = tempfile::tempdir().unwrap();
        for staging in [Staging::Unnamed, Staging::Named] {
            let to = d.path().join("x.tlsign");
            let s = staging.write(d.path(), "x.tlsign", b"new").unwrap();
            std::fs::write(&to, b"old").unwrap();
            s.persist().unwrap();
            assert_eq!(std::fs::read(&to).unwrap(), b"new", "{staging:?}");
            assert_eq!(names(d.path()), ["x.tlsign"], "{staging:?}");
            std::fs::remove_file(&to).unwrap();
        }
    }

    #[test]
    fn named_staging_uses_a_dot_tmp_file() {
        let d = tempfile::tempdir().unwrap();
        let s = Staging::Named.write(d.path(), "n.tlsign", b"n").unwrap();
        assert_eq!(names(d.path()), [".n.tlsign.tmp"]);
        s.discard();
        assert!(names(d.path()).is_empty());
    }

    #[test]
    fn a_directory_without_o_tmpfile_falls_back_to_named_files() {
        // /proc takes no new files of any kind.
        assert_eq!(Staging::probe(Path::new("/proc")), Staging::Named);
    }
}
