//! `ensure_running`: the state file, the stale sweep, the port guard, the launch and
//! the record — one instance name, one backend.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether_core::port;
use tether_core::process::{GroupTarget, stop_group};
use tether_core::procs::{self, ProcessIdentity};
use tether_core::runner::Tethering;
use tether_core::safety::{Claim, Gate};
use tether_core::state::{InstanceLock, Record, StateDir};
use tether_core::{
    Error, Identity, LaunchOptions, LaunchSpec, Lifecycle, PortHolder, Result, Runner, RunningBackend, StopOutcome,
    launch,
};

use crate::config::{Plan, PortChoice};
use crate::handle::Handle;

/// How [`ensure_running`] starts the backend.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct EnsureOptions {
    /// Leave it running after this process ends (`up --detach`).
    pub detach: bool,
    /// The state directory (default: per user, see [`StateDir::from_env`]).
    pub state_dir: Option<std::path::PathBuf>,
    /// Observe the lifecycle.
    pub lifecycle: Option<Arc<Lifecycle>>,
    /// Use this runner instead of building one from the plan.
    pub runner: Option<Arc<dyn Runner>>,
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
    pub fn with_state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// With a ready-made runner.
    pub fn with_runner(mut self, r: Arc<dyn Runner>) -> Self {
        self.runner = Some(r);
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

/// Start the backend `plan` describes and wait until it is ready: sweep a stale
/// instance of the same name, clear the port of our own leftovers (refusing to touch
/// a foreign holder unless `force_port`), launch, record.
#[tracing::instrument(skip_all, fields(instance = %plan.name, runner = %plan.runner))]
pub async fn ensure_running(plan: Plan, opts: EnsureOptions) -> Result<Handle> {
    StateDir::check_name(&plan.name).map_err(|e| plan.config.blame("name", e))?;
    // Again here: a library user may have changed the plan's host after `plan()`.
    // A backend someone else runs (`--runner remote`): its host is the user's URL's, not
    // one of this machine; nothing is started, so nothing can be detached or shared.
    let attached = plan.runner == crate::RunnerKind::Remote;
    if attached && (opts.detach || opts.shared.is_some()) {
        return Err(Error::config(
            "--detach and --share make no sense with --runner remote: tether starts nothing there, the \
             backend already runs on its own; drop them (`tether up --runner remote` only checks and watches it)",
        ));
    }
    let given = plan.config.host.is_some() || plan.host != crate::config::DEFAULT_HOST;
    if !attached {
        crate::config::check_host_for(plan.runner, &plan.host, given).map_err(|e| plan.config.blame("host", e))?;
    }
    let state = state_dir(&opts)?;
    let runner = match &opts.runner {
        Some(r) => Arc::clone(r),
        None => crate::build_runner(&plan)?,
    };
    // The tool first: a missing uvx or engine is the error, not a port held meanwhile.
    let info = runner.check().await?;
    // A shared backend: our lease first, so that it cannot be stopped under us
    // between the reuse check (or the start) and our first use.
    let lease = match opts.shared {
        Some(_) => Some(tether_core::lease::Lease::acquire(&state.lease_path(&plan.name))?),
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
        if attached && old.runner != crate::RunnerKind::Remote.as_str() {
            return Err(Error::config(format!(
                "instance '{}' is a {} backend that tether runs (`tether status --name {}`); `--runner remote` \
                 never stops it: attach under another --name",
                old.name, old.runner, old.name
            )));
        }
        if old.owner_alive() && !opts.replace && reusable(&old, &plan, runner.as_ref(), &info).await {
            tracing::info!(instance = %old.name, url = %old.url, "reusing the running instance");
            return Ok(Handle::adopted(state, old).with_lease(lease));
        }
        // A shared backend that other fronts still hold is theirs too: never replaced
        // under them by a front of another configuration.
        let others =
            tether_core::lease::holders(&state.lease_path(&old.name)).saturating_sub(usize::from(lease.is_some()));
        let same_config = old.runner == runner.kind() && old.fingerprint == fingerprint(&info.fingerprint, &plan);
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
                what_differs(&old.fingerprint, &fingerprint(&info.fingerprint, &plan))
            );
        }
        // Stale, or alive but different, unhealthy, or to be replaced.
        sweep(&state, &old).await?;
    }
    // The runner's own stale instances, before the port guard: a container whose owner
    // died holds its port through the engine's proxy, which the guard would call foreign.
    let fixed = match plan.port {
        PortChoice::Fixed(p) => Some(p),
        PortChoice::Auto => None,
    };
    runner.sweep_stale(&plan.name, fixed, plan.grace).await?;
    // A remote engine's ports are on its machine: this one's port guard sees none of
    // them. The engine picks an automatic port (read back by the runner) and refuses
    // a taken fixed one; tether's own containers on it were swept just above.
    let remote_engine = crate::config::remote_docker(plan.runner);
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
            port_lock = Some(state.lock_port(p, &plan.name, plan.timeout + PORT_LOCK_SLACK).await?);
            clear_port(&state, &plan, p).await?;
            p
        }
    };
    let tethering = tethering(&state, &plan, opts.detach, opts.shared)?;
    let log_file = match &tethering {
        Tethering::Detached { log_file, .. } => Some(log_file.clone()),
        _ => None,
    };
    let spec = LaunchSpec::new(plan.name.clone(), port)
        .with_host(plan.host.clone())
        .with_args(plan.backend_args())
        .with_tethering(tethering)
        .with_grace(plan.grace);
    let mut spec = spec;
    spec.env = plan.config.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    spec.cwd = plan.config.cwd.clone();

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
        container_id: None,
        engine: None,
        host: plan.host.clone(),
        port,
        url: spec.endpoint().url(),
        started_at_unix_ms: now_ms(),
        tool_version: None,
        log_file,
        grace_ms: plan.grace.as_millis() as u64,
        restarts: opts.restarts,
        lease_guard: None,
    }));
    // Recorded as soon as it is spawned, so that if we die during readiness the
    // next start of this name finds and sweeps it.
    let on_started = {
        let record = Arc::clone(&record);
        let state = state.clone();
        Arc::new(move |b: &dyn RunningBackend| {
            let mut r = record.lock().unwrap_or_else(|p| p.into_inner());
            fill_identity(&mut r, b.identity());
            // A shared container's lease-mode guard: a later front checks it still watches.
            if let Some(guard) = b.lease_guard() {
                r.lease_guard = Some(guard);
            }
            // A container: the engine it runs on, which `down`, `status` and the sweep reach.
            if r.container_id.is_some() && r.engine.is_none() {
                r.engine = crate::config::docker_engine();
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
            record.fingerprint = fingerprint(&instance.runner_info().fingerprint, &plan);
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
            Ok(Handle::owned(instance, state, record, lock).with_lease(lease))
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
    for r in records.iter().filter(|r| r.name != starting && !r.detached && r.container_id.is_none()) {
        // Gone means nothing of it at all: also nothing pinned to its dead guard (a
        // `setsid` grandchild left when owner and guard were SIGKILLed together).
        let group_gone = r.leader.is_none_or(|l| {
            procs::group_members(l.pid).is_empty()
                && !l.is_alive()
                && tether_core::process::recorded_survivors(r).is_empty()
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
async fn acquire(state: &StateDir, plan: &Plan) -> Result<InstanceLock> {
    let deadline = tokio::time::Instant::now() + plan.timeout;
    let mut waits = tether_core::backoff::Backoff::default().iter();
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
async fn reusable(old: &Record, plan: &Plan, runner: &dyn Runner, info: &tether_core::RunnerInfo) -> bool {
    let same_port = match plan.port {
        PortChoice::Auto => true,
        PortChoice::Fixed(p) => p == old.port,
    };
    if old.runner != runner.kind() || old.fingerprint != fingerprint(&info.fingerprint, plan) || !same_port {
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
    if runner.recorded_running(old).await == Some(false) {
        tracing::info!(instance = %old.name, "the recorded container does not run");
        return false;
    }
    let Ok(client) = tether_core::readiness::probe_client(plan.probe_timeout) else { return false };
    let endpoint = tether_core::Endpoint { host: old.host.clone(), port: old.port };
    let logs = tether_core::LogRelay::with_defaults(old.name.clone());
    let ctx = tether_core::probe::ProbeContext { endpoint: &endpoint, logs: &logs, client: &client };
    let outcome = tokio::time::timeout(plan.probe_timeout, plan.probe.probe(ctx)).await;
    matches!(outcome, Ok(tether_core::ProbeOutcome::Ready { .. }))
}

/// What was launched: the runner's fingerprint (program, package==version, image)
/// plus the arguments and environment, so a reuse never serves different settings.
fn fingerprint(runner: &str, plan: &Plan) -> String {
    let env: Vec<String> = plan.config.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // The working directory as is, the inherited environment as a digest: the record
    // must not hold the environment's secrets.
    let around = crate::config::surroundings(plan);
    let (cwd, inherited) = match around.split_first() {
        Some((cwd, rest)) => (cwd.as_str(), format!("{:016x}", crate::config::fnv1a(rest))),
        None => ("", String::new()),
    };
    format!(
        "{runner} args={} env={} {cwd} inherited={inherited}",
        serde_json::json!(plan.backend_args()),
        serde_json::json!(env)
    )
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

fn fill_identity(r: &mut Record, id: Identity) {
    match id {
        Identity::Process { leader, backend_pid } => {
            r.leader = Some(leader);
            r.pgid = Some(leader.pid);
            r.backend_pid = backend_pid;
        }
        Identity::Container { id } => r.container_id = Some(id),
        // Someone else's (or a kind this version does not know): no pid, no container,
        // nothing a later `down` could signal.
        _ => {}
    }
}

fn tethering(state: &StateDir, plan: &Plan, detach: bool, shared: Option<Duration>) -> Result<Tethering> {
    let exe =
        || std::env::current_exe().map_err(|e| Error::io("cannot find this program's own path to run the guard", e));
    if detach {
        if !tether_core::guard::installed() {
            return Err(Error::config(
                "--detach needs the guard: call tether::install_guard() first thing in main (the tether binary does)",
            ));
        }
        let _ = std::fs::remove_file(tether_core::guard::status_path(&state.log_path(&plan.name)));
        return Ok(Tethering::Detached {
            log_file: state.log_path(&plan.name),
            max_log_bytes: 10 * 1024 * 1024,
            exe: exe()?,
            lease: shared.map(|linger| (state.lease_path(&plan.name), linger)),
        });
    }
    if tether_core::guard::installed() {
        return Ok(Tethering::Guard { exe: exe()? });
    }
    Ok(Tethering::ParentDeathSignal)
}

/// What a record names, as a stop target: its leader, which tether always starts
/// as the leader of a process group of its own, with that group. A record is a
/// claim, not proof: its `pgid` is not trusted (the group is the leader's pid), and
/// every signal passes the gate, which requires the instance's fingerprint.
fn target_of(record: &Record) -> Option<GroupTarget> {
    let leader = record.leader?;
    Some(GroupTarget::group(leader, Claim::instance(record.name.clone())))
}

/// A refusal of the gate while acting on `record`: the record named a process that
/// is not this instance's, so it was removed (it describes nothing of ours).
fn refused_record(state: &StateDir, record: &Record, e: Error) -> Error {
    let _ = state.remove(&record.name);
    match e {
        Error::Refused { pid, command, why } => Error::Refused {
            pid,
            command,
            why: format!(
                "{why}; the record {} named it, so the record was removed and nothing was signalled",
                state.path().join(format!("{}.json", record.name)).display()
            ),
        },
        other => other,
    }
}

/// Stop what a stale record names (through the runner that owns it: a process group
/// verified by pid + start time, then by the gate; a container) and forget it. A
/// record naming a process that is not ours is forgotten with a warning, and nothing
/// is signalled.
async fn sweep(state: &StateDir, record: &Record) -> Result<Option<StopOutcome>> {
    let grace = Duration::from_millis(record.grace_ms.max(100));
    tracing::info!(instance = %record.name, runner = %record.runner, "sweeping a stale instance");
    let outcome = match crate::kind::recorded_runner(record)?.stop_recorded(record, grace).await {
        Ok(outcome) => Some(outcome),
        Err(e @ Error::Refused { .. }) => {
            tracing::warn!(instance = %record.name, error = %e, "forgetting a record that names a process not ours");
            None
        }
        // Its container could not be stopped (its engine cannot be reached, or failed):
        // it may run on, so the record (the only way back to it) is kept, and nothing
        // starts in its place. A container that is gone is no error (`Ok` above).
        Err(e) if record.container_id.is_some() => return Err(e),
        Err(e) => {
            tracing::warn!(instance = %record.name, error = %e.chain(), "cannot stop a stale instance");
            None
        }
    };
    state.remove(&record.name)?;
    Ok(outcome)
}

/// How much longer than its own readiness deadline a start waits for another start on
/// its port (the other's stop of a failed backend, its record).
const PORT_LOCK_SLACK: Duration = Duration::from_secs(10);

/// Make `port` free: our own holders are stopped gracefully; a foreign one is an
/// error naming it, unless `force_port`.
async fn clear_port(state: &StateDir, plan: &Plan, port: u16) -> Result<()> {
    let records = state.list()?;
    let holders = port::holders(port)?;
    if holders.is_empty() {
        if port::can_bind(&plan.host, port) {
            return Ok(());
        }
        // Held by a process we cannot see: another user's (without root), or a socket whose
        // owner is not yet or no longer visible. Never ours to touch, never "pid 0".
        let command = if tether_core::sys::current_uid() == 0 {
            "a socket no process of this machine shows (another network namespace's, or one just opening or closing)"
        } else {
            "a process of another user (not visible without root)"
        };
        return Err(Error::PortTaken {
            port,
            holders: vec![PortHolder { pid: 0, user: None, command: command.into(), ours: false, instance: None }],
        });
    }
    // Another instance whose owner is alive is not a leftover: never steal it.
    for h in &holders {
        let record = h.instance.as_ref().and_then(|n| records.iter().find(|r| &r.name == n));
        if let Some(r) = record.filter(|r| r.owner_alive() && r.name != plan.name) {
            return Err(Error::PortUsedByInstance { port, name: r.name.clone(), pid: h.pid });
        }
        // Another instance this state directory knows nothing of (another state
        // directory's): its fingerprint says tether, not that it is a leftover of ours.
        if let Some(name) = h.instance.as_ref().filter(|n| **n != plan.name && record.is_none())
            && !plan.force_port
        {
            return Err(Error::PortUsedElsewhere { port, name: name.clone(), pid: h.pid });
        }
    }
    let foreign: Vec<PortHolder> = holders.iter().filter(|h| !h.ours).cloned().collect();
    if !foreign.is_empty() && !plan.force_port {
        return Err(Error::PortTaken { port, holders: foreign });
    }
    for h in &holders {
        let record = h.instance.as_ref().and_then(|n| records.iter().find(|r| &r.name == n));
        match (record.and_then(target_of), &h.instance) {
            // Ours, and its record's leader is still there: the whole instance goes.
            (Some(t), Some(_)) if t.leader.is_alive() => {
                tracing::info!(pid = h.pid, instance = ?h.instance, "stopping our own holder of port {port}");
                stop_group(t, plan.grace, || None).await?;
            }
            (_, instance) => {
                // Ours by fingerprint only, or foreign with --force-port: that process,
                // its descendants, and its group when it leads one.
                let Some(id) = ProcessIdentity::of(h.pid) else { continue };
                tracing::warn!(pid = h.pid, command = %h.command, ours = h.ours, "stopping the holder of port {port}");
                let claim = instance.clone().map_or(Claim::Forced, Claim::Instance);
                let t = if procs::pgid_of(h.pid) == Some(h.pid) {
                    GroupTarget::group(id, claim)
                } else {
                    GroupTarget::process(id, claim)
                };
                stop_group(t, plan.grace, || None).await?;
            }
        }
        if let Some(r) = record {
            state.remove(&r.name)?;
        }
    }
    port::wait_free(&plan.host, port, plan.grace + Duration::from_secs(5)).await
}

/// How a detached guard said its backend ended (and forget it).
fn guard_report(log: &std::path::Path) -> Option<StopOutcome> {
    let path = tether_core::guard::status_path(log);
    // Never through a link planted in the state directory.
    let text = {
        use std::io::Read;
        let mut file = tether_core::sys::private::no_follow(std::fs::OpenOptions::new().read(true)).open(&path).ok()?;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        text
    };
    let _ = std::fs::remove_file(&path);
    let word = |p: &str| text.strip_prefix(p).and_then(|n| n.trim().parse::<i32>().ok());
    Some(match text.trim() {
        "killed" => StopOutcome::Killed,
        _ => match (word("exit "), word("signal ")) {
            (Some(c), _) => StopOutcome::Terminated { exit: tether_core::ExitStatus::Code(c) },
            (_, Some(9)) => StopOutcome::Killed,
            (_, Some(sig)) => StopOutcome::Terminated { exit: tether_core::ExitStatus::Signal(sig) },
            _ => return None,
        },
    })
}

/// What [`down_report`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Down {
    /// How the stop went.
    pub outcome: StopOutcome,
    /// Whether anything of the instance ran (its owner, its guard or any process of it):
    /// `false` when the record described something already gone, and only the record
    /// was removed.
    pub was_running: bool,
    /// What ran although the instance's owner and guard were gone (both SIGKILLed, say),
    /// found by its fingerprint and stopped: pid and command line.
    pub orphans: Vec<(u32, String)>,
}

/// Stop the instance `name` (detached, or the foreground one of another process).
/// See [`down_report`] for what was stopped.
pub async fn down(state: &StateDir, name: &str) -> Result<StopOutcome> {
    down_report(state, name).await.map(|d| d.outcome)
}

/// Stop the instance `name` (detached, or the foreground one of another process), and
/// tell what was stopped: an instance whose owner and guard are both gone while
/// processes of it still run (found by the instance's fingerprint, never otherwise) is
/// stopped too, and those processes named. Once stopped, nothing of it may be left:
/// what still runs is [`Error::StillRunning`], and the record is kept.
pub async fn down_report(state: &StateDir, name: &str) -> Result<Down> {
    StateDir::check_name(name)?;
    let record = state.load(name)?.ok_or_else(|| Error::NotFound { name: name.to_string() })?;
    let before = tether_core::process::recorded_survivors(&record);
    let keeper_alive = record.owner_alive();
    let orphans: Vec<(u32, String)> = if keeper_alive {
        Vec::new()
    } else {
        before.iter().map(|id| (id.pid, procs::command_of(id.pid).unwrap_or_else(|| "?".into()))).collect()
    };
    // A container's liveness is its engine's to tell: counted as running.
    let was_running = keeper_alive || !before.is_empty() || record.leader.is_none();
    // A foreground instance: ask its owner to stop it, so it cleans up itself. The
    // owner is ours only if it holds the instance's lock file open.
    if let Some(owner) = record.owner.filter(|o| o.is_alive()) {
        let lock = Claim::LockHolder(state.path().join(format!("{name}.lock")));
        if let Err(refusal) = Gate::new().signal(owner, tether_core::sys::Signal::SIGTERM, &lock) {
            return Err(refused_record(state, &record, refusal.into()));
        }
        let grace = Duration::from_millis(record.grace_ms.max(100)) + Duration::from_secs(2);
        let deadline = tokio::time::Instant::now() + grace;
        while owner.is_alive() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let grace = Duration::from_millis(record.grace_ms.max(100));
    let outcome = match crate::kind::recorded_runner(&record)?.stop_recorded(&record, grace).await {
        Ok(outcome) => outcome,
        Err(e @ Error::Refused { .. }) => return Err(refused_record(state, &record, e)),
        Err(e) => return Err(e),
    };
    let outcome = match (&record.log_file, outcome) {
        // A detached guard ran the same grace period; it says whether it had to kill.
        // Only from our own log's place: a record must not steer tether at other files.
        (Some(log), StopOutcome::Terminated { .. }) if *log == state.log_path(name) => {
            guard_report(log).unwrap_or(outcome)
        }
        (_, o) => o,
    };
    let left: Vec<(u32, String)> = tether_core::process::recorded_survivors(&record)
        .into_iter()
        .map(|id| (id.pid, procs::command_of(id.pid).unwrap_or_else(|| "?".into())))
        .collect();
    if !left.is_empty() {
        return Err(Error::StillRunning { name: name.to_string(), pids: left });
    }
    state.remove(name)?;
    Ok(Down { outcome, was_running, orphans })
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
