//! The pipeline DAG (petgraph): topological order, cycle paths, DOT and Mermaid export.
use petgraph::algo::{tarjan_scc, toposort};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::spec::{Instance, Pipeline, StageDef};

/// Instance ids in an order where every input comes before its consumer; on a cycle, the
/// stage indices along it (`a -> b -> ... -> a`, first stage not repeated).
pub fn topo_order(stages: &[StageDef], instances: &[Instance]) -> Result<Vec<usize>, Vec<usize>> {
    // Cycles are a property of stages; find them there so the message names stages.
    let mut sg: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..stages.len()).map(|i| sg.add_node(i)).collect();
    for inst in instances {
        for ups in inst.inputs.values() {
            for &u in ups {
                let from = nodes[instances[u].stage];
                let to = nodes[inst.stage];
                if !sg.contains_edge(from, to) {
                    sg.add_edge(from, to, ());
                }
            }
        }
    }
    if toposort(&sg, None).is_err() {
        return Err(find_cycle(&sg));
    }
    let mut g: DiGraph<usize, ()> = DiGraph::new();
    let inodes: Vec<NodeIndex> = (0..instances.len()).map(|i| g.add_node(i)).collect();
    for inst in instances {
        for ups in inst.inputs.values() {
            for &u in ups {
                g.update_edge(inodes[u], inodes[inst.id], ());
            }
        }
    }
    // Kahn's algorithm, always taking the ready instance that comes first in the file:
    // a stable, readable order (stages as written, matrix instances in expansion order).
    let mut indegree: Vec<usize> = inodes
        .iter()
        .map(|&n| g.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = (0..instances.len())
        .filter(|&i| indegree[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(instances.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for next in g.neighbors_directed(inodes[i], Direction::Outgoing) {
            let j = g[next];
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    Ok(order)
}

/// A cycle through stage nodes, as stage indices in dependency direction.
fn find_cycle(g: &DiGraph<usize, ()>) -> Vec<usize> {
    for scc in tarjan_scc(g) {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        // Walk edges inside the component from its smallest node until we return.
        let start = *scc.iter().min_by_key(|n| g[**n]).unwrap();
        let mut path = vec![start];
        let mut cur = start;
        loop {
            let next = g
                .neighbors(cur)
                .filter(|n| scc.contains(n))
                .min_by_key(|n| g[*n])
                .unwrap();
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

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT of the instance graph, clustered by stage.
pub fn to_dot(p: &Pipeline) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n",
        dot_escape(&p.name)
    );
    for (si, s) in p.stages.iter().enumerate() {
        out.push_str(&format!(
            "  subgraph \"cluster_{si}\" {{\n    label=\"{} ({})\";\n",
            dot_escape(&s.name),
            s.kind.name()
        ));
        for &i in &s.instances {
            out.push_str(&format!(
                "    n{i} [label=\"{}\"];\n",
                dot_escape(&p.instances[i].name)
            ));
        }
        out.push_str("  }\n");
    }
    for inst in &p.instances {
        for (name, ups) in &inst.inputs {
            for u in ups {
                out.push_str(&format!(
                    "  n{u} -> n{} [label=\"{}\"];\n",
                    inst.id,
                    dot_escape(name)
                ));
            }
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid flowchart of the instance graph.
pub fn to_mermaid(p: &Pipeline) -> String {
    let mut out = String::from("flowchart LR\n");
    for inst in &p.instances {
        let label = inst.name.replace('"', "#quot;");
        out.push_str(&format!("  n{}[\"{}\"]\n", inst.id, label));
    }
    for inst in &p.instances {
        for (name, ups) in &inst.inputs {
            for u in ups {
                out.push_str(&format!("  n{u} -->|{name}| n{}\n", inst.id));
            }
        }
    }
    out
}
