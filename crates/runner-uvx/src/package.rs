//! What `--package` names: a package from an index (`PKG`, `PKG==VER`, `PKG[extra]==VER`),
//! or a local wheel file (`./dist/pkg-1.0-py3-none-any.whl`).

use std::path::{Path, PathBuf};

use crate::error::UvxError;

/// A parsed `--package` value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PackageSpec {
    /// A package from the index, optionally pinned.
    Index {
        /// The distribution name as written (`claude-skills-mcp-backend`).
        name: String,
        /// Extras as written, without brackets (`cli,http`), if any.
        extras: Option<String>,
        /// The pinned version (`1.4.0`), if any.
        version: Option<String>,
    },
    /// A wheel file; its version is in its file name.
    Wheel {
        /// The wheel, made absolute (relative paths are taken from the current directory).
        path: PathBuf,
        /// The distribution part of the file name, with `_` turned back into `-`.
        name: String,
        /// The version part of the file name.
        version: String,
    },
}

impl PackageSpec {
    /// Parse `PKG`, `PKG==VER`, `PKG[extras]==VER` or a path to a `.whl` file.
    pub fn parse(text: &str) -> Result<Self, UvxError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(UvxError::BadPackage { given: text.into(), why: "it is empty".into() });
        }
        if has_wheel_suffix(text) {
            return Self::wheel(text);
        }
        if text.contains('/') {
            return Err(UvxError::BadPackage {
                given: text.into(),
                why: "a path must name a wheel file (`.whl`); for a project directory, build a wheel first".into(),
            });
        }
        let bad = |why: &str| UvxError::BadPackage { given: text.into(), why: why.into() };
        let (requirement, version) = match text.split_once("==") {
            Some((r, v)) => (r.trim(), Some(v.trim())),
            None => (text, None),
        };
        if let Some(op) =
            ["~=", ">=", "<=", "!=", "===", ">", "<", "@", ";", " "].iter().find(|op| requirement.contains(**op))
        {
            return Err(bad(&format!(
                "`{op}` is not supported here: give PKG to take the latest release, or PKG==VER to pin one"
            )));
        }
        let (name, extras) = match requirement.split_once('[') {
            Some((n, rest)) => match rest.strip_suffix(']') {
                Some(e) if !e.trim().is_empty() => (n, Some(e.trim().to_string())),
                _ => return Err(bad("extras are written `PKG[extra1,extra2]`")),
            },
            None => (requirement, None),
        };
        if name.is_empty() {
            return Err(bad("there is no package name before `==`"));
        }
        if !valid_name(name) {
            return Err(bad(&format!(
                "`{name}` is not a valid package name (letters, digits, `.`, `_`, `-`; starting and ending with a letter or digit)"
            )));
        }
        let version = match version {
            None => None,
            Some("") => return Err(bad("there is no version after `==`")),
            Some(v) if !valid_version(v) => {
                return Err(bad(&format!("`{v}` is not a version (e.g. 1.4.0, 2.0.0rc1)")));
            }
            Some(v) => Some(v.to_string()),
        };
        Ok(PackageSpec::Index { name: name.to_string(), extras, version })
    }

    fn wheel(text: &str) -> Result<Self, UvxError> {
        let path = Path::new(text);
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        let stem = &file[..file.len().saturating_sub(".whl".len())];
        // {distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl
        let parts: Vec<&str> = stem.split('-').collect();
        if !(5..=6).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(UvxError::BadPackage {
                given: text.into(),
                why: "a wheel's file name reads NAME-VERSION-PYTHON-ABI-PLATFORM.whl".into(),
            });
        }
        let path = std::path::absolute(path).map_err(|e| UvxError::BadPackage {
            given: text.into(),
            why: format!("the path cannot be made absolute: {e}"),
        })?;
        Ok(PackageSpec::Wheel { path, name: parts[0].replace('_', "-"), version: parts[1].to_string() })
    }

    /// The distribution name (for a wheel: from its file name).
    pub fn name(&self) -> &str {
        match self {
            PackageSpec::Index { name, .. } | PackageSpec::Wheel { name, .. } => name,
        }
    }

    /// The pinned version, if the spec pins one (a wheel always does).
    pub fn version(&self) -> Option<&str> {
        match self {
            PackageSpec::Index { version, .. } => version.as_deref(),
            PackageSpec::Wheel { version, .. } => Some(version),
        }
    }

    /// The value of uvx's `--from`: `PKG[extras]==VER`, or the wheel's path.
    pub fn from_arg(&self) -> String {
        match self {
            PackageSpec::Index { name, extras, version } => {
                let mut s = name.clone();
                if let Some(e) = extras {
                    s.push('[');
                    s.push_str(e);
                    s.push(']');
                }
                if let Some(v) = version {
                    s.push_str("==");
                    s.push_str(v);
                }
                s
            }
            PackageSpec::Wheel { path, .. } => path.display().to_string(),
        }
    }
}

fn has_wheel_suffix(text: &str) -> bool {
    text.len() > 4 && text[text.len() - 4..].eq_ignore_ascii_case(".whl")
}

/// PEP 508 names: `^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$`, case-insensitively.
fn valid_name(name: &str) -> bool {
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    name.chars().all(ok_inner)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Loose PEP 440 check: starts with a digit (or `v`), only version characters.
fn valid_version(v: &str) -> bool {
    let body = v.strip_prefix(['v', 'V']).unwrap_or(v);
    body.starts_with(|c: char| c.is_ascii_digit())
        && body.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_' | '!' | '*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> PackageSpec {
        PackageSpec::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn why(s: &str) -> String {
        PackageSpec::parse(s).expect_err(s).to_string()
    }

    #[test]
    fn index_packages_pinned_and_not() {
        let p = ok("claude-skills-mcp-backend==1.4.0");
        assert_eq!(p.name(), "claude-skills-mcp-backend");
        assert_eq!(p.version(), Some("1.4.0"));
        assert_eq!(p.from_arg(), "claude-skills-mcp-backend==1.4.0");
        let p = ok("httpie");
        assert_eq!(p.version(), None);
        assert_eq!(p.from_arg(), "httpie");
        let p = ok(" pkg[cli,http] == 2.0.0rc1 ");
        assert_eq!(p.name(), "pkg");
        assert_eq!(p.from_arg(), "pkg[cli,http]==2.0.0rc1");
        assert_eq!(ok("A.b_c-9==1!2.0+local").version(), Some("1!2.0+local"));
    }

    #[test]
    fn garbage_is_explained() {
        assert!(why("==1.0").contains("no package name"), "{}", why("==1.0"));
        assert!(why("pkg==").contains("no version after"));
        assert!(why("").contains("empty"));
        assert!(why("pkg>=1.0").contains("PKG==VER"));
        assert!(why("pkg==1.0==2").contains("not a version"));
        assert!(why("-pkg").contains("not a valid package name"));
        assert!(why("pkg; rm -rf ~").contains("not supported"));
        assert!(why("pkg[==1").contains("extras"));
        assert!(why("./some/dir").contains("wheel"));
        assert!(why("./x.whl").contains("NAME-VERSION"));
    }

    #[test]
    fn wheels_give_name_and_version_from_the_file_name() {
        let p = ok("dist/tether_uvx_fixture-1.2.3-py3-none-any.whl");
        assert_eq!(p.name(), "tether-uvx-fixture");
        assert_eq!(p.version(), Some("1.2.3"));
        match &p {
            PackageSpec::Wheel { path, .. } => {
                assert!(path.is_absolute());
                assert!(path.ends_with("dist/tether_uvx_fixture-1.2.3-py3-none-any.whl"));
            }
            other => panic!("not a wheel: {other:?}"),
        }
        assert_eq!(ok("/w/pkg-2.0-1-cp311-cp311-linux_x86_64.WHL").version(), Some("2.0"));
    }
}
