//! The state directory's files: this user's only, never reached through a link, and
//! never blocking an open (a FIFO planted there cannot hang tether).

use std::fs::{DirBuilder, File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Open without following a symbolic link at the path (the open fails, see
/// [`is_link`]) and without blocking on a FIFO.
pub fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
}

/// Open without blocking on a FIFO (links are followed: for files the user names).
pub fn never_blocks(options: &mut OpenOptions) -> &mut OpenOptions {
    options.custom_flags(libc::O_NONBLOCK)
}

/// A file created by this open is readable and writable by this user only (0600).
pub fn only_mine(options: &mut OpenOptions) -> &mut OpenOptions {
    options.mode(0o600)
}

/// Whether an open failed because the path is a symbolic link ([`no_follow`]).
pub fn is_link(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// Make an open file readable and writable by this user only, if it is not already
/// (a mode given at creation is filtered by the umask, and ignored for a file that
/// existed).
pub fn restrict(file: &File) -> io::Result<()> {
    let meta = file.metadata()?;
    if meta.mode() & 0o777 != 0o600 {
        file.set_permissions(Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Create `dir` and its missing parents, readable by this user only (0700).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Make a directory of this user's readable by this user only (0700), if it is not
/// already (one an older tether created 0755, say); another user's is left alone.
pub fn restrict_dir(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.is_dir() && meta.uid() == super::current_uid() && meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The uid owning a file.
pub fn owner(meta: &Metadata) -> u32 {
    meta.uid()
}

/// Whether group or others may write to it.
pub fn writable_by_others(meta: &Metadata) -> bool {
    meta.mode() & 0o022 != 0
}

/// Its permission bits, for a message (`0755`).
pub fn mode(meta: &Metadata) -> u32 {
    meta.mode() & 0o7777
}

/// Whether it has exactly one hard link (no second name elsewhere to write through).
pub fn single_link(meta: &Metadata) -> bool {
    meta.nlink() == 1
}

/// Whether two files are one (same device and inode).
pub fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Read `data` at `offset` of `file` without moving its cursor.
pub fn read_at(file: &File, data: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    file.read_at(data, offset)
}

/// Write all of `data` at `offset` of `file` without moving its cursor.
pub fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, offset)
}

/// Make the entries of `dir` durable (a rename in it, say): fsync of the directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
