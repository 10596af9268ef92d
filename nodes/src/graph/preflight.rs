//! The checks before a run that look outside the document: each node kind's
//! [`NodeKind::preflight`](crate::registry::NodeKind::preflight) in topological order, with
//! what is known of each model handed down its links (no weights are read).

use super::topo::topological_order;
use super::validate::{label as describe, resolve_params, ValidationError};
use crate::document::{NodeId, Workflow};
use crate::registry::{ModelFacts, PortType, PreflightContext, Registry};
use std::collections::HashMap;
use std::path::Path;

/// Runs every node's preflight. Call it on a workflow that [`validate`](super::validate::validate)
/// accepted; nodes it cannot resolve are skipped. With `output_dir`, nodes that write files
/// check that they can (creating the folder).
pub fn preflight(
    wf: &Workflow,
    registry: &Registry,
    output_dir: Option<&Path>,
) -> Result<(), Vec<ValidationError>> {
    let Ok(order) = topological_order(wf) else {
        return Ok(());
    };
    let nodes: HashMap<NodeId, &crate::document::Node> =
        wf.nodes.iter().map(|n| (n.id, n)).collect();
    let links_into: HashMap<(NodeId, &str), NodeId> = wf
        .links
        .iter()
        .map(|l| ((l.to.node, l.to.port.as_str()), l.from.node))
        .collect();
    let mut models: HashMap<NodeId, ModelFacts> = HashMap::new();
    let mut errors = Vec::new();
    for id in order {
        let Some(node) = nodes.get(&id).copied() else {
            continue;
        };
        let (Some(spec), Some(kind)) = (registry.spec(&node.kind), registry.kind(&node.kind))
        else {
            continue;
        };
        let Ok(params) = resolve_params(node, spec) else {
            continue;
        };
        let model_input = spec
            .inputs
            .iter()
            .filter(|p| p.ty == PortType::Model)
            .find_map(|p| links_into.get(&(id, p.name)))
            .and_then(|from| models.get(from));
        let found = kind.preflight(
            &params,
            &PreflightContext {
                model: model_input,
                output_dir,
            },
        );
        for (param, message) in found.problems {
            errors.push(ValidationError::BadParam {
                node: id,
                label: describe(node),
                param: param.to_string(),
                reason: message,
            });
        }
        if let Some(facts) = found.model {
            models.insert(id, facts);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
