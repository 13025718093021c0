use super::*;
use serde_json::json;
use std::sync::Arc;

fn parse_text(text: &str) -> Result<Pipeline, UserError> {
    parse(Path::new("p.yaml"), text, &[], Path::new("."))
}

const SWEEP: &str = r#"
name: t
params:
  rates: [0.2, 0.4]
  seed: 7
stages:
  cmd:
    kind: command
    params: {argv: [echo, hi]}
  noisy:
    kind: command
    matrix: {rate: "${rates}"}
    inputs: {data: cmd}
    params: {argv: [echo, "${rate}", "${seed}"]}
  one:
    kind: command
    inputs: {x: "noisy[rate=0.4]"}
    params: {argv: [true]}
  all:
    kind: command
    inputs: {xs: noisy}
    params: {argv: [true]}
"#;

#[test]
fn matrix_expands_with_readable_names_and_slices() {
    let p = parse_text(SWEEP).unwrap();
    let names: Vec<&str> = p.instances.iter().map(|i| i.name.as_str()).collect();
    assert!(
        names.contains(&"noisy[rate=0.2]") && names.contains(&"noisy[rate=0.4]"),
        "{names:?}"
    );
    let one = p.instances.iter().find(|i| i.name == "one").unwrap();
    assert_eq!(p.instances[one.inputs["x"][0]].name, "noisy[rate=0.4]");
    let all = p.instances.iter().find(|i| i.name == "all").unwrap();
    assert_eq!(all.inputs["xs"].len(), 2);
    let n = p
        .instances
        .iter()
        .find(|i| i.name == "noisy[rate=0.2]")
        .unwrap();
    assert_eq!(p.params_of(n), json!({"argv": ["echo", 0.2, 7]}));
    // Topological order: every input precedes its consumer.
    for inst in &p.instances {
        for ups in inst.inputs.values() {
            assert!(ups.iter().all(|&u| u < inst.id));
        }
    }
}

#[test]
fn overrides_replace_params_and_are_type_checked() {
    let p = parse(
        Path::new("p.yaml"),
        SWEEP,
        &[parse_override("rates=[0.4, 0.6]").unwrap()],
        Path::new("."),
    )
    .unwrap();
    assert!(p.instances.iter().any(|i| i.name == "noisy[rate=0.6]"));
    let e = parse(
        Path::new("p.yaml"),
        SWEEP,
        &[parse_override("rate=[0.6]").unwrap()],
        Path::new("."),
    )
    .unwrap_err();
    assert_eq!(e.help.as_deref(), Some("did you mean `rates`?"));
    let e = parse(
        Path::new("p.yaml"),
        SWEEP,
        &[parse_override("seed=abc").unwrap()],
        Path::new("."),
    )
    .unwrap_err();
    assert!(e.message.contains("is a number"), "{}", e.message);
}

fn err_of(text: &str) -> UserError {
    parse_text(text).unwrap_err()
}

#[test]
fn unknown_stage_key_has_position_and_suggestion() {
    let e = err_of("name: t\nstages:\n  a:\n    kind: command\n    parms: {}\n");
    let loc = e.location.clone().unwrap();
    assert_eq!((loc.line, loc.column), (5, 5), "{e}");
    assert_eq!(e.help.as_deref(), Some("did you mean `params`?"));
}

#[test]
fn missing_stage_reference_is_located() {
    let e = err_of("name: t\nstages:\n  a:\n    kind: command\n    params: {argv: [true]}\n  b:\n    kind: command\n    inputs: {x: aa}\n    params: {argv: [true]}\n");
    assert!(e.message.contains("does not exist"), "{e}");
    assert_eq!(e.location.unwrap().line, 8);
    assert_eq!(e.help.as_deref(), Some("did you mean `a`?"));
}

#[test]
fn cycles_print_their_path() {
    let e = err_of("name: t\nstages:\n  a:\n    kind: command\n    inputs: {x: b}\n    params: {argv: [true]}\n  b:\n    kind: command\n    inputs: {x: a}\n    params: {argv: [true]}\n");
    assert!(e.message.contains("cycle: a -> b -> a"), "{e}");
    assert_eq!(e.location.unwrap().line, 5);
    let e = err_of("name: t\nstages:\n  a:\n    kind: command\n    inputs: {x: a}\n    params: {argv: [true]}\n");
    assert!(e.message.contains("cycle: a -> a"), "{e}");
}

#[test]
fn duplicate_stage_names_and_wrong_types() {
    let e = err_of("name: t\nstages:\n  a:\n    kind: command\n  a:\n    kind: command\n");
    assert!(e.message.contains("duplicate key `a`"), "{e}");
    assert_eq!(e.location.unwrap().line, 5);
    let e = err_of("name: t\nstages:\n  a:\n    kind: command\n    threads: lots\n    params: {argv: [true]}\n");
    assert!(e.message.contains("threads"), "{e}");
    assert_eq!(e.location.unwrap().line, 5);
    let e = err_of("name: t\nstages:\n  a:\n    kind: comand\n");
    assert_eq!(e.help.as_deref(), Some("did you mean `command`?"));
}

#[test]
fn unknown_variables_and_bad_slices() {
    let e = err_of("name: t\nparams: {rates: [1]}\nstages:\n  a:\n    kind: command\n    params: {argv: [\"${rate}\"]}\n");
    assert_eq!(e.help.as_deref(), Some("did you mean `${rates}`?"));
    assert_eq!(e.location.unwrap().line, 6);
    let e = err_of(&SWEEP.replace("noisy[rate=0.4]", "noisy[rat=0.4]"));
    assert!(e.message.contains("no matrix axis `rat`"), "{e}");
    let e = err_of(&SWEEP.replace("noisy[rate=0.4]", "noisy[rate=0.9]"));
    assert!(e.message.contains("selects no instance"), "{e}");
}

#[test]
fn yaml_key_order_and_comments_do_not_change_instances() {
    let a = parse_text(SWEEP).unwrap();
    let b = parse_text(&SWEEP.replace(
        "    params: {argv: [echo, \"${rate}\", \"${seed}\"]}\n",
        "    # a comment\n    params: {argv: [echo, \"${rate}\", \"${seed}\"]}\n",
    ))
    .unwrap();
    let pa: Vec<_> = a
        .instances
        .iter()
        .map(|i| (i.name.clone(), a.params_of(i)))
        .collect();
    let pb: Vec<_> = b
        .instances
        .iter()
        .map(|i| (i.name.clone(), b.params_of(i)))
        .collect();
    assert_eq!(pa, pb);
}

#[test]
fn mapping_axes_bind_several_variables_together() {
    let text = r#"
name: t
params:
  cfg:
    - {rate: 0.2, d: 7.8}
    - {rate: 0.4, d: 8.5}
stages:
  noisy:
    kind: command
    matrix: {rate: [0.2, 0.4]}
    params: {argv: [echo, "${rate}"]}
  fit:
    kind: command
    matrix: {c: "${cfg}", seed: [1, 2]}
    inputs: {data: "noisy[rate=${rate}]"}
    params: {argv: [echo, "${d}", "${seed}"]}
"#;
    let p = parse_text(text).unwrap();
    let fit: Vec<&Instance> = p
        .instances
        .iter()
        .filter(|i| p.stages[i.stage].name == "fit")
        .collect();
    assert_eq!(fit.len(), 4);
    // The names a mapping binds appear in alphabetical order.
    assert_eq!(fit[0].name, "fit[d=7.8, rate=0.2, seed=1]");
    assert_eq!(p.params_of(fit[0]), json!({"argv": ["echo", 7.8, 1]}));
    assert_eq!(
        p.instances[fit[3].inputs["data"][0]].name,
        "noisy[rate=0.4]"
    );
    let e = err_of(&text.replace("{rate: 0.4, d: 8.5}", "{rate: 0.4, h: 8.5}"));
    assert!(e.message.contains("must bind the same names"), "{e}");
}

#[test]
fn count_axes_number_the_runs() {
    let text = r#"
name: t
params:
  runs: 3
stages:
  fit:
    kind: command
    matrix: {run: {count: "${runs}"}}
    params: {argv: [echo, "${run}"]}
"#;
    let p = parse_text(text).unwrap();
    let names: Vec<&str> = p.instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, vec!["fit[run=1]", "fit[run=2]", "fit[run=3]"]);
    let e = err_of(&text.replace("runs: 3", "runs: 0"));
    assert!(e.message.contains("count must be a whole number"), "{e}");
}

#[test]
fn resources_defaults_overrides_and_interpolation() {
    let p = parse_text(
        r#"
name: t
params: {big: 8G}
resources: {memory: 1G, time: 30m}
stages:
  plain:
    kind: command
    params: {argv: [true]}
  sized:
    kind: command
    matrix: {g: [0, 2]}
    resources: {memory: "${big}", gpus: "${g}"}
    params: {argv: [true]}
"#,
    )
    .unwrap();
    let r = |name: &str| {
        p.instances
            .iter()
            .find(|i| i.name == name)
            .unwrap()
            .resources
            .clone()
    };
    assert_eq!(
        r("plain"),
        resources::Resources {
            memory_mib: Some(1024),
            gpus: None,
            time_s: Some(1800)
        }
    );
    assert_eq!(
        r("sized[g=2]"),
        resources::Resources {
            memory_mib: Some(8192),
            gpus: Some(2),
            time_s: Some(1800)
        },
        "stage keys override, the others are the pipeline's"
    );
    assert_eq!(r("sized[g=0]").gpus, Some(0));
}

#[test]
fn broken_structured_overrides_are_refused_not_strings() {
    for bad in ["a=[1,", "a={x: 1", "a=\"open"] {
        let e = parse_override(bad).unwrap_err();
        assert!(e.message.contains("not a valid YAML value"), "{bad}: {e}");
        assert!(e.help.is_some(), "{bad}");
    }
    // Plain words stay strings; complete lists parse; quoting passes a bracket as a string.
    assert_eq!(parse_override("a=abc").unwrap().1, json!("abc"));
    assert_eq!(parse_override("a=[1, 2]").unwrap().1, json!([1, 2]));
    assert_eq!(parse_override("a=\"[1,\"").unwrap().1, json!("[1,"));
}

#[test]
fn params_resolve_from_params_in_dependency_order() {
    let text = "name: t\nparams:\n  tag: \"${base}-${lr}\"\n  base: run\n  lr: 0.1\n  lit: \"$${base}\"\nstages:\n  s:\n    kind: command\n    params: {argv: [echo, \"${tag}\", \"${lit}\"]}\n";
    let p = parse_text(text).unwrap();
    assert_eq!(p.params["tag"], json!("run-0.1"));
    assert_eq!(
        p.params_of(&p.instances[0]),
        json!({"argv": ["echo", "run-0.1", "${base}"]})
    );
    // An override of what others name changes them too.
    let p = parse(
        Path::new("p.yaml"),
        text,
        &[parse_override("base=x").unwrap()],
        Path::new("."),
    )
    .unwrap();
    assert_eq!(p.params["tag"], json!("x-0.1"));
    let e = err_of("name: t\nparams:\n  a: \"${b}\"\n  b: [\"${c}\"]\n  c: \"${a}\"\nstages: {}\n");
    assert!(e.message.contains("cycle: a -> b -> c -> a"), "{e}");
    assert_eq!(
        e.location.unwrap().line,
        5,
        "the value that closes the cycle"
    );
    let e = err_of("name: t\nparams:\n  a: \"${matrix.x}\"\nstages: {}\n");
    assert!(e.message.contains("unknown variable `${matrix.x}`"), "{e}");
    assert_eq!(e.location.unwrap().line, 3);
}

#[test]
fn the_instance_limit_is_checked_before_expanding() {
    let text = "name: t\nstages:\n  a:\n    kind: command\n    matrix: {x: {count: 100000}, y: {count: 100000}}\n    params: {argv: [echo]}\n";
    let e = err_of(text);
    assert!(
        e.message
            .contains("stage `a` expands to 10000000000 instances: x (100000) × y (100000)"),
        "{e}"
    );
    assert_eq!(e.location.unwrap().line, 5);
    let small = Options {
        max_instances: 3,
        ..Options::default()
    };
    let e = parse_with(Path::new("p.yaml"), SWEEP, &[], Path::new("."), &small).unwrap_err();
    // cmd (1) + noisy (2) fit; `one` makes 4.
    assert!(
        e.message
            .contains("the stages up to `one` expand to 4 instances"),
        "{e}"
    );
    let ok = Options {
        max_instances: 5,
        ..Options::default()
    };
    assert!(parse_with(Path::new("p.yaml"), SWEEP, &[], Path::new("."), &ok).is_ok());
}

#[test]
fn consumers_written_first_are_ordered_after_their_inputs() {
    let text = "name: t\nstages:\n  all:\n    kind: command\n    inputs: {xs: m}\n    params: {argv: [true]}\n  m:\n    kind: command\n    matrix: {k: [1, 2]}\n    inputs: {x: \"base\"}\n    params: {argv: [true]}\n  base:\n    kind: command\n    params: {argv: [true]}\n";
    let p = parse_text(text).unwrap();
    let names: Vec<&str> = p.instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["base", "m[k=1]", "m[k=2]", "all"]);
    assert_eq!(p.stages[0].instances, vec![3]);
    assert_eq!(p.instances[3].inputs["xs"], vec![1, 2]);
    // Selecting a slice keeps it and its ancestors, renumbered.
    let q = p.select(&["m[k=2]".to_string()]).unwrap();
    let names: Vec<&str> = q.instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["base", "m[k=2]"]);
    assert_eq!(q.instances[1].inputs["x"], vec![0]);
    assert_eq!(q.stages.len(), 2);
}

const STUDY: &str = r#"
name: t
params:
  rates: [0.2, 0.4]
stages:
  data:
    kind: command
    params: {argv: [echo, hi]}
  fit:
    kind: command
    trial_of: tune
    inputs: {d: data}
    params: {argv: [echo, "${x}", "${rate}"]}
  score:
    kind: command
    trial_of: tune
    inputs: {f: "fit[rate=${rate}, trial=${trial}]"}
    params: {argv: [echo, "${trial}"]}
  tune:
    kind: search
    matrix: {rate: "${rates}"}
    params:
      objective: {stage: score, file: s.json, key: v}
      direction: minimize
      trials: 2
      space: {x: {low: 0, high: 1}}
  after:
    kind: command
    best: "tune[rate=${rate}]"
    matrix: {rate: "${rates}"}
    params: {argv: [echo, "${x}"]}
"#;

fn proposals(xs: &[(f64, usize, f64)]) -> trials::Proposals {
    let mut p = trials::Proposals::new();
    for &(rate, trial, x) in xs {
        p.entry("tune".to_string())
            .or_default()
            .push(trials::TrialRow {
                study: vec![(Arc::from("rate"), json!(rate))],
                trial,
                values: vec![(Arc::from("x"), json!(x))],
                prune: Value::Null,
            });
    }
    p
}

#[test]
fn trial_stages_expand_to_the_proposed_trials_only() {
    let plain = parse_text(STUDY).unwrap();
    let fits = |p: &Pipeline| {
        p.instances
            .iter()
            .filter(|i| p.stages[i.stage].name == "fit")
            .map(|i| i.name.clone())
            .collect::<Vec<_>>()
    };
    assert!(fits(&plain).is_empty(), "no proposal: no trial");
    let after = plain
        .instances
        .iter()
        .find(|i| i.name == "after[rate=0.2]")
        .unwrap();
    assert!(after.best_pending, "the study has not run");
    assert_eq!(
        plain.params_of(after)["argv"][1],
        json!(0.0),
        "the stand-in is low"
    );

    let opts = Options {
        proposals: proposals(&[(0.2, 0, 0.25), (0.4, 0, 0.5), (0.2, 1, 0.75)]),
        best: BestValues::from([(
            "tune[rate=0.2]".to_string(),
            vec![(Arc::from("x"), json!(0.75))],
        )]),
        ..Options::default()
    };
    let p = parse_with(Path::new("p.yaml"), STUDY, &[], Path::new("."), &opts).unwrap();
    assert_eq!(
        fits(&p),
        [
            "fit[rate=0.2, trial=0]",
            "fit[rate=0.4, trial=0]",
            "fit[rate=0.2, trial=1]"
        ]
    );
    let fit = p
        .instances
        .iter()
        .find(|i| i.name == "fit[rate=0.2, trial=1]")
        .unwrap();
    assert_eq!(p.params_of(fit)["argv"], json!(["echo", 0.75, 0.2]));
    let score = p
        .instances
        .iter()
        .find(|i| i.name == "score[rate=0.2, trial=1]")
        .unwrap();
    assert_eq!(p.instances[score.inputs["f"][0]].name, fit.name);
    let tune = p
        .instances
        .iter()
        .find(|i| i.name == "tune[rate=0.2]")
        .unwrap();
    let trials: Vec<&str> = tune.inputs["trials"]
        .iter()
        .map(|&u| p.instances[u].name.as_str())
        .collect();
    assert_eq!(
        trials,
        ["score[rate=0.2, trial=0]", "score[rate=0.2, trial=1]"]
    );
    let after = p
        .instances
        .iter()
        .find(|i| i.name == "after[rate=0.2]")
        .unwrap();
    assert!(!after.best_pending);
    assert_eq!(p.params_of(after)["argv"][1], json!(0.75));
    assert_eq!(p.instances[after.inputs["best"][0]].name, "tune[rate=0.2]");
}

#[test]
fn trial_stages_are_read_only_by_their_study() {
    let err = |from: &str, to: &str| {
        let text = STUDY.replacen(from, to, 1);
        assert_ne!(text, STUDY, "{from}");
        parse_text(&text).unwrap_err()
    };
    let e = err(
        "    best: \"tune[rate=${rate}]\"\n",
        "    inputs: {f: fit}\n    best: \"tune[rate=${rate}]\"\n",
    );
    assert!(e.message.contains("a trial of `tune`"), "{}", e.message);
    let e = err(
        "    trial_of: tune\n    inputs: {d: data}",
        "    trial_of: tune\n    matrix: {a: [1]}\n    inputs: {d: data}",
    );
    assert!(
        e.message.contains("cannot have its own matrix"),
        "{}",
        e.message
    );
    let e = err("best: \"tune[rate=${rate}]\"", "best: tune");
    assert!(e.message.contains("selects 2 studies"), "{}", e.message);
    let e = err("best: \"tune[rate=${rate}]\"", "best: \"data\"");
    assert!(
        e.message.contains("does not name a `search` stage"),
        "{}",
        e.message
    );
}

/// A stage whose axis is a parameter set to `[]` is switched off: it has no instance, and
/// a whole-stage reference to it selects nothing. A literal `[]`, or a slice of the
/// switched-off stage, is an error.
#[test]
fn an_empty_axis_from_a_parameter_switches_a_stage_off() {
    let text = r#"
name: t
params: {extra: []}
stages:
  base:
    kind: command
    matrix: {rate: [0.2]}
    params: {argv: [echo, "${rate}"]}
  more:
    kind: command
    matrix: {rate: "${extra}"}
    params: {argv: [echo, "${rate}"]}
  all:
    kind: command
    inputs: {xs: [base, more]}
    params: {argv: [echo]}
"#;
    let p = parse_text(text).unwrap();
    let names: Vec<&str> = p.instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["base[rate=0.2]", "all"]);
    let all = p.instances.iter().find(|i| i.name == "all").unwrap();
    assert_eq!(all.inputs["xs"].len(), 1);

    let e = err_of(&text.replace("\"${extra}\"", "[]"));
    assert!(e.message.contains("matrix axis `rate` is empty"), "{e}");
    assert!(
        e.help.as_deref().unwrap_or("").contains("param: []"),
        "{e:?}"
    );
    let e = err_of(&text.replace("[base, more]", "[base, \"more[rate=0.2]\"]"));
    assert!(e.message.contains("selects no instance"), "{e}");
}
