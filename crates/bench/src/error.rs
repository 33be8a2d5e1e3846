//! A small error type: a message with the cause appended, enough for a benchmark.

use std::fmt;

/// An error with context.
#[derive(Debug)]
pub struct BenchError(pub String);

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

/// The result of the benchmark's fallible steps.
pub type BenchResult<T> = Result<T, BenchError>;

/// Adds what was being done to an error.
pub trait Context<T> {
    /// `what: cause`.
    fn ctx(self, what: impl Into<String>) -> BenchResult<T>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: impl Into<String>) -> BenchResult<T> {
        self.map_err(|e| BenchError(format!("{}: {e}", what.into())))
    }
}

impl<T> Context<T> for Option<T> {
    fn ctx(self, what: impl Into<String>) -> BenchResult<T> {
        self.ok_or_else(|| BenchError(what.into()))
    }
}

/// An error from a message.
pub fn fail<T>(message: impl Into<String>) -> BenchResult<T> {
    Err(BenchError(message.into()))
}
