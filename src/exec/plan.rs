//! Planning: the cache key of each instance, given the digests of its inputs, and why a
//! stage is stale.
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::cache::digest::digest_path;
use crate::cache::key::{into_canonical, InputRecord, KeyRecord, CACHE_VERSION};
use crate::error::UserError;
use crate::spec::{Instance, Pipeline};

/// The libtorch version this rst was built against (build.rs reads it next to torch-sys'
/// libtorch); None when built without the `torch` feature, which has no libtorch at all.
pub const LIBTORCH_VERSION: Option<&str> = option_env!("RST_LIBTORCH_VERSION");

/// Environment facts folded into torch stages' keys (allow-list).
pub fn torch_env(inst: &Instance, params: &serde_json::Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "libtorch".to_string(),
        LIBTORCH_VERSION.unwrap_or("none").to_string(),
    );
    let device = params
        .get("device")
        .and_then(|d| d.as_str())
        .unwrap_or("auto")
        .to_string();
    env.insert("device".to_string(), device);
    env.insert("threads".to_string(), inst.threads.to_string());
    if let Some(mode) = inst.numerics.key_value() {
        env.insert(crate::numerics::KEY.to_string(), mode.to_string());
    }
    env
}

/// What libtorch sees on this machine, as `rst-torch probe` reports it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    pub libtorch: String,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub auto_device: String,
}

/// The sibling `rst-torch` binary (the worker for torch stages).
pub fn torch_exe() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name("rst-torch")
}

/// Asks `rst-torch probe` once per process; the answer is kept in the temp dir per boot
/// (GPUs do not come and go while a machine runs) and visible-device set, so no-op runs do
/// not load libtorch.
pub fn probe() -> &'static Probe {
    static PROBE: std::sync::OnceLock<Probe> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| {
        let exe = torch_exe();
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let stamp = std::fs::metadata(&exe)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // What the worker may see depends on its GPU lease (`CUDA_VISIBLE_DEVICES`).
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "-".into());
        let id = blake3::hash(
            format!("{}\0{}\0{stamp}\0{visible}", exe.display(), boot.trim()).as_bytes(),
        )
        .to_hex();
        let cached = std::env::temp_dir().join(format!("rst-probe-{}.json", &id[..16]));
        if let Some(p) = std::fs::read(&cached)
            .ok()
            .and_then(|b| serde_json::from_slice::<Probe>(&b).ok())
        {
            return p;
        }
        let fallback = Probe {
            libtorch: LIBTORCH_VERSION.unwrap_or("none").into(),
            cuda_available: false,
            cuda_devices: 0,
            auto_device: "cpu".into(),
        };
        match std::process::Command::new(&exe).arg("probe").output() {
            Ok(out) if out.status.success() => match serde_json::from_slice::<Probe>(&out.stdout) {
                Ok(p) => {
                    let _ = crate::cache::store::write_atomic(&cached, &out.stdout);
                    p
                }
                Err(_) => fallback,
            },
            _ => fallback,
        }
    })
}

/// Why this build cannot plan `pipeline`: built without the `torch` feature, it has no
/// `rst-torch` worker and no libtorch version to key torch stages by. Checked for the whole
/// pipeline at once, so a run fails before any stage starts rather than half-way through.
fn torch_unavailable(pipeline: &Pipeline) -> Option<UserError> {
    if cfg!(feature = "torch") {
        return None;
    }
    let stage = pipeline.stages.iter().find(|s| s.kind.uses_torch())?;
    Some(
        UserError::new(format!(
            "stage `{}` in {} is a `{}` stage, but this rst was built without the torch \
             feature: cargo build --features torch",
            stage.name,
            pipeline.file.display(),
            stage.kind.name()
        ))
        .help(
            "`torch` is a default feature: build without `--no-default-features` \
             (it needs libtorch, which ./scripts/setup installs)",
        ),
    )
}

pub struct Planner<'a> {
    pub pipeline: &'a Pipeline,
    local: Mutex<HashMap<String, String>>,
    /// Set when the pipeline has torch stages this build cannot run; every record fails.
    no_torch: Option<UserError>,
}

impl<'a> Planner<'a> {
    pub fn new(pipeline: &'a Pipeline) -> Self {
        Planner {
            pipeline,
            local: Mutex::new(HashMap::new()),
            no_torch: torch_unavailable(pipeline),
        }
    }

    fn local_digest(&self, inst: &Instance, path: &str) -> Result<String, UserError> {
        if let Some(d) = self.local.lock().unwrap().get(path) {
            return Ok(d.clone());
        }
        let abs = self.pipeline.project_dir.join(path);
        let d = digest_path(&abs).map_err(|e| {
            UserError::new(format!(
                "stage `{}` in {} depends on the local file `{path}`, which cannot be read: {}",
                inst.name,
                self.pipeline.file.display(),
                crate::error::chain(&e)
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
        if let Some(e) = &self.no_torch {
            return Err(e.clone());
        }
        let kind = self.pipeline.stages[inst.stage].kind;
        let params = self.pipeline.params_of(inst);
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
                            matrix: self.pipeline.instances[u]
                                .matrix
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.clone()))
                                .collect(),
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
            params: into_canonical(kind.canonical_params(&params)),
            inputs,
            local_deps,
            env: if kind.uses_torch() {
                torch_env(inst, &params)
            } else {
                BTreeMap::new()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const A: &str = "name: t\nparams: {lr: 0.001}\nstages:\n  s:\n    kind: command\n    params: {argv: [echo, \"${lr}\"], env: {A: 1, B: 2}}\n";
    // Same pipeline: other key order, comments, flow vs block style, 1e-3 for 0.001.
    const B: &str = "# a comment\nstages:\n  s:\n    params:\n      env: {B: 2, A: 1}  # reordered\n      argv: [echo, \"${lr}\"]\n    kind: command\nparams: {lr: 1e-3}\nname: t\n";

    fn key_of(text: &str, file: &str, project: &str) -> String {
        let p = crate::spec::parse(Path::new(file), text, &[], Path::new(project)).unwrap();
        Planner::new(&p)
            .record(&p.instances[0], &|_| String::new())
            .unwrap()
            .key()
    }

    #[test]
    fn keys_ignore_key_order_comments_style_and_location() {
        let a = key_of(A, "pipelines/a.yaml", "/home/x/project");
        assert_eq!(a, key_of(B, "elsewhere/b.yaml", "/srv/moved"));
        assert_ne!(
            a,
            key_of(
                &A.replace("0.001", "0.002"),
                "pipelines/a.yaml",
                "/home/x/project"
            )
        );
    }
}
