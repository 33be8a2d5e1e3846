//! The Job Object that ties a tree of processes to its owner: created with
//! `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` (so the system ends every process in it when
//! the last handle closes — the owner's, at its end, however it ends) and
//! `JOB_OBJECT_LIMIT_BREAKAWAY_OK` (so a detached guard may still leave it with
//! `CREATE_BREAKAWAY_FROM_JOB`). The owner enters it itself, before it starts anything:
//! every process started afterwards inherits it, with no window in which a grandchild
//! could escape (`AssignProcessToJobObject` of a child after its start has one). uv does
//! the same for `uvx.exe` (`crates/uv-windows/src/job.rs`).
//!
//! Jobs nest (Windows 8 and later): a process already in its host's job enters ours
//! inside it. Reference: "Job Objects" and `JOBOBJECT_EXTENDED_LIMIT_INFORMATION` in the
//! Win32 documentation.

use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::sync::OnceLock;

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, IsProcessInJob, JOB_OBJECT_LIMIT_BREAKAWAY_OK,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, JOBOBJECT_BASIC_PROCESS_ID_LIST, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JobObjectBasicProcessIdList, JobObjectExtendedLimitInformation, QueryInformationJobObject, SetInformationJobObject,
};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

/// This process's own job, once it entered it; its handle is never closed (the system
/// closes it when this process ends, which is the point).
static OWN: OnceLock<Result<OwnedHandle, String>> = OnceLock::new();

/// A new kill-on-close job that allows breakaway.
fn create() -> std::io::Result<OwnedHandle> {
    // SAFETY: CreateJobObjectW returns a new handle (or null) that we own; the limit
    // struct is fully initialised (zeroed, then the flags set) and passed with its size.
    unsafe {
        let h = CreateJobObjectW(std::ptr::null(), std::ptr::null());
        if h.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        let job = OwnedHandle::from_raw_handle(h);
        let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_BREAKAWAY_OK;
        let ok = SetInformationJobObject(
            job.as_raw_handle(),
            JobObjectExtendedLimitInformation,
            (&raw const limits).cast(),
            size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
        );
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(job)
    }
}

/// Put this process in a kill-on-close job of its own (once; later calls return the
/// first one's outcome): everything it starts from now on ends when it ends.
pub fn enter_own_job() -> std::io::Result<()> {
    let own = OWN.get_or_init(|| {
        let job = create().map_err(|e| format!("cannot create a Job Object: {e}"))?;
        // SAFETY: both handles are open; GetCurrentProcess is a pseudo-handle.
        if unsafe { AssignProcessToJobObject(job.as_raw_handle(), GetCurrentProcess()) } == 0 {
            return Err(format!("cannot enter a Job Object of its own: {}", std::io::Error::last_os_error()));
        }
        Ok(job)
    });
    own.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.clone()))
}

/// The job this process entered with [`enter_own_job`], if it did.
pub fn own() -> Option<HANDLE> {
    OWN.get().and_then(|r| r.as_ref().ok()).map(|h| h.as_raw_handle())
}

/// The pids of the processes in this process's own job (none before it entered one).
pub fn own_members() -> Vec<u32> {
    let Some(job) = own() else { return Vec::new() };
    // A list header followed by room for 1023 more ids.
    #[repr(C)]
    struct List {
        head: JOBOBJECT_BASIC_PROCESS_ID_LIST,
        more: [usize; 1023],
    }
    // SAFETY: the struct is plain data, zeroed; the call writes at most its size.
    unsafe {
        let mut list: List = std::mem::zeroed();
        let ok = QueryInformationJobObject(
            job,
            JobObjectBasicProcessIdList,
            (&raw mut list).cast(),
            size_of::<List>() as u32,
            std::ptr::null_mut(),
        );
        if ok == 0 {
            return Vec::new();
        }
        let n = (list.head.NumberOfProcessIdsInList as usize).min(1024);
        let ids = std::slice::from_raw_parts(list.head.ProcessIdList.as_ptr(), n);
        ids.iter().filter_map(|&id| u32::try_from(id).ok()).collect()
    }
}

/// Whether a process other than this one is still in this process's own job.
pub fn others_in_own_job() -> bool {
    let me = std::process::id();
    own_members().iter().any(|&p| p != me)
}

/// Whether this process runs in a job (its host's) that is not its own: a start with
/// `CREATE_BREAKAWAY_FROM_JOB` refused then means that job forbids breakaway.
pub fn in_job_without_breakaway() -> bool {
    let mut inside = 0;
    // SAFETY: a null job handle asks about any job; the call writes one BOOL.
    let ok = unsafe { IsProcessInJob(GetCurrentProcess(), std::ptr::null_mut(), &mut inside) } != 0;
    ok && inside != 0
}
