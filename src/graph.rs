//! Exporting a built pipeline's instance graph as Graphviz DOT or Mermaid. Ordering and
//! cycle detection belong to building ([`crate::spec`]), so this module only reads.
use crate::spec::Pipeline;

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
