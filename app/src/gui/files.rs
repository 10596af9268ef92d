//! Files around the document: settings (theme, recent files), autosave/recovery, examples,
//! and opening a workflow from a `.ron` or from a PNG the app wrote.

use cachedit_nodes::graph::document::Workflow;
use cachedit_nodes::graph::ron_io::{load_workflow, parse_workflow, save_workflow_atomic};
use cachedit_nodes::image::png_io::workflow_text_from_png;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Most recent files remembered.
pub const MAX_RECENT: usize = 8;

/// What the editor remembers between sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub version: u32,
    pub theme: String,
    pub recent: Vec<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            version: 1,
            theme: "dark".into(),
            recent: Vec::new(),
        }
    }
}

impl Settings {
    fn path(dir: &Path) -> PathBuf {
        dir.join("settings.ron")
    }

    /// Reads the settings; a missing file gives the defaults, a broken one an error message.
    pub fn load(dir: &Path) -> Result<Settings, String> {
        let path = Self::path(dir);
        match fs::read_to_string(&path) {
            Ok(text) => ron::from_str(&text).map_err(|e| {
                format!(
                    "{}:{}:{}: {}",
                    path.display(),
                    e.span.start.line,
                    e.span.start.col,
                    e.code
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let text = ron::ser::to_string_pretty(self, ron::ser::PrettyConfig::default())
            .map_err(|e| format!("settings: {e}"))?;
        write_atomic(&Self::path(dir), text.as_bytes())
    }

    /// Puts `path` first in the recent list.
    pub fn add_recent(&mut self, path: &Path) {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        self.recent.retain(|p| p != &path);
        self.recent.insert(0, path);
        self.recent.truncate(MAX_RECENT);
    }
}

/// Writes a file atomically (a temporary file in the same folder, synced, then renamed; see
/// `safe_io::write_atomic`), creating the folder first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    cachedit_nodes::safe_io::write_atomic(path, bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The editor's settings folder: `$CACHEDIT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/cachedit`,
/// else `~/.config/cachedit`.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CACHEDIT_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(d).join("cachedit");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".config").join("cachedit"),
        None => PathBuf::from(".cachedit"),
    }
}

/// Where the autosave of unsaved work lives.
pub fn autosave_path(dir: &Path) -> PathBuf {
    dir.join("autosave.ron")
}

pub fn write_autosave(dir: &Path, wf: &Workflow) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    save_workflow_atomic(&autosave_path(dir), wf).map_err(|e| e.to_string())
}

/// The autosaved workflow left by a session that did not close cleanly, if any.
pub fn read_autosave(dir: &Path) -> Option<Workflow> {
    let path = autosave_path(dir);
    path.exists().then(|| load_workflow(&path).ok()).flatten()
}

pub fn clear_autosave(dir: &Path) {
    let _ = fs::remove_file(autosave_path(dir));
}

/// The `workflows/` folder with the examples: next to the working directory, else the
/// source tree's.
pub fn workflows_dir() -> PathBuf {
    let local = PathBuf::from("workflows");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../workflows")
}

/// The example workflows, sorted by name.
pub fn examples() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(workflows_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "ron"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Where Save as… proposes to put a document that has no file yet: the folder the editor
/// was started in.
pub fn save_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// Is `path` one of the example workflows (in [`workflows_dir`])?
pub fn is_example(path: &Path) -> bool {
    let (Ok(file), Ok(dir)) = (path.canonicalize(), workflows_dir().canonicalize()) else {
        return false;
    };
    file.parent() == Some(dir.as_path())
}

/// Opens a workflow from a `.ron` file or from a PNG written by Save Image. The error
/// names the file and, for a malformed `.ron`, the line and column.
pub fn open_any(path: &Path) -> Result<Workflow, String> {
    let is_png = path
        .extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("png"));
    if is_png {
        let text = workflow_text_from_png(path).map_err(|e| e.to_string())?;
        parse_workflow(&text, &format!("{} (embedded workflow)", path.display()))
            .map_err(|e| e.to_string())
    } else {
        load_workflow(path).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_recent_is_most_recent_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Settings::load(dir.path()).expect("defaults");
        assert_eq!(s, Settings::default());
        s.theme = "light".into();
        s.add_recent(Path::new("/a.ron"));
        s.add_recent(Path::new("/b.ron"));
        s.add_recent(Path::new("/a.ron"));
        s.save(dir.path()).expect("save");
        let back = Settings::load(dir.path()).expect("load");
        assert_eq!(back.theme, "light");
        assert_eq!(
            back.recent,
            vec![PathBuf::from("/a.ron"), PathBuf::from("/b.ron")]
        );
    }

    #[test]
    fn a_malformed_workflow_names_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.ron");
        fs::write(&p, "(\n  version: 1,\n  nodes: [ (id: 1, kind: ) ],\n)\n").expect("write");
        let err = open_any(&p).expect_err("malformed");
        assert!(err.contains("bad.ron:3:"), "{err}");
    }
}
