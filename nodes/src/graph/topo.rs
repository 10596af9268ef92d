//! Run order of a workflow's nodes (Kahn's algorithm) and cycle detection.

use crate::document::{NodeId, Workflow};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

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
///
/// Linear in nodes + links (Tarjan's algorithm, iterative so that a long chain cannot
/// overflow the stack).
pub fn cycles(wf: &Workflow) -> Vec<Vec<NodeId>> {
    let Err(stuck) = topological_order(wf) else {
        return Vec::new();
    };
    // Only the nodes that could not be ordered can be on a cycle.
    let index: HashMap<NodeId, usize> = stuck.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let n = stuck.len();
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut self_loop = vec![false; n];
    let (_, edges) = edges(wf);
    for (from, to) in edges {
        if let (Some(&a), Some(&b)) = (index.get(&from), index.get(&to)) {
            succ[a].push(b);
            self_loop[a] |= a == b;
        }
    }

    const UNSEEN: usize = usize::MAX;
    let mut order = vec![UNSEEN; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut counter = 0usize;
    let mut groups: Vec<Vec<NodeId>> = Vec::new();
    for root in 0..n {
        if order[root] != UNSEEN {
            continue;
        }
        // (node, next successor to look at)
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        order[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&(v, next)) = work.last() {
            if let Some(&w) = succ[v].get(next) {
                if let Some(top) = work.last_mut() {
                    top.1 += 1;
                }
                if order[w] == UNSEEN {
                    order[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(order[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == order[v] {
                let mut group = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    group.push(stuck[w]);
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 || self_loop[v] {
                    group.sort();
                    groups.push(group);
                }
            }
        }
    }
    groups.sort();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{Link, Node, PortRef};

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
    fn a_long_chain_and_a_large_cycle_are_handled_without_a_deep_stack() {
        let n = 100_000u64;
        let ids: Vec<u64> = (1..=n).collect();
        let chain: Vec<(u64, u64)> = (1..n).map(|i| (i, i + 1)).collect();
        let w = wf(&ids, &chain);
        assert_eq!(topological_order(&w).map(|o| o.len()), Ok(n as usize));
        assert!(cycles(&w).is_empty());
        let mut ring = chain.clone();
        ring.push((n, 1));
        let w = wf(&ids, &ring);
        let found = cycles(&w);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len(), n as usize);
    }

    #[test]
    fn dag_has_no_cycles() {
        let w = wf(&[1, 2, 3], &[(1, 2), (1, 3), (2, 3)]);
        assert!(cycles(&w).is_empty());
    }
}
