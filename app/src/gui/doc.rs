//! The open workflow document and its edit commands with undo/redo (the canvas is only a view).

use cachedit_nodes::graph::document::{Link, Node, NodeId, PortRef, Value, Workflow};
use cachedit_nodes::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Most undo steps kept.
pub const MAX_UNDO: usize = 200;

/// Nodes (with the links among them) on the clipboard, for copy/paste and duplicate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Clip {
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
}

/// A clip as it travels through the system clipboard; the field name tells our text from
/// anything else that happens to be there.
#[derive(Serialize, Deserialize)]
struct ClipText {
    cachedit_nodes: Vec<Node>,
    links: Vec<Link>,
}

impl Clip {
    /// The clip as RON text for the system clipboard, so that it pastes in another editor
    /// window too.
    pub fn to_text(&self) -> Option<String> {
        let text = ClipText {
            cachedit_nodes: self.nodes.clone(),
            links: self.links.clone(),
        };
        ron::ser::to_string_pretty(&text, ron::ser::PrettyConfig::default()).ok()
    }

    /// Nodes copied by an editor, from clipboard text; `None` for any other text.
    pub fn from_text(text: &str) -> Option<Clip> {
        let parsed: ClipText = ron::from_str(text).ok()?;
        Some(Clip {
            nodes: parsed.cachedit_nodes,
            links: parsed.links,
        })
    }

    /// The top-left corner of the clipped nodes (graph coordinates).
    pub fn origin(&self) -> Option<[f32; 2]> {
        let first = self.nodes.first()?.pos;
        Some(
            self.nodes
                .iter()
                .fold(first, |m, n| [m[0].min(n.pos[0]), m[1].min(n.pos[1])]),
        )
    }
}

/// The workflow being edited, where it lives on disk, and its undo history.
#[derive(Debug, Clone)]
pub struct EditorDoc {
    wf: Workflow,
    pub path: Option<PathBuf>,
    /// The document as last saved or opened, to tell unsaved changes.
    saved: Workflow,
    undo: Vec<Workflow>,
    redo: Vec<Workflow>,
    /// The merge key of the edit in progress: edits with the same key (one slider drag, one
    /// node drag) make a single undo step until [`Self::end_merge`].
    merge: Option<String>,
    /// Next id to hand out; never goes down, so a deleted node's id is not reused.
    next_id: u64,
    /// Bumped on every change, so views can tell when to resync.
    pub revision: u64,
    /// The file's leading comment lines, written back on save.
    pub header: String,
    /// The file had comments inside the workflow, which a save drops: ask before
    /// overwriting it (cleared once the user agrees).
    pub body_comments: bool,
    /// The example this untitled document is a copy of (Save asks where to save it).
    pub example: Option<String>,
}

impl Default for EditorDoc {
    fn default() -> Self {
        EditorDoc::new(Workflow::default(), None)
    }
}

impl EditorDoc {
    pub fn new(wf: Workflow, path: Option<PathBuf>) -> Self {
        EditorDoc {
            next_id: wf.next_id().0,
            saved: wf.clone(),
            wf,
            path,
            undo: Vec::new(),
            redo: Vec::new(),
            merge: None,
            revision: 0,
            header: String::new(),
            body_comments: false,
            example: None,
        }
    }

    /// An untitled copy of the example at `path`: saving asks for a new file, so the example
    /// itself is never overwritten.
    pub fn example_copy(wf: Workflow, name: String) -> Self {
        EditorDoc {
            example: Some(name),
            ..EditorDoc::new(wf, None)
        }
    }

    pub fn workflow(&self) -> &Workflow {
        &self.wf
    }

    pub fn is_dirty(&self) -> bool {
        self.wf != self.saved
    }

    /// Marks the current state as saved (at `path`).
    pub fn mark_saved(&mut self, path: PathBuf) {
        self.saved = self.wf.clone();
        self.path = Some(path);
        self.example = None;
        self.body_comments = false;
    }

    /// Marks the document as not saved anywhere (e.g. restored from a PNG or an autosave).
    pub fn mark_unsaved(&mut self) {
        self.saved = Workflow {
            nodes: Vec::new(),
            links: Vec::new(),
            version: u32::MAX,
        };
    }

    /// A short name for title bars and prompts.
    pub fn display_name(&self) -> String {
        match (&self.path, &self.example) {
            (Some(p), _) => p
                .file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into()),
            (None, Some(example)) => format!("untitled (copy of {example})"),
            (None, None) => "untitled".to_string(),
        }
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Applies one edit. An edit that changes nothing records nothing. With a `merge` key equal
    /// to the previous edit's, both form one undo step.
    pub fn edit<R>(&mut self, merge: Option<String>, f: impl FnOnce(&mut Workflow) -> R) -> R {
        let before = self.wf.clone();
        let result = f(&mut self.wf);
        if self.wf == before {
            return result;
        }
        let merging = merge.is_some() && merge == self.merge;
        if !merging {
            self.undo.push(before);
            if self.undo.len() > MAX_UNDO {
                self.undo.remove(0);
            }
        }
        self.merge = merge;
        self.redo.clear();
        self.revision += 1;
        result
    }

    /// Runs several edits as one undo step (a node added from a dropped wire, with its link).
    pub fn group<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let depth = self.undo.len();
        let result = f(self);
        // Each undo entry is the document before one edit: the first of the group is the one
        // to go back to.
        self.undo.truncate(depth + 1);
        result
    }

    /// Ends the merged edit in progress (a drag was released).
    pub fn end_merge(&mut self) {
        self.merge = None;
    }

    pub fn undo(&mut self) -> bool {
        let Some(prev) = self.undo.pop() else {
            return false;
        };
        self.redo.push(std::mem::replace(&mut self.wf, prev));
        self.merge = None;
        self.revision += 1;
        true
    }

    pub fn redo(&mut self) -> bool {
        let Some(next) = self.redo.pop() else {
            return false;
        };
        self.undo.push(std::mem::replace(&mut self.wf, next));
        self.merge = None;
        self.revision += 1;
        true
    }

    fn alloc_id(&mut self) -> NodeId {
        let wanted = NodeId(self.next_id.max(self.wf.next_id().0));
        // Past u64::MAX (a crafted file) the counter stays at the top; never hand out an id
        // that is in use.
        let id = if self.wf.node(wanted).is_some() {
            self.wf.next_id()
        } else {
            wanted
        };
        self.next_id = id.0.saturating_add(1);
        id
    }

    /// Adds a node of `kind` with its default params.
    pub fn add_node(&mut self, kind: &str, pos: [f32; 2]) -> NodeId {
        let id = self.alloc_id();
        self.edit(None, |wf| {
            wf.nodes.push(Node {
                id,
                kind: kind.to_string(),
                pos,
                ..Node::default()
            });
        });
        id
    }

    /// Removes nodes and every link touching them.
    pub fn remove_nodes(&mut self, ids: &[NodeId]) {
        let ids: BTreeSet<NodeId> = ids.iter().copied().collect();
        self.edit(None, |wf| {
            wf.nodes.retain(|n| !ids.contains(&n.id));
            wf.links
                .retain(|l| !ids.contains(&l.from.node) && !ids.contains(&l.to.node));
        });
    }

    /// Links an output to an input after checking the ports' types (the reason comes back
    /// when refused); a link already into the input is replaced.
    pub fn connect(
        &mut self,
        registry: &Registry,
        from: PortRef,
        to: PortRef,
    ) -> Result<(), String> {
        check_link(registry, &self.wf, &from, &to)?;
        self.edit(None, |wf| wf.connect(from, to));
        Ok(())
    }

    /// Removes the link into `to`, if any.
    pub fn disconnect(&mut self, to: &PortRef) {
        self.edit(None, |wf| wf.links.retain(|l| &l.to != to));
    }

    /// Removes every link out of `from`.
    pub fn disconnect_output(&mut self, from: &PortRef) {
        self.edit(None, |wf| wf.links.retain(|l| &l.from != from));
    }

    /// Sets one param; repeated calls with the same merge key (a drag) are one undo step.
    pub fn set_param(&mut self, node: NodeId, name: &str, value: Value) {
        let key = format!("param:{}:{name}", node.0);
        self.edit(Some(key), |wf| {
            wf.set_param(node, name, value);
        });
    }

    /// Sets several params at once as one undo step (e.g. the device picker).
    pub fn set_params(&mut self, changes: &[(NodeId, &str, Value)]) {
        self.edit(None, |wf| {
            for (node, name, value) in changes {
                wf.set_param(*node, name, value.clone());
            }
        });
    }

    /// Moves nodes; one drag is one undo step.
    pub fn move_nodes(&mut self, moves: &[(NodeId, [f32; 2])]) {
        if moves.is_empty() {
            return;
        }
        self.edit(Some("move".into()), |wf| {
            for (id, pos) in moves {
                if let Some(n) = wf.node_mut(*id) {
                    n.pos = *pos;
                }
            }
        });
    }

    /// The given nodes and the links among them.
    pub fn copy(&self, ids: &[NodeId]) -> Clip {
        let set: BTreeSet<NodeId> = ids.iter().copied().collect();
        Clip {
            nodes: self
                .wf
                .nodes
                .iter()
                .filter(|n| set.contains(&n.id))
                .cloned()
                .collect(),
            links: self
                .wf
                .links
                .iter()
                .filter(|l| set.contains(&l.from.node) && set.contains(&l.to.node))
                .cloned()
                .collect(),
        }
    }

    /// Pastes a clip with fresh ids, shifted by `offset`; returns the new ids.
    pub fn paste(&mut self, clip: &Clip, offset: [f32; 2]) -> Vec<NodeId> {
        let mut map = BTreeMap::new();
        for n in &clip.nodes {
            let id = self.alloc_id();
            map.insert(n.id, id);
        }
        let nodes: Vec<Node> = clip
            .nodes
            .iter()
            .filter_map(|n| {
                Some(Node {
                    id: *map.get(&n.id)?,
                    pos: [n.pos[0] + offset[0], n.pos[1] + offset[1]],
                    ..n.clone()
                })
            })
            .collect();
        let links: Vec<Link> = clip
            .links
            .iter()
            .filter_map(|l| {
                Some(Link {
                    from: PortRef::new(*map.get(&l.from.node)?, &l.from.port),
                    to: PortRef::new(*map.get(&l.to.node)?, &l.to.port),
                })
            })
            .collect();
        let ids = nodes.iter().map(|n| n.id).collect();
        self.edit(None, |wf| {
            wf.nodes.extend(nodes);
            wf.links.extend(links);
        });
        ids
    }

    /// Replaces the whole document as one undoable edit (used by "recover autosave").
    pub fn replace(&mut self, wf: Workflow) {
        self.edit(None, |cur| *cur = wf);
        self.next_id = self.next_id.max(self.wf.next_id().0);
    }
}

/// Why a link from `from` to `to` is not allowed, if it is not.
pub fn check_link(
    registry: &Registry,
    wf: &Workflow,
    from: &PortRef,
    to: &PortRef,
) -> Result<(), String> {
    let kind_of = |id: NodeId| {
        wf.node(id)
            .and_then(|n| registry.spec(&n.kind))
            .ok_or_else(|| format!("{} is not a known node", wf.describe(id)))
    };
    let out_spec = kind_of(from.node)?;
    let in_spec = kind_of(to.node)?;
    let out = out_spec
        .output(&from.port)
        .ok_or_else(|| format!("{} has no output `{}`", wf.describe(from.node), from.port))?;
    let inp = in_spec
        .input(&to.port)
        .ok_or_else(|| format!("{} has no input `{}`", wf.describe(to.node), to.port))?;
    if from.node == to.node {
        return Err(format!("{} cannot feed itself", wf.describe(from.node)));
    }
    if out.ty != inp.ty {
        return Err(format!(
            "{} output `{}` carries {}, but {} input `{}` takes {}",
            out_spec.title, out.name, out.ty, in_spec.title, inp.name, inp.ty
        ));
    }
    // A link that would close a cycle: is `from.node` downstream of `to.node`?
    let mut stack = vec![to.node];
    let mut seen = BTreeSet::new();
    while let Some(n) = stack.pop() {
        if n == from.node {
            return Err(format!(
                "linking {} to {} would make a cycle",
                wf.describe(from.node),
                wf.describe(to.node)
            ));
        }
        if seen.insert(n) {
            stack.extend(
                wf.links
                    .iter()
                    .filter(|l| l.from.node == n)
                    .map(|l| l.to.node),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> (EditorDoc, Registry, NodeId, NodeId) {
        let mut d = EditorDoc::default();
        let load = d.add_node("LoadModel", [0.0, 0.0]);
        let sampler = d.add_node("Sampler", [300.0, 0.0]);
        (d, Registry::builtin(), load, sampler)
    }

    /// Load Model → Sampler, linked by their model ports.
    fn linked_doc() -> (EditorDoc, NodeId, NodeId) {
        let (mut d, reg, load, sampler) = doc();
        d.connect(
            &reg,
            PortRef::new(load, "model"),
            PortRef::new(sampler, "model"),
        )
        .expect("link");
        (d, load, sampler)
    }

    #[test]
    fn wrong_types_are_refused_with_a_reason() {
        let (mut d, reg, load, sampler) = doc();
        let err = d
            .connect(
                &reg,
                PortRef::new(load, "model"),
                PortRef::new(sampler, "cache"),
            )
            .expect_err("MODEL into CACHE_CONFIG");
        assert!(
            err.contains("MODEL") && err.contains("CACHE_CONFIG"),
            "{err}"
        );
        d.connect(
            &reg,
            PortRef::new(load, "model"),
            PortRef::new(sampler, "model"),
        )
        .expect("same type");
        assert_eq!(d.workflow().links.len(), 1);
    }

    #[test]
    fn slider_drag_is_one_undo_step_and_redo_restores() {
        let (mut d, _, _, sampler) = doc();
        for s in 2..10 {
            d.set_param(sampler, "steps", Value::Int(s));
        }
        d.end_merge();
        assert!(d.undo());
        assert_eq!(d.workflow().node(sampler).map(|n| n.params.len()), Some(0));
        assert!(d.redo());
        assert_eq!(
            d.workflow()
                .node(sampler)
                .and_then(|n| n.params.get("steps")),
            Some(&Value::Int(9))
        );
    }

    #[test]
    fn deleted_ids_are_not_reused_and_paste_keeps_inner_links() {
        let (mut d, load, sampler) = linked_doc();
        let clip = d.copy(&[load, sampler]);
        d.remove_nodes(&[sampler]);
        assert!(d.workflow().links.is_empty());
        let new = d.paste(&clip, [10.0, 10.0]);
        assert_eq!(new.len(), 2);
        assert!(new.iter().all(|id| id.0 > sampler.0), "{new:?}");
        assert_eq!(d.workflow().links.len(), 1);
    }

    #[test]
    fn a_clip_goes_through_clipboard_text_and_other_text_is_not_a_clip() {
        let (mut d, load, sampler) = linked_doc();
        d.set_param(sampler, "steps", Value::Int(9));
        let clip = d.copy(&[load, sampler]);
        let text = clip.to_text().expect("text");
        assert_eq!(Clip::from_text(&text), Some(clip.clone()));
        assert_eq!(Clip::from_text("hello"), None);
        assert_eq!(Clip::from_text("(nodes: [], links: [])"), None);
        let o = clip.origin().expect("origin");
        let min_x = clip.nodes.iter().map(|n| n.pos[0]).fold(f32::MAX, f32::min);
        assert_eq!(o[0], min_x);
        assert_eq!(Clip::default().origin(), None);
    }

    #[test]
    fn grouped_edits_are_one_undo_step() {
        let (mut d, reg, load, _) = doc();
        let sampler = d.group(|d| {
            let s = d.add_node("Sampler", [600.0, 0.0]);
            d.connect(&reg, PortRef::new(load, "model"), PortRef::new(s, "model"))
                .expect("link");
            s
        });
        assert_eq!(d.workflow().links.len(), 1);
        assert!(d.undo());
        assert!(d.workflow().node(sampler).is_none());
        assert!(d.workflow().links.is_empty());
        assert_eq!(d.workflow().nodes.len(), 2);
    }
}
