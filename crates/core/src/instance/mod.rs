//! One instance name, one backend: [`ensure`] takes the instance lock, reuses a healthy
//! running instance of the same configuration or sweeps a stale one, runs the runner's
//! own sweep, guards the port (our own leftovers stopped, anyone else's an error),
//! records the backend as soon as it is spawned, and launches it until ready. `down`
//! and the stale sweep act on a record through the reclaiming role of the runner that
//! recorded it ([`ReclaimOf`]).
//!
//! A front turns its flags and files into an [`InstancePlan`] and a runner; everything
//! from there to a ready [`Handle`] is here, the same for every front.

mod handle;
mod ports;
mod reclaim;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use handle::Handle;
pub use reclaim::{Down, ReclaimOf, down, down_report};

use crate::error::{Error, Result};
use crate::launch::{LaunchOptions, launch};
use crate::lifecycle::Lifecycle;
use crate::port;
use crate::probe::HealthProbe;
use crate::procs::{self, ProcessIdentity};
use crate::runner::{Identity, LaunchSpec, Placement, Runner, RunningBackend, Tethering};
use crate::safety::{Claim, Gate};
use crate::state::{InstanceLock, Record, StateDir};

/// A port, or `auto` (a free one picked at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortChoice {
    /// This port.
    Fixed(u16),
    /// Any free port.
    Auto,
}

impl std::str::FromStr for PortChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "auto" {
            return Ok(PortChoice::Auto);
        }
        match s.parse::<u32>() {
            Ok(0) => Err(Error::config("port 0 is not a port to listen on; give 1–65535, or `auto` for a free one")),
            Ok(n) if n <= 65535 => Ok(PortChoice::Fixed(n as u16)),
            Ok(n) => Err(Error::config(format!("port {n} is out of range; give 1–65535, or `auto` for a free one"))),
            Err(_) => Err(Error::config(format!("bad port `{s}`; give a number 1–65535, or `auto`"))),
        }
    }
}

impl<'de> serde::Deserialize<'de> for PortChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct PortVisitor;
        impl serde::de::Visitor<'_> for PortVisitor {
            type Value = PortChoice;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port number 1–65535 or \"auto\"")
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<PortChoice, E> {
                n.to_string().parse().map_err(|e: Error| E::custom(e.to_string()))
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<PortChoice, E> {
                n.to_string().parse().map_err(|e: Error| E::custom(e.to_string()))
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<PortChoice, E> {
                s.parse().map_err(|e: Error| E::custom(e.to_string()))
            }
        }
        d.deserialize_any(PortVisitor)
    }
}

/// What [`ensure`] starts: the runner-independent settings of one instance, checked by
/// the front that built them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InstancePlan {
    /// Instance name (state file, lock, log, container name).
    pub name: String,
    /// The host the backend listens on and is probed at.
    pub host: String,
    /// The port, or `auto`.
    pub port: PortChoice,
    /// The readiness probe (also what a reuse must answer).
    pub probe: Arc<dyn HealthProbe>,
    /// Overall readiness deadline (also how long a start waits for another of its name).
    pub timeout: Duration,
    /// Per-probe timeout.
    pub probe_timeout: Duration,
    /// SIGTERM → SIGKILL grace.
    pub grace: Duration,
    /// Whether foreign holders of the port may be stopped.
    pub force_port: bool,
    /// The backend's arguments, `{port}` and `{host}` not yet substituted.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// What else makes the backend what it is, first the working directory
    /// (`cwd=DIR`) then the inherited environment (`KEY=VALUE`), for its fingerprint:
    /// a backend started elsewhere or with other secrets is never reused in place of
    /// this one. The record keeps the directory and only a digest of the rest. Empty
    /// when the backend inherits neither (a container, someone else's backend).
    pub surroundings: Vec<String>,
}

impl InstancePlan {
    /// A plan for `name` with defaults: 127.0.0.1, port 8765, 120 s readiness, 2 s per
    /// probe, 5 s grace, no arguments.
    pub fn new(name: impl Into<String>, probe: Arc<dyn HealthProbe>) -> Self {
        InstancePlan {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: PortChoice::Fixed(8765),
            probe,
            timeout: Duration::from_secs(120),
            probe_timeout: Duration::from_secs(2),
            grace: Duration::from_secs(5),
            force_port: false,
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            surroundings: Vec::new(),
        }
    }
}

/// FNV-1a over `parts` (each ended by a 0 byte): stable across builds and platforms
/// (unlike `DefaultHasher`), so the same backend finds its cache and its instance again.
pub fn fnv1a(parts: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// How [`ensure`] starts the backend.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct EnsureOptions {
    /// Leave it running after this process ends (`up --detach`).
    pub detach: bool,
    /// The state directory (default: per user, see [`StateDir::from_env`]).
    pub state_dir: Option<PathBuf>,
    /// Observe the lifecycle.
    pub lifecycle: Option<Arc<Lifecycle>>,
    /// Restarts so far (recorded for `status`).
    pub restarts: u32,
    /// Set to `true` to stop a start that is waiting for readiness (gracefully).
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
    /// Replace a running instance of this name instead of reusing it.
    pub replace: bool,
    /// Share the backend between fronts (one `mcp-proxy` per host window): it runs
    /// detached, each front holds a lease for as long as it lives (the kernel drops it
    /// when the front dies, even by SIGKILL), and the backend stops this long after
    /// the last lease is gone. `stop` of a shared handle only gives its lease back.
    pub shared: Option<Duration>,
}

impl std::fmt::Debug for EnsureOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnsureOptions").field("detach", &self.detach).finish_non_exhaustive()
    }
}

impl EnsureOptions {
    /// Detached or not.
    pub fn detached(mut self, detach: bool) -> Self {
        self.detach = detach;
        self
    }

    /// Shared between fronts by leases, lingering `linger` after the last (see [`EnsureOptions::shared`]).
    pub fn sharing(mut self, linger: Duration) -> Self {
        self.shared = Some(linger);
        self.detach = true;
        self
    }

    /// Replace a running detached instance of this name instead of reusing it.
    pub fn replacing(mut self, replace: bool) -> Self {
        self.replace = replace;
        self
    }

    /// With a lifecycle to observe.
    pub fn with_lifecycle(mut self, l: Arc<Lifecycle>) -> Self {
        self.lifecycle = Some(l);
        self
    }

    /// With a state directory.
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn state_dir(opts: &EnsureOptions) -> Result<StateDir> {
    match &opts.state_dir {
        Some(d) => StateDir::at(d.clone()),
        None => StateDir::from_env(),
    }
}

/// Start the backend `plan` describes with `runner` and wait until it is ready: sweep
/// a stale instance of the same name (through `reclaim_of`), clear the port of our own
/// leftovers (refusing to touch a foreign holder unless `force_port`), launch, record.
/// A healthy detached instance of the same configuration is reused instead.
#[tracing::instrument(skip_all, fields(instance = %plan.name, runner = runner.kind()))]
pub async fn ensure(
    plan: InstancePlan,
    runner: Arc<dyn Runner>,
    reclaim_of: ReclaimOf,
    opts: EnsureOptions,
) -> Result<Handle> {
    StateDir::check_name(&plan.name)?;
    // A backend someone else runs: nothing is started, so nothing can be detached or shared.
    let placement = runner.placement();
    let attached = placement == Placement::Attached;
    if attached && (opts.detach || opts.shared.is_some()) {
        return Err(Error::config(
            "--detach and --share make no sense with --runner remote: tether starts nothing there, the \
             backend already runs on its own; drop them (`tether up --runner remote` only checks and watches it)",
        ));
    }
    let state = state_dir(&opts)?;
    // The tool first: a missing uvx or engine is the error, not a port held meanwhile.
    let info = runner.check().await?;
    let fingerprint = fingerprint(&info.fingerprint, &plan);
    // A shared backend: our lease first, so that it cannot be stopped under us
    // between the reuse check (or the start) and our first use.
    let lease = match opts.shared {
        Some(_) => Some(crate::lease::Lease::acquire(&state.lease_path(&plan.name))?),
        None => None,
    };
    let lock = acquire(&state, &plan).await?;
    forget_the_dead(&state, &plan.name);
    if let Some(old) = state.load(&plan.name)? {
        if old.owner_alive() && !old.detached {
            return Err(Error::AlreadyRunning { name: plan.name.clone(), pid: old.owner.map(|p| p.pid) });
        }
        // Attaching starts and stops nothing: a backend tether runs under this name is
        // left alone, whatever state it is in.
        if attached && old.runner != runner.kind() {
            return Err(Error::config(format!(
                "instance '{}' is a {} backend that tether runs (`tether status --name {}`); `--runner remote` \
                 never stops it: attach under another --name",
                old.name, old.runner, old.name
            )));
        }
        if old.owner_alive() && !opts.replace && reusable(&old, &plan, runner.as_ref(), &fingerprint).await {
            tracing::info!(instance = %old.name, url = %old.url, "reusing the running instance");
            return Ok(Handle::adopted(state, old, reclaim_of).with_lease(lease));
        }
        // A shared backend that other fronts still hold is theirs too: never replaced
        // under them by a front of another configuration.
        let others = crate::lease::holders(&state.lease_path(&old.name)).saturating_sub(usize::from(lease.is_some()));
        let same_config = old.runner == runner.kind() && old.fingerprint == fingerprint;
        if old.detached && old.owner_alive() && others > 0 && !same_config {
            return Err(Error::config(format!(
                "instance '{}' is shared by {others} other front(s) with another configuration (program, \
                 arguments, working directory or environment); it is left running for them: give this one \
                 another --name",
                old.name
            )));
        }
        if old.owner_alive() && !opts.replace && !same_config {
            tracing::warn!(
                instance = %old.name,
                "replacing the running instance: it was started with another {} (use another --name to keep both)",
                what_differs(&old.fingerprint, &fingerprint)
            );
        }
        // Stale, or alive but different, unhealthy, or to be replaced.
        reclaim::sweep(&state, &old, &reclaim_of).await?;
    }
    // The runner's own stale instances, before the port guard: a container whose owner
    // died holds its port through the engine's proxy, which the guard would call foreign.
    let fixed = match plan.port {
        PortChoice::Fixed(p) => Some(p),
        PortChoice::Auto => None,
    };
    runner.reclaim().sweep_stale(&plan.name, fixed, plan.grace).await?;
    // A remote engine's ports are on its machine: this one's port guard sees none of
    // them. The engine picks an automatic port (read back by the runner) and refuses
    // a taken fixed one; tether's own containers on it were swept just above.
    let remote_engine = placement == Placement::RemoteEngine;
    let mut port_lock = None;
    let port = match plan.port {
        // Not ours and maybe not on this machine: the port guard must never touch its holder.
        PortChoice::Fixed(p) if attached => p,
        PortChoice::Auto if attached => {
            return Err(Error::config("--runner remote attaches to the port in --url; `--port auto` makes no sense"));
        }
        PortChoice::Auto if remote_engine => 0,
        PortChoice::Auto => port::free_port(&plan.host)?,
        PortChoice::Fixed(p) if remote_engine => p,
        PortChoice::Fixed(p) => {
            // Starts on one port take turns (see `StateDir::lock_port`), for as long as
            // the other's readiness may take.
            port_lock = Some(state.lock_port(p, &plan.name, plan.timeout + ports::PORT_LOCK_SLACK).await?);
            let starting =
                ports::Starting { name: &plan.name, host: &plan.host, grace: plan.grace, force_port: plan.force_port };
            ports::clear_port(&state, &starting, p).await?;
            p
        }
    };
    let tethering = tethering(&state, &plan.name, opts.detach, opts.shared)?;
    let log_file = match &tethering {
        Tethering::Detached { log_file, .. } => Some(log_file.clone()),
        _ => None,
    };
    let mut spec = LaunchSpec::new(plan.name.clone(), port)
        .with_host(plan.host.clone())
        .with_args(plan.args.clone())
        .with_tethering(tethering)
        .with_grace(plan.grace);
    spec.env = plan.env.clone();
    spec.cwd = plan.cwd.clone();

    let owner = (!opts.detach).then(ProcessIdentity::current);
    let record = Arc::new(Mutex::new(Record {
        name: plan.name.clone(),
        runner: runner.kind().to_string(),
        fingerprint: String::new(),
        detached: opts.detach,
        owner,
        leader: None,
        pgid: None,
        backend_pid: None,
        host: plan.host.clone(),
        port,
        url: spec.endpoint().url(),
        started_at_unix_ms: now_ms(),
        tool_version: None,
        log_file,
        grace_ms: plan.grace.as_millis() as u64,
        restarts: opts.restarts,
        lease_guard: None,
        runner_fields: serde_json::Map::new(),
    }));
    // Recorded as soon as it is spawned, so that if we die during readiness the
    // next start of this name finds and sweeps it.
    let on_started = {
        let record = Arc::clone(&record);
        let state = state.clone();
        Arc::new(move |b: &dyn RunningBackend| {
            let mut r = record.lock().unwrap_or_else(|p| p.into_inner());
            if let Identity::Process { leader, backend_pid } = b.identity() {
                r.leader = Some(leader);
                r.pgid = Some(leader.pid);
                r.backend_pid = backend_pid;
            }
            // The runner's own part (a container: its id and engine), which its
            // reclaiming role reads back for `down`, `status` and the sweep.
            r.runner_fields.extend(b.record_fields());
            // A shared container's lease-mode guard: a later front checks it still watches.
            if let Some(guard) = b.lease_guard() {
                r.lease_guard = Some(guard);
            }
            // Port 0 was left to the runner (a remote engine's pick): record the real one.
            if r.port == 0 {
                let endpoint = b.endpoint();
                r.port = endpoint.port;
                r.url = endpoint.url();
            }
            if let Err(e) = state.save(&r) {
                tracing::warn!(error = %e.chain(), "cannot record the instance");
            }
        })
    };
    let mut launch_opts = LaunchOptions::default().on_started(on_started);
    launch_opts.readiness =
        launch_opts.readiness.clone().with_deadline(plan.timeout).with_attempt_timeout(plan.probe_timeout);
    if let Some(l) = &opts.lifecycle {
        launch_opts = launch_opts.with_lifecycle(Arc::clone(l));
    }
    launch_opts.cancel = opts.cancel.clone();
    launch_opts.checked = Some(info.clone());
    launch_opts.swept = true;
    let result = launch(runner, spec, Arc::clone(&plan.probe), launch_opts).await;
    // Ready (its listener now names it to the next start's port guard), or failed.
    drop(port_lock);
    let mut record = record.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match result {
        Ok(instance) => {
            record.fingerprint = self::fingerprint(&instance.runner_info().fingerprint, &plan);
            record.tool_version = instance.runner_info().tool_version.clone();
            if let Err(e) = state.save(&record) {
                // Unrecorded, it would run on invisible to `status` and `down` (a detached
                // one is not stopped by dropping its handle): what we launched, we stop.
                let stopped = match instance.stop().await {
                    Ok(_) => "it is stopped".to_string(),
                    Err(stop) => format!("stopping it failed too: {}", stop.chain()),
                };
                let _ = state.remove(&plan.name);
                return Err(Error::State {
                    path: state.path().join(format!("{}.json", plan.name)),
                    source: std::io::Error::other(format!(
                        "cannot record the ready backend ({}); {stopped}: free the space or fix the state \
                         directory, then start it again",
                        e.chain()
                    )),
                });
            }
            Ok(Handle::owned(instance, state, record, lock, reclaim_of).with_lease(lease))
        }
        Err(e) => {
            let _ = state.remove(&plan.name);
            Err(e)
        }
    }
}

/// Forget the records of foreground instances of other names whose owner died and of
/// which nothing runs any more (a killed `mcp-proxy` of its own name, say): they are
/// litter no later start of that name will ever sweep. No signal: files only, and only
/// for records whose owner and whole process group are provably gone. Detached records
/// stay (their log may tell what happened; `down` forgets them).
fn forget_the_dead(state: &StateDir, starting: &str) {
    let Ok(records) = state.list() else { return };
    for r in records.iter().filter(|r| r.name != starting && !r.detached && !r.kept_by_runner()) {
        // Gone means nothing of it at all: also nothing pinned to its dead guard (a
        // `setsid` grandchild left when owner and guard were SIGKILLed together).
        let group_gone = r.leader.is_none_or(|l| {
            procs::group_members(l.pid).is_empty() && !l.is_alive() && crate::process::recorded_survivors(r).is_empty()
        });
        if !r.owner_alive() && group_gone {
            tracing::debug!(instance = %r.name, "forgetting the record of a dead foreground instance");
            let _ = state.remove(&r.name);
        }
    }
}

/// The lock on the instance name. Contended: a foreground instance of that name
/// running elsewhere is an "already running" error at once; a start in progress (a
/// detached one, say) is waited for, up to the plan's timeout, so it can be reused.
async fn acquire(state: &StateDir, plan: &InstancePlan) -> Result<InstanceLock> {
    let deadline = tokio::time::Instant::now() + plan.timeout;
    let mut waits = crate::backoff::Backoff::default().iter();
    loop {
        match state.try_lock(&plan.name) {
            Ok(lock) => return Ok(lock),
            Err(Error::AlreadyRunning { name, pid }) => {
                let foreground = state.load(&plan.name).ok().flatten().filter(|r| !r.detached && r.owner_alive());
                if let Some(r) = foreground {
                    return Err(Error::AlreadyRunning { name, pid: r.owner.map(|o| o.pid).or(pid) });
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::AlreadyRunning { name, pid });
                }
                tokio::time::sleep(waits.next().unwrap_or(Duration::from_millis(50))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a live detached record can serve this plan: same runner and fingerprint,
/// the port asked for, and its health answers ready now.
async fn reusable(old: &Record, plan: &InstancePlan, runner: &dyn Runner, fingerprint: &str) -> bool {
    let same_port = match plan.port {
        PortChoice::Auto => true,
        PortChoice::Fixed(p) => p == old.port,
    };
    if old.runner != runner.kind() || old.fingerprint != fingerprint || !same_port {
        return false;
    }
    // A process record must name a backend of ours that holds the port: a record
    // is a claim, and a health answer from a neighbour is not our backend's.
    if let Some(leader) = old.leader {
        let ours = Gate::new().check(leader, &Claim::instance(old.name.clone())).is_ok();
        if !ours || !port::listeners_held_by(old.port, leader, Some(leader.pid)) {
            tracing::warn!(instance = %old.name, leader = leader.pid, "the record does not name our backend on its port");
            return false;
        }
    }
    // A shared container whose lease guard is gone: nothing would ever remove it once
    // the fronts leave, so it is replaced (the sweep removes it, a fresh one gets a guard).
    if let Some(guard) = old.lease_guard.filter(|g| !g.is_alive()) {
        tracing::warn!(instance = %old.name, guard = guard.pid, "not reusing the instance: its lease guard is gone");
        return false;
    }
    // A container record: its container must still run, asked of the engine (its port
    // is held by the engine's proxy, so the check above has nothing to look at).
    if runner.reclaim().recorded_running(old).await == Some(false) {
        tracing::info!(instance = %old.name, "the recorded container does not run");
        return false;
    }
    let Ok(client) = crate::readiness::probe_client(plan.probe_timeout) else { return false };
    let endpoint = crate::Endpoint { host: old.host.clone(), port: old.port };
    let logs = crate::LogRelay::with_defaults(old.name.clone());
    let ctx = crate::probe::ProbeContext { endpoint: &endpoint, logs: &logs, client: &client };
    let outcome = tokio::time::timeout(plan.probe_timeout, plan.probe.probe(ctx)).await;
    matches!(outcome, Ok(crate::ProbeOutcome::Ready { .. }))
}

/// What was launched: the runner's fingerprint (program, package==version, image)
/// plus the arguments, the environment and the surroundings, so a reuse never serves
/// different settings.
fn fingerprint(runner: &str, plan: &InstancePlan) -> String {
    let env: Vec<String> = plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // The working directory as is, the inherited environment as a digest: the record
    // must not hold the environment's secrets.
    let (cwd, inherited) = match plan.surroundings.split_first() {
        Some((cwd, rest)) => (cwd.as_str(), format!("{:016x}", fnv1a(rest))),
        None => ("", String::new()),
    };
    format!("{runner} args={} env={} {cwd} inherited={inherited}", serde_json::json!(plan.args), serde_json::json!(env))
}

/// What differs between a recorded fingerprint and a new one, for the log line that says
/// why a running instance is replaced rather than reused.
fn what_differs(old: &str, new: &str) -> String {
    let part = |fp: &str, key: &str| fp.split(' ').find(|w| w.starts_with(key)).map(str::to_owned);
    let mut why = Vec::new();
    for (key, what) in [("cwd=", "working directory"), ("inherited=", "inherited environment")] {
        let (a, b) = (part(old, key), part(new, key));
        if a != b {
            why.push(match (key, a, b) {
                ("cwd=", Some(a), Some(b)) => format!("{what} ({} → {})", &a[4..], &b[4..]),
                _ => what.to_string(),
            });
        }
    }
    let head = |fp: &str| fp.split(" cwd=").next().unwrap_or(fp).split(" inherited=").next().unwrap_or(fp).to_owned();
    if head(old) != head(new) {
        why.insert(0, "program, arguments or --env".into());
    }
    if why.is_empty() { "its settings".into() } else { why.join(", ") }
}

fn tethering(state: &StateDir, name: &str, detach: bool, shared: Option<Duration>) -> Result<Tethering> {
    let exe =
        || std::env::current_exe().map_err(|e| Error::io("cannot find this program's own path to run the guard", e));
    if detach {
        if !crate::guard::installed() {
            return Err(Error::config(
                "--detach needs the guard: call tether::install_guard() first thing in main (the tether binary does)",
            ));
        }
        let _ = std::fs::remove_file(crate::guard::status_path(&state.log_path(name)));
        return Ok(Tethering::Detached {
            log_file: state.log_path(name),
            max_log_bytes: 10 * 1024 * 1024,
            exe: exe()?,
            lease: shared.map(|linger| (state.lease_path(name), linger)),
        });
    }
    if crate::guard::installed() {
        return Ok(Tethering::Guard { exe: exe()? });
    }
    Ok(Tethering::ParentDeathSignal)
}

#[cfg(test)]
mod tests {
    use super::what_differs;

    #[test]
    fn a_replacement_says_what_differs() {
        let old = r#"p args=["a"] env=[] cwd=/one inherited=00000000000000aa"#;
        let moved = r#"p args=["a"] env=[] cwd=/two inherited=00000000000000aa"#;
        assert_eq!(what_differs(old, moved), "working directory (/one → /two)");
        let env = r#"p args=["a"] env=[] cwd=/one inherited=00000000000000bb"#;
        assert_eq!(what_differs(old, env), "inherited environment");
        let args = r#"p args=["b"] env=[] cwd=/one inherited=00000000000000aa"#;
        assert_eq!(what_differs(old, args), "program, arguments or --env");
        assert_eq!(what_differs(old, old), "its settings");
    }
}
