//! Planning: the cache key of each instance, given the digests of its inputs, and why a
//! stage is stale.
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::cache::digest::digest_path;
use crate::cache::key::{canonical, InputRecord, KeyRecord, CACHE_VERSION};
use crate::error::UserError;
use crate::spec::{Instance, Pipeline};

/// Environment facts folded into torch stages' keys (allow-list).
pub fn torch_env(inst: &Instance) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "libtorch".to_string(),
        env!("RST_LIBTORCH_VERSION").to_string(),
    );
    let device = inst
        .params
        .get("device")
        .and_then(|d| d.as_str())
        .unwrap_or("auto")
        .to_string();
    env.insert("device".to_string(), device);
    env.insert("threads".to_string(), inst.threads.to_string());
    env
}

pub struct Planner<'a> {
    pub pipeline: &'a Pipeline,
    local: Mutex<HashMap<String, String>>,
}

impl<'a> Planner<'a> {
    pub fn new(pipeline: &'a Pipeline) -> Self {
        Planner {
            pipeline,
            local: Mutex::new(HashMap::new()),
        }
    }

    fn local_digest(&self, inst: &Instance, path: &str) -> Result<String, UserError> {
        if let Some(d) = self.local.lock().unwrap().get(path) {
            return Ok(d.clone());
        }
        let abs = self.pipeline.project_dir.join(path);
        let d = digest_path(&abs).map_err(|e| {
            UserError::new(format!(
                "stage `{}` in {} depends on the local file `{path}`, which cannot be read: {e}",
                inst.name,
                self.pipeline.file.display()
            ))
            .help("check the path (relative paths are taken from the directory rst runs in)")
        })?;
        self.local
            .lock()
            .unwrap()
            .insert(path.to_string(), d.clone());
        Ok(d)
    }

    /// The key record of `inst`, given each upstream instance's artifact digest.
    pub fn record(
        &self,
        inst: &Instance,
        digest_of: &dyn Fn(usize) -> String,
    ) -> Result<KeyRecord, UserError> {
        let kind = self.pipeline.stages[inst.stage].kind;
        let inputs = inst
            .inputs
            .iter()
            .map(|(name, ids)| {
                (
                    name.clone(),
                    ids.iter()
                        .map(|&u| InputRecord {
                            instance: self.pipeline.instances[u].name.clone(),
                            digest: digest_of(u),
                        })
                        .collect(),
                )
            })
            .collect();
        let mut local_deps = BTreeMap::new();
        for p in &inst.local_deps {
            local_deps.insert(p.clone(), self.local_digest(inst, p)?);
        }
        Ok(KeyRecord {
            cache_version: CACHE_VERSION,
            kind: kind.name().to_string(),
            kind_version: kind.version(),
            params: canonical(&inst.params),
            inputs,
            local_deps,
            env: if kind.uses_torch() {
                torch_env(inst)
            } else {
                BTreeMap::new()
            },
        })
    }
}
