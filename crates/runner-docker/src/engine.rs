//! Reaching the Docker engine: `DOCKER_HOST` (unix socket or tcp), API version
//! negotiation, and errors that say which engine was tried and what to do.

use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use tether_core::{Error, Result};

/// How long reaching the engine may take before it counts as unreachable (a tcp
/// `DOCKER_HOST` to a silent host would otherwise hang for bollard's 2 minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// API 1.25 brought `init`, which this runner relies on.
const MIN_API: (u32, u32) = (1, 25);

/// The engine's socket when `DOCKER_HOST` is not set (bollard's default too).
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// The engine address in use: `DOCKER_HOST`, or the default socket.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| DEFAULT_SOCKET.into())
}

/// Whether the engine at `host` (a `DOCKER_HOST` value) counts as remote: anything
/// but a socket file. `unix://…` (and a named pipe, `npipe://…`) is an engine of this
/// machine, which publishes ports on this machine's addresses; `tcp://…` (also
/// `http(s)://…`, `ssh://…`) is remote — even `tcp://127.0.0.1:2375`, because a tcp
/// address on loopback is as likely a tunnel (`ssh -L`, socat) to another machine's
/// engine, and tether cannot tell from here where the engine publishes. A remote
/// engine publishes on the address `--host` names, which must be given.
pub fn is_remote(host: &str) -> bool {
    let host = host.trim();
    !(host.starts_with("unix://") || host.starts_with("npipe://") || host.starts_with('/'))
}

/// Whether the engine `DOCKER_HOST` names is remote (see [`is_remote`]).
pub fn engine_is_remote() -> bool {
    is_remote(&docker_host())
}

/// What was tried, for error messages: `DOCKER_HOST=…`, the default socket, or — an
/// engine named otherwise (a record's, a guard's argument) — its address.
fn tried(host: &str) -> String {
    match std::env::var("DOCKER_HOST").ok().filter(|v| !v.is_empty()) {
        Some(v) if v == host => format!("DOCKER_HOST={v}"),
        None if host == DEFAULT_SOCKET => format!("DOCKER_HOST is not set, so the default socket {host}"),
        _ => host.to_string(),
    }
}

fn unavailable(host: &str, why: &str) -> Error {
    let hint = if why.contains("ermission denied") {
        "run as a user in the `docker` group, or set DOCKER_HOST to an engine you may use"
    } else {
        "start the Docker daemon (e.g. `sudo systemctl start docker`), or set DOCKER_HOST to a running \
         engine (unix:///path/to/docker.sock or tcp://HOST:2375)"
    };
    Error::Unavailable { message: format!("cannot reach the Docker engine ({}): {why}; {hint}", tried(host)) }
}

/// Connect to the engine `DOCKER_HOST` names and agree on an API version.
pub async fn connect() -> Result<Docker> {
    connect_to(&docker_host()).await
}

/// Connect to the engine at `host` (`unix://…` or `tcp://…`) and agree on an API version.
pub async fn connect_to(host: &str) -> Result<Docker> {
    open(host).await.map_err(|f| match f {
        Failure::Refused(e) => e,
        Failure::Unreachable(why) => unavailable(host, &why),
    })
}

/// Why an engine could not be used: an address tether does not speak (the error), or
/// an engine that does not answer (why).
enum Failure {
    Refused(Error),
    Unreachable(String),
}

async fn open(host: &str) -> std::result::Result<Docker, Failure> {
    let docker = Docker::connect_with_host(host).map_err(|e| match e {
        DockerError::UnsupportedURISchemeError { .. } => Failure::Refused(Error::Unavailable {
            message: format!(
                "DOCKER_HOST `{host}` is not supported: tether reaches the engine through a unix:// socket or \
                 tcp:// (no TLS, no ssh); forward it to a local socket or use tcp://"
            ),
        }),
        DockerError::SocketNotFoundError(path) => Failure::Unreachable(format!("no socket at {path}")),
        other => Failure::Unreachable(other.to_string()),
    })?;
    match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(Failure::Unreachable(describe(&e))),
        Err(_) => Err(Failure::Unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))),
    }
}

/// Connect to the engine a recorded container of instance `name` was started on:
/// `recorded` (the record's engine), or — a record written before engines were
/// recorded — the one `DOCKER_HOST` names now. An unreachable recorded engine is
/// `Error::Unavailable` naming it and the instance: the container may well run on
/// there, so it must never be taken for gone.
pub async fn connect_recorded(recorded: Option<&str>, name: &str) -> Result<Docker> {
    let Some(host) = recorded else { return connect().await };
    open(host).await.map_err(|f| match f {
        Failure::Refused(e) => e,
        Failure::Unreachable(why) => Error::Unavailable {
            message: format!(
                "cannot reach the Docker engine {host}, where instance '{name}' was started: {why}; its \
                 container may still run there, so the record is kept — make that engine reachable again and \
                 retry (a recorded instance is always looked for on its own engine, whatever DOCKER_HOST says)"
            ),
        },
    })
}

/// The engine's version line (`Docker 27.1.0 (API 1.46)`), checking the API is new enough.
pub async fn version(docker: &Docker) -> Result<String> {
    let host = docker_host();
    let v = match tokio::time::timeout(CONNECT_TIMEOUT, docker.version()).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(unavailable(&host, &describe(&e))),
        Err(_) => return Err(unavailable(&host, "no answer to /version")),
    };
    let api = v.api_version.clone().unwrap_or_default();
    let parsed = api.split_once('.').and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    if parsed.is_some_and(|p| p < MIN_API) {
        return Err(Error::Unavailable {
            message: format!(
                "the Docker engine ({}) speaks API {api}, older than the {}.{} tether needs; upgrade Docker",
                tried(&host),
                MIN_API.0,
                MIN_API.1
            ),
        });
    }
    Ok(format!("Docker {} (API {api})", v.version.unwrap_or_else(|| "?".into())))
}

/// A Docker error as one short line, with the engine's own message when it sent one.
pub fn describe(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { status_code, message } => {
            format!("{} (HTTP {status_code})", message.trim())
        }
        other => {
            let mut out = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                out.push_str(": ");
                out.push_str(&s.to_string());
                source = s.source();
            }
            out
        }
    }
}

/// The engine answered 404: no such container or image.
pub fn is_not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

/// The engine answered 409 (e.g. the container is not running, or already being removed).
pub fn is_conflict(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 409, .. })
}

/// A runner error from a failed engine call: what was being done, and bollard's own
/// error as the cause (matchable by downcast; its text carries the engine's message
/// and HTTP status).
pub fn runner_error(what: &str, e: DockerError) -> Error {
    Error::runner(what, Some(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_socket_file_is_a_local_engine() {
        for local in ["unix:///var/run/docker.sock", "unix:///run/user/1000/docker.sock", "/var/run/docker.sock"] {
            assert!(!is_remote(local), "{local}");
        }
        for remote in ["tcp://10.0.0.5:2375", "tcp://127.0.0.2:2375", "tcp://localhost:2375", "http://h:2375"] {
            assert!(is_remote(remote), "{remote}");
        }
    }
}
