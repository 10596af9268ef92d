//! Run order of a workflow's nodes (Kahn's algorithm) and cycle detection.

use super::document::{NodeId, Workflow};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// Edges between existing nodes, one entry per link (links to missing nodes are skipped).
fn edges(wf: &Workflow) -> (BTreeSet<NodeId>, Vec<(NodeId, NodeId)>) {
    let ids: BTreeSet<NodeId> = wf.nodes.iter().map(|n| n.id).collect();
    let edges = wf
        .links
        .iter()
        .filter(|l| ids.contains(&l.from.node) && ids.contains(&l.to.node))
        .map(|l| (l.from.node, l.to.node))
        .collect();
    (ids, edges)
}

/// Orders the nodes so that every node comes after the nodes feeding it.
///
/// Deterministic: among the nodes ready to go, the smallest id comes first. Links touching a
/// missing node are ignored (validation reports them). `Err` holds, sorted, the ids that could
/// not be ordered: the nodes on a cycle and those downstream of one.
pub fn topological_order(wf: &Workflow) -> Result<Vec<NodeId>, Vec<NodeId>> {
    let (ids, edges) = edges(wf);
    let mut in_degree: BTreeMap<NodeId, usize> = ids.iter().map(|&id| (id, 0)).collect();
    let mut successors: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
    for &(from, to) in &edges {
        *in_degree.entry(to).or_insert(0) += 1;
        successors.entry(from).or_default().push(to);
    }

    let mut ready: BinaryHeap<Reverse<NodeId>> = in_degree
        .iter()
        .filter(|(_, &d)| d == 0)
        .map(|(&id, _)| Reverse(id))
        .collect();
    let mut order = Vec::with_capacity(ids.len());
    while let Some(Reverse(id)) = ready.pop() {
        order.push(id);
        for next in successors.get(&id).into_iter().flatten() {
            if let Some(d) = in_degree.get_mut(next) {
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(*next));
                }
            }
        }
    }

    if order.len() == ids.len() {
        Ok(order)
    } else {
        let done: BTreeSet<NodeId> = order.into_iter().collect();
        Err(ids.difference(&done).copied().collect())
    }
}

/// The cycles of the graph: each group of nodes that reach one another through links
/// (a strongly connected component of two or more nodes, or one node linked to itself).
/// Ids are sorted inside each group and the groups by their smallest id. Empty for a DAG.
pub fn cycles(wf: &Workflow) -> Vec<Vec<NodeId>> {
    let Err(stuck) = topological_order(wf) else {
        return Vec::new();
    };
    let stuck: BTreeSet<NodeId> = stuck.into_iter().collect();
    let (_, edges) = edges(wf);
    let mut succ: BTreeMap<NodeId, BTreeSet<NodeId>> = BTreeMap::new();
    for (from, to) in edges {
        if stuck.contains(&from) && stuck.contains(&to) {
            succ.entry(from).or_default().insert(to);
        }
    }

    // Nodes reachable from `start` by one or more links.
    let reach = |start: NodeId| -> BTreeSet<NodeId> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<NodeId> = succ.get(&start).into_iter().flatten().copied().collect();
        while let Some(id) = todo.pop() {
            if seen.insert(id) {
                todo.extend(succ.get(&id).into_iter().flatten().copied());
            }
        }
        seen
    };
    let reachable: BTreeMap<NodeId, BTreeSet<NodeId>> =
        stuck.iter().map(|&id| (id, reach(id))).collect();

    let mut groups = Vec::new();
    let mut placed = BTreeSet::new();
    for (&id, from_id) in &reachable {
        if placed.contains(&id) || !from_id.contains(&id) {
            continue;
        }
        let group: Vec<NodeId> = from_id
            .iter()
            .copied()
            .filter(|other| reachable.get(other).is_some_and(|r| r.contains(&id)))
            .collect();
        placed.extend(group.iter().copied());
        groups.push(group);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::document::{Link, Node, PortRef};

    fn wf(ids: &[u64], links: &[(u64, u64)]) -> Workflow {
        Workflow {
            nodes: ids
                .iter()
                .map(|&id| Node {
                    id: NodeId(id),
                    kind: "K".into(),
                    ..Node::default()
                })
                .collect(),
            links: links
                .iter()
                .map(|&(a, b)| Link {
                    from: PortRef::new(NodeId(a), "out"),
                    to: PortRef::new(NodeId(b), "in"),
                })
                .collect(),
            ..Workflow::default()
        }
    }

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn empty_workflow_has_empty_order() {
        assert_eq!(topological_order(&Workflow::default()), Ok(vec![]));
    }

    #[test]
    fn chain_is_ordered() {
        let w = wf(&[3, 1, 2], &[(1, 2), (2, 3)]);
        assert_eq!(topological_order(&w), Ok(ids(&[1, 2, 3])));
    }

    #[test]
    fn smallest_ready_id_first() {
        // 5 and 2 feed 9; 7 is alone. Ready at start: 2, 5, 7.
        let w = wf(&[9, 7, 5, 2], &[(5, 9), (2, 9)]);
        assert_eq!(topological_order(&w), Ok(ids(&[2, 5, 7, 9])));
        // A node freed later with a smaller id jumps ahead of larger ready ones.
        let w = wf(&[10, 1, 20, 30], &[(10, 1)]);
        assert_eq!(topological_order(&w), Ok(ids(&[10, 1, 20, 30])));
    }

    #[test]
    fn diamond_and_parallel_links() {
        let w = wf(
            &[1, 2, 3, 4],
            &[(1, 3), (1, 2), (2, 4), (3, 4), (1, 4), (1, 4)],
        );
        assert_eq!(topological_order(&w), Ok(ids(&[1, 2, 3, 4])));
    }

    #[test]
    fn links_to_missing_nodes_are_ignored() {
        let w = wf(&[1, 2], &[(1, 2), (7, 2), (2, 8)]);
        assert_eq!(topological_order(&w), Ok(ids(&[1, 2])));
    }

    #[test]
    fn cycle_of_two() {
        let w = wf(&[1, 2, 3], &[(1, 2), (2, 3), (3, 2)]);
        assert_eq!(topological_order(&w), Err(ids(&[2, 3])));
        assert_eq!(cycles(&w), vec![ids(&[2, 3])]);
    }

    #[test]
    fn cycle_of_three_with_downstream_node() {
        let w = wf(&[1, 2, 3, 4, 5], &[(2, 3), (3, 4), (4, 2), (4, 5), (1, 2)]);
        // 5 cannot be ordered (it waits on the cycle) but is not on it.
        assert_eq!(topological_order(&w), Err(ids(&[2, 3, 4, 5])));
        assert_eq!(cycles(&w), vec![ids(&[2, 3, 4])]);
    }

    #[test]
    fn self_loop() {
        let w = wf(&[1, 2], &[(1, 2), (2, 2)]);
        assert_eq!(topological_order(&w), Err(ids(&[2])));
        assert_eq!(cycles(&w), vec![ids(&[2])]);
    }

    #[test]
    fn two_separate_cycles() {
        let w = wf(
            &[1, 2, 3, 4, 5],
            &[(4, 5), (5, 4), (1, 2), (2, 1), (2, 3), (3, 4)],
        );
        assert_eq!(topological_order(&w), Err(ids(&[1, 2, 3, 4, 5])));
        assert_eq!(cycles(&w), vec![ids(&[1, 2]), ids(&[4, 5])]);
    }

    #[test]
    fn dag_has_no_cycles() {
        let w = wf(&[1, 2, 3], &[(1, 2), (1, 3), (2, 3)]);
        assert!(cycles(&w).is_empty());
    }
}
