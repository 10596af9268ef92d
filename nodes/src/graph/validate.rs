//! Checks a workflow against the registry (kinds, params, ports, link types, cycles) and
//! resolves each node's params.

use super::topo;
use crate::document::{Node, NodeId, PortRef, Workflow};
use crate::registry::{KindSpec, Params, PortType, Registry};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Which side of a node a port is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortSide {
    Input,
    Output,
}

impl fmt::Display for PortSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortSide::Input => "input",
            PortSide::Output => "output",
        })
    }
}

/// One problem found in a workflow. `label` fields hold the node as [`Workflow::describe`]
/// writes it (e.g. `Sampler #3`), so messages name the node without the workflow at hand.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    /// Several nodes share one id.
    #[error("{} share the id {node}; node ids must be unique", labels.join(" and "))]
    DuplicateId { node: NodeId, labels: Vec<String> },

    /// The node's kind is not in the registry.
    #[error("{label}: unknown node kind `{kind}`{}", did_you_mean(suggestion.as_deref()))]
    UnknownKind {
        node: NodeId,
        label: String,
        kind: String,
        /// The closest known kind name, when one is close.
        suggestion: Option<String>,
    },

    /// The node sets a param its kind does not declare.
    #[error(
        "{label}: unknown param `{param}` ({})",
        list_or_none(kind, "params", known)
    )]
    UnknownParam {
        node: NodeId,
        label: String,
        param: String,
        kind: String,
        /// The params the kind declares.
        known: Vec<String>,
    },

    /// A param value of the wrong type or out of range.
    #[error("{label}: param `{param}`: {reason}")]
    BadParam {
        node: NodeId,
        label: String,
        param: String,
        reason: String,
    },

    /// A link names a port the node's kind does not have on that side.
    #[error("{label} has no {side} port `{port}` ({})", list_or_none(kind, &format!("{side}s"), known))]
    UnknownPort {
        node: NodeId,
        label: String,
        port: String,
        side: PortSide,
        kind: String,
        /// The ports the kind declares on that side.
        known: Vec<String>,
    },

    /// A link starts or ends at a node id that does not exist.
    #[error(
        "link from {from_label} output `{}` to {to_label} input `{}`: {}",
        from.port, to.port, missing_nodes(missing)
    )]
    LinkToMissingNode {
        from: PortRef,
        from_label: String,
        to: PortRef,
        to_label: String,
        /// The ids that do not exist: one end, or both (`from` first).
        missing: Vec<NodeId>,
    },

    /// A link joins ports of different types.
    #[error(
        "{from_label} output `{}` ({from_ty}) cannot feed {to_label} input `{}` ({to_ty})",
        from.port, to.port
    )]
    TypeMismatch {
        from: PortRef,
        from_label: String,
        from_ty: PortType,
        to: PortRef,
        to_label: String,
        to_ty: PortType,
    },

    /// A required input has no link.
    #[error("{label}: required input `{port}` ({ty}) is not connected")]
    MissingInput {
        node: NodeId,
        label: String,
        port: String,
        ty: PortType,
    },

    /// More than one link goes into the same input.
    #[error("{label}: input `{port}` has {count} links; an input takes one")]
    MultipleLinks {
        node: NodeId,
        label: String,
        port: String,
        count: usize,
    },

    /// Links form a cycle through these nodes (sorted by id).
    #[error("links form a cycle through {}", cycle_text(labels))]
    Cycle {
        nodes: Vec<NodeId>,
        labels: Vec<String>,
    },
}

/// The nodes on a cycle, the first dozen by name: a cycle through thousands of nodes must
/// still be a readable line.
fn cycle_text(labels: &[String]) -> String {
    const SHOWN: usize = 12;
    if labels.len() <= SHOWN {
        return labels.join(", ");
    }
    format!(
        "{} … and {} more",
        labels[..SHOWN].join(", "),
        labels.len() - SHOWN
    )
}

fn missing_nodes(missing: &[NodeId]) -> String {
    match missing {
        [one] => format!("node {one} does not exist"),
        _ => format!(
            "nodes {} do not exist",
            missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    }
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

fn list_or_none(kind: &str, what: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!("{kind} has no {what}")
    } else {
        format!("{kind} {what}: {}", known.join(", "))
    }
}

impl ValidationError {
    /// The node the error is about, for the UI to mark; `None` when no existing node is.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            ValidationError::DuplicateId { node, .. }
            | ValidationError::UnknownKind { node, .. }
            | ValidationError::UnknownParam { node, .. }
            | ValidationError::BadParam { node, .. }
            | ValidationError::UnknownPort { node, .. }
            | ValidationError::MissingInput { node, .. }
            | ValidationError::MultipleLinks { node, .. } => Some(*node),
            ValidationError::LinkToMissingNode { from, to, .. } => {
                self.link_end(from, to).map(|p| p.node)
            }
            ValidationError::TypeMismatch { to, .. } => Some(to.node),
            ValidationError::Cycle { nodes, .. } => nodes.first().copied(),
        }
    }

    /// The param or port at fault, if the error is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ValidationError::DuplicateId { .. }
            | ValidationError::UnknownKind { .. }
            | ValidationError::Cycle { .. } => None,
            ValidationError::UnknownParam { param, .. }
            | ValidationError::BadParam { param, .. } => Some(param),
            ValidationError::UnknownPort { port, .. }
            | ValidationError::MissingInput { port, .. }
            | ValidationError::MultipleLinks { port, .. } => Some(port),
            ValidationError::LinkToMissingNode { from, to, .. } => {
                self.link_end(from, to).map(|p| p.port.as_str())
            }
            ValidationError::TypeMismatch { to, .. } => Some(&to.port),
        }
    }

    /// For a link to a missing node: the end that does exist (the `to` end preferred).
    fn link_end<'a>(&self, from: &'a PortRef, to: &'a PortRef) -> Option<&'a PortRef> {
        match self {
            ValidationError::LinkToMissingNode { missing, .. } => [to, from]
                .into_iter()
                .find(|end| !missing.contains(&end.node)),
            _ => None,
        }
    }
}

/// A node's label in the same form as [`Workflow::describe`], without looking it up by id
/// (so that nodes sharing an id are still told apart).
pub(crate) fn label(node: &Node) -> String {
    match &node.title {
        Some(t) => format!("{t:?} ({} {})", node.kind, node.id),
        None => format!("{} {}", node.kind, node.id),
    }
}

/// Checks the workflow against the registry and returns every problem found.
///
/// Order: duplicate ids (by id), then per node in document order (kind, params, unlinked or
/// doubly linked inputs), then per link in document order (missing nodes, unknown ports,
/// type mismatches), then cycles.
pub fn validate(wf: &Workflow, registry: &Registry) -> Result<(), Vec<ValidationError>> {
    let mut errors = Vec::new();
    // Lookups by id and links per input, made once: every check below is linear in nodes +
    // links (a 100,000-node workflow validates in well under a second).
    let nodes: HashMap<NodeId, &Node> = wf.nodes.iter().map(|n| (n.id, n)).collect();
    let mut links_into: HashMap<(NodeId, &str), usize> = HashMap::new();
    for l in &wf.links {
        *links_into
            .entry((l.to.node, l.to.port.as_str()))
            .or_default() += 1;
    }
    let describe = |id: NodeId| {
        nodes
            .get(&id)
            .map_or_else(|| format!("node {id}"), |n| label(n))
    };

    let mut by_id: BTreeMap<NodeId, Vec<&Node>> = BTreeMap::new();
    for node in &wf.nodes {
        by_id.entry(node.id).or_default().push(node);
    }
    for (&id, nodes) in &by_id {
        if nodes.len() > 1 {
            errors.push(ValidationError::DuplicateId {
                node: id,
                labels: nodes.iter().map(|n| label(n)).collect(),
            });
        }
    }

    for node in &wf.nodes {
        let Some(spec) = registry.spec(&node.kind) else {
            errors.push(ValidationError::UnknownKind {
                node: node.id,
                label: label(node),
                kind: node.kind.clone(),
                suggestion: closest_kind(&node.kind, registry),
            });
            continue;
        };
        if let Err(errs) = resolve_params(node, spec) {
            errors.extend(errs);
        }
        for input in &spec.inputs {
            let count = links_into.get(&(node.id, input.name)).copied().unwrap_or(0);
            if count == 0 && input.required {
                errors.push(ValidationError::MissingInput {
                    node: node.id,
                    label: label(node),
                    port: input.name.to_string(),
                    ty: input.ty,
                });
            } else if count > 1 {
                errors.push(ValidationError::MultipleLinks {
                    node: node.id,
                    label: label(node),
                    port: input.name.to_string(),
                    count,
                });
            }
        }
    }

    for link in &wf.links {
        let (Some(from_node), Some(to_node)) = (
            nodes.get(&link.from.node).copied(),
            nodes.get(&link.to.node).copied(),
        ) else {
            let missing = [link.from.node, link.to.node]
                .into_iter()
                .filter(|id| !nodes.contains_key(id))
                .collect();
            errors.push(ValidationError::LinkToMissingNode {
                from: link.from.clone(),
                from_label: describe(link.from.node),
                to: link.to.clone(),
                to_label: describe(link.to.node),
                missing,
            });
            continue;
        };
        // Unknown kinds were reported above; their ports cannot be checked.
        let (Some(from_spec), Some(to_spec)) =
            (registry.spec(&from_node.kind), registry.spec(&to_node.kind))
        else {
            continue;
        };
        let out = from_spec.output(&link.from.port);
        let inp = to_spec.input(&link.to.port);
        if out.is_none() {
            errors.push(unknown_port(
                from_node,
                from_spec,
                &link.from.port,
                PortSide::Output,
            ));
        }
        if inp.is_none() {
            errors.push(unknown_port(
                to_node,
                to_spec,
                &link.to.port,
                PortSide::Input,
            ));
        }
        if let (Some(out), Some(inp)) = (out, inp) {
            if out.ty != inp.ty {
                errors.push(ValidationError::TypeMismatch {
                    from: link.from.clone(),
                    from_label: label(from_node),
                    from_ty: out.ty,
                    to: link.to.clone(),
                    to_label: label(to_node),
                    to_ty: inp.ty,
                });
            }
        }
    }

    for group in topo::cycles(wf) {
        let labels = group.iter().map(|&id| describe(id)).collect();
        errors.push(ValidationError::Cycle {
            nodes: group,
            labels,
        });
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn unknown_port(node: &Node, spec: &KindSpec, port: &str, side: PortSide) -> ValidationError {
    let ports = match side {
        PortSide::Input => &spec.inputs,
        PortSide::Output => &spec.outputs,
    };
    ValidationError::UnknownPort {
        node: node.id,
        label: label(node),
        port: port.to_string(),
        side,
        kind: spec.name.to_string(),
        known: ports.iter().map(|p| p.name.to_string()).collect(),
    }
}

/// The node's params with defaults filled in for those left out, each given value checked
/// with [`crate::registry::ParamSpec::check`] (an integer becomes a float where a float is
/// declared). Errors: unknown params and bad values, in param-name order.
pub fn resolve_params(node: &Node, spec: &KindSpec) -> Result<Params, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let mut resolved = BTreeMap::new();
    for (name, value) in &node.params {
        match spec.param(name) {
            None => errors.push(ValidationError::UnknownParam {
                node: node.id,
                label: label(node),
                param: name.clone(),
                kind: spec.name.to_string(),
                known: spec.params.iter().map(|p| p.name.to_string()).collect(),
            }),
            Some(param) => match param.check(value) {
                Ok(v) => {
                    resolved.insert(name.clone(), v);
                }
                Err(reason) => errors.push(ValidationError::BadParam {
                    node: node.id,
                    label: label(node),
                    param: name.clone(),
                    reason,
                }),
            },
        }
    }
    for param in &spec.params {
        resolved
            .entry(param.name.to_string())
            .or_insert_with(|| param.default.clone());
    }
    if errors.is_empty() {
        Ok(Params(resolved))
    } else {
        Err(errors)
    }
}

/// The registered kind name closest to `name`, if it is close enough to be a likely typo.
fn closest_kind(name: &str, registry: &Registry) -> Option<String> {
    let wanted = name.to_lowercase();
    let limit = (wanted.chars().count() / 3).max(1);
    registry
        .specs()
        .map(|s| (edit_distance(&wanted, &s.name.to_lowercase()), s.name))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.to_string())
}

/// Levenshtein distance between two strings, by chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur.push(subst.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{Link, Value};
    use crate::exec::context::NodeContext;
    use crate::registry::{Inputs, NodeError, NodeKind, Outputs, ParamSpec, PortSpec};

    /// Outputs a model and an image.
    struct Source;
    /// Takes a required model and an optional cache config, outputs an image and stats.
    struct Process;
    /// Takes a required image.
    struct Sink;

    impl NodeKind for Source {
        fn spec(&self) -> KindSpec {
            KindSpec {
                name: "Source",
                title: "Source",
                category: "test",
                help: "",
                inputs: vec![],
                outputs: vec![
                    PortSpec::output("model", PortType::Model, ""),
                    PortSpec::output("image", PortType::Image, ""),
                ],
                params: vec![
                    ParamSpec::choice("model", "tiny", &["tiny", "small"], ""),
                    ParamSpec::int("seed", 0, 0, 1000, ""),
                ],
            }
        }
        fn run(&self, _: &NodeContext, _: &Inputs, _: &Params) -> Result<Outputs, NodeError> {
            Ok(Outputs::new())
        }
    }

    impl NodeKind for Process {
        fn spec(&self) -> KindSpec {
            KindSpec {
                name: "Process",
                title: "Process",
                category: "test",
                help: "",
                inputs: vec![
                    PortSpec::required("model", PortType::Model, ""),
                    PortSpec::optional("cache", PortType::CacheConfig, ""),
                ],
                outputs: vec![
                    PortSpec::output("image", PortType::Image, ""),
                    PortSpec::output("stats", PortType::RunStats, ""),
                ],
                params: vec![
                    ParamSpec::int("steps", 20, 1, 100, ""),
                    ParamSpec::float("guidance", 4.0, 0.0, 20.0, ""),
                    ParamSpec::choice("mode", "fast", &["fast", "exact"], ""),
                ],
            }
        }
        fn run(&self, _: &NodeContext, _: &Inputs, _: &Params) -> Result<Outputs, NodeError> {
            Ok(Outputs::new())
        }
    }

    impl NodeKind for Sink {
        fn spec(&self) -> KindSpec {
            KindSpec {
                name: "Sink",
                title: "Sink",
                category: "test",
                help: "",
                inputs: vec![PortSpec::required("image", PortType::Image, "")],
                outputs: vec![],
                params: vec![
                    ParamSpec::text("path", "out.png", ""),
                    ParamSpec::boolean("flag", false, ""),
                ],
            }
        }
        fn run(&self, _: &NodeContext, _: &Inputs, _: &Params) -> Result<Outputs, NodeError> {
            Ok(Outputs::new())
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.register(Source);
        r.register(Process);
        r.register(Sink);
        r
    }

    fn node(id: u64, kind: &str) -> Node {
        Node {
            id: NodeId(id),
            kind: kind.to_string(),
            ..Node::default()
        }
    }

    fn link(from: u64, from_port: &str, to: u64, to_port: &str) -> Link {
        Link {
            from: PortRef::new(NodeId(from), from_port),
            to: PortRef::new(NodeId(to), to_port),
        }
    }

    /// Source #1 -> Process #2 -> Sink #3, all valid.
    fn valid() -> Workflow {
        Workflow {
            nodes: vec![node(1, "Source"), node(2, "Process"), node(3, "Sink")],
            links: vec![link(1, "model", 2, "model"), link(2, "image", 3, "image")],
            ..Workflow::default()
        }
    }

    /// Validates, expects exactly one error, and checks its node, field and message.
    fn single_error(wf: &Workflow, node: Option<u64>, field: Option<&str>) -> ValidationError {
        let errs = validate(wf, &registry()).expect_err("expected errors");
        assert_eq!(errs.len(), 1, "{errs:#?}");
        let e = errs.into_iter().next().expect("one error");
        assert_eq!(e.node(), node.map(NodeId), "{e}");
        assert_eq!(e.field(), field, "{e}");
        if let Some(id) = node {
            let name = wf.describe(NodeId(id));
            assert!(e.to_string().contains(&name), "`{e}` should name {name}");
        }
        e
    }

    #[test]
    fn valid_workflow_passes() {
        assert_eq!(validate(&valid(), &registry()), Ok(()));
        assert_eq!(validate(&Workflow::default(), &registry()), Ok(()));
    }

    #[test]
    fn optional_input_may_stay_unlinked_and_params_in_range_pass() {
        let mut wf = valid();
        wf.set_param(NodeId(2), "steps", Value::Int(100));
        wf.set_param(NodeId(2), "guidance", Value::Int(7));
        wf.set_param(NodeId(1), "model", Value::Text("small".into()));
        wf.set_param(NodeId(3), "flag", Value::Bool(true));
        assert_eq!(validate(&wf, &registry()), Ok(()));
    }

    #[test]
    fn label_matches_describe() {
        let mut wf = valid();
        wf.nodes[1].title = Some("my \"sampler\"".into());
        for n in &wf.nodes {
            assert_eq!(label(n), wf.describe(n.id));
        }
    }

    #[test]
    fn duplicate_id() {
        let mut wf = valid();
        wf.nodes.push(node(2, "Sink"));
        let errs = validate(&wf, &registry()).expect_err("dup");
        let e = &errs[0];
        assert!(
            matches!(e, ValidationError::DuplicateId { .. }),
            "{errs:#?}"
        );
        assert_eq!(e.node(), Some(NodeId(2)));
        assert_eq!(e.field(), None);
        let msg = e.to_string();
        assert!(
            msg.contains("Process #2") && msg.contains("Sink #2"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_kind_with_suggestion() {
        let mut wf = valid();
        wf.nodes[1].kind = "Procses".into();
        let e = single_error(&wf, Some(2), None);
        match &e {
            ValidationError::UnknownKind {
                kind, suggestion, ..
            } => {
                assert_eq!(kind, "Procses");
                assert_eq!(suggestion.as_deref(), Some("Process"));
            }
            other => panic!("wrong error {other:?}"),
        }
        assert!(e.to_string().contains("did you mean `Process`"), "{e}");
    }

    #[test]
    fn unknown_kind_case_only_and_far_away() {
        let reg = registry();
        assert_eq!(closest_kind("sink", &reg).as_deref(), Some("Sink"));
        assert_eq!(closest_kind("Upscaler", &reg), None);
        let wf = Workflow {
            nodes: vec![node(5, "Upscaler")],
            ..Workflow::default()
        };
        let e = single_error(&wf, Some(5), None);
        assert!(!e.to_string().contains("did you mean"), "{e}");
    }

    #[test]
    fn unknown_param() {
        let mut wf = valid();
        wf.set_param(NodeId(2), "stpes", Value::Int(3));
        let e = single_error(&wf, Some(2), Some("stpes"));
        assert!(matches!(e, ValidationError::UnknownParam { .. }));
        let msg = e.to_string();
        assert!(msg.contains("steps, guidance, mode"), "{msg}");
    }

    #[test]
    fn bad_param_out_of_range() {
        let mut wf = valid();
        wf.set_param(NodeId(2), "steps", Value::Int(0));
        let e = single_error(&wf, Some(2), Some("steps"));
        assert!(matches!(e, ValidationError::BadParam { .. }));
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn bad_param_wrong_type() {
        let mut wf = valid();
        wf.set_param(NodeId(2), "guidance", Value::Text("high".into()));
        let e = single_error(&wf, Some(2), Some("guidance"));
        assert!(e.to_string().contains("expected a number"), "{e}");
    }

    #[test]
    fn bad_param_float_for_int_and_bad_choice() {
        let mut wf = valid();
        wf.set_param(NodeId(1), "seed", Value::Float(4.0));
        let e = single_error(&wf, Some(1), Some("seed"));
        assert!(e.to_string().contains("expected an integer"), "{e}");

        let mut wf = valid();
        wf.set_param(NodeId(1), "model", Value::Text("huge".into()));
        let e = single_error(&wf, Some(1), Some("model"));
        assert!(e.to_string().contains("tiny, small"), "{e}");
    }

    #[test]
    fn unknown_output_port() {
        let mut wf = valid();
        wf.links[0].from.port = "modle".into();
        // Process #2's model input is still linked (by the bad link), so only one error.
        let e = single_error(&wf, Some(1), Some("modle"));
        match &e {
            ValidationError::UnknownPort { side, known, .. } => {
                assert_eq!(*side, PortSide::Output);
                assert_eq!(known, &["model", "image"]);
            }
            other => panic!("wrong error {other:?}"),
        }
        assert!(e.to_string().contains("no output port `modle`"), "{e}");
    }

    #[test]
    fn unknown_input_port() {
        let mut wf = valid();
        wf.links.push(link(1, "image", 3, "picture"));
        let e = single_error(&wf, Some(3), Some("picture"));
        assert!(matches!(
            e,
            ValidationError::UnknownPort {
                side: PortSide::Input,
                ..
            }
        ));
        assert!(e.to_string().contains("Sink inputs: image"), "{e}");
    }

    #[test]
    fn link_to_missing_node() {
        let mut wf = valid();
        wf.links.push(link(9, "image", 3, "image"));
        let errs = validate(&wf, &registry()).expect_err("errors");
        // The missing link also doubles up Sink #3's input.
        let e = errs
            .iter()
            .find(|e| matches!(e, ValidationError::LinkToMissingNode { .. }))
            .expect("missing-node error");
        assert_eq!(e.node(), Some(NodeId(3)));
        assert_eq!(e.field(), Some("image"));
        let msg = e.to_string();
        assert!(msg.contains("Sink #3") && msg.contains("node #9"), "{msg}");

        let mut wf = valid();
        wf.links.push(link(2, "stats", 8, "in"));
        let e = single_error(&wf, Some(2), Some("stats"));
        assert!(e.to_string().contains("node #8 does not exist"), "{e}");

        let mut wf = valid();
        wf.links.push(link(7, "a", 8, "b"));
        let e = single_error(&wf, None, None);
        assert!(
            e.to_string().contains("nodes #7 and #8 do not exist"),
            "{e}"
        );
    }

    #[test]
    fn type_mismatch() {
        let mut wf = valid();
        wf.links[1] = link(2, "stats", 3, "image");
        let e = single_error(&wf, Some(3), Some("image"));
        match &e {
            ValidationError::TypeMismatch { from_ty, to_ty, .. } => {
                assert_eq!(*from_ty, PortType::RunStats);
                assert_eq!(*to_ty, PortType::Image);
            }
            other => panic!("wrong error {other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("Process #2 output `stats` (RUN_STATS)")
                && msg.contains("Sink #3 input `image` (IMAGE)"),
            "{msg}"
        );
    }

    #[test]
    fn missing_input() {
        let mut wf = valid();
        wf.links.remove(0);
        let e = single_error(&wf, Some(2), Some("model"));
        assert!(matches!(
            e,
            ValidationError::MissingInput {
                ty: PortType::Model,
                ..
            }
        ));
        assert!(e.to_string().contains("required input `model`"), "{e}");
    }

    #[test]
    fn multiple_links_into_one_input() {
        let mut wf = valid();
        wf.links.push(link(1, "image", 3, "image"));
        let e = single_error(&wf, Some(3), Some("image"));
        assert!(matches!(e, ValidationError::MultipleLinks { count: 2, .. }));
    }

    #[test]
    fn titled_node_is_named_by_title() {
        let mut wf = valid();
        wf.nodes[1].title = Some("Main".into());
        wf.set_param(NodeId(2), "steps", Value::Int(1000));
        let e = single_error(&wf, Some(2), Some("steps"));
        assert!(e.to_string().starts_with("\"Main\" (Process #2)"), "{e}");
    }

    #[test]
    fn cycle_of_two() {
        let wf = Workflow {
            nodes: vec![node(1, "Process"), node(2, "Process"), node(3, "Source")],
            links: vec![
                link(1, "image", 2, "cache"),
                link(2, "image", 1, "cache"),
                link(3, "model", 1, "model"),
                link(3, "model", 2, "model"),
            ],
            ..Workflow::default()
        };
        let errs = validate(&wf, &registry()).expect_err("errors");
        // The cycle plus two type mismatches (IMAGE into CACHE_CONFIG).
        let cycle = errs.last().expect("cycle error");
        match cycle {
            ValidationError::Cycle { nodes, .. } => assert_eq!(nodes, &[NodeId(1), NodeId(2)]),
            other => panic!("wrong error {other:?}"),
        }
        assert_eq!(cycle.node(), Some(NodeId(1)));
        assert_eq!(cycle.field(), None);
        assert_eq!(
            cycle.to_string(),
            "links form a cycle through Process #1, Process #2"
        );
    }

    /// Test-only kind whose input and output share a type, so cycles type-check.
    struct Pass;
    impl NodeKind for Pass {
        fn spec(&self) -> KindSpec {
            KindSpec {
                name: "Pass",
                title: "Pass",
                category: "test",
                help: "",
                inputs: vec![PortSpec::required("image", PortType::Image, "")],
                outputs: vec![PortSpec::output("image", PortType::Image, "")],
                params: vec![],
            }
        }
        fn run(&self, _: &NodeContext, _: &Inputs, _: &Params) -> Result<Outputs, NodeError> {
            Ok(Outputs::new())
        }
    }

    #[test]
    fn a_ten_thousand_node_cycle_is_one_error_of_one_short_line() {
        // Validation was quadratic: this took `cachedit validate` 23 s and 2 GB.
        let mut reg = registry();
        reg.register(Pass);
        let n = 10_000u64;
        let wf = Workflow {
            nodes: (1..=n).map(|i| node(i, "Pass")).collect(),
            links: (1..=n)
                .map(|i| link(i, "image", i % n + 1, "image"))
                .collect(),
            ..Workflow::default()
        };
        let errs = validate(&wf, &reg).expect_err("cycle");
        assert_eq!(errs.len(), 1);
        match &errs[0] {
            ValidationError::Cycle { nodes, .. } => assert_eq!(nodes.len(), n as usize),
            other => panic!("wrong error {other:?}"),
        }
        let text = errs[0].to_string();
        assert!(
            text.len() < 400 && text.ends_with("and 9988 more"),
            "{text}"
        );
    }

    #[test]
    fn cycle_of_three_is_the_only_error() {
        let mut reg = registry();
        reg.register(Pass);
        let wf = Workflow {
            nodes: vec![
                node(1, "Pass"),
                node(2, "Pass"),
                node(3, "Pass"),
                node(4, "Sink"),
            ],
            links: vec![
                link(1, "image", 2, "image"),
                link(2, "image", 3, "image"),
                link(3, "image", 1, "image"),
                link(3, "image", 4, "image"),
            ],
            ..Workflow::default()
        };
        let errs = validate(&wf, &reg).expect_err("cycle");
        assert_eq!(errs.len(), 1, "{errs:#?}");
        // Sink #4 is downstream of the cycle, not on it.
        match &errs[0] {
            ValidationError::Cycle { nodes, labels } => {
                assert_eq!(nodes, &[NodeId(1), NodeId(2), NodeId(3)]);
                assert_eq!(labels, &["Pass #1", "Pass #2", "Pass #3"]);
            }
            other => panic!("wrong error {other:?}"),
        }
    }

    #[test]
    fn self_loop() {
        let mut reg = registry();
        reg.register(Pass);
        let wf = Workflow {
            nodes: vec![node(4, "Pass")],
            links: vec![link(4, "image", 4, "image")],
            ..Workflow::default()
        };
        let errs = validate(&wf, &reg).expect_err("self loop");
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].node(), Some(NodeId(4)));
        assert!(errs[0].to_string().contains("Pass #4"), "{}", errs[0]);
    }

    #[test]
    fn errors_are_collected_in_order() {
        let mut wf = valid();
        wf.nodes.push(node(4, "Nope"));
        wf.set_param(NodeId(2), "zzz", Value::Bool(true));
        wf.set_param(NodeId(2), "steps", Value::Int(-1));
        wf.set_param(NodeId(1), "seed", Value::Text("x".into()));
        wf.links.remove(1); // Sink #3 loses its input
        wf.links.push(link(1, "image", 2, "model")); // IMAGE into MODEL, and doubly linked
        let errs = validate(&wf, &registry()).expect_err("errors");
        let got: Vec<(&str, Option<NodeId>, Option<&str>)> = errs
            .iter()
            .map(|e| {
                let name = match e {
                    ValidationError::DuplicateId { .. } => "dup",
                    ValidationError::UnknownKind { .. } => "kind",
                    ValidationError::UnknownParam { .. } => "unknown-param",
                    ValidationError::BadParam { .. } => "bad-param",
                    ValidationError::UnknownPort { .. } => "port",
                    ValidationError::LinkToMissingNode { .. } => "missing-node",
                    ValidationError::TypeMismatch { .. } => "type",
                    ValidationError::MissingInput { .. } => "missing-input",
                    ValidationError::MultipleLinks { .. } => "multi",
                    ValidationError::Cycle { .. } => "cycle",
                };
                (name, e.node(), e.field())
            })
            .collect();
        let n = |i| Some(NodeId(i));
        assert_eq!(
            got,
            vec![
                ("bad-param", n(1), Some("seed")),
                ("bad-param", n(2), Some("steps")),
                ("unknown-param", n(2), Some("zzz")),
                ("multi", n(2), Some("model")),
                ("missing-input", n(3), Some("image")),
                ("kind", n(4), None),
                ("type", n(2), Some("model")),
            ]
        );
        // Same input, same answer.
        assert_eq!(validate(&wf, &registry()).expect_err("errors"), errs);
    }

    #[test]
    fn resolve_params_fills_defaults_and_converts_ints() {
        let spec = Process.spec();
        let mut n = node(2, "Process");
        n.params.insert("guidance".into(), Value::Int(7));
        let p = resolve_params(&n, &spec).expect("valid");
        assert_eq!(p.0.get("guidance"), Some(&Value::Float(7.0)));
        assert_eq!(p.0.get("steps"), Some(&Value::Int(20)));
        assert_eq!(p.0.get("mode"), Some(&Value::Text("fast".into())));
        assert_eq!(p.0.len(), 3);
        assert_eq!(p.int("steps").ok(), Some(20));
    }

    #[test]
    fn resolve_params_collects_all_errors() {
        let spec = Process.spec();
        let mut n = node(2, "Process");
        n.params.insert("steps".into(), Value::Int(500));
        n.params.insert("mode".into(), Value::Text("slow".into()));
        n.params.insert("extra".into(), Value::Int(1));
        let errs = resolve_params(&n, &spec).expect_err("bad");
        let fields: Vec<_> = errs.iter().filter_map(|e| e.field()).collect();
        assert_eq!(fields, ["extra", "mode", "steps"]);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("sampler", "smapler"), 2);
    }

    #[test]
    fn invalid_converts_into_graph_error() {
        let mut wf = valid();
        wf.links.clear();
        let errs = validate(&wf, &registry()).expect_err("errors");
        let g: crate::graph::GraphError = errs.into();
        let msg = g.to_string();
        assert!(
            msg.contains("Process #2") && msg.contains("Sink #3"),
            "{msg}"
        );
    }
}
