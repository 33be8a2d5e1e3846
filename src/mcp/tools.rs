//! The tools the proxy lists before the backend is ready, first found of: the last list
//! the backend gave (kept in the state directory, `mcp-tools/KEY.json`), the user's
//! `--tools` file, the `--preset`'s list (see [`preset_tools`]). With none of them the
//! first `tools/list` waits for the backend (the front's `--list-wait`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rmcp::model::{Prompt, Resource, ResourceTemplate, ServerCapabilities, Tool};
use rmcp::{Peer, RoleClient};
use serde::{Deserialize, Serialize};
use tether_core::state::StateDir;
use tether_core::sys::private;
use tether_core::{Error, Result};

/// The tools cache of one instance: `STATE_DIR/mcp-tools/KEY.json` (a directory of its
/// own: the state directory's top level holds only instance records).
#[derive(Debug)]
pub struct ToolCache {
    path: PathBuf,
    /// The `--tools` file's list, else the preset's: what to list with no cache.
    fallback: Option<Vec<Tool>>,
    cached: Mutex<Option<Vec<Tool>>>,
    /// The backend's `instructions` from its last `initialize`, kept with the tools.
    instructions: Mutex<Option<String>>,
    /// The backend's capabilities, prompts and resources, kept with the tools.
    catalog: Mutex<Catalog>,
}

/// What the proxy knows of the backend beyond its tools (from its last `initialize` and
/// lists): advertised and listed before the backend is ready, as the tools are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// The backend's capabilities (of which the proxy advertises prompts, resources and
    /// completions as the backend did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<ServerCapabilities>,
    /// Its last whole `prompts/list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<Vec<Prompt>>,
    /// Its last whole `resources/list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<Resource>>,
    /// Its last whole `resources/templates/list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_templates: Option<Vec<ResourceTemplate>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ToolsJson {
    Result { tools: Vec<Tool> },
    List(Vec<Tool>),
}

/// Read a tools file: `{"tools":[...]}` (a `tools/list` answer) or a bare array of tools.
pub fn read_tools_file(path: &Path) -> Result<Vec<Tool>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("cannot read the --tools file {}: {e}", path.display())))?;
    parse_tools(&text).map_err(|why| {
        Error::config(format!(
            "the --tools file {} is not a tools list ({why}); write {{\"tools\": [{{\"name\": …, \"inputSchema\": {{…}}}}]}} \
             as `tools/list` answers, or just the array",
            path.display()
        ))
    })
}

fn parse_tools(text: &str) -> std::result::Result<Vec<Tool>, String> {
    match serde_json::from_str::<ToolsJson>(text) {
        Ok(ToolsJson::Result { tools } | ToolsJson::List(tools)) => Ok(tools),
        // The untagged error says nothing useful; the typed one names the line and field.
        Err(_) => match serde_json::from_str::<serde_json::Value>(text) {
            Err(e) => Err(format!("not JSON: {e}")),
            Ok(serde_json::Value::Array(_)) => serde_json::from_str::<Vec<Tool>>(text).map_err(|e| e.to_string()),
            Ok(_) => serde_json::from_str::<ToolsField>(text).map(|_| Vec::new()).map_err(|e| e.to_string()),
        },
    }
}

#[derive(Deserialize)]
struct ToolsField {
    #[allow(dead_code)]
    tools: Vec<Tool>,
}

/// The tools of `claude-skills-mcp-backend` 1.0.6, as the Python front of claude-skills-mcp
/// listed them from hard-coded schemas before its backend was up. Copied from the package
/// itself (PyPI wheel `claude_skills_mcp_backend-1.0.6-py3-none-any.whl`, file
/// `claude_skills_mcp_backend/mcp_handlers.py`, `SkillsMCPServer._register_handlers`'s
/// `list_tools()` with the default `default_top_k = 3`): names, titles, descriptions and
/// input schemas exactly as written there. The backend's HTTP server registers the same
/// three tools through FastMCP, whose derived schemas differ in detail (titles per field, no
/// field descriptions); once the backend is ready its own list is served and the host is
/// told with `list_changed`.
const CLAUDE_SKILLS_TOOLS: &str = include_str!("presets/claude-skills.json");

/// The tools a `--preset` lists before the backend is first ready (`None`: the preset has
/// no tools, only a probe).
pub fn preset_tools(preset: &str) -> Result<Option<Vec<Tool>>> {
    match preset {
        "claude-skills" => parse_tools(CLAUDE_SKILLS_TOOLS).map(Some).map_err(|why| {
            Error::config(format!("the built-in tools of the claude-skills preset do not parse: {why}"))
        }),
        _ => Ok(None),
    }
}

impl ToolCache {
    /// The cache of `key` in `state`, with the user's tools file (read now: a bad file is
    /// a configuration error at start, not a surprise later), else the list of the preset
    /// named `preset` if it has one. A corrupt cache is ignored.
    pub fn new(state: &StateDir, key: &str, tools_file: Option<&Path>, preset: Option<&str>) -> Result<Self> {
        StateDir::check_name(key)?;
        let fallback = match tools_file {
            Some(file) => Some(read_tools_file(file)?),
            None => preset.map(preset_tools).transpose()?.flatten(),
        };
        let path = state.path().join("mcp-tools").join(format!("{key}.json"));
        let (cached, instructions, catalog) = match std::fs::read_to_string(&path) {
            Ok(text) => match parse_tools(&text) {
                Ok(tools) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    // A cache written before the catalog was kept (or a bad part of it): none.
                    let catalog = serde_json::from_value(v.clone()).unwrap_or_default();
                    (Some(tools), v["instructions"].as_str().map(str::to_string), catalog)
                }
                Err(why) => {
                    tracing::warn!(file = %path.display(), %why, "ignoring the unreadable tools cache");
                    (None, None, Catalog::default())
                }
            },
            Err(_) => (None, None, Catalog::default()),
        };
        Ok(ToolCache {
            path,
            fallback,
            cached: Mutex::new(cached),
            instructions: Mutex::new(instructions),
            catalog: Mutex::new(catalog),
        })
    }

    /// What to list while the backend is not ready: the cache, else the tools file, else
    /// the preset's list; `None` when there is none of them (nothing is known yet).
    pub fn before_ready(&self) -> Option<Vec<Tool>> {
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        cached.clone().or_else(|| self.fallback.clone())
    }

    /// Where the cache is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backend's `instructions` from its last `initialize`, when it gave any.
    pub fn instructions(&self) -> Option<String> {
        self.instructions.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Remember the backend's list (in memory and on disk, replaced atomically).
    pub fn store(&self, tools: &[Tool]) {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.as_deref() == Some(tools) {
            return;
        }
        *cached = Some(tools.to_vec());
        drop(cached);
        self.save();
    }

    /// Remember the backend's `instructions` (the host gets them at its next `initialize`).
    pub fn store_instructions(&self, instructions: Option<String>) {
        let mut kept = self.instructions.lock().unwrap_or_else(|p| p.into_inner());
        if *kept == instructions {
            return;
        }
        *kept = instructions;
        drop(kept);
        self.save();
    }

    /// What is known of the backend beyond its tools.
    pub fn catalog(&self) -> Catalog {
        self.catalog.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Change what is known of the backend beyond its tools (kept on disk when it changed).
    pub fn update_catalog(&self, change: impl FnOnce(&mut Catalog)) {
        let mut kept = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
        let before = kept.clone();
        change(&mut kept);
        if *kept == before {
            return;
        }
        drop(kept);
        self.save();
    }

    fn save(&self) {
        let tools = self.cached.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
        let instructions = self.instructions();
        let catalog = self.catalog();
        let write = || -> std::io::Result<()> {
            let mut doc = serde_json::to_value(&catalog)?;
            doc["tools"] = serde_json::to_value(&tools)?;
            if let Some(text) = &instructions {
                doc["instructions"] = serde_json::Value::String(text.clone());
            }
            let text = serde_json::to_vec_pretty(&doc)?;
            // Like the state directory it sits in: this user's only (0700, files 0600).
            if let Some(dir) = self.path.parent() {
                private::create_dir(dir)?;
                private::restrict_dir(dir)?;
            }
            let tmp = self.path.with_extension(format!("json.{}.tmp", std::process::id()));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            let mut file = private::no_follow(private::only_mine(&mut options)).open(&tmp)?;
            private::restrict(&file)?;
            std::io::Write::write_all(&mut file, &text)?;
            drop(file);
            std::fs::rename(&tmp, &self.path)
        };
        if let Err(e) = write() {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot save the tools cache");
        }
    }
}

/// What the backend has beyond tools: its capabilities, and its prompts, resources and
/// resource templates when it says it has them (a list it fails to give stays unknown).
pub(crate) async fn fetch_catalog(peer: &Peer<RoleClient>) -> Catalog {
    let capabilities = peer.peer_info().map(|info| info.capabilities.clone());
    let has = |what: fn(&rmcp::model::ServerCapabilities) -> bool| capabilities.as_ref().is_some_and(what);
    let mut catalog = Catalog { capabilities: capabilities.clone(), ..Catalog::default() };
    if has(|c| c.prompts.is_some()) {
        catalog.prompts = listed("prompts", peer.list_all_prompts().await);
    }
    if has(|c| c.resources.is_some()) {
        catalog.resources = listed("resources", peer.list_all_resources().await);
        catalog.resource_templates = listed("resource templates", peer.list_all_resource_templates().await);
    }
    catalog
}

/// A list the backend gave, or `None` (logged) when it did not.
fn listed<T>(what: &str, list: std::result::Result<Vec<T>, rmcp::ServiceError>) -> Option<Vec<T>> {
    list.map_err(|e| tracing::warn!(error = %e, "the backend did not list its {what}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOOL: &str = r#"{"name":"list_skills","inputSchema":{"type":"object"}}"#;

    #[test]
    fn both_shapes_parse_and_errors_say_what_is_wrong() {
        assert_eq!(parse_tools(&format!("{{\"tools\":[{TOOL}]}}")).expect("result shape").len(), 1);
        assert_eq!(parse_tools(&format!("[{TOOL}]")).expect("array shape").len(), 1);
        assert!(parse_tools("{").expect_err("bad json").starts_with("not JSON"));
        let e = parse_tools(r#"{"tool":[]}"#).expect_err("wrong key");
        assert!(e.contains("missing field `tools`"), "{e}");
        let e = parse_tools(r#"[{"inputSchema":{}}]"#).expect_err("no name");
        assert!(e.contains("missing field `name`"), "{e}");
    }

    #[test]
    fn cache_wins_over_file_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::at(dir.path()).expect("state dir");
        let file = dir.path().join("tools.json");
        std::fs::write(&file, format!("[{TOOL}]")).expect("write");
        let cache = ToolCache::new(&state, "x", Some(&file), Some("claude-skills")).expect("cache");
        assert_eq!(
            cache.before_ready().expect("the file's list")[0].name,
            "list_skills",
            "the file wins over a preset"
        );
        let other: Tool = serde_json::from_str(r#"{"name":"other","inputSchema":{"type":"object"}}"#).expect("tool");
        cache.store(std::slice::from_ref(&other));
        cache.store_instructions(Some("use other".into()));
        let again = ToolCache::new(&state, "x", Some(&file), None).expect("cache");
        assert_eq!(again.before_ready(), Some(vec![other]));
        assert_eq!(again.instructions().as_deref(), Some("use other"));
        let e = ToolCache::new(&state, "x", Some(&dir.path().join("missing.json")), None).expect_err("missing file");
        assert!(e.to_string().contains("cannot read the --tools file"), "{e}");
    }

    /// Issue 22, item 8: the cache is as private as the state directory it sits in — its
    /// folder 0700 (an older 0755 one is tightened), its file 0600, whatever the umask.
    #[cfg(unix)]
    #[test]
    fn the_cache_is_this_users_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::at(dir.path()).expect("state dir");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        let cache = ToolCache::new(&state, "p", None, None).expect("cache");
        let tool: Tool = serde_json::from_str(TOOL).expect("tool");
        cache.store(std::slice::from_ref(&tool));
        let folder = cache.path().parent().expect("the cache's folder").to_path_buf();
        assert_eq!(mode(&folder), 0o700, "{}", folder.display());
        assert_eq!(mode(cache.path()), 0o600, "{}", cache.path().display());
        // A folder left 0755 by an older tether, and a file left 0644, are tightened.
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let other: Tool = serde_json::from_str(r#"{"name":"other","inputSchema":{"type":"object"}}"#).expect("tool");
        cache.store(std::slice::from_ref(&other));
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(cache.path()), 0o600);
    }

    #[test]
    fn the_catalog_is_kept_with_the_tools_and_an_old_cache_has_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::at(dir.path()).expect("state dir");
        let old = dir.path().join("mcp-tools");
        std::fs::create_dir_all(&old).expect("mkdir");
        std::fs::write(old.join("c.json"), format!("{{\"tools\":[{TOOL}]}}")).expect("write");
        let cache = ToolCache::new(&state, "c", None, None).expect("cache");
        assert_eq!(cache.catalog(), Catalog::default(), "a cache from before the catalog");
        let prompt: Prompt = serde_json::from_str(r#"{"name":"greet"}"#).expect("prompt");
        let capabilities: ServerCapabilities = serde_json::from_str(r#"{"prompts":{}}"#).expect("capabilities");
        cache.update_catalog(|c| {
            c.capabilities = Some(capabilities.clone());
            c.prompts = Some(vec![prompt.clone()]);
        });
        let again = ToolCache::new(&state, "c", None, None).expect("cache");
        assert_eq!(again.before_ready().expect("the tools").len(), 1, "the tools stay");
        assert_eq!(again.catalog().prompts, Some(vec![prompt]));
        assert_eq!(again.catalog().capabilities, Some(capabilities));
        assert_eq!(again.catalog().resources, None);
    }

    #[test]
    fn the_preset_lists_the_claude_skills_tools_and_nothing_means_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::at(dir.path()).expect("state dir");
        let cache = ToolCache::new(&state, "p", None, Some("claude-skills")).expect("cache");
        let tools = cache.before_ready().expect("the preset's list");
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, ["find_helpful_skills", "read_skill_document", "list_skills"]);
        let find = serde_json::Value::Object((*tools[0].input_schema).clone());
        assert_eq!(find["required"], serde_json::json!(["task_description"]), "{find}");
        assert_eq!(find["properties"]["top_k"]["maximum"], 20, "{find}");
        assert_eq!(tools[1].title.as_deref(), Some("Open skill documents and assets"));
        assert!(ToolCache::new(&state, "n", None, None).expect("cache").before_ready().is_none());
        assert_eq!(preset_tools("other").expect("no error"), None);
    }
}
