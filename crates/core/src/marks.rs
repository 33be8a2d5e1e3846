//! The marks tether puts on the processes it starts, by which it knows them again:
//! the fingerprint in a backend's environment, and the guard's first argument. A
//! leaf: everything that tells "ours" from "not ours" reads these, and they need
//! nothing.

/// The environment variable tether sets on every backend it starts, naming its
/// instance: a fingerprint that survives even when the state file is gone.
pub const INSTANCE_ENV: &str = "TETHER_INSTANCE";

/// The environment variable the guard sets on the backend it starts: the guard's own
/// identity (`PID:START_TIME`, as `ProcessIdentity::token` writes it),
/// which is the record's `leader`. Inherited like [`INSTANCE_ENV`], it pins every process
/// of one run of an instance to that run: once the guard is dead (SIGKILLed together with
/// the owner), what it started that left the process group — a `setsid` grandchild,
/// re-parented to init — is still found by it, and told apart from a run of the same name
/// in another state directory. It narrows what [`INSTANCE_ENV`] proves, never widens it.
pub const LEADER_ENV: &str = "TETHER_LEADER";

/// The first argument that turns a program into the guard (see the `guard` module).
pub const GUARD_ARG: &str = "__tether-guard";
