//! The only place in tether that talks to the operating system.
//!
//! Everything outside this module is portable: it asks the questions below and decides
//! what is ours, what to stop and in which order. A platform answers them in a module
//! of its own (`linux`, `macos`, with the Unix-common part in `unix`); on a platform without
//! one tether does not build, with one error naming it. Windows (`windows`) answers the same
//! questions through Job Objects and the Win32 API: see its module for what each means there. Where a platform lacks what a question
//! needs (macOS has no parent-death signal, subreaper, pidfd, pid namespace, lock table), its
//! module says so at the function and answers with the fallback documented there.
//!
//! The interface, by topic:
//! - **Processes**: a process's facts ([`Stat`]: parent, group, start time — pid + start
//!   time is a process's identity — and name), every live process ([`table`]), the
//!   children of one ([`children`], when the kernel lists them), its arguments
//!   ([`cmdline`]) and the environment it started with ([`environ`]: "carries this
//!   instance's fingerprint"), its owner ([`uid_of`], [`user_name`]), whether it holds a
//!   file open ([`holds_file`]).
//! - **Signals**: [`Signal`], [`kill`], [`kill_group`], and a [`ProcessHandle`] taken
//!   before the safety check, so a signal sent through it never reaches a reused pid
//!   (and that tells when a process that is not our child ended).
//! - **Starting**: what a spawned backend or guard gets between fork and exec
//!   ([`own_group`], [`die_with_parent`], [`cloexec_inherited_fds`]), a start outside
//!   this process's tree, group and session ([`spawn_detached`]: a shared backend's
//!   guard), a wider pipe for its output ([`widen_pipe`]), how it ended ([`exit_signal`]).
//! - **The guard**: owner-death arming and the wait for a stop ([`guard`]), over the
//!   platform's owner watch ([`watch_owner`], [`owner_still_there`]) and its hold on orphaned
//!   descendants ([`become_subreaper`], [`adopted_alive`]).
//! - **Ports**: the listeners of a port and their holders ([`Listeners`]), and closing a
//!   probe listener at once ([`shutdown_listener`]).
//! - **Files**: the state directory's private files and directories (this user's only,
//!   never through a link: [`private`]), file-lock holders ([`lock_holders`]), where the
//!   state lives by default ([`HOME_STATE_DIR`]).
//! - **This process**: [`current_uid`], [`is_root`], [`own_start_time`], and facts that
//!   tell this machine and pid namespace apart ([`boot_id`], [`pid_namespace`]).

// The Unix-common part, for the Unix platforms that have a module of their own (it
// calls into theirs).
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod unix;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use unix::*;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::*;

// The macOS module's data layouts and parsers (no OS call): unit-tested on every host, not
// only on a Mac. Elsewhere only those tests use them.
#[cfg(all(test, not(target_os = "macos")))]
#[allow(dead_code)]
#[path = "macos/abi.rs"]
mod macos_abi;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
compile_error!(
    "tether does not support this platform yet: it runs on Linux (crates/core/src/sys/linux), macOS \
     (crates/core/src/sys/macos) and Windows (crates/core/src/sys/windows)"
);
