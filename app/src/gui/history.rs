//! The run history: every finished comparison and every cached Sampler run, kept in the
//! settings folder (`history/<id>/`: `entry.ron`, the images as PNG, `workflow.ron`), newest
//! first, bounded in count and bytes. Entries are written on a worker thread so that the UI
//! never waits on the disk; a damaged entry is skipped, never fatal.

use super::compare_view::model::{ColumnStats, ViewColumn, ViewData};
use cachedit_nodes::graph::document::Workflow;
use cachedit_nodes::graph::ron_io::to_ron_string;
use cachedit_nodes::image::png_io::{encode_png, read_png};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// At most this many entries are kept; the oldest go first.
pub const MAX_ENTRIES: usize = 40;
/// And at most this many bytes over all entries.
pub const MAX_BYTES: u64 = 256 << 20;
/// An `entry.ron` larger than this is not read (the folder may hold anything).
const MAX_ENTRY_TEXT: u64 = 1 << 20;
const FORMAT_VERSION: u32 = 1;

/// What made an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A Compare or Sweep node.
    Comparison,
    /// A Sampler with a cache (one column, numbered against its own baseline when it timed
    /// one).
    Sampler,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredColumn {
    pub label: String,
    pub signature: String,
    pub source: String,
    pub stats: ColumnStats,
    /// PNG file names in the entry's folder, one per sample.
    pub images: Vec<String>,
}

/// `entry.ron`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryMeta {
    pub version: u32,
    pub created_unix_ms: u64,
    pub title: String,
    pub kind: EntryKind,
    pub samples: Vec<(u64, u32)>,
    pub note: Option<String>,
    pub columns: Vec<StoredColumn>,
}

/// One kept entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The folder name (sorts by time).
    pub id: String,
    pub meta: EntryMeta,
    pub bytes: u64,
}

impl HistoryEntry {
    /// One line for the list: the best speedup among the columns and the quality it kept.
    pub fn summary(&self) -> String {
        let best = self
            .meta
            .columns
            .iter()
            .filter(|c| !c.stats.reference)
            .filter_map(|c| Some((c.stats.speedup?.median, c)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let configs = self
            .meta
            .columns
            .iter()
            .filter(|c| !c.stats.reference)
            .count();
        let mut text = format!(
            "{} config(s) × {} sample(s)",
            configs,
            self.meta.samples.len()
        );
        if let Some((speedup, c)) = best {
            text.push_str(&format!(", best {speedup:.2}× ({})", c.signature));
            if let Some(p) = c.stats.psnr_db {
                text.push_str(&format!(" at {:.1} dB", p.median));
            }
        }
        text
    }
}

/// The history folder and what it holds.
pub struct History {
    dir: PathBuf,
    pub entries: Vec<HistoryEntry>,
    /// Why the last write or read failed, for the panel.
    pub problem: Option<String>,
    done: Receiver<Result<Vec<HistoryEntry>, String>>,
    sender: Sender<Result<Vec<HistoryEntry>, String>>,
    pending: usize,
    /// One write at a time: each sends the list it saw last, so the lists arrive in order.
    writing: Arc<Mutex<()>>,
}

impl History {
    /// The history under `config_dir/history` (nothing is created until something is kept).
    pub fn open(config_dir: &Path) -> Self {
        let dir = config_dir.join("history");
        let (sender, done) = channel();
        let entries = list(&dir);
        History {
            dir,
            entries,
            problem: None,
            done,
            sender,
            pending: 0,
            writing: Arc::new(Mutex::new(())),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps `data` and the workflow that made it, on a worker thread; [`Self::poll`] takes
    /// the refreshed list once it is written.
    pub fn record(&mut self, data: &ViewData, kind: EntryKind, workflow: &Workflow) {
        let dir = self.dir.clone();
        let data = data.clone();
        let workflow = workflow.clone();
        let sender = self.sender.clone();
        let writing = Arc::clone(&self.writing);
        self.pending += 1;
        let spawned = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || {
                // A writer that panicked left nothing half-done that the lock guards.
                let _turn = writing.lock().unwrap_or_else(|p| p.into_inner());
                let result = write_entry(&dir, &data, kind, &workflow).map(|_| {
                    prune(&dir, MAX_ENTRIES, MAX_BYTES);
                    list(&dir)
                });
                // The editor may be gone; then nobody needs the answer.
                let _ = sender.send(result);
            });
        if let Err(e) = spawned {
            self.pending -= 1;
            self.problem = Some(format!("history not kept: {e}"));
        }
    }

    /// Takes finished writes; true when the list changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        while let Ok(result) = self.done.try_recv() {
            self.pending = self.pending.saturating_sub(1);
            match result {
                Ok(entries) => {
                    self.entries = entries;
                    self.problem = None;
                    changed = true;
                }
                Err(e) => self.problem = Some(e),
            }
        }
        changed
    }

    /// Waits until every write asked for so far is done (tests, and quitting).
    pub fn wait_idle(&mut self) {
        while self.pending > 0 {
            match self.done.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(result) => {
                    self.pending -= 1;
                    match result {
                        Ok(entries) => self.entries = entries,
                        Err(e) => self.problem = Some(e),
                    }
                }
                Err(_) => break,
            }
        }
    }

    /// The entry's columns and images, ready for the view.
    pub fn load(&self, id: &str) -> Result<ViewData, String> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.id == id)
            .ok_or_else(|| format!("history entry {id} is gone"))?;
        let folder = self.dir.join(id);
        let columns = entry
            .meta
            .columns
            .iter()
            .map(|c| {
                let images = c
                    .images
                    .iter()
                    .map(|name| {
                        read_png(&folder.join(name))
                            .map(Arc::new)
                            .map_err(|e| format!("history entry {id}: {e}"))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(ViewColumn {
                    label: c.label.clone(),
                    signature: c.signature.clone(),
                    source: c.source.clone(),
                    stats: c.stats.clone(),
                    images,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ViewData {
            title: entry.meta.title.clone(),
            samples: entry.meta.samples.clone(),
            columns,
            note: entry.meta.note.clone(),
        })
    }

    /// The workflow that made an entry.
    pub fn workflow_path(&self, id: &str) -> PathBuf {
        self.dir.join(id).join("workflow.ron")
    }

    /// Deletes an entry.
    pub fn remove(&mut self, id: &str) -> Result<(), String> {
        let folder = self.dir.join(id);
        std::fs::remove_dir_all(&folder)
            .map_err(|e| format!("could not delete {}: {e}", folder.display()))?;
        self.entries.retain(|e| e.id != id);
        Ok(())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes one entry into a hidden folder and renames it into place, so that a crash never
/// leaves half an entry in the list.
fn write_entry(
    dir: &Path,
    data: &ViewData,
    kind: EntryKind,
    workflow: &Workflow,
) -> Result<String, String> {
    let created = now_ms();
    let base = format!("{created:013}");
    let id = (0..1000)
        .map(|n| {
            if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            }
        })
        .find(|id| !dir.join(id).exists())
        .ok_or("no free history name")?;
    let tmp = dir.join(format!(".tmp-{id}"));
    let failed = |e: std::io::Error| format!("history not kept in {}: {e}", tmp.display());
    std::fs::create_dir_all(&tmp).map_err(failed)?;
    let mut columns = Vec::new();
    for (col, c) in data.columns.iter().enumerate() {
        let mut images = Vec::new();
        for (row, image) in c.images.iter().enumerate() {
            let name = format!("c{col}-s{row}.png");
            let bytes = encode_png(image, &[]).map_err(|e| e.to_string())?;
            std::fs::write(tmp.join(&name), bytes).map_err(failed)?;
            images.push(name);
        }
        columns.push(StoredColumn {
            label: c.label.clone(),
            signature: c.signature.clone(),
            source: c.source.clone(),
            stats: c.stats.clone(),
            images,
        });
    }
    let meta = EntryMeta {
        version: FORMAT_VERSION,
        created_unix_ms: created,
        title: data.title.clone(),
        kind,
        samples: data.samples.clone(),
        note: data.note.clone(),
        columns,
    };
    let text = ron::ser::to_string_pretty(&meta, ron::ser::PrettyConfig::default())
        .map_err(|e| e.to_string())?;
    std::fs::write(tmp.join("entry.ron"), text).map_err(failed)?;
    let wf = to_ron_string(workflow).map_err(|e| e.to_string())?;
    std::fs::write(tmp.join("workflow.ron"), wf).map_err(failed)?;
    std::fs::rename(&tmp, dir.join(&id)).map_err(failed)?;
    Ok(id)
}

fn folder_bytes(folder: &Path) -> u64 {
    std::fs::read_dir(folder).map_or(0, |rd| {
        rd.flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
}

fn read_meta(folder: &Path) -> Option<EntryMeta> {
    let path = folder.join("entry.ron");
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > MAX_ENTRY_TEXT {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let entry: EntryMeta = ron::from_str(&text).ok()?;
    (entry.version == FORMAT_VERSION).then_some(entry)
}

/// The readable entries, newest first (names sort by creation time).
fn list(dir: &Path) -> Vec<HistoryEntry> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries: Vec<HistoryEntry> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_string();
            if id.starts_with('.') {
                return None;
            }
            let meta = read_meta(&e.path())?;
            Some(HistoryEntry {
                bytes: folder_bytes(&e.path()),
                id,
                meta,
            })
        })
        .collect();
    entries.sort_by(|a, b| b.id.cmp(&a.id));
    entries
}

/// Deletes the oldest entries beyond `max_entries` or `max_bytes` (the newest always stays),
/// and half-written folders a crash left.
fn prune(dir: &Path, max_entries: usize, max_bytes: u64) {
    let entries = list(dir);
    let mut total = 0u64;
    for (i, e) in entries.iter().enumerate() {
        total += e.bytes;
        if i > 0 && (i >= max_entries || total > max_bytes) {
            let _ = std::fs::remove_dir_all(dir.join(&e.id));
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            let stale = name.to_str().is_some_and(|n| n.starts_with(".tmp-"))
                && e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 600);
            if stale {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cachedit_nodes::image::RgbImage;

    fn data(title: &str, shade: u8) -> ViewData {
        let stats = |reference: bool| ColumnStats {
            reference,
            runs: 1,
            wall_ms: None,
            cpu_ms: None,
            speedup: None,
            ideal_speedup: 1.0,
            verdict: None,
            hit_rate: 0.0,
            psnr_db: reference.then_some(cachedit_nodes::sampling::measure::Spread {
                median: f64::INFINITY,
                min: f64::INFINITY,
                max: f64::INFINITY,
            }),
            ssim: None,
            class_kept: None,
            feature_distance: None,
        };
        let image = Arc::new(RgbImage::new(2, 2, vec![shade; 12]).unwrap());
        ViewData {
            title: title.into(),
            samples: vec![(1, 0)],
            columns: vec![
                ViewColumn {
                    label: "ref".into(),
                    signature: "NoCache".into(),
                    source: title.into(),
                    stats: stats(true),
                    images: vec![image.clone()],
                },
                ViewColumn {
                    label: "1".into(),
                    signature: "Fixed_F1B0".into(),
                    source: title.into(),
                    stats: stats(false),
                    images: vec![image],
                },
            ],
            note: None,
        }
    }

    #[test]
    fn an_entry_comes_back_as_it_was_kept_newest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let mut h = History::open(tmp.path());
        h.record(
            &data("first", 7),
            EntryKind::Comparison,
            &Workflow::default(),
        );
        h.wait_idle();
        std::thread::sleep(std::time::Duration::from_millis(3));
        h.record(&data("second", 9), EntryKind::Sampler, &Workflow::default());
        h.wait_idle();
        assert_eq!(h.problem, None);
        let titles: Vec<&str> = h.entries.iter().map(|e| e.meta.title.as_str()).collect();
        assert_eq!(titles, ["second", "first"]);
        let back = h.load(&h.entries[1].id.clone()).unwrap();
        assert_eq!(back.columns.len(), 2);
        assert_eq!(back.columns[1].images[0].pixels, vec![7; 12]);
        // Infinity survives the round trip (RON writes `inf`).
        assert_eq!(
            back.columns[0].stats.psnr_db.map(|p| p.median),
            Some(f64::INFINITY)
        );
        assert!(h.workflow_path(&h.entries[0].id).is_file());
        // A fresh open lists the same entries.
        assert_eq!(History::open(tmp.path()).entries, h.entries);
    }

    #[test]
    fn writes_asked_for_together_all_show_in_the_list() {
        // Each write sends the list it saw; unordered writers once lost the later entry.
        for _ in 0..5 {
            let tmp = tempfile::tempdir().unwrap();
            let mut h = History::open(tmp.path());
            for shade in 0..4 {
                h.record(
                    &data("burst", shade),
                    EntryKind::Comparison,
                    &Workflow::default(),
                );
            }
            h.wait_idle();
            assert_eq!(h.problem, None);
            assert_eq!(h.entries.len(), 4);
        }
    }

    #[test]
    fn the_history_is_bounded_and_damaged_entries_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("history");
        for i in 0..5 {
            write_entry(
                &dir,
                &data(&format!("e{i}"), i),
                EntryKind::Comparison,
                &Workflow::default(),
            )
            .unwrap();
        }
        std::fs::create_dir_all(dir.join("9999999999999")).unwrap();
        std::fs::write(dir.join("9999999999999/entry.ron"), "not ron").unwrap();
        assert_eq!(list(&dir).len(), 5, "the damaged one is not listed");
        prune(&dir, 3, u64::MAX);
        let left: Vec<String> = list(&dir).into_iter().map(|e| e.meta.title).collect();
        assert_eq!(left, ["e4", "e3", "e2"]);
        // A byte limit below one entry keeps the newest only.
        prune(&dir, 10, 1);
        assert_eq!(list(&dir).len(), 1);
    }
}
