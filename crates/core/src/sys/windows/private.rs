//! The state directory's files: this user's only. On Windows that is the directory's
//! ACL: [`create_dir`] and [`restrict_dir`] give it a protected DACL (no inherited
//! entries) that grants this user alone full control, inherited by every file and
//! directory made in it (`D:P(A;OICI;FA;;;<SID>)`, `SetFileSecurityW`). Files then need
//! no mode of their own, a file's owner is not checked again (another user cannot create
//! one there), and links are not refused (making one takes a privilege, and only inside a
//! directory the user can write).

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::windows::fs::{FileExt, MetadataExt};
use std::path::Path;

/// Opens as given (see the module: the directory's ACL keeps others out).
pub fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    options
}

/// Opens as given: Windows has no FIFO a plain open could block on.
pub fn never_blocks(options: &mut OpenOptions) -> &mut OpenOptions {
    options
}

/// A file created by this open takes the directory's ACL (this user only).
pub fn only_mine(options: &mut OpenOptions) -> &mut OpenOptions {
    options
}

/// Never: links are not refused on Windows (see the module).
pub fn is_link(_e: &io::Error) -> bool {
    false
}

/// Nothing to do: the file has the directory's ACL.
pub fn restrict(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Create `dir` and its missing parents, and make it this user's only.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    restrict_dir(dir)
}

/// Give `dir` a protected ACL that grants this user alone full control, inherited by
/// what is made in it.
pub fn restrict_dir(dir: &Path) -> io::Result<()> {
    use std::os::windows::ffi::OsStrExt;
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Authorization::{
        ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
    };
    use windows_sys::Win32::Security::{DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, SetFileSecurityW};
    let sid = super::current_sid_string().ok_or_else(|| io::Error::other("cannot read this user's SID"))?;
    let sddl: Vec<u16> = format!("D:P(A;OICI;FA;;;{sid})").encode_utf16().chain([0]).collect();
    let path: Vec<u16> = dir.as_os_str().encode_wide().chain([0]).collect();
    // SAFETY: both strings are NUL-terminated; the descriptor the first call allocates is
    // freed with LocalFree as its documentation requires.
    unsafe {
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        if ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        ) == 0
        {
            return Err(io::Error::last_os_error());
        }
        let ok = SetFileSecurityW(path.as_ptr(), DACL_SECURITY_INFORMATION, sd) != 0;
        let err = io::Error::last_os_error();
        LocalFree(sd);
        if ok { Ok(()) } else { Err(err) }
    }
}

/// This user: the directory's ACL admits no other (see the module).
pub fn owner(_meta: &Metadata) -> u32 {
    super::current_uid()
}

/// Never, inside a directory [`restrict_dir`] made this user's only.
pub fn writable_by_others(_meta: &Metadata) -> bool {
    false
}

/// Windows has no mode bits: 0.
pub fn mode(_meta: &Metadata) -> u32 {
    0
}

/// Always: hard links are not counted here (std does not tell on stable).
pub fn single_link(_meta: &Metadata) -> bool {
    true
}

/// Whether two metadata describe the same file: same kind and creation time (100 ns).
pub fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.file_type() == b.file_type() && a.creation_time() == b.creation_time() && a.creation_time() != 0
}

/// Read into `data` at `offset`.
pub fn read_at(file: &File, data: &mut [u8], offset: u64) -> io::Result<usize> {
    file.seek_read(data, offset)
}

/// Write all of `data` at `offset`.
pub fn write_all_at(file: &File, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    while !data.is_empty() {
        let n = file.seek_write(data, offset)?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        data = data.get(n..).unwrap_or_default();
        offset += n as u64;
    }
    Ok(())
}

/// Nothing to do: NTFS journals a rename itself, and a directory cannot be opened as a file
/// to flush it (without `FILE_FLAG_BACKUP_SEMANTICS`).
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}
