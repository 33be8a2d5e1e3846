//! The idle grandchild (`--spawn-grandchild`): a process the backend leaves behind for
//! tether to find — outside the group (`--setsid`), behind a launcher, or serving the
//! backend's own listening socket.

use std::ffi::OsString;
use std::process::Stdio;
#[cfg(unix)]
use std::sync::Arc;
#[cfg(unix)]
use std::time::{Duration, Instant};

use crate::args::DemoArgs;
#[cfg(unix)]
use crate::args::HealthMode;
#[cfg(unix)]
use crate::http::State;
use crate::output::say;

/// How the grandchild is started (`--spawn-grandchild` and the flags beside it).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GrandchildPlan {
    /// It calls setsid(), leaving the process group and session.
    pub(crate) setsid: bool,
    /// It accepts on this listening socket too (passed down as fd [`LISTEN_FD`]).
    pub(crate) listener: Option<RawFd>,
    /// It is started by a launcher child in between, which waits for it.
    pub(crate) via_child: bool,
}

/// A file descriptor number.
pub(crate) type RawFd = i32;

/// The descriptor of the backend's listening socket, to pass down to the grandchild
/// (`--grandchild-serves`). Unix only: Windows passes no descriptor by number.
pub(crate) fn listener_fd(listener: &tokio::net::TcpListener) -> std::io::Result<RawFd> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        Ok(listener.as_raw_fd())
    }
    #[cfg(not(unix))]
    {
        let _ = listener;
        Err(unix_only("--grandchild-serves"))
    }
}

/// The error for a flag that needs Unix.
#[cfg(not(unix))]
fn unix_only(flag: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Unsupported, format!("demo-backend: {flag} works on Unix only"))
}

/// The descriptor number a grandchild gets the listening socket on.
const LISTEN_FD: RawFd = 3;

/// Spawns `self_cmd --grandchild-idle [--launcher] [--setsid] [--listen-fd 3]`: stdin null,
/// stdout/stderr inherited.
///
/// It is neither waited for (beyond reaping it if it dies) nor killed on exit: tether has to
/// find it. Returns its pid.
pub(crate) fn spawn_grandchild(self_cmd: &[OsString], plan: GrandchildPlan) -> std::io::Result<u32> {
    let Some((program, args)) = self_cmd.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "--spawn-grandchild needs the command that re-invokes the demo backend",
        ));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).arg("--grandchild-idle");
    if plan.via_child {
        cmd.arg("--launcher");
    }
    if plan.setsid {
        cmd.arg("--setsid");
    }
    if let Some(fd) = plan.listener {
        cmd.arg("--listen-fd").arg(LISTEN_FD.to_string());
        #[cfg(not(unix))]
        return Err(unix_only(&format!("--listen-fd {fd}")));
        #[cfg(unix)]
        // SAFETY: dup2 and fcntl are async-signal-safe; this runs between fork and exec
        // only, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                use nix::libc;
                // dup2 onto itself keeps close-on-exec set: clear it by hand then.
                let r =
                    if fd == LISTEN_FD { libc::fcntl(LISTEN_FD, libc::F_SETFD, 0) } else { libc::dup2(fd, LISTEN_FD) };
                if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
            });
        }
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
    cmd.kill_on_drop(false);
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or(0);
    // Reap it if it is killed while we live, so it does not linger as a zombie.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(pid)
}

/// The idle grandchild (`--grandchild-idle`): optionally leave the process group
/// (setsid), serve on an inherited listening socket (`--listen-fd`), then run until
/// killed. As the launcher (`--launcher`) it starts the grandchild instead, prints its
/// pid, and waits.
pub(crate) async fn grandchild_idle(args: &DemoArgs, self_cmd: &[OsString]) -> std::io::Result<i32> {
    if args.launcher {
        let plan = GrandchildPlan { setsid: args.setsid, listener: args.listen_fd, via_child: false };
        let pid = spawn_grandchild(self_cmd, plan)?;
        say(&format!("demo-backend grandchild pid {pid}"));
        std::future::pending::<()>().await;
        return Ok(0);
    }
    if args.setsid {
        #[cfg(unix)]
        nix::unistd::setsid().map_err(std::io::Error::from)?;
        #[cfg(not(unix))]
        return Err(unix_only("--setsid"));
    }
    #[cfg(not(unix))]
    if args.listen_fd.is_some() {
        return Err(unix_only("--listen-fd"));
    }
    #[cfg(unix)]
    if let Some(fd) = args.listen_fd {
        use std::os::fd::FromRawFd;
        // SAFETY: the launcher passed this descriptor down as our listening socket, and
        // nothing else in this process owns it.
        let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let version = args.report_version.clone().unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
        let state = Arc::new(State::new(Instant::now(), 0, Duration::ZERO, args.skills, version, HealthMode::Ok));
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(crate::http::handle(stream, Arc::clone(&state)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    std::future::pending::<()>().await;
    Ok(0)
}
