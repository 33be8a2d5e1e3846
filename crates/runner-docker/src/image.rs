//! The image policy: pull always, when missing, or never; pull progress as events.

use std::collections::HashSet;
use std::str::FromStr;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;
use tether_core::{Error, Progress, Result};

use crate::engine::{describe, is_not_found, runner_error};

/// When to pull the image from its registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull before every start (a moving tag is always fresh).
    Always,
    /// Pull only when the engine does not have the image (the default).
    #[default]
    Missing,
    /// Never pull: the image must be present (built or loaded locally).
    Never,
}

impl FromStr for PullPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(PullPolicy::Always),
            "missing" => Ok(PullPolicy::Missing),
            "never" => Ok(PullPolicy::Never),
            other => Err(Error::config(format!("unknown --pull `{other}`; use always, missing or never"))),
        }
    }
}

/// `repo[:tag]` or `repo@digest` split into what the pull API wants. Without a
/// tag the API would pull *every* tag of the repository, so `latest` is explicit.
fn split_reference(image: &str) -> (String, String) {
    if image.contains('@') {
        return (image.to_string(), String::new());
    }
    let last_part = image.rsplit('/').next().unwrap_or(image);
    match last_part.rsplit_once(':') {
        Some((_, tag)) => {
            let repo = &image[..image.len() - tag.len() - 1];
            (repo.to_string(), tag.to_string())
        }
        None => (image.to_string(), "latest".to_string()),
    }
}

/// Whether the engine has `image`.
pub async fn present(docker: &Docker, image: &str) -> Result<bool> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(runner_error(&format!("cannot look up image {image}"), e)),
    }
}

/// Make `image` available according to `policy`, reporting pull progress.
pub async fn ensure(
    docker: &Docker,
    image: &str,
    policy: PullPolicy,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<()> {
    let have = present(docker, image).await?;
    match (policy, have) {
        (PullPolicy::Never, false) => Err(Error::Unavailable {
            message: format!(
                "image `{image}` is not on the Docker engine and --pull never forbids pulling it; \
                 build or load it (`docker build -t {image} .`, `docker load`), or use --pull missing"
            ),
        }),
        (PullPolicy::Never | PullPolicy::Missing, true) => Ok(()),
        (PullPolicy::Always, _) | (PullPolicy::Missing, false) => pull(docker, image, progress).await,
    }
}

/// Pull `image`; progress is the number of layers done, reported as it grows.
async fn pull(docker: &Docker, image: &str, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<()> {
    let (repo, tag) = split_reference(image);
    let phase = format!("pulling {image}");
    progress(Progress::phase(phase.clone()));
    let opts =
        CreateImageOptions { from_image: Some(repo), tag: Some(tag).filter(|t| !t.is_empty()), ..Default::default() };
    let mut stream = docker.create_image(Some(opts), None, None);
    let mut done_layers = HashSet::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| pull_failed(image, &describe(&e)))?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(pull_failed(image, &detail));
        }
        let finished = matches!(info.status.as_deref(), Some("Pull complete" | "Already exists"));
        if let (true, Some(id)) = (finished, info.id)
            && done_layers.insert(id)
        {
            progress(Progress { phase: phase.clone(), value: Some(done_layers.len() as u64) });
        }
    }
    if present(docker, image).await? {
        Ok(())
    } else {
        Err(pull_failed(image, "the engine reported no error, but the image is still missing"))
    }
}

fn pull_failed(image: &str, why: &str) -> Error {
    Error::Unavailable {
        message: format!(
            "cannot pull image `{image}`: {}; check the name, that the engine can reach the registry \
             (and `docker login` for a private one), or build/load the image locally and use --pull never",
            why.trim()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_an_explicit_tag() {
        let s = |i: &str| split_reference(i);
        assert_eq!(s("alpine"), ("alpine".into(), "latest".into()));
        assert_eq!(s("alpine:3.20"), ("alpine".into(), "3.20".into()));
        assert_eq!(s("localhost:5000/x/y"), ("localhost:5000/x/y".into(), "latest".into()));
        assert_eq!(s("localhost:5000/x/y:v1"), ("localhost:5000/x/y".into(), "v1".into()));
        assert_eq!(s("alpine@sha256:abc"), ("alpine@sha256:abc".into(), String::new()));
    }

    #[test]
    fn policies_parse() {
        assert_eq!("never".parse::<PullPolicy>().ok(), Some(PullPolicy::Never));
        let e = "sometimes".parse::<PullPolicy>().expect_err("unknown");
        assert_eq!(e.exit_code(), 2);
    }
}
