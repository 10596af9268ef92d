//! The workflow document: nodes with stable ids, their params and positions, and typed links.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Current `.ron` format version. Older versions are upgraded by `graph::migrate`.
pub const FORMAT_VERSION: u32 = 1;

/// A node's stable id. Never reused inside one document (the canvas may reuse slots; we don't).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A param value as written in a workflow file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Value {
    /// Short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Text(_) => "text",
        }
    }
}

impl Value {
    /// The value as a number, when it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Node {
    pub id: NodeId,
    /// Registry name of the node kind, e.g. `"Sampler"`.
    pub kind: String,
    /// Optional user title shown instead of the kind's title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Canvas position (top-left corner), in canvas units.
    pub pos: [f32; 2],
    /// Param values; a param left out takes its declared default.
    pub params: BTreeMap<String, Value>,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            id: NodeId(0),
            kind: String::new(),
            title: None,
            params: BTreeMap::new(),
            pos: [0.0, 0.0],
        }
    }
}

/// One end of a link: a node and the name of one of its ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRef {
    pub node: NodeId,
    pub port: String,
}

impl PortRef {
    pub fn new(node: NodeId, port: &str) -> Self {
        PortRef {
            node,
            port: port.to_string(),
        }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.port)
    }
}

/// A link from an output port to an input port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub from: PortRef,
    pub to: PortRef,
}

/// A whole workflow: what a `.ron` file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workflow {
    pub version: u32,
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
}

impl Default for Workflow {
    fn default() -> Self {
        Workflow {
            version: FORMAT_VERSION,
            nodes: Vec::new(),
            links: Vec::new(),
        }
    }
}

impl Workflow {
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    /// The next free id: one above the largest in use, or, when that is `u64::MAX`, the
    /// smallest id not in use (never one that is taken).
    pub fn next_id(&self) -> NodeId {
        let Some(largest) = self.nodes.iter().map(|n| n.id.0).max() else {
            return NodeId(1);
        };
        match largest.checked_add(1) {
            Some(next) => NodeId(next),
            None => {
                let taken: std::collections::HashSet<u64> =
                    self.nodes.iter().map(|n| n.id.0).collect();
                // Fewer than u64::MAX nodes fit in memory, so a free id exists below.
                NodeId((1..=u64::MAX).find(|i| !taken.contains(i)).unwrap_or(0))
            }
        }
    }

    /// Adds a node of `kind` at `pos` with default params and returns its id.
    pub fn add_node(&mut self, kind: &str, pos: [f32; 2]) -> NodeId {
        let id = self.next_id();
        self.nodes.push(Node {
            id,
            kind: kind.to_string(),
            pos,
            ..Node::default()
        });
        id
    }

    /// Sets a param value on a node; returns false when the node does not exist.
    pub fn set_param(&mut self, node: NodeId, name: &str, value: Value) -> bool {
        match self.node_mut(node) {
            Some(n) => {
                n.params.insert(name.to_string(), value);
                true
            }
            None => false,
        }
    }

    /// Links `from` (output) to `to` (input), replacing any link already into `to`.
    pub fn connect(&mut self, from: PortRef, to: PortRef) {
        self.links.retain(|l| l.to != to);
        self.links.push(Link { from, to });
    }

    /// The link feeding an input port, if any.
    pub fn link_into(&self, to: &PortRef) -> Option<&Link> {
        self.links.iter().find(|l| &l.to == to)
    }

    /// Human label for a node in messages: `Sampler #3` or `"my title" (Sampler #3)`.
    pub fn describe(&self, id: NodeId) -> String {
        match self.node(id) {
            Some(n) => match &n.title {
                Some(t) => format!("{t:?} ({} {})", n.kind, n.id),
                None => format!("{} {}", n.kind, n.id),
            },
            None => format!("node {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_id_never_returns_an_id_in_use_even_at_the_top() {
        let mut wf = Workflow::default();
        assert_eq!(wf.next_id(), NodeId(1));
        for id in [u64::MAX, 1, 2, 4] {
            wf.nodes.push(Node {
                id: NodeId(id),
                ..Node::default()
            });
        }
        // One above u64::MAX does not exist (it used to wrap to 0, or panic in debug
        // builds): the smallest free id instead.
        assert_eq!(wf.next_id(), NodeId(3));
        assert_eq!(wf.add_node("K", [0.0, 0.0]), NodeId(3));
        assert_eq!(wf.next_id(), NodeId(5));
    }
}
