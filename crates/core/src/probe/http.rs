//! The HTTP probe, with JSON conditions and the claude-skills preset.

use async_trait::async_trait;
use serde_json::Value;

use super::{Condition, HealthProbe, ProbeContext, ProbeOutcome, lookup};

/// Bodies larger than this are not parsed (a hostile or confused backend).
const MAX_BODY: usize = 1024 * 1024;

/// `GET path` must answer 2xx; optional JSON conditions must all hold.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpProbe {
    /// Path, starting with `/`.
    pub path: String,
    /// All must hold for ready.
    pub conditions: Vec<Condition>,
    /// A numeric field reported as progress.
    pub progress_field: Option<Vec<String>>,
    /// When all of these hold, the backend will never be ready: fail with the message.
    pub fail_when: Option<(Vec<Condition>, String)>,
    /// When the answer has a `version` field and this is set, they must be equal.
    pub expect_version: Option<String>,
}

impl HttpProbe {
    /// `GET path` answering 2xx.
    pub fn new(path: impl Into<String>) -> Self {
        let mut path = path.into();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        HttpProbe { path, conditions: Vec::new(), progress_field: None, fail_when: None, expect_version: None }
    }

    /// The claude-skills contract: `loading_complete == true && skills_loaded > 0`,
    /// progress = `skills_loaded`; loading complete with 0 skills fails at once.
    pub fn claude_skills(path: impl Into<String>) -> Self {
        let cond = |s: &str| Condition::parse(s).expect("preset conditions are valid");
        HttpProbe {
            conditions: vec![cond("loading_complete==true"), cond("skills_loaded>0")],
            progress_field: Some(vec!["skills_loaded".into()]),
            fail_when: Some((
                vec![cond("loading_complete==true"), cond("skills_loaded==0")],
                "the backend finished loading with 0 skills; check its skill sources (configuration, network, paths)"
                    .into(),
            )),
            ..HttpProbe::new(path)
        }
    }

    /// With one more condition.
    pub fn with_condition(mut self, c: Condition) -> Self {
        self.conditions.push(c);
        self
    }

    /// With a progress field (dotted path).
    pub fn with_progress_field(mut self, field: &str) -> Self {
        self.progress_field = Some(field.split('.').map(str::to_string).collect());
        self
    }

    /// Require the answer's `version` field, when present, to equal `version`.
    pub fn with_expected_version(mut self, version: impl Into<String>) -> Self {
        self.expect_version = Some(version.into());
        self
    }

    fn needs_json(&self) -> bool {
        !self.conditions.is_empty()
            || self.progress_field.is_some()
            || self.fail_when.is_some()
            || self.expect_version.is_some()
    }

    fn judge(&self, doc: &Value) -> ProbeOutcome {
        let progress = self.progress_field.as_ref().and_then(|p| lookup(doc, p)).and_then(Value::as_u64);
        if let (Some(want), Some(got)) = (&self.expect_version, doc.get("version").and_then(Value::as_str))
            && want != got
        {
            return ProbeOutcome::Failed {
                reason: format!(
                    "the backend reports version {got} but {want} was asked for; pin the same version on both sides"
                ),
            };
        }
        if let Some((conds, why)) = &self.fail_when
            && conds.iter().all(|c| c.holds(doc))
        {
            return ProbeOutcome::Failed { reason: why.clone() };
        }
        match self.conditions.iter().find(|c| !c.holds(doc)) {
            None => ProbeOutcome::Ready { progress },
            Some(c) => {
                let actual = lookup(doc, &c.path).map_or("missing".to_string(), Value::to_string);
                ProbeOutcome::Pending { progress, detail: format!("waiting for {c} (now {actual})"), answered: true }
            }
        }
    }
}

#[async_trait]
impl HealthProbe for HttpProbe {
    async fn probe(&self, ctx: ProbeContext<'_>) -> ProbeOutcome {
        let url = format!("{}{}", ctx.endpoint.url(), self.path);
        let mut response = match ctx.client.get(&url).send().await {
            Ok(r) => r,
            Err(e) => return ProbeOutcome::no_answer(describe_reqwest(&e)),
        };
        let status = response.status();
        if status.is_redirection() {
            // The client follows no redirect: an answer counts only from the backend itself.
            let to = response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok()).unwrap_or("?");
            return ProbeOutcome::Pending {
                progress: None,
                detail: format!("GET {} answered {status}, redirected to {to} (a redirect is not ready)", self.path),
                answered: true,
            };
        }
        if !status.is_success() {
            return ProbeOutcome::Pending {
                progress: None,
                detail: format!("GET {} answered {status}", self.path),
                answered: true,
            };
        }
        if !self.needs_json() {
            return ProbeOutcome::Ready { progress: None };
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_BODY {
                        return ProbeOutcome::Pending {
                            progress: None,
                            detail: format!("GET {} answered a body over {MAX_BODY} bytes", self.path),
                            answered: true,
                        };
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return ProbeOutcome::Pending { progress: None, detail: describe_reqwest(&e), answered: true };
                }
            }
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(doc) => self.judge(&doc),
            Err(e) => ProbeOutcome::Pending {
                progress: None,
                detail: format!("GET {} answered something that is not JSON ({e})", self.path),
                answered: true,
            },
        }
    }

    /// An access-log line of our own request: `"GET /health HTTP/1.1" 200` (uvicorn,
    /// gunicorn, nginx's combined format all quote the request line this way).
    fn is_own_echo(&self, line: &str) -> bool {
        let request = format!("\"GET {}", self.path);
        line.match_indices(&request)
            .any(|(at, m)| matches!(line.as_bytes().get(at + m.len()), Some(b' ' | b'?' | b'"')))
    }

    fn describe(&self) -> String {
        let mut s = format!("GET {}", self.path);
        if !self.conditions.is_empty() {
            let conds: Vec<String> = self.conditions.iter().map(ToString::to_string).collect();
            s.push_str(&format!(" with {}", conds.join(" && ")));
        }
        s
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claude_skills_preset() {
        let p = HttpProbe::claude_skills("/health");
        assert_eq!(
            p.judge(&json!({"loading_complete": true, "skills_loaded": 7})),
            ProbeOutcome::Ready { progress: Some(7) }
        );
        assert!(matches!(
            p.judge(&json!({"loading_complete": false, "skills_loaded": 2})),
            ProbeOutcome::Pending { progress: Some(2), answered: true, .. }
        ));
        let ProbeOutcome::Failed { reason } = p.judge(&json!({"loading_complete": true, "skills_loaded": 0})) else {
            panic!("0 skills must fail at once");
        };
        assert!(reason.contains("0 skills"));
    }

    #[test]
    fn version_mismatch_fails_and_absent_version_is_fine() {
        let p = HttpProbe::new("/h").with_expected_version("1.2.0");
        assert!(matches!(p.judge(&json!({"version": "1.3.0"})), ProbeOutcome::Failed { .. }));
        assert_eq!(p.judge(&json!({"version": "1.2.0"})), ProbeOutcome::Ready { progress: None });
        assert_eq!(p.judge(&json!({})), ProbeOutcome::Ready { progress: None });
    }

    #[test]
    fn path_gets_a_slash() {
        assert_eq!(HttpProbe::new("health").path, "/health");
    }
}
