//! Phase 0 of building: `include:`, stage files that several pipelines share (as
//! Snakemake's modules and Nextflow's `include`). An included file has `params:` (its
//! parameters, with defaults) and `stages:`; the include names the file (relative to the
//! including file's folder) and may set its parameters:
//!
//! ```yaml
//! include:
//!   - file: include/resnet18_noise.yaml
//!     params: {title: "CUB-200-2011, ResNet-18, independent noise, test accuracy (%)"}
//! ```
//!
//! Its parameters and stages join the pipeline's, as if written there: one namespace, so
//! the included stages see the pipeline's parameters (`${epochs}`) and `--set` reaches the
//! included ones. Nothing about where a stage was written goes into a key, so moving stages
//! into an include keeps every cache entry. A name defined twice (a stage or parameter in
//! the pipeline and an included file, or in two included files) is refused, as is an
//! include of an include; errors about included stages and parameters point into the file
//! they are written in (`Ctx` routes them).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ctx::{Ctx, ParamSite, Routes, Source};
use super::raw::{RawFragment, RawPipeline};
use super::source_map::SourceMap;
use crate::error::{Location, UserError};
use crate::hint::did_you_mean;

/// An included file as read.
pub(super) struct Included {
    pub file: PathBuf,
    pub text: String,
    pub map: SourceMap,
}

/// Reads and parses every file `raw.include` names.
pub(super) fn read(
    cx: &Ctx<'_>,
    raw: &RawPipeline,
) -> Result<(Vec<Included>, Vec<RawFragment>), UserError> {
    let dir = cx.file.parent().unwrap_or(Path::new(""));
    let (mut files, mut fragments) = (Vec::new(), Vec::new());
    let mut seen: Vec<(PathBuf, usize)> = Vec::new();
    for (i, inc) in raw.include.iter().enumerate() {
        let at = format!("include[{i}].file");
        let file = dir.join(&inc.file);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            cx.at_value(
                &at,
                format!("cannot read the included file {}: {e}", file.display()),
            )
            .help("the path is relative to the folder of the file that includes it")
        })?;
        let canonical = file.canonicalize().unwrap_or_else(|_| file.clone());
        if let Some((_, first)) = seen.iter().find(|(p, _)| *p == canonical) {
            return Err(cx
                .at_value(
                    &at,
                    format!(
                        "{} is included twice (first as include[{first}])",
                        file.display()
                    ),
                )
                .help("include a file once; its stages exist once per pipeline"));
        }
        seen.push((canonical, i));
        let map = SourceMap::build(&text).map_err(|e| {
            let mut u = UserError::new(e.message);
            u.location = Some(Location {
                file: file.clone(),
                line: e.pos.line,
                column: e.pos.column,
            });
            u.help = e.help;
            u.with_source_line(&text)
        })?;
        let fragment: RawFragment = serde_yaml::from_str(&text).map_err(|e| {
            let mut u = super::serde_error(&file, &text, e);
            if u.message.contains("unknown field `include`") {
                u.help = Some(
                    "an included file cannot include others; include them from the pipeline".into(),
                );
            } else if u.message.contains("unknown field `name`") {
                u.help = Some(
                    "an included file has only `params:` and `stages:` (and `description:`); \
                     the name is the including pipeline's"
                        .into(),
                );
            }
            u
        })?;
        files.push(Included { file, text, map });
        fragments.push(fragment);
    }
    Ok((files, fragments))
}

/// Where the included parts are written, for [`Ctx`].
pub(super) fn sources(files: &[Included]) -> Vec<Source<'_>> {
    files
        .iter()
        .map(|inc| Source {
            file: &inc.file,
            text: &inc.text,
            map: &inc.map,
        })
        .collect()
}

/// Puts the included parameters (after its own) and stages (before or after its own, as
/// `include:` is written above or below `stages:`) into `raw`, checking that every name is
/// defined once; returns where each came from.
pub(super) fn merge<'a>(
    cx: &Ctx<'_>,
    raw: &mut RawPipeline,
    files: Vec<RawFragment>,
    sources: Vec<Source<'a>>,
) -> Result<Routes<'a>, UserError> {
    let mut routes = Routes {
        included: sources,
        ..Routes::default()
    };
    let mut param_from: HashMap<String, usize> = HashMap::new();
    let mut included: indexmap::IndexMap<String, super::raw::RawStage> = indexmap::IndexMap::new();
    for (i, fragment) in files.into_iter().enumerate() {
        let src = routes.included[i];
        let site = &raw.include[i];
        for k in site.params.keys() {
            if !fragment.params.contains_key(k) {
                let help = did_you_mean(k, fragment.params.keys().map(String::as_str))
                    .unwrap_or_else(|| {
                        format!(
                            "its parameters: {}",
                            if fragment.params.is_empty() {
                                "none".to_string()
                            } else {
                                fragment
                                    .params
                                    .keys()
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            }
                        )
                    });
                return Err(cx
                    .at_key(
                        &format!("include[{i}].params.{k}"),
                        format!("{} has no parameter `{k}`", src.file.display()),
                    )
                    .help(help));
            }
        }
        let mut params = Vec::new();
        for (k, default) in fragment.params {
            if let Some(&first) = param_from.get(&k) {
                return Err(in_file(
                    src,
                    &format!("params.{k}"),
                    format!(
                        "parameter `{k}` is also declared by {}",
                        at(routes.included[first], &format!("params.{k}"))
                    ),
                )
                .help("an included parameter may be declared by one file only; rename one"));
            }
            if raw.params.contains_key(&k) {
                return Err(cx
                    .at_key(
                        &format!("params.{k}"),
                        format!(
                            "parameter `{k}` is also declared by the included file {}",
                            at(src, &format!("params.{k}"))
                        ),
                    )
                    .help(format!(
                        "declare it once: remove it here and set it with `include[{i}].params.{k}`"
                    )));
            }
            let (value, where_) = match site.params.get(&k) {
                Some(v) => (v.clone(), ParamSite::Set(i)),
                None => (default, ParamSite::Default(i)),
            };
            param_from.insert(k.clone(), i);
            routes.params.insert(k.clone(), where_);
            params.push((k, value));
        }
        raw.params.extend(params);
        for (name, stage) in fragment.stages {
            let path = format!("stages.{name}");
            if raw.stages.contains_key(&name) || included.contains_key(&name) {
                let defined = match routes.stages.get(&name) {
                    Some(&first) => at(routes.included[first], &path),
                    None => at(
                        Source {
                            file: cx.file,
                            text: cx.text,
                            map: cx.map,
                        },
                        &path,
                    ),
                };
                return Err(in_file(
                    src,
                    &path,
                    format!("stage `{name}` is also defined at {defined}"),
                )
                .help("a stage name may be defined once per pipeline; rename one of them"));
            }
            routes.stages.insert(name.clone(), i);
            included.insert(name, stage);
        }
    }
    // Where `include:` is written: above `stages:`, its stages come first.
    let line = |key: &str| cx.map.key(key).map(|p| p.line);
    if line("include") < line("stages") {
        let own = std::mem::take(&mut raw.stages);
        raw.stages = included;
        raw.stages.extend(own);
    } else {
        raw.stages.extend(included);
    }
    Ok(routes)
}

/// `file:line` of the key at `path` in `src`.
fn at(src: Source<'_>, path: &str) -> String {
    match src.map.key(path) {
        Some(p) => format!("{}:{}", src.file.display(), p.line),
        None => src.file.display().to_string(),
    }
}

/// An error with the caret on the key at `path` of `src`.
fn in_file(src: Source<'_>, path: &str, message: String) -> UserError {
    let mut u = UserError::new(message);
    u.location = src.loc(src.map.key(path));
    u.with_source_line(src.text)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{json, Value};

    use crate::error::UserError;
    use crate::spec::{load, Pipeline};

    /// Everything a key is made of, per instance (kind, params, inputs by upstream name,
    /// threads, local files), as text, sorted by instance.
    fn keyed(p: &Pipeline) -> Vec<String> {
        let mut v: Vec<String> = p
            .instances
            .iter()
            .map(|i| {
                let inputs: Vec<(&String, Vec<&str>)> = i
                    .inputs
                    .iter()
                    .map(|(k, ups)| {
                        (
                            k,
                            ups.iter().map(|&u| p.instances[u].name.as_str()).collect(),
                        )
                    })
                    .collect();
                format!(
                    "{} {} {} {inputs:?} {} {:?}",
                    i.name,
                    p.stages[i.stage].kind.name(),
                    p.params_of(i),
                    i.threads,
                    i.local_deps
                )
            })
            .collect();
        v.sort();
        v
    }

    const FLAT: &str = r#"
name: t
params:
  rates: [0.2, 0.4]
  seed: 7
  tag: flat
stages:
  data:
    kind: command
    params: {argv: [echo, "${tag}"]}
  noisy:
    kind: noise
    matrix: {rate: "${rates}"}
    inputs: {data: data}
    params: {rate: "${rate}", seed: "${seed}"}
"#;

    const INCLUDED: &str = r#"
params:
  seed: 1
stages:
  noisy:
    kind: noise
    matrix: {rate: "${rates}"}
    inputs: {data: data}
    params: {rate: "${rate}", seed: "${seed}"}
"#;

    const WITH_INCLUDE: &str = r#"
name: t
params:
  rates: [0.2, 0.4]
  tag: flat
include:
  - file: inc/noise.yaml
    params: {seed: 7}
stages:
  data:
    kind: command
    params: {argv: [echo, "${tag}"]}
"#;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = d.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        d
    }

    fn load_in(d: &Path, file: &str, set: &[(&str, Value)]) -> Result<Pipeline, UserError> {
        let set: Vec<(String, Value)> = set
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        load(&d.join(file), &set, d)
    }

    #[test]
    fn an_included_stage_is_the_stage_written_in_place() {
        let d = project(&[
            ("flat.yaml", FLAT),
            ("p.yaml", WITH_INCLUDE),
            ("inc/noise.yaml", INCLUDED),
        ]);
        let flat = load_in(d.path(), "flat.yaml", &[]).unwrap();
        let inc = load_in(d.path(), "p.yaml", &[]).unwrap();
        assert_eq!(keyed(&flat), keyed(&inc));
        assert_eq!(inc.includes, vec![d.path().join("inc/noise.yaml")]);
        // Included stages sit where `include:` is written: above `stages:`, first.
        let order = |p: &Pipeline| p.stages.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(order(&inc), ["noisy", "data"]);
        let below = WITH_INCLUDE.replace(
            "include:\n  - file: inc/noise.yaml\n    params: {seed: 7}\n",
            "",
        ) + "include:\n  - file: inc/noise.yaml\n    params: {seed: 7}\n";
        let d3 = project(&[("p.yaml", &below), ("inc/noise.yaml", INCLUDED)]);
        let inc3 = load_in(d3.path(), "p.yaml", &[]).unwrap();
        assert_eq!(order(&inc3), ["data", "noisy"]);
        assert_eq!(keyed(&inc3), keyed(&flat));
        // One namespace: `--set` reaches the included parameter, the included stage sees
        // the pipeline's.
        let inc = load_in(
            d.path(),
            "p.yaml",
            &[("seed", json!(9)), ("rates", json!([0.6]))],
        )
        .unwrap();
        let noisy = inc
            .instances
            .iter()
            .find(|i| i.name == "noisy[rate=0.6]")
            .unwrap();
        assert_eq!(inc.params_of(noisy)["seed"], json!(9));
        // Without the include's value, the included default.
        let d2 = project(&[
            (
                "p.yaml",
                &WITH_INCLUDE.replace("    params: {seed: 7}\n", ""),
            ),
            ("inc/noise.yaml", INCLUDED),
        ]);
        let inc = load_in(d2.path(), "p.yaml", &[]).unwrap();
        let noisy = inc
            .instances
            .iter()
            .find(|i| i.name == "noisy[rate=0.2]")
            .unwrap();
        assert_eq!(inc.params_of(noisy)["seed"], json!(1));
    }

    fn error(files: &[(&str, &str)]) -> (UserError, tempfile::TempDir) {
        let d = project(files);
        let e = load_in(d.path(), "p.yaml", &[]).unwrap_err();
        (e, d)
    }

    fn at(e: &UserError, d: &Path, file: &str) -> usize {
        let loc = e
            .location
            .as_ref()
            .unwrap_or_else(|| panic!("no location: {e}"));
        assert_eq!(loc.file, d.join(file), "{e}");
        loc.line
    }

    #[test]
    fn errors_in_an_included_file_point_into_it() {
        // A value its kind refuses, in an included stage.
        let bad = INCLUDED.replace("seed: \"${seed}\"}", "seed: \"${seed}\", mode: sometimes}");
        let (e, d) = error(&[("p.yaml", WITH_INCLUDE), ("inc/noise.yaml", &bad)]);
        assert_eq!(at(&e, d.path(), "inc/noise.yaml"), 9, "{e}");
        assert!(e.message.contains("sometimes"), "{e}");
        assert!(e.snippet.as_deref().unwrap().contains("mode: sometimes"));
        // An unknown key in an included stage: serde's own position, in the included file.
        let bad = INCLUDED.replace("    kind: noise\n", "    kind: noise\n    inptus: {}\n");
        let (e, d) = error(&[("p.yaml", WITH_INCLUDE), ("inc/noise.yaml", &bad)]);
        assert_eq!(at(&e, d.path(), "inc/noise.yaml"), 7, "{e}");
        assert!(e.help.as_deref().unwrap_or("").contains("inputs"), "{e:?}");
        // A reference to a stage that does not exist, from an included stage.
        let bad = INCLUDED.replace("{data: data}", "{data: dta}");
        let (e, d) = error(&[("p.yaml", WITH_INCLUDE), ("inc/noise.yaml", &bad)]);
        assert_eq!(at(&e, d.path(), "inc/noise.yaml"), 8, "{e}");
        // YAML syntax.
        let (e, d) = error(&[
            ("p.yaml", WITH_INCLUDE),
            ("inc/noise.yaml", "params: [1,\n"),
        ]);
        at(&e, d.path(), "inc/noise.yaml");
    }

    #[test]
    fn a_bad_included_parameter_points_where_its_value_is_written() {
        // The value set by the include: in the pipeline file, at the include.
        let p = WITH_INCLUDE.replace("{seed: 7}", "{seed: \"${nope}\"}");
        let (e, d) = error(&[("p.yaml", &p), ("inc/noise.yaml", INCLUDED)]);
        assert_eq!(at(&e, d.path(), "p.yaml"), 8, "{e}");
        // The default: in the included file.
        let p = WITH_INCLUDE.replace("    params: {seed: 7}\n", "");
        let inc = INCLUDED.replace("seed: 1", "seed: \"${nope}\"");
        let (e, d) = error(&[("p.yaml", &p), ("inc/noise.yaml", &inc)]);
        assert_eq!(at(&e, d.path(), "inc/noise.yaml"), 3, "{e}");
    }

    #[test]
    fn names_are_defined_once_and_includes_are_checked() {
        // A stage in both files.
        let p = WITH_INCLUDE.replace(
            "stages:\n",
            "stages:\n  noisy:\n    kind: command\n    params: {argv: [true]}\n",
        );
        let (e, d) = error(&[("p.yaml", &p), ("inc/noise.yaml", INCLUDED)]);
        assert_eq!(at(&e, d.path(), "inc/noise.yaml"), 5, "{e}");
        assert!(
            e.message.contains("stage `noisy` is also defined at"),
            "{e}"
        );
        assert!(e.message.contains("p.yaml:10"), "{e}");
        // A parameter in both.
        let p = WITH_INCLUDE.replace("  tag: flat\n", "  tag: flat\n  seed: 3\n");
        let (e, d) = error(&[("p.yaml", &p), ("inc/noise.yaml", INCLUDED)]);
        assert_eq!(at(&e, d.path(), "p.yaml"), 6, "{e}");
        assert!(
            e.message.contains("also declared by the included file"),
            "{e}"
        );
        assert!(e
            .help
            .as_deref()
            .unwrap()
            .contains("include[0].params.seed"));
        // A parameter in two included files: at the second one's, naming the first.
        let p = WITH_INCLUDE.replace("stages:\n", "  - file: inc/other.yaml\nstages:\n");
        let other = "params:\n  seed: 2\nstages: {}\n";
        let (e, d) = error(&[
            ("p.yaml", &p),
            ("inc/noise.yaml", INCLUDED),
            ("inc/other.yaml", other),
        ]);
        assert_eq!(at(&e, d.path(), "inc/other.yaml"), 2, "{e}");
        assert!(e.message.contains("inc/noise.yaml:3"), "{e}");
        // A value for a parameter the file does not have.
        let p = WITH_INCLUDE.replace("{seed: 7}", "{sed: 7}");
        let (e, d) = error(&[("p.yaml", &p), ("inc/noise.yaml", INCLUDED)]);
        assert_eq!(at(&e, d.path(), "p.yaml"), 8, "{e}");
        assert!(e.message.contains("has no parameter `sed`"), "{e}");
        assert!(e.help.as_deref().unwrap().contains("seed"), "{e:?}");
        // A missing file, at the include.
        let (e, d) = error(&[("p.yaml", WITH_INCLUDE)]);
        assert_eq!(at(&e, d.path(), "p.yaml"), 7, "{e}");
        assert!(e.message.contains("cannot read the included file"), "{e}");
        // Twice the same file.
        let p = WITH_INCLUDE.replace("stages:\n", "  - file: inc/../inc/noise.yaml\nstages:\n");
        let (e, _d) = error(&[("p.yaml", &p), ("inc/noise.yaml", INCLUDED)]);
        assert!(
            e.message
                .contains("is included twice (first as include[0])"),
            "{e}"
        );
        // An include of an include.
        let inc = format!("include: [{{file: other.yaml}}]\n{INCLUDED}");
        let (e, d) = error(&[("p.yaml", WITH_INCLUDE), ("inc/noise.yaml", &inc)]);
        at(&e, d.path(), "inc/noise.yaml");
        assert!(
            e.help.as_deref().unwrap().contains("cannot include others"),
            "{e:?}"
        );
    }

    #[test]
    fn the_bundled_pipelines_key_as_before_their_includes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for name in [
            "demo",
            "demo-tune",
            "aircraft_noise",
            "caltech256_noise",
            "cars_noise",
            "cub_noise",
            "dogs_noise",
            "flowers_noise",
        ] {
            let now = load(&root.join(format!("pipelines/{name}.yaml")), &[], root).unwrap();
            assert!(!now.includes.is_empty(), "{name} uses an include");
            let flat = load(
                &root.join(format!("tests/fixtures/flat/{name}.yaml")),
                &[],
                root,
            )
            .unwrap();
            assert_eq!(keyed(&now), keyed(&flat), "{name}");
            // The same parameters, but for the table's title (a parameter of the include).
            let mut params = now.params.clone();
            params.remove("title");
            assert_eq!(params, flat.params, "{name}: the same parameters");
        }
    }
}
