//! The uvx runner's own errors, converted into [`tether_core::Error`] at the boundary.

use std::path::PathBuf;

/// What can go wrong before uv runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UvxError {
    /// `--package` does not parse.
    #[error("bad --package `{given}`: {why}")]
    BadPackage {
        /// The value given.
        given: String,
        /// What is wrong with it.
        why: String,
    },
    /// No `uvx` on PATH.
    #[error(
        "uvx was not found on PATH; tether runs Python backends through uv: install it with `pip install uv` \
         (or `pipx install uv`, or uv's standalone installer), or give its path with --uvx"
    )]
    NotOnPath,
    /// An explicit `uvx` path that is not an executable.
    #[error("uvx `{}` does not exist or is not executable; check the path given with --uvx", path.display())]
    BadPath {
        /// The path given.
        path: PathBuf,
    },
    /// `uvx --version` did not run or failed.
    #[error("uvx `{}` does not work (`uvx --version` {why}); reinstall uv (`pip install -U uv`)", path.display())]
    Broken {
        /// The uvx that was run.
        path: PathBuf,
        /// What happened.
        why: String,
    },
    /// A wheel given with `--package` is not there.
    #[error("the wheel {} does not exist", path.display())]
    NoWheel {
        /// The wheel's path.
        path: PathBuf,
    },
}

impl From<UvxError> for tether_core::Error {
    fn from(e: UvxError) -> Self {
        match e {
            UvxError::BadPackage { .. } => tether_core::Error::config(e.to_string()),
            // The typed error travels as the cause: matchable by downcast, whole in the chain.
            _ => tether_core::Error::Tool { runner: "uvx", source: Box::new(e) },
        }
    }
}
