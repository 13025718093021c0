//! Phase 5 of building: a topological order of the instances (every input before its
//! consumer), or the cycle of stages that prevents one. Lives in `spec` (not `graph`,
//! which only exports) so that building a pipeline needs nothing outside this module.
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use super::{Instance, StageDef};

/// Instance ids in an order where every input comes before its consumer, always taking the
/// ready instance that comes first in the file (a stable, readable order: stages as
/// written, matrix instances in expansion order). On a cycle, the stage indices along it
/// (`a -> b -> ... -> a`, first stage not repeated).
pub fn topo_order(stages: &[StageDef], instances: &[Instance]) -> Result<Vec<usize>, Vec<usize>> {
    let edges = stage_edges(instances);
    // Cycles are a property of stages; find them there so the message names stages.
    let mut sg: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..stages.len()).map(|i| sg.add_node(i)).collect();
    for &(from, to) in &edges {
        sg.add_edge(nodes[from], nodes[to], ());
    }
    if toposort(&sg, None).is_err() {
        return Err(find_cycle(&sg));
    }
    // The usual case: stages are written producers first, so file order is already the
    // smallest topological order (and checking that is linear).
    let in_file_order = instances
        .iter()
        .all(|inst| inst.inputs.values().flatten().all(|&u| u < inst.id));
    if in_file_order {
        return Ok((0..instances.len()).collect());
    }
    Ok(kahn(instances))
}

/// Distinct (producer stage, consumer stage) pairs.
fn stage_edges(instances: &[Instance]) -> BTreeSet<(usize, usize)> {
    let mut edges = BTreeSet::new();
    let mut last = None;
    for inst in instances {
        for &u in inst.inputs.values().flatten() {
            let e = (instances[u].stage, inst.stage);
            // Consecutive references mostly repeat the pair: skip the set lookup then.
            if last != Some(e) {
                edges.insert(e);
                last = Some(e);
            }
        }
    }
    edges
}

/// Kahn's algorithm on the instance graph (as compressed adjacency lists), smallest
/// ready id first.
fn kahn(instances: &[Instance]) -> Vec<usize> {
    let n = instances.len();
    let mut indegree = vec![0usize; n];
    let mut start = vec![0usize; n + 1];
    let ups_of = |inst: &Instance| {
        let mut ups: Vec<usize> = inst.inputs.values().flatten().copied().collect();
        ups.sort_unstable();
        ups.dedup();
        ups
    };
    for inst in instances {
        let ups = ups_of(inst);
        indegree[inst.id] = ups.len();
        for u in ups {
            start[u + 1] += 1;
        }
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut consumers = vec![0usize; start[n]];
    for inst in instances {
        for u in ups_of(inst) {
            consumers[fill[u]] = inst.id;
            fill[u] += 1;
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &j in &consumers[start[i]..start[i + 1]] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    order
}

/// A cycle through stage nodes, as stage indices in dependency direction.
fn find_cycle(g: &DiGraph<usize, ()>) -> Vec<usize> {
    for scc in tarjan_scc(g) {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        // Walk edges inside the component from its smallest node until we return.
        let Some(&start) = scc.iter().min_by_key(|n| g[**n]) else {
            continue;
        };
        let mut path = vec![start];
        let mut cur = start;
        while let Some(next) = g
            .neighbors(cur)
            .filter(|n| scc.contains(n))
            .min_by_key(|n| g[*n])
        {
            if let Some(pos) = path.iter().position(|&p| p == next) {
                path.drain(..pos);
                break;
            }
            path.push(next);
            cur = next;
        }
        // Edges point producer -> consumer; report consumer -> producer ("a needs b").
        let mut stages: Vec<usize> = path.iter().map(|n| g[*n]).collect();
        stages.reverse();
        let first = stages
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| **s)
            .map(|(i, _)| i)
            .unwrap_or(0);
        stages.rotate_left(first);
        return stages;
    }
    Vec::new()
}
