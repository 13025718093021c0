//! Targets, as in make, Snakemake and `dvc repro`: `rst run FILE [TARGET]...` works on
//! the instances the targets name and everything they need, nothing else. A target is a
//! stage (`train`), an instance (`noisy[rate=0.4]` as `rst status` prints it) or a slice
//! of a stage's matrix (`regsl[rate=0.4]`, matching numbers by value).
use super::matrix::canon_text;
use super::{interp, parse_input_ref, Pipeline, StageDef};
use crate::error::UserError;
use crate::hint::did_you_mean;

impl Pipeline {
    /// The pipeline cut down to `targets` and their ancestors (all of it when `targets` is
    /// empty). Instances keep their order; stages with no instance left are dropped.
    pub fn select(self, targets: &[String]) -> Result<Pipeline, UserError> {
        if targets.is_empty() {
            return Ok(self);
        }
        let mut ids = Vec::new();
        for t in targets {
            ids.extend(self.target(t)?);
        }
        Ok(self.select_ids(&ids))
    }

    /// The pipeline cut down to the instances `ids` and their ancestors.
    pub fn select_ids(self, ids: &[usize]) -> Pipeline {
        let mut keep = vec![false; self.instances.len()];
        for &id in ids {
            keep[id] = true;
        }
        // Instances are in topological order: a consumer comes after all its inputs.
        for i in (0..keep.len()).rev() {
            if keep[i] {
                for &u in self.instances[i].inputs.values().flatten() {
                    keep[u] = true;
                }
            }
        }
        self.retain(&keep)
    }

    /// The instances one target names (a stage, an instance or a slice).
    pub fn target(&self, t: &str) -> Result<Vec<usize>, UserError> {
        let t = t.trim();
        if let Some(inst) = self.instances.iter().find(|i| i.name == t) {
            return Ok(vec![inst.id]);
        }
        let unknown = || self.unknown_target(t);
        let r = parse_input_ref(t).map_err(|_| unknown())?;
        let Some(si) = self.find_stage(&r.stage) else {
            return Err(unknown());
        };
        let stage = &self.stages[si];
        if let Some((key, _)) = r.slice.iter().find(|(k, _)| !stage.axes.contains(k)) {
            return Err(UserError::new(format!(
                "target `{t}`: stage `{}` has no matrix axis `{key}`",
                stage.name
            ))
            .help(axes_help(stage)));
        }
        let wanted: Vec<(&str, String)> = r
            .slice
            .iter()
            .map(|(k, v)| (k.as_str(), canon_text(v)))
            .collect();
        let ids: Vec<usize> = stage
            .instances
            .iter()
            .copied()
            .filter(|&id| {
                let m = &self.instances[id].matrix;
                wanted.iter().all(|(k, want)| {
                    m.iter()
                        .any(|(a, v)| &**a == *k && canon_text(&interp::display(v)) == *want)
                })
            })
            .collect();
        if ids.is_empty() {
            return Err(UserError::new(format!(
                "target `{t}` selects no instance of `{}`",
                stage.name
            ))
            .help(format!(
                "instances: {}",
                super::inputs::instance_list(
                    stage
                        .instances
                        .iter()
                        .map(|&i| self.instances[i].name.as_str())
                )
            )));
        }
        Ok(ids)
    }

    fn unknown_target(&self, t: &str) -> UserError {
        let stages = self.stages.iter().map(|s| s.name.as_str());
        // Instance names too, unless there are too many to compare against.
        let instances = self
            .instances
            .iter()
            .take(if self.instances.len() <= 10_000 {
                usize::MAX
            } else {
                0
            })
            .map(|i| i.name.as_str());
        let mut u = UserError::new(format!(
            "no stage or instance `{t}` in {}",
            self.file.display()
        ));
        u.help = Some(match did_you_mean(t, stages.clone().chain(instances)) {
            Some(h) => h,
            None => format!(
                "a target is a stage, an instance or a slice such as `stage[axis=value]`; stages: {}",
                stages.collect::<Vec<_>>().join(", ")
            ),
        });
        u
    }

    /// Only the instances marked in `keep`, renumbered in the same order.
    fn retain(self, keep: &[bool]) -> Pipeline {
        let mut new_id = vec![usize::MAX; keep.len()];
        let mut n = 0;
        for (i, &k) in keep.iter().enumerate() {
            if k {
                new_id[i] = n;
                n += 1;
            }
        }
        let mut new_stage = vec![usize::MAX; self.stages.len()];
        let mut stages: Vec<StageDef> = Vec::new();
        for (si, mut s) in self.stages.into_iter().enumerate() {
            s.instances.retain(|&i| keep[i]);
            if s.instances.is_empty() {
                continue;
            }
            for i in &mut s.instances {
                *i = new_id[*i];
            }
            new_stage[si] = stages.len();
            stages.push(s);
        }
        let instances = self
            .instances
            .into_iter()
            .filter(|i| keep[i.id])
            .map(|mut i| {
                i.id = new_id[i.id];
                i.stage = new_stage[i.stage];
                for ids in i.inputs.values_mut() {
                    for u in ids.iter_mut() {
                        *u = new_id[*u];
                    }
                }
                i
            })
            .collect();
        Pipeline {
            stages,
            instances,
            ..self
        }
    }
}

fn axes_help(stage: &StageDef) -> String {
    if stage.axes.is_empty() {
        format!(
            "`{}` has no matrix; name it as `{}`",
            stage.name, stage.name
        )
    } else {
        format!("axes of `{}`: {}", stage.name, stage.axes.join(", "))
    }
}
