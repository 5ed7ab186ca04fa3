//! Running the binary as `nobody` (uid/gid 65534, no groups, no
//! capabilities), for the tests that check it needs no privileges.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{bin, is_root, Cmd};

/// The prefix that runs a command as `nobody`.
pub const NOBODY: [&str; 5] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--",
];

/// Whether `nobody` can run the binary, and a reason when not.
pub fn can_drop_privileges() -> Result<(), String> {
    if !is_root() {
        return Err(
            "not root: nothing to drop from (the other tests already run unprivileged)".into(),
        );
    }
    let bin = bin();
    let r = Cmd::new("test").arg("-x").arg(&bin).wrapped(NOBODY).run();
    if r.code != Some(0) {
        return Err(format!(
            "nobody cannot execute {} (a parent directory is private?)",
            bin.display()
        ));
    }
    Ok(())
}

/// Open `dir` to everyone, so `nobody` can read inputs and write outputs.
pub fn open_up(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
}
