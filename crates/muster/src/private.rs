//! Everything the hub writes is its owner's alone: files 0600 and
//! directories 0700, whatever the umask it was started with.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Makes every file this process creates from now on private (umask 077)
/// and returns the mask it had, for the processes it starts.
pub fn private_umask() -> u32 {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) as u32 }
}

/// Takes the group's and others' permissions off `dir` and everything under
/// it (never following a symbolic link); returns how many entries changed.
pub fn tighten(dir: &Path) -> io::Result<usize> {
    let mut changed = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Gone since it was listed (a rotated log, a finished backup).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700))?;
            changed += 1;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tighten_takes_group_and_other_bits_off_everything_but_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("logs")).unwrap();
        std::fs::write(root.join("muster.db"), "x").unwrap();
        std::fs::write(root.join("logs/muster.log"), "x").unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        for (p, m) in [(root.to_owned(), 0o755), (root.join("logs"), 0o777), (root.join("muster.db"), 0o644)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
        }
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(root.join("logs/muster.log"), std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(tighten(root).unwrap(), 4);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(root), 0o700);
        assert_eq!(mode(&root.join("logs")), 0o700);
        assert_eq!(mode(&root.join("muster.db")), 0o600);
        assert_eq!(mode(&root.join("logs/muster.log")), 0o600);
        assert_eq!(mode(outside.path()), 0o644, "a link's target is not ours to change");
        assert_eq!(tighten(root).unwrap(), 0, "a second pass finds nothing");
    }
}
