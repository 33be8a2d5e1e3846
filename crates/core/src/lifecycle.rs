//! The lifecycle state machine, observable through a tokio `watch`.

use std::time::Instant;
use tokio::sync::watch;

use crate::error::ExitStatus;

/// Loading progress reported by a probe (e.g. claude-skills' `skills_loaded`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// What is being done: `starting`, `installing via uv`, `loading`…
    pub phase: String,
    /// A count that grows while loading, when the probe reports one.
    pub value: Option<u64>,
}

impl Progress {
    /// A phase without a count.
    pub fn phase(phase: impl Into<String>) -> Self {
        Progress { phase: phase.into(), value: None }
    }
}

/// Where an instance is in its life. Each variant carries what is known in it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Nothing done yet.
    Idle,
    /// The runner installs or pulls what it needs.
    Preparing {
        /// What is being done (`preparing`, `pulling`, a layer's progress…).
        progress: Progress,
    },
    /// The backend is being spawned.
    Starting,
    /// Spawned; probing until ready.
    WaitingReady {
        /// The last progress seen.
        progress: Progress,
    },
    /// Ready and serving.
    Ready {
        /// The URL it answers on.
        url: String,
        /// When it became ready.
        since: Instant,
    },
    /// Being stopped.
    Stopping,
    /// Gone.
    Stopped {
        /// How it ended, when known.
        exit: Option<ExitStatus>,
        /// Whether it had to be killed after the grace period.
        killed: bool,
    },
    /// Failed; the message says why.
    Failed {
        /// The error, as displayed.
        error: String,
    },
}

impl State {
    /// A short name: `idle`, `preparing`, `starting`, `waiting_ready`, `ready`, `stopping`, `stopped`, `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Preparing { .. } => "preparing",
            State::Starting => "starting",
            State::WaitingReady { .. } => "waiting_ready",
            State::Ready { .. } => "ready",
            State::Stopping => "stopping",
            State::Stopped { .. } => "stopped",
            State::Failed { .. } => "failed",
        }
    }

    /// Ready and serving.
    pub fn is_ready(&self) -> bool {
        matches!(self, State::Ready { .. })
    }

    /// Stopped or failed: nothing runs.
    pub fn is_terminal(&self) -> bool {
        matches!(self, State::Stopped { .. } | State::Failed { .. })
    }

    /// Whether `self → next` is a legal transition. The one place that decides.
    pub fn can_become(&self, next: &State) -> bool {
        use State::*;
        match (self, next) {
            (_, Failed { .. }) => !matches!(self, Failed { .. }),
            // Preparing reports its own progress (a pull's layers) as it goes.
            (Idle | Preparing { .. } | Stopped { .. } | Failed { .. }, Preparing { .. }) => true,
            (Idle | Preparing { .. } | Stopped { .. } | Failed { .. }, Starting) => true,
            (Starting | WaitingReady { .. }, WaitingReady { .. }) => true,
            (Starting | WaitingReady { .. }, Ready { .. }) => true,
            (Preparing { .. } | Starting | WaitingReady { .. } | Ready { .. }, Stopping) => true,
            // What a backend that ended by itself (or failed) left is still cleaned up.
            (Stopped { .. } | Failed { .. }, Stopping) => true,
            // A backend that ends by itself after ready goes straight to Stopped.
            (Stopping | Ready { .. }, Stopped { .. }) => true,
            _ => false,
        }
    }
}

/// An illegal transition was attempted: a bug in the caller, reported not panicked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("illegal lifecycle transition {from} → {to}")]
pub struct IllegalTransition {
    /// The state it was in.
    pub from: &'static str,
    /// The state asked for.
    pub to: &'static str,
}

/// The lifecycle of one instance: the current [`State`], checked transitions, and
/// any number of observers.
#[derive(Debug)]
pub struct Lifecycle {
    tx: watch::Sender<State>,
    /// Every accepted state, in order (a watch may skip some).
    events: Option<tokio::sync::mpsc::UnboundedSender<State>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A new lifecycle in `Idle`.
    pub fn new() -> Self {
        Lifecycle { tx: watch::Sender::new(State::Idle), events: None }
    }

    /// A new lifecycle in `Idle` that also sends every accepted state, in order, to
    /// the returned receiver (a `watch` observer may skip states that follow fast).
    pub fn with_events() -> (Self, tokio::sync::mpsc::UnboundedReceiver<State>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Lifecycle { tx: watch::Sender::new(State::Idle), events: Some(tx) }, rx)
    }

    /// The current state.
    pub fn current(&self) -> State {
        self.tx.borrow().clone()
    }

    /// An observer; it sees every later change (it may skip intermediate ones).
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.tx.subscribe()
    }

    /// Move to `next`, which the caller knows to be legal: an illegal move is a bug,
    /// caught by a debug assertion in tests (and logged, never silently dropped, in
    /// a release build).
    #[track_caller]
    pub fn advance(&self, next: State) {
        if let Err(e) = self.transition(next) {
            tracing::warn!(error = %e, "bug: illegal lifecycle transition");
            debug_assert!(false, "{e}");
        }
    }

    /// Move to `next` if legal.
    pub fn transition(&self, next: State) -> Result<(), IllegalTransition> {
        let mut result = Ok(());
        self.tx.send_if_modified(|current| {
            if current.can_become(&next) {
                *current = next.clone();
                true
            } else {
                result = Err(IllegalTransition { from: current.name(), to: next.name() });
                false
            }
        });
        match &result {
            Ok(()) => {
                if let Some(events) = &self.events {
                    let _ = events.send(next);
                }
            }
            Err(e) => tracing::debug!(error = %e, "lifecycle transition refused"),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting() -> State {
        State::WaitingReady { progress: Progress::phase("loading") }
    }

    fn ready() -> State {
        State::Ready { url: "http://127.0.0.1:1".into(), since: Instant::now() }
    }

    #[test]
    fn the_happy_path_is_legal_and_observed() {
        let lc = Lifecycle::new();
        let rx = lc.subscribe();
        for s in [
            State::Preparing { progress: Progress::phase("preparing") },
            State::Starting,
            waiting(),
            waiting(),
            ready(),
            State::Stopping,
            State::Stopped { exit: Some(ExitStatus::Code(0)), killed: false },
        ] {
            lc.transition(s.clone()).expect("legal");
            assert_eq!(rx.borrow().name(), s.name());
        }
        assert!(lc.current().is_terminal());
    }

    #[test]
    fn illegal_transitions_are_refused_and_leave_the_state() {
        let lc = Lifecycle::new();
        let err = lc.transition(ready()).expect_err("idle → ready is illegal");
        assert_eq!((err.from, err.to), ("idle", "ready"));
        assert_eq!(lc.current(), State::Idle);
        lc.transition(State::Starting).expect("legal");
        assert!(lc.transition(State::Stopped { exit: None, killed: false }).is_err());
        assert!(lc.transition(State::Preparing { progress: Progress::phase("preparing") }).is_err());
    }

    #[test]
    fn any_state_can_fail_but_failed_cannot_fail_again() {
        for s in [
            State::Idle,
            State::Preparing { progress: Progress::phase("preparing") },
            State::Starting,
            waiting(),
            ready(),
            State::Stopping,
        ] {
            assert!(s.can_become(&State::Failed { error: "x".into() }), "{}", s.name());
        }
        let failed = State::Failed { error: "x".into() };
        assert!(!failed.can_become(&State::Failed { error: "y".into() }));
        assert!(failed.can_become(&State::Starting), "a restart starts again");
    }
}
