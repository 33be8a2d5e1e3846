//! The per-user state store: one JSON record per instance, and a lock per name.
//!
//! The directory is trusted the way ssh trusts `~/.ssh`: it must be a real directory
//! (not a symlink), owned by the current user and writable by no one else, or it is
//! refused; a record file owned by another user is ignored, never trusted.
//!
//! Layout of the directory (mode 0700, one per user):
//! `NAME.json` the record (mode 0600, replaced atomically), `NAME.lock` the
//! instance lock (holds the locker's pid for error messages), `NAME.log` a
//! detached instance's output. Lock files are never deleted: deleting a lock
//! file while another process waits on it would let two processes each lock a
//! different file of the same name.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::procs::ProcessIdentity;
use crate::sys;

/// One recorded instance (one JSON file per name: `NAME.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The instance name (also the file name).
    pub name: String,
    /// Which runner started it: `native`, `uvx` or `docker`.
    pub runner: String,
    /// What was launched (runner-defined), compared to decide reuse.
    pub fingerprint: String,
    /// Deliberately left running without an owner.
    pub detached: bool,
    /// The tether process that supervises it (`None` when detached).
    pub owner: Option<ProcessIdentity>,
    /// The process-group leader we spawned (the guard); `None` for containers.
    pub leader: Option<ProcessIdentity>,
    /// The backend's process group.
    pub pgid: Option<u32>,
    /// The backend's own pid, when known.
    pub backend_pid: Option<u32>,
    /// The host the backend listens on.
    pub host: String,
    /// The port the backend listens on.
    pub port: u16,
    /// The URL it is reached at.
    pub url: String,
    /// When it was started, in milliseconds since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// The version of the tool that ran it (uv, Docker), when known.
    pub tool_version: Option<String>,
    /// Where a detached instance's output goes.
    pub log_file: Option<PathBuf>,
    /// The grace period to give it on stop, in milliseconds.
    #[serde(default)]
    pub grace_ms: u64,
    /// How many times it was restarted by the restart policy.
    #[serde(default)]
    pub restarts: u32,
    /// The lease-mode guard of a shared container: the detached process that removes
    /// the container once no front holds a lease. When it is no longer alive nothing
    /// will ever remove the container, so the record is not reused. `None` for
    /// everything else (and in records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_guard: Option<ProcessIdentity>,
    /// The runner's own part of the record, as its backend gave it
    /// ([`RunningBackend::record_fields`](crate::RunningBackend::record_fields)): a
    /// container's `container_id` and `engine`, say. Written beside the fields above
    /// in the same JSON object; core reads none of it, the runner's
    /// [`Reclaim`](crate::Reclaim) role does.
    #[serde(flatten)]
    pub runner_fields: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    /// Whether whoever keeps this instance alive is still there (pid + start
    /// time verified): for a detached instance its leader, otherwise its owner.
    ///
    /// A detached instance the runner keeps (a container) has no leader process; its
    /// liveness is the runner's to tell, so this returns true and leaves the verdict
    /// to it. Anything else without a recorded identity is stale.
    pub fn owner_alive(&self) -> bool {
        match (self.detached, self.leader, self.owner) {
            (true, Some(leader), _) => leader.is_alive(),
            (true, None, _) => self.kept_by_runner(),
            (false, _, Some(owner)) => owner.is_alive(),
            (false, _, None) => false,
        }
    }
}

impl Record {
    /// A text field of the runner's own part ([`Record::runner_fields`]): `None` when
    /// absent, `null`, or not a string.
    pub fn runner_field(&self, key: &str) -> Option<&str> {
        self.runner_fields.get(key).and_then(serde_json::Value::as_str)
    }

    /// Whether the runner keeps something of this instance beyond processes of this
    /// machine (a container): any non-null field of its own part.
    pub fn kept_by_runner(&self) -> bool {
        self.runner_fields.values().any(|v| !v.is_null())
    }
}

/// The per-user state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// The exclusive lock on one instance name; released when dropped.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
    name: String,
}

impl InstanceLock {
    /// The instance name this lock holds.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Clear our pid while still holding the lock, so a later contender
        // never reads a stale pid. Then unlock explicitly rather than rely on
        // close: a child forked meanwhile shares this open file (until its
        // exec closes it) and would keep the lock held past our drop.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// The start lock of a fixed port (see [`StateDir::lock_port`]): held from the port guard
/// until the backend is ready or has failed, released on drop.
#[derive(Debug)]
pub struct PortLock {
    file: File,
}

impl Drop for PortLock {
    fn drop(&mut self) {
        // As for InstanceLock: clear our name, then unlock explicitly (a child forked
        // meanwhile shares the open file until its exec closes it).
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Distinguishes temporary files of concurrent saves within one process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl StateDir {
    /// `$TETHER_STATE_DIR`, else `$XDG_STATE_HOME/tether`, else the platform's place in
    /// `$HOME` ([`sys::HOME_STATE_DIR`]: `.local/state/tether` on Linux,
    /// `Library/Application Support/tether` on macOS,
    /// `%LOCALAPPDATA%\tether` on Windows); created with mode 0700 if missing,
    /// and refused when others could tamper with it (see [`at`](Self::at)).
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = if let Some(dir) = var("TETHER_STATE_DIR") {
            // A relative one would be another directory in every working directory.
            if !dir.is_absolute() {
                return Err(Error::config(format!(
                    "TETHER_STATE_DIR must be an absolute path, not `{}`: e.g. TETHER_STATE_DIR=$PWD/{}",
                    dir.display(),
                    dir.display()
                )));
            }
            dir
        } else if let Some(xdg) = var("XDG_STATE_HOME").filter(|p| p.is_absolute()) {
            // The XDG spec says a relative value is invalid and must be ignored.
            xdg.join("tether")
        } else if let Some(home) = var(sys::HOME_VAR) {
            home.join(sys::HOME_STATE_DIR)
        } else {
            return Err(Error::config(format!(
                "cannot find a state directory: {} is not set; set TETHER_STATE_DIR",
                sys::HOME_VAR
            )));
        };
        Self::at(dir)
    }

    /// A state store at `path`, created with mode 0700 if missing (missing parents
    /// too).
    ///
    /// Like ssh with `~/.ssh`, a directory others could tamper with is refused with
    /// [`Error::Config`] saying what is wrong and how to fix it: a symlink, a directory
    /// owned by another user, or one writable by its group or by others. A record
    /// planted there could otherwise steer `down` at a process, and a planted log
    /// symlink redirect a backend's output.
    pub fn at(path: impl Into<PathBuf>) -> Result<Self> {
        let dir: PathBuf = path.into();
        // Without a trailing `/`: `lstat("link/")` would follow the link.
        let dir: PathBuf = if dir.as_os_str().is_empty() { dir } else { dir.components().collect() };
        match fs::symlink_metadata(&dir) {
            Ok(meta) => check_private_dir(&dir, &meta, sys::current_uid())?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match sys::private::create_dir(&dir) {
                    Ok(()) => {}
                    // Created meanwhile by someone else: checked below like any other.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(state_err(&dir)(e)),
                }
            }
            Err(e) => return Err(state_err(&dir)(e)),
        }
        // Checked (again) after any creation: what counts is what is there now.
        let meta = fs::symlink_metadata(&dir).map_err(state_err(&dir))?;
        check_private_dir(&dir, &meta, sys::current_uid())?;
        Ok(StateDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Validate an instance name: 1–64 characters of `[A-Za-z0-9._-]`, not
    /// starting with `.`. Names become file names, so this also keeps them from
    /// escaping the directory.
    pub fn check_name(name: &str) -> Result<()> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if (1..=64).contains(&name.len()) && !name.starts_with('.') && name.chars().all(ok_char) {
            Ok(())
        } else {
            Err(Error::config(format!(
                "invalid instance name '{name}': use 1-64 characters of A-Z a-z 0-9 . _ -, not starting with '.'"
            )))
        }
    }

    /// Take the exclusive lock for `name` without waiting. If another holder
    /// has it: `Error::AlreadyRunning` with the pid it wrote, when readable.
    pub fn try_lock(&self, name: &str) -> Result<InstanceLock> {
        Self::check_name(name)?;
        let path = self.file(name, "lock");
        // A lock file may be unlinked by a cleaner that held its lock (a dead proxy's
        // `mcp-PID.lock`): a lock taken on the unlinked file would be no lock at all, as
        // the next opener creates a new file. So the lock counts only if the path still
        // names the locked file; otherwise open it again.
        for _ in 0..8 {
            let lock = self.try_lock_file(name, &path)?;
            let held = lock.file.metadata().map_err(state_err(&path))?;
            match std::fs::symlink_metadata(&path) {
                Ok(now) if sys::private::same_file(&now, &held) => return Ok(lock),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(state_err(&path)(e)),
            }
        }
        Err(Error::config(format!(
            "the lock file {} keeps being replaced while it is taken: is something removing it?",
            path.display()
        )))
    }

    fn try_lock_file(&self, name: &str, path: &Path) -> Result<InstanceLock> {
        let path = path.to_path_buf();
        // No truncate on open: the current holder's pid must stay readable.
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid = (&file).read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(Error::AlreadyRunning { name: name.to_string(), pid });
            }
            Err(TryLockError::Error(e)) => return Err(state_err(&path)(e)),
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| sys::private::write_all_at(&file, pid.as_bytes(), 0))
            .map_err(state_err(&path))?;
        Ok(InstanceLock { file, name: name.to_string() })
    }

    /// Take the exclusive lock for `name`, waiting up to `timeout` for the
    /// holder to release it; on timeout the `AlreadyRunning` of the last try.
    ///
    /// Polls the non-blocking lock with a short backoff (1 ms doubling to
    /// 50 ms) rather than parking a blocking `flock` on a worker thread: a
    /// blocking `flock` cannot be given a deadline or cancelled, so on timeout
    /// it would leave a thread stuck and take the lock later for nobody.
    pub async fn lock(&self, name: &str, timeout: Duration) -> Result<InstanceLock> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(1);
        loop {
            match self.try_lock(name) {
                Err(busy @ Error::AlreadyRunning { .. }) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(busy);
                    }
                    tokio::time::sleep(delay.min(deadline - now)).await;
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// The record of `name`, or `None` if there is none. A file that does not
    /// parse is an error naming the file, never silently ignored. A record that is
    /// not a regular file owned by the current user (a symlink, another user's file)
    /// is ignored with a warning: it is not ours to trust.
    pub fn load(&self, name: &str) -> Result<Option<Record>> {
        Self::check_name(name)?;
        self.load_path(&self.file(name, "json"))
    }

    fn load_path(&self, path: &Path) -> Result<Option<Record>> {
        match self.read_record(path)? {
            Loaded::Record(record) => Ok(Some(*record)),
            Loaded::Gone => Ok(None),
            Loaded::NotOurs(why) => {
                tracing::warn!("ignoring state file {}: {why}; delete it", path.display());
                Ok(None)
            }
        }
    }

    /// Read the record at `path` without a word: what it holds, or why it is not ours
    /// to trust; a file that does not parse is an error naming the file.
    fn read_record(&self, path: &Path) -> Result<Loaded> {
        // No symlink is followed, and a FIFO planted here cannot block the open.
        let opened = sys::private::no_follow(OpenOptions::new().read(true)).open(path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Gone),
            Err(e) if sys::private::is_link(&e) => {
                return Ok(Loaded::NotOurs("it is a symbolic link, not a record of yours".into()));
            }
            Err(e) => return Err(state_err(path)(e)),
        };
        let meta = file.metadata().map_err(state_err(path))?;
        let me = sys::current_uid();
        let owner = sys::private::owner(&meta);
        if !meta.is_file() || owner != me {
            let what = if meta.is_file() { format!("owned by uid {owner}") } else { "not a regular file".into() };
            return Ok(Loaded::NotOurs(format!("it is {what}, not a record of yours (uid {me})")));
        }
        let corrupt = |why: String| {
            let hint = format!("delete {} if no such instance runs", path.display());
            state_err(path)(io::Error::new(io::ErrorKind::InvalidData, format!("{why}; {hint}")))
        };
        // A record is a few hundred bytes: a huge file is not one, and is not read.
        if meta.len() > MAX_RECORD_BYTES {
            return Err(corrupt(format!("not a record ({} bytes; a record is at most 1 MiB)", meta.len())));
        }
        let mut text = String::new();
        file.take(MAX_RECORD_BYTES + 1).read_to_string(&mut text).map_err(state_err(path))?;
        let record: Record = serde_json::from_str(&text).map_err(|e| corrupt(format!("not a valid record ({e})")))?;
        // The file name is the key: a record naming someone else was copied or
        // tampered with, and must not steer `down` at another instance.
        if path.file_stem().and_then(|s| s.to_str()) != Some(record.name.as_str()) {
            return Err(corrupt(format!("the record is for '{}', not this file's name", record.name)));
        }
        Ok(Loaded::Record(Box::new(record)))
    }

    /// Save `record` atomically: write `NAME.json.tmp-PID-N` with mode 0600,
    /// fsync it, rename it over `NAME.json`. Readers see the old or the new
    /// record, never a torn one, even if we crash midway.
    pub fn save(&self, record: &Record) -> Result<()> {
        Self::check_name(&record.name)?;
        let target = self.file(&record.name, "json");
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("{}.json.tmp-{}-{seq}", record.name, std::process::id()));
        let json = serde_json::to_vec_pretty(record).map_err(|e| state_err(&target)(io::Error::other(e)))?;
        let written = (|| {
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            let mut file = sys::private::no_follow(sys::private::only_mine(&mut options)).open(&tmp)?;
            // The mode above is filtered by the umask and ignored for a file left
            // by a crash; set it explicitly.
            sys::private::restrict(&file)?;
            file.write_all(&json)?;
            file.sync_all()?;
            // Closed before the rename: Windows renames no file that is open.
            drop(file);
            fs::rename(&tmp, &target)?;
            // Make the rename itself durable.
            sys::private::sync_dir(&self.dir)
        })();
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            state_err(&target)(e)
        })
    }

    /// Forget the record of `name`; a missing record is fine.
    pub fn remove(&self, name: &str) -> Result<()> {
        Self::check_name(name)?;
        let path = self.file(name, "json");
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(state_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Take the start lock of fixed port `port` for instance `name`: two starts of this
    /// state directory on one port take turns, so the second's port guard sees the first's
    /// backend (and names it) instead of both passing the guard and one backend failing to
    /// bind. While another start holds it, waits up to `timeout` (that start's readiness
    /// is bounded too), then: `Error::PortUsedByInstance` naming the instance starting.
    pub async fn lock_port(&self, port: u16, name: &str, timeout: Duration) -> Result<PortLock> {
        // A leading dot: no instance name can start with one, so no instance's lock is this.
        let path = self.dir.join(format!(".port-{port}.lock"));
        let file = open_lock_file(&path)?;
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(1);
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(state_err(&path)(e)),
            }
            // The holder writes "PID NAME" once it has the lock.
            let mut buf = [0u8; 128];
            let read = sys::private::read_at(&file, &mut buf, 0).unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..read]);
            let (pid, holder) = text.trim().split_once(' ').unwrap_or(("", "another instance"));
            let holder = if holder.is_empty() { "another instance" } else { holder };
            if !told {
                tracing::info!("port {port} is being taken by instance '{holder}' (starting); waiting for it");
                told = true;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(match pid.parse() {
                    Ok(pid) => Error::PortUsedByInstance { port, name: holder.to_string(), pid },
                    Err(_) => Error::config(format!(
                        "port {port} is being taken by another start in this state directory, for longer than \
                         {}; choose another port (--port auto), or try again once it is up",
                        crate::error::humanize(timeout)
                    )),
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
        let mine = format!("{} {name}", std::process::id());
        file.set_len(0)
            .and_then(|()| sys::private::write_all_at(&file, mine.as_bytes(), 0))
            .map_err(state_err(&path))?;
        Ok(PortLock { file })
    }

    /// Every record, sorted by name. Unreadable, corrupt or foreign ones are skipped,
    /// so one bad file cannot hide the others, with one warning for them all (how many,
    /// a couple of names, the first reason). Files whose names cannot be records are
    /// not opened.
    pub fn list(&self) -> Result<Vec<Record>> {
        let entries = fs::read_dir(&self.dir).map_err(state_err(&self.dir))?;
        let mut records = Vec::new();
        let mut skipped: Vec<(String, String)> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let valid = path.extension().is_some_and(|e| e == "json")
                && path.file_stem().and_then(|s| s.to_str()).is_some_and(|n| Self::check_name(n).is_ok());
            if !valid {
                continue;
            }
            let file_name = || entry.file_name().to_string_lossy().into_owned();
            match self.read_record(&path) {
                Ok(Loaded::Record(record)) => records.push(*record),
                Ok(Loaded::Gone) => {} // removed while we listed
                Ok(Loaded::NotOurs(why)) => skipped.push((file_name(), why)),
                Err(e) => skipped.push((file_name(), e.chain())),
            }
        }
        if !skipped.is_empty() {
            tracing::warn!("{}", skipped_summary(&self.dir, &mut skipped));
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// Where a detached instance's output goes: `NAME.log`. `name` must have
    /// passed [`check_name`](Self::check_name).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.file(name, "log")
    }

    /// Where the fronts sharing instance `name` hold their leases (see `crate::lease`).
    pub fn lease_path(&self, name: &str) -> PathBuf {
        self.file(name, "lease")
    }

    fn file(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{name}.{ext}"))
    }
}

/// The largest file read as a record.
const MAX_RECORD_BYTES: u64 = 1024 * 1024;

/// What reading one record file found.
enum Loaded {
    /// A record of ours.
    Record(Box<Record>),
    /// The file was removed meanwhile.
    Gone,
    /// Not ours to trust (a link, another user's file, not a regular file): why.
    NotOurs(String),
}

/// The one warning for the files [`StateDir::list`] skipped (`(file name, why)`):
/// how many, the first two names, the first one's reason, what to do.
fn skipped_summary(dir: &Path, skipped: &mut [(String, String)]) -> String {
    skipped.sort();
    let names: Vec<&str> = skipped.iter().take(2).map(|(name, _)| name.as_str()).collect();
    let more = if skipped.len() > names.len() { ", …" } else { "" };
    let (first, why) = &skipped[0];
    let files = if skipped.len() == 1 { "file" } else { "files" };
    format!(
        "skipping {} state {files} in {} that are not records of yours ({}{more}; {first}: {why}); delete them if \
         no such instances run",
        skipped.len(),
        dir.display(),
        names.join(", "),
    )
}

/// Refuse a state directory others could tamper with: a symlink, not a directory,
/// owned by someone other than `euid`, or writable by group or others.
fn check_private_dir(dir: &Path, meta: &fs::Metadata, euid: u32) -> Result<()> {
    let shown = dir.display();
    let elsewhere = "or set TETHER_STATE_DIR to another directory";
    let why = if meta.file_type().is_symlink() {
        let target = fs::read_link(dir).map_or_else(|_| "?".to_string(), |t| t.display().to_string());
        format!(
            "is a symbolic link (to {target}); use a real directory: set TETHER_STATE_DIR to the directory itself, \
             or remove the link"
        )
    } else if !meta.is_dir() {
        format!("is not a directory; remove it, {elsewhere}")
    } else if sys::private::owner(meta) != euid {
        format!(
            "is owned by uid {}, not by you (uid {euid}); use a directory of your own: `chown {euid} {shown}`, \
             {elsewhere}",
            sys::private::owner(meta)
        )
    } else if sys::private::writable_by_others(meta) {
        format!(
            "is writable by other users (mode {:04o}); use a directory only you can write: `chmod 700 {shown}`, \
             {elsewhere}",
            sys::private::mode(meta)
        )
    } else {
        return Ok(());
    };
    Err(Error::config(format!("state directory {shown} {why}")))
}

/// Wraps an I/O error on `path` as a state error.
fn state_err(path: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::State { path: path.to_path_buf(), source }
}

/// A lock file of the state directory, opened for reading and writing without truncating
/// (its holder's pid stays readable) or following a link, created 0600.
fn open_lock_file(path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    sys::private::no_follow(sys::private::only_mine(&mut options)).open(path).map_err(state_err(path))
}

// Their tests use Unix files and processes directly (symlinks, modes, process groups).
#[cfg(all(test, unix))]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A plausible record, for this and other modules' tests.
    pub(crate) fn sample(name: &str) -> Record {
        Record {
            name: name.to_string(),
            runner: "native".into(),
            fingerprint: "demo-backend --port 8765".into(),
            detached: false,
            owner: Some(ProcessIdentity::current()),
            leader: None,
            pgid: Some(4242),
            backend_pid: Some(4243),
            host: "127.0.0.1".into(),
            port: 8765,
            url: "http://127.0.0.1:8765".into(),
            started_at_unix_ms: 1_700_000_000_000,
            tool_version: None,
            log_file: None,
            grace_ms: 5000,
            restarts: 0,
            lease_guard: None,
            runner_fields: serde_json::Map::new(),
        }
    }

    fn store() -> (tempfile::TempDir, StateDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::at(tmp.path().join("state")).expect("state dir");
        (tmp, dir)
    }

    fn files(dir: &StateDir) -> Vec<String> {
        let entries = fs::read_dir(dir.path()).expect("read dir").flatten();
        let mut names: Vec<_> = entries.filter_map(|e| e.file_name().into_string().ok()).collect();
        names.sort();
        names
    }

    /// A runner's own fields sit in the record's JSON object beside core's, as the
    /// docker runner's `container_id` and `engine` always did: a record written before
    /// they moved out of core reads the same, and writes back the same keys.
    #[test]
    fn a_runners_fields_are_kept_beside_cores_in_one_object() {
        let mut old = serde_json::to_value(sample("c")).expect("json");
        old["runner"] = "docker".into();
        old["container_id"] = "0123456789ab".into();
        old["engine"] = "unix:///var/run/docker.sock".into();
        let record: Record = serde_json::from_value(old.clone()).expect("an older record reads");
        assert_eq!(record.runner_field("container_id"), Some("0123456789ab"));
        assert_eq!(record.runner_field("engine"), Some("unix:///var/run/docker.sock"));
        assert!(record.kept_by_runner());
        assert_eq!(serde_json::to_value(&record).expect("json"), old, "written back as it was read");
        // A process record of an older version carries `"container_id": null`: nothing kept.
        let mut process = serde_json::to_value(sample("p")).expect("json");
        process["container_id"] = serde_json::Value::Null;
        let record: Record = serde_json::from_value(process).expect("reads");
        assert_eq!(record.runner_field("container_id"), None);
        assert!(!record.kept_by_runner());
    }

    #[test]
    fn save_load_roundtrip_private_and_atomic() {
        let (_tmp, dir) = store();
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(dir.load("a").expect("load"), None);
        let (a, mut b) = (sample("a"), sample("b"));
        b.runner_fields.insert("container_id".into(), "c0ffee".into());
        for record in [&b, &a, &a] {
            dir.save(record).expect("save");
        }
        assert_eq!(dir.load("a").expect("load"), Some(a.clone()));
        assert_eq!(dir.list().expect("list"), vec![a, b]);
        assert_eq!(mode(&dir.path().join("a.json")), 0o600);
        // Only the records: no temporary file is left behind.
        assert_eq!(files(&dir), ["a.json", "b.json"]);
        dir.remove("a").expect("remove");
        dir.remove("a").expect("remove twice");
        assert_eq!(dir.load("a").expect("load"), None);
    }

    #[test]
    fn corrupt_record_names_the_file_and_list_skips_it() {
        let (_tmp, dir) = store();
        dir.save(&sample("good")).expect("save");
        fs::write(dir.path().join("bad.json"), "{ not json").expect("write");
        let err = dir.load("bad").expect_err("corrupt").chain();
        assert!(err.contains("bad.json") && err.contains("delete"), "{err}");
        // A record filed under another name is refused too.
        fs::copy(dir.path().join("good.json"), dir.path().join("other.json")).expect("copy");
        assert!(dir.load("other").is_err());
        assert_eq!(dir.list().expect("list"), vec![sample("good")]);
    }

    #[test]
    fn second_lock_is_refused_with_holder_pid() {
        let (_tmp, dir) = store();
        let held = dir.try_lock("inst").expect("first lock");
        assert_eq!(held.name(), "inst");
        // Each try_lock opens its own file description, so flock contends
        // even inside one process.
        match dir.try_lock("inst") {
            Err(Error::AlreadyRunning { name, pid }) => {
                assert_eq!(name, "inst");
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        let other = dir.try_lock("other").expect("another name is independent");
        drop(held);
        drop(other);
        dir.try_lock("inst").expect("released on drop");
    }

    #[tokio::test]
    async fn lock_waits_until_released_or_times_out() {
        let (_tmp, dir) = store();
        let held = dir.try_lock("inst").expect("first lock");
        let busy = dir.lock("inst", Duration::from_millis(5)).await;
        assert!(matches!(busy, Err(Error::AlreadyRunning { .. })), "{busy:?}");
        let waiter = {
            let dir = dir.clone();
            tokio::spawn(async move { dir.lock("inst", Duration::from_secs(30)).await })
        };
        // On this single-threaded runtime one yield runs the waiter up to its
        // first failed try; only then is the lock released.
        tokio::task::yield_now().await;
        drop(held);
        let lock = waiter.await.expect("join").expect("lock after release");
        assert_eq!(lock.name(), "inst");
    }

    #[test]
    fn names_are_validated() {
        for good in ["a", "demo", "A-1_b.c", &"x".repeat(64)] {
            StateDir::check_name(good).expect(good);
        }
        let long = "x".repeat(65);
        for bad in ["", ".hidden", "..", "a/b", "../x", "a b", "é", "a;rm", &long] {
            let err = StateDir::check_name(bad).expect_err(bad);
            assert!(matches!(err, Error::Config { .. }));
        }
        let (_tmp, dir) = store();
        assert!(dir.try_lock("../escape").is_err());
        assert!(dir.save(&sample("../escape")).is_err());
    }

    fn config_message(result: Result<StateDir>) -> String {
        match result {
            Err(e @ Error::Config { .. }) => {
                assert_eq!(e.exit_code(), 2);
                e.to_string()
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn shared_or_group_writable_state_dir_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (mode, shown) in [(0o1777, "1777"), (0o770, "0770"), (0o702, "0702")] {
            let dir = tmp.path().join(format!("d{shown}"));
            fs::create_dir(&dir).expect("mkdir");
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).expect("chmod");
            let msg = config_message(StateDir::at(&dir));
            assert!(msg.contains(&format!("is writable by other users (mode {shown})")), "{msg}");
            assert!(msg.contains(&format!("`chmod 700 {}`", dir.display())), "{msg}");
            assert!(msg.contains("TETHER_STATE_DIR"), "{msg}");
            // Read-only for others is fine, like ~/.ssh at 0755.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
            StateDir::at(&dir).expect("a directory only its owner can write");
        }
    }

    #[test]
    fn symlinked_state_dir_is_refused_even_with_a_trailing_slash() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = StateDir::at(tmp.path().join("real")).expect("real dir");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(real.path(), &link).expect("symlink");
        let msg = config_message(StateDir::at(&link));
        assert!(msg.contains("is a symbolic link"), "{msg}");
        let mut slash = link.into_os_string();
        slash.push("/");
        let msg = config_message(StateDir::at(PathBuf::from(slash)));
        assert!(msg.contains("is a symbolic link"), "{msg}");
        // A dangling link is refused too, not created through.
        let dangling = tmp.path().join("dangling");
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dangling).expect("symlink");
        assert!(config_message(StateDir::at(&dangling)).contains("is a symbolic link"));
        assert!(!tmp.path().join("nowhere").exists());
    }

    #[test]
    fn state_dir_of_another_user_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::at(tmp.path().join("s")).expect("state dir");
        let meta = fs::symlink_metadata(dir.path()).expect("stat");
        check_private_dir(dir.path(), &meta, meta.uid()).expect("the owner's own directory");
        let other = meta.uid().wrapping_add(1);
        let msg = check_private_dir(dir.path(), &meta, other).expect_err("another user's").to_string();
        assert!(msg.contains(&format!("is owned by uid {}, not by you (uid {other})", meta.uid())), "{msg}");
        assert!(msg.contains("chown"), "{msg}");
        let file = tmp.path().join("f");
        fs::write(&file, "").expect("write");
        let meta = fs::symlink_metadata(&file).expect("stat");
        let msg = check_private_dir(&file, &meta, meta.uid()).expect_err("a file").to_string();
        assert!(msg.contains("is not a directory"), "{msg}");
    }

    #[test]
    fn new_state_dir_is_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::at(tmp.path().join("a/b/state")).expect("created with its parents");
        let meta = fs::symlink_metadata(dir.path()).expect("stat");
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(meta.uid(), sys::current_uid());
        StateDir::at(dir.path()).expect("and accepted once it exists");
    }

    #[test]
    fn foreign_or_symlinked_records_are_ignored() {
        let (tmp, dir) = store();
        dir.save(&sample("good")).expect("save");
        // A symlink to a valid record of ours is still not a record.
        let outside = tmp.path().join("outside.json");
        fs::write(&outside, serde_json::to_vec(&sample("linked")).expect("json")).expect("write");
        std::os::unix::fs::symlink(&outside, dir.path().join("linked.json")).expect("symlink");
        assert_eq!(dir.load("linked").expect("load"), None);
        if sys::current_uid() == 0 {
            dir.save(&sample("theirs")).expect("save");
            let path = dir.path().join("theirs.json");
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
            assert_eq!(dir.load("theirs").expect("load"), None, "another user's record is not trusted");
        }
        assert_eq!(dir.list().expect("list"), vec![sample("good")]);
    }

    #[test]
    fn owner_alive_follows_detachment() {
        let me = ProcessIdentity::current();
        let stale = ProcessIdentity { start_time: me.start_time + 1, ..me };
        let mut r = sample("r");
        assert!(r.owner_alive());
        r.owner = Some(stale);
        assert!(!r.owner_alive());
        r.owner = None;
        assert!(!r.owner_alive());
        r.detached = true;
        r.leader = Some(me);
        assert!(r.owner_alive());
        r.leader = Some(stale);
        assert!(!r.owner_alive());
    }
}
