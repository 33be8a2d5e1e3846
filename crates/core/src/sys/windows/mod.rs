//! Windows: the Win32 API (through `windows-sys`) answers the interface's questions.
//!
//! - **Processes**: a Toolhelp snapshot lists every process with its parent
//!   (`CreateToolhelp32Snapshot(3)`, `PROCESSENTRY32W`); a process's start time is its
//!   creation time (`GetProcessTimes`, 100 ns units since 1601), so pid + creation time is
//!   its identity. Windows never re-parents: a parent pid whose process started *after* the
//!   child names a stranger that reused the pid, and is reported as no parent (0). The
//!   arguments and the environment a process started with are read from its process
//!   parameters (`NtQueryInformationProcess` → PEB → `RTL_USER_PROCESS_PARAMETERS`, by
//!   `ReadProcessMemory`: [`peb`]) — this user's processes only.
//! - **Process groups**: Windows has console process groups (`CREATE_NEW_PROCESS_GROUP`)
//!   but no call that tells which group a process is in. Every process is reported as
//!   the leader of its own group ([`Stat::pgid`] = its pid); tether starts each backend as
//!   a group leader, so a group signal reaches its console group, and its descendants are
//!   found by parent pid, as everywhere.
//! - **Signals**: there are none. [`Signal::SIGKILL`] is `TerminateProcess`; the others
//!   are a graceful request, `CTRL_BREAK_EVENT` to the process's console group
//!   (`GenerateConsoleCtrlEvent`), which only reaches a group leader sharing this
//!   process's console. Wine does not deliver console control events (see
//!   ../shared/PLATFORMS.md); there, and wherever one cannot be delivered, a stop ends by
//!   the forced path after the grace.
//! - **Owner death**: a Job Object with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` ([`job`]):
//!   the owner puts itself in a job of its own before it starts a backend, the backend
//!   and everything it starts inherit it, and when the owner ends — however it ends — the
//!   system closes its handle and ends them all. A guard does the same for its backend.
//! - **Users**: a user is its SID; [`current_uid`] and [`uid_of`] hash the token's user
//!   SID to a `u32` (FNV-1a), so "the same user" compares as on Unix.
//! - **Ports**: `GetExtendedTcpTable` / IPv6 with `TCP_TABLE_OWNER_PID_LISTENER`
//!   ([`Listeners`]).
//! - **Files**: the state directory gets a protected ACL granting this user alone
//!   ([`private`]); locks are `LockFileEx` (`std::fs::File::lock`).

pub mod guard;
pub(crate) mod job;
mod peb;
pub mod private;
mod sockets;

use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::path::Path;
use std::process::Command;

use windows_sys::Win32::Foundation::{CloseHandle, FILETIME, HANDLE, INVALID_HANDLE_VALUE, STILL_ACTIVE};
use windows_sys::Win32::Security::{GetTokenInformation, TOKEN_ELEVATION, TOKEN_QUERY, TokenElevation, TokenUser};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetExitCodeProcess, GetProcessTimes, OpenProcess, OpenProcessToken,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE, PROCESS_TERMINATE, TerminateProcess,
};

pub use sockets::Listeners;

/// Windows keeps per-user application state under `%LOCALAPPDATA%`: the variable that
/// names the base directory when neither `TETHER_STATE_DIR` nor `XDG_STATE_HOME` says
/// otherwise.
pub const HOME_VAR: &str = "LOCALAPPDATA";

/// Where tether keeps its state under [`HOME_VAR`]: `%LOCALAPPDATA%\tether`.
pub const HOME_STATE_DIR: &str = "tether";

/// The exit code a process ended by [`Signal::SIGKILL`] (`TerminateProcess`) gets: 128 + 9,
/// as a shell reports a SIGKILL on Unix.
pub const KILLED_EXIT_CODE: u32 = 137;

/// A stop request, by its Unix name, so that portable code reads the same everywhere.
/// Windows has no signals: see [`kill`] for what each one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Signal {
    /// A hang-up: a graceful stop (`CTRL_BREAK_EVENT`).
    SIGHUP = 1,
    /// An interrupt: a graceful stop (`CTRL_BREAK_EVENT`).
    SIGINT = 2,
    /// The forced end: `TerminateProcess`.
    SIGKILL = 9,
    /// The owner-death wake of a guard (never sent to another process).
    SIGUSR2 = 12,
    /// A graceful stop (`CTRL_BREAK_EVENT`).
    SIGTERM = 15,
}

/// What the system tells about one live process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Parent process id; 0 when the parent is gone and its pid was reused.
    pub ppid: u32,
    /// The process itself: Windows tells no process's console group (see the module).
    pub pgid: u32,
    /// Creation time, in 100 ns units since 1601 (`GetProcessTimes`).
    pub start_time: u64,
    /// The executable's file name (`szExeFile`).
    pub comm: String,
}

/// A process handle, closed on drop.
struct Process(OwnedHandle);

impl Process {
    fn open(pid: u32, access: u32) -> Option<Process> {
        if pid == 0 {
            return None;
        }
        // SAFETY: OpenProcess returns a new handle (or null), which we own from here on.
        let h = unsafe { OpenProcess(access, 0, pid) };
        // SAFETY: a non-null handle from OpenProcess is ours to close.
        (!h.is_null()).then(|| Process(unsafe { OwnedHandle::from_raw_handle(h) }))
    }

    fn raw(&self) -> HANDLE {
        self.0.as_raw_handle()
    }

    fn running(&self) -> bool {
        running(self.raw())
    }

    fn created(&self) -> Option<u64> {
        created(self.raw())
    }
}

/// Whether the process of an open handle still runs (a handle keeps an ended process's
/// object, like a zombie). An exit code of 259 (`STILL_ACTIVE`) is taken for running.
fn running(h: HANDLE) -> bool {
    let mut code = 0u32;
    // SAFETY: the caller's handle is open; the call writes one u32.
    (unsafe { GetExitCodeProcess(h, &mut code) } != 0) && code == STILL_ACTIVE as u32
}

/// The creation time of the process of an open handle (100 ns units since 1601).
fn created(h: HANDLE) -> Option<u64> {
    let zero = FILETIME { dwLowDateTime: 0, dwHighDateTime: 0 };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: the caller's handle is open; the call writes four FILETIMEs.
    let ok = unsafe { GetProcessTimes(h, &mut created, &mut exited, &mut kernel, &mut user) } != 0;
    let t = (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime);
    (ok && t > 0).then_some(t)
}

/// Every process in a Toolhelp snapshot: (pid, parent pid, executable name).
fn snapshot() -> Vec<(u32, u32, String)> {
    // SAFETY: a snapshot handle is ours to close; the entries are read into a struct
    // whose dwSize is set as the API requires.
    unsafe {
        let snap = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
        if snap == INVALID_HANDLE_VALUE || snap.is_null() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut entry: PROCESSENTRY32W = std::mem::zeroed();
        entry.dwSize = size_of::<PROCESSENTRY32W>() as u32;
        let mut more = Process32FirstW(snap, &mut entry) != 0;
        while more {
            let len = entry.szExeFile.iter().position(|&c| c == 0).unwrap_or(entry.szExeFile.len());
            let name = String::from_utf16_lossy(entry.szExeFile.get(..len).unwrap_or_default());
            out.push((entry.th32ProcessID, entry.th32ParentProcessID, name));
            more = Process32NextW(snap, &mut entry) != 0;
        }
        CloseHandle(snap);
        out
    }
}

/// The start time of `pid` if it is running, else `None`.
fn start_of(pid: u32) -> Option<u64> {
    let p = Process::open(pid, PROCESS_QUERY_LIMITED_INFORMATION)?;
    if !p.running() {
        return None;
    }
    p.created()
}

/// The facts of `pid` unless it is missing, ended, or cannot be opened (pid 0, the idle
/// process, is none).
pub fn stat(pid: u32) -> Option<Stat> {
    let start_time = start_of(pid)?;
    let (_, ppid, comm) = snapshot().into_iter().find(|(p, _, _)| *p == pid)?;
    Some(Stat { ppid: real_parent(ppid, start_time, start_of), pgid: pid, start_time, comm })
}

/// `ppid` unless its process started after the child (then the pid was reused by a
/// stranger: no parent).
fn real_parent(ppid: u32, child_start: u64, start: impl Fn(u32) -> Option<u64>) -> u32 {
    match start(ppid) {
        Some(parent_start) if parent_start <= child_start => ppid,
        _ => 0,
    }
}

/// This process's creation time.
pub fn own_start_time() -> u64 {
    // SAFETY: GetCurrentProcess is a pseudo-handle that needs no closing.
    created(unsafe { GetCurrentProcess() }).unwrap_or(0)
}

/// Every live process that can be opened, as (pid, facts).
pub fn table() -> Vec<(u32, Stat)> {
    let all = snapshot();
    let starts: std::collections::HashMap<u32, u64> =
        all.iter().filter_map(|(pid, _, _)| Some((*pid, start_of(*pid)?))).collect();
    all.into_iter()
        .filter_map(|(pid, ppid, comm)| {
            let start_time = *starts.get(&pid)?;
            let ppid = real_parent(ppid, start_time, |p| starts.get(&p).copied());
            Some((pid, Stat { ppid, pgid: pid, start_time, comm }))
        })
        .collect()
}

/// Windows keeps no child lists: `None`, so a [`table`] scan finds them.
pub fn children(_pid: u32) -> Option<Vec<u32>> {
    None
}

/// The arguments of `pid`, split by the system's rules (`CommandLineToArgvW`), as
/// UTF-8; `None` when unreadable (another user's process, or gone).
pub fn cmdline(pid: u32) -> Option<Vec<Vec<u8>>> {
    let p = Process::open(pid, peb::ACCESS)?;
    peb::command_line(p.raw()).map(|line| peb::split_command_line(&line))
}

/// The environment of `pid` (`KEY=VALUE` entries, UTF-8), from its process parameters:
/// what it started with unless it changed its own since. `None` when unreadable.
pub fn environ(pid: u32) -> Option<Vec<Vec<u8>>> {
    let p = Process::open(pid, peb::ACCESS)?;
    peb::environment(p.raw())
}

/// FNV-1a of a SID's bytes: a user, as a number.
fn sid_hash(sid: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in sid {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A process's token: its user SID (the bytes), and whether it is elevated.
fn token_facts(process: HANDLE) -> Option<(Vec<u8>, bool)> {
    // SAFETY: the token handle is closed below; GetTokenInformation writes at most the
    // buffer's size, and the SID it points to lies within that buffer.
    unsafe {
        let mut token: HANDLE = std::ptr::null_mut();
        if OpenProcessToken(process, TOKEN_QUERY, &mut token) == 0 {
            return None;
        }
        let mut buf = [0u64; 64];
        let mut len = 0u32;
        let got = GetTokenInformation(token, TokenUser, buf.as_mut_ptr().cast(), size_of_val(&buf) as u32, &mut len);
        let user = (got != 0).then(|| {
            let info = &*(buf.as_ptr().cast::<windows_sys::Win32::Security::TOKEN_USER>());
            let n = windows_sys::Win32::Security::GetLengthSid(info.User.Sid) as usize;
            std::slice::from_raw_parts(info.User.Sid.cast::<u8>(), n).to_vec()
        });
        let mut elevation = TOKEN_ELEVATION { TokenIsElevated: 0 };
        let elevated = GetTokenInformation(
            token,
            TokenElevation,
            (&raw mut elevation).cast(),
            size_of::<TOKEN_ELEVATION>() as u32,
            &mut len,
        ) != 0
            && elevation.TokenIsElevated != 0;
        CloseHandle(token);
        user.map(|u| (u, elevated))
    }
}

/// This process's user SID, as a string (`S-1-5-21-…`).
pub(crate) fn current_sid_string() -> Option<String> {
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
    // SAFETY: GetCurrentProcess is a pseudo-handle.
    let (mut sid, _) = token_facts(unsafe { GetCurrentProcess() })?;
    // SAFETY: the SID bytes are a valid SID (copied from the token); the string the call
    // allocates is NUL-terminated and freed with LocalFree as documented.
    unsafe {
        let mut text: windows_sys::core::PWSTR = std::ptr::null_mut();
        if ConvertSidToStringSidW(sid.as_mut_ptr().cast(), &mut text) == 0 || text.is_null() {
            return None;
        }
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        let out = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
        LocalFree(text.cast());
        Some(out)
    }
}

/// This process's user (the hash of its token's user SID).
pub fn current_uid() -> u32 {
    // SAFETY: GetCurrentProcess is a pseudo-handle that needs no closing.
    token_facts(unsafe { GetCurrentProcess() }).map_or(0, |(u, _)| sid_hash(&u))
}

/// Whether this process runs elevated (an administrator's full token): Windows' root.
pub fn is_root() -> bool {
    // SAFETY: as above.
    token_facts(unsafe { GetCurrentProcess() }).is_some_and(|(_, elevated)| elevated)
}

/// The user name for `uid`: this user's (`USERNAME`) when it is ours; a SID's hash
/// cannot be looked up, so another user's is `None`.
pub fn user_name(uid: u32) -> Option<String> {
    (uid == current_uid()).then(|| std::env::var("USERNAME").ok()).flatten()
}

/// The user owning `pid` (see [`current_uid`]); `None` when its token cannot be read
/// (another user's process, or gone).
pub fn uid_of(pid: u32) -> Option<u32> {
    let p = Process::open(pid, PROCESS_QUERY_LIMITED_INFORMATION)?;
    token_facts(p.raw()).map(|(u, _)| sid_hash(&u))
}

/// Whether `pid` runs elevated; any doubt is `false`.
pub fn runs_as_root(pid: u32) -> bool {
    Process::open(pid, PROCESS_QUERY_LIMITED_INFORMATION)
        .and_then(|p| token_facts(p.raw()))
        .is_some_and(|(_, elevated)| elevated)
}

/// Windows lists no other process's open files to an ordinary user (that takes the
/// system handle table): always `false`, so a foreground owner is never taken for one by
/// its lock (the safety gate's rule 3 refuses; it is stopped from its own console).
pub fn holds_file(_pid: u32, _path: &Path) -> bool {
    false
}

/// Send `sig` to `pid` (see [`Signal`]); whether it was delivered.
pub fn kill(pid: u32, sig: Signal) -> bool {
    ProcessHandle::open(pid).signal(pid, sig)
}

/// Send `sig` to the console process group led by `pgid` (see [`Stat::pgid`]).
pub fn kill_group(pgid: u32, sig: Signal) -> bool {
    pgid > 1 && kill(pgid, sig)
}

/// End this process as `sig` would: a guard posts it to its own wait ([`guard`]); elsewhere
/// the process exits with 128 + the signal's number.
pub fn kill_self(sig: Signal) {
    if !guard::post_stop(sig) {
        std::process::exit(128 + sig as i32);
    }
}

/// Windows has no `SIGPIPE`: a write to a closed pipe is an error the writer sees.
pub fn default_sigpipe() {}

/// The requests to stop this process: Ctrl-C, Ctrl-Break, the console's close and the
/// system's shutdown, caught for as long as this lives.
#[derive(Debug)]
pub struct StopSignals {
    c: tokio::signal::windows::CtrlC,
    brk: tokio::signal::windows::CtrlBreak,
    close: tokio::signal::windows::CtrlClose,
    shutdown: tokio::signal::windows::CtrlShutdown,
}

impl StopSignals {
    /// Catch them from now on (inside a tokio runtime).
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown};
        Ok(StopSignals { c: ctrl_c()?, brk: ctrl_break()?, close: ctrl_close()?, shutdown: ctrl_shutdown()? })
    }

    /// The next request to stop.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.c.recv() => {}
            _ = self.brk.recv() => {}
            _ = self.close.recv() => {}
            _ = self.shutdown.recv() => {}
        }
    }
}

/// Windows sets no limit on handles that a backend could run into: `None`.
pub fn fd_limit() -> Option<u64> {
    None
}

/// The width of the console on stderr, in columns; `None` when stderr is no console.
pub fn terminal_columns() -> Option<u16> {
    use windows_sys::Win32::System::Console::{
        CONSOLE_SCREEN_BUFFER_INFO, GetConsoleScreenBufferInfo, GetStdHandle, STD_ERROR_HANDLE,
    };
    // SAFETY: the call writes one CONSOLE_SCREEN_BUFFER_INFO; the std handle needs no closing.
    unsafe {
        let mut info: CONSOLE_SCREEN_BUFFER_INFO = std::mem::zeroed();
        let ok = GetConsoleScreenBufferInfo(GetStdHandle(STD_ERROR_HANDLE), &mut info) != 0;
        let cols = i32::from(info.srWindow.Right) - i32::from(info.srWindow.Left) + 1;
        (ok && cols > 0).then(|| u16::try_from(cols).unwrap_or(u16::MAX))
    }
}

/// Close a probe listener so that it stops listening at once.
pub fn shutdown_listener(listener: &std::net::TcpListener) {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::{SD_BOTH, SOCKET, shutdown};
    // SAFETY: the socket is open (borrowed from the listener) for the call's duration.
    let _ = unsafe { shutdown(listener.as_raw_socket() as SOCKET, SD_BOTH) };
}

/// Windows processes end with a code, never a signal: `None`.
pub fn exit_signal(_status: &std::process::ExitStatus) -> Option<i32> {
    None
}

/// The creation flags every backend gets: a console process group of its own (so that
/// `CTRL_BREAK_EVENT` reaches it and its children), and no console window when this
/// process has no console to share (a GUI host's child).
fn group_flags() -> u32 {
    use windows_sys::Win32::System::Console::GetConsoleCP;
    use windows_sys::Win32::System::Threading::{CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW};
    // SAFETY: a plain query.
    let has_console = unsafe { GetConsoleCP() } != 0;
    CREATE_NEW_PROCESS_GROUP | if has_console { 0 } else { CREATE_NO_WINDOW }
}

/// Start `command`'s program as the leader of a console process group of its own.
pub fn own_group(command: &mut Command) {
    use std::os::windows::process::CommandExt;
    command.creation_flags(group_flags());
}

/// Start `command`'s program outside this process's Job Object (`CREATE_BREAKAWAY_FROM_JOB`),
/// as the leader of a console process group of its own, with no console window; return
/// its pid. It outlives this process however this one ends.
///
/// When a job this process runs in forbids breakaway (a host that runs its servers in a
/// kill-on-close job without `JOB_OBJECT_LIMIT_BREAKAWAY_OK`, as the Python MCP SDK 2.x
/// does), nothing started from here can outlive it: the error says so.
pub fn spawn_detached(command: &mut Command) -> std::io::Result<u32> {
    use std::os::windows::process::CommandExt;
    use windows_sys::Win32::System::Threading::{
        CREATE_BREAKAWAY_FROM_JOB, CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW,
    };
    command.creation_flags(CREATE_BREAKAWAY_FROM_JOB | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW);
    // It must hold none of our caller's handles (a pipe read to EOF would never end).
    keep_std_handles_private();
    match command.spawn() {
        Ok(child) => Ok(child.id()),
        Err(e) if e.raw_os_error() == Some(5) && job::in_job_without_breakaway() => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "this process runs in a Job Object that forbids breakaway (its host ends every process of it \
             together), so nothing it starts can outlive it: run the backend in the foreground instead",
        )),
        Err(e) => Err(e),
    }
}

/// Make `command` give the program it starts its standard handles only.
///
/// Windows hands a child every *inheritable* handle of its parent, whatever the child's
/// `STARTUPINFO` names. std creates its own handles non-inheritable, but the standard
/// handles this process was given stay inheritable as they came: a caller's pipe that a
/// script reads to EOF (`tether up --detach` under `$(…)`, or a test's `output()`) would be
/// held by a detached guard for as long as it runs. Their inherit flag is cleared here,
/// once for the process; a child that inherits its stdio still gets it, as std passes it a
/// duplicate made for the child.
pub fn only_stdio(_command: &mut Command) {
    keep_std_handles_private();
}

/// Clear the inherit flag of this process's standard handles (see [`only_stdio`]), once.
fn keep_std_handles_private() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use windows_sys::Win32::Foundation::{HANDLE_FLAG_INHERIT, SetHandleInformation};
        use windows_sys::Win32::System::Console::{
            GetStdHandle, STD_ERROR_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
        };
        for which in [STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE] {
            // SAFETY: GetStdHandle returns a handle this process holds (or null/invalid,
            // skipped); SetHandleInformation changes one flag of it and closes nothing.
            unsafe {
                let h = GetStdHandle(which);
                if !h.is_null() && h != INVALID_HANDLE_VALUE {
                    SetHandleInformation(h, HANDLE_FLAG_INHERIT, 0);
                }
            }
        }
    });
}

/// Whether a file may be executed: a regular file (Windows has no execute bit).
pub fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.is_file()
}

/// A handle on a process taken before it is verified: while it is open the pid cannot
/// be reused, so a signal through it reaches the process that was verified or nobody.
#[derive(Debug)]
pub struct ProcessHandle(Option<std::sync::Arc<OwnedHandle>>);

impl ProcessHandle {
    /// A handle on `pid` (none when it cannot be opened: then nothing can be sent).
    pub fn open(pid: u32) -> Self {
        let p = Process::open(pid, PROCESS_TERMINATE | PROCESS_SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION);
        ProcessHandle(p.map(|p| std::sync::Arc::new(p.0)))
    }

    /// Send `sig` through the handle: `TerminateProcess` for [`Signal::SIGKILL`], else
    /// `CTRL_BREAK_EVENT` to `pid`'s console group. Whether it was delivered: a graceful
    /// request that cannot be delivered (the process is no group leader on this console)
    /// counts as delivered to a running process, whose stop then ends by the forced path.
    pub fn signal(&self, pid: u32, sig: Signal) -> bool {
        let Some(h) = &self.0 else { return false };
        let h = h.as_raw_handle();
        if !running(h) {
            return false;
        }
        match sig {
            // SAFETY: the handle is open with PROCESS_TERMINATE.
            Signal::SIGKILL => unsafe { TerminateProcess(h, KILLED_EXIT_CODE) != 0 },
            Signal::SIGUSR2 => false,
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP => {
                use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, GenerateConsoleCtrlEvent};
                // SAFETY: a plain call; a pid that leads no group on our console fails.
                let _ = unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, pid) };
                true
            }
        }
    }

    /// Wait until the process has ended, whoever started it. `Err` when this handle
    /// has none (the process could not be opened).
    pub async fn exited(&self) -> std::io::Result<()> {
        let h = self.0.clone().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::Unsupported))?;
        tokio::task::spawn_blocking(move || {
            use windows_sys::Win32::System::Threading::{INFINITE, WaitForSingleObject};
            // SAFETY: the handle is open (held by the Arc) for the wait's duration.
            unsafe { WaitForSingleObject(h.as_raw_handle(), INFINITE) };
        })
        .await
        .map_err(std::io::Error::other)
    }
}

/// Have everything this process starts from now on end when it ends: this process
/// enters a kill-on-close Job Object of its own ([`job`]), which its children inherit.
pub fn die_with_parent(_sig: Signal) -> std::io::Result<()> {
    job::enter_own_job()
}

/// The program `command` starts ends when this process ends (see [`die_with_parent`]).
pub fn die_with_parent_on_exec(_command: &mut Command, sig: Signal) {
    if let Err(e) = die_with_parent(sig) {
        tracing::warn!("a backend started now may outlive this process: {e}");
    }
}

/// Always `Ok`: the guard's own job holds its descendants (see [`guard`]).
pub fn become_subreaper() -> std::io::Result<()> {
    job::enter_own_job()
}

/// Whether a process other than this one is still in this process's own job: an
/// orphaned descendant the guard must still stop.
pub fn adopted_alive() -> bool {
    job::others_in_own_job()
}

/// Windows passes no inherited descriptor to an exec'd program: nothing to do.
pub fn cloexec_inherited_fds() {}

/// Windows pipes grow as needed: nothing to do.
pub fn widen_pipe<T>(_pipe: &T) {}

/// Windows keeps no table of file locks one may read. When an exclusive lock of `path`
/// would be granted at once (tried, and released at once), nobody holds one: 0;
/// otherwise at least one process does: 1 (a lower bound).
pub fn lock_holders(path: &Path) -> usize {
    let Ok(file) = std::fs::OpenOptions::new().read(true).open(path) else { return 0 };
    match file.try_lock() {
        Ok(()) => 0,
        Err(std::fs::TryLockError::WouldBlock) => 1,
        Err(_) => 0,
    }
}

/// Whether this runs under Wine (ntdll exports `wine_get_version`).
pub fn under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    // SAFETY: both names are NUL-terminated; ntdll is loaded in every process.
    unsafe {
        let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
        !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
    }
}

/// Why [`listener_owners_unknown`] holds.
pub const LISTENER_OWNERS_UNKNOWN: &str =
    "Wine 8 lists every listener with owner pid 0 (GetExtendedTcpTable), so no port holder can be named under Wine";

/// Whether the system lists listeners without their owners: under Wine (measured: Wine 8
/// reports owner 0 for every row). A holder 0 is never signalled (the safety gate refuses
/// pid 0), so the port guard then refuses rather than guesses.
pub fn listener_owners_unknown() -> bool {
    under_wine()
}

/// Windows has no boot id one may read without privilege: `None`.
pub fn boot_id() -> Option<String> {
    None
}

/// Windows has no pid namespaces: one fixed name.
pub fn pid_namespace() -> Option<String> {
    Some("windows".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_that_started_after_its_child_is_a_stranger() {
        let starts = |p: u32| match p {
            10 => Some(100),
            11 => Some(300),
            _ => None,
        };
        assert_eq!(real_parent(10, 200, starts), 10);
        assert_eq!(real_parent(11, 200, starts), 0, "pid 11 was reused after the child started");
        assert_eq!(real_parent(12, 200, starts), 0, "a gone parent is no parent");
    }

    #[test]
    fn this_process_is_seen_with_its_parent_and_start() {
        let me = stat(std::process::id()).expect("our own facts");
        assert_eq!(me.start_time, own_start_time());
        assert!(me.comm.to_ascii_lowercase().ends_with(".exe"), "{}", me.comm);
        assert!(table().iter().any(|(pid, _)| *pid == std::process::id()));
        assert_eq!(uid_of(std::process::id()), Some(current_uid()));
    }

    #[test]
    fn a_child_has_our_environment_fingerprint_and_arguments() {
        let mut child = Command::new("cmd")
            .args(["/c", "ping -n 30 127.0.0.1 >NUL"])
            .env("TETHER_TEST_MARK", "yes")
            .spawn()
            .expect("spawn cmd");
        let pid = child.id();
        // Under Wine a new process lays out its own parameters as it starts: until then
        // they read as empty (as a Linux child's environ is its parent's until exec).
        let marked = |e: &Vec<Vec<u8>>| e.iter().any(|e| e == b"TETHER_TEST_MARK=yes");
        let env = (0..200_000).find_map(|_| {
            environ(pid).filter(marked).or_else(|| {
                std::thread::yield_now();
                None
            })
        });
        let env = env.unwrap_or_default();
        let args = cmdline(pid).expect("its arguments");
        let facts = stat(pid).expect("its facts");
        let _ = child.kill();
        let _ = child.wait();
        assert!(env.iter().any(|e| e == b"TETHER_TEST_MARK=yes"), "{:?}", env.len());
        assert_eq!(args.last().map(Vec::as_slice), Some(&b"ping -n 30 127.0.0.1 >NUL"[..]), "{args:?}");
        assert_eq!(facts.ppid, std::process::id());
        assert_eq!(stat(pid), None, "an ended process has no live facts");
    }
}
