//! GPUs as a scheduled resource of the local executor: which devices this run may use,
//! how many each stage instance needs, and the leases that give each running stage whole
//! devices of its own (its worker sees only them, through `CUDA_VISIBLE_DEVICES`).
//!
//! The devices, first found wins:
//! 1. `rst run --gpus 0,2`;
//! 2. `RST_GPUS=0,1,2`, which declares device ids without asking the driver (machines
//!    without GPUs use it to test the leases with `command` stages; `RST_GPUS=` declares
//!    none);
//! 3. `CUDA_VISIBLE_DEVICES` when set (an empty value: none), as CUDA itself reads it;
//! 4. `nvidia-smi -L`, one id per line it lists (none when it is missing or fails).
//!
//! With devices, every worker gets `CUDA_VISIBLE_DEVICES` set to its lease, empty for a
//! stage that asked for none, so no stage ever uses a GPU it was not given. Without
//! devices the variable is left as it was. A Slurm run leases nothing here: the cluster
//! binds the GPUs a job asks for (`--gres=gpu:N`) and sets the variable itself.
use serde_json::Value;

use crate::error::UserError;
use crate::spec::{Instance, Pipeline};

/// The variable that declares device ids (see the module doc).
pub const GPUS_ENV: &str = "RST_GPUS";

/// The devices of one `rst run`, looked for at most once (when the first stage is about
/// to start; every round of a study shares the answer).
#[derive(Debug)]
pub struct GpuSource {
    flag: Option<String>,
    found: std::sync::OnceLock<Result<Gpus, UserError>>,
}

impl GpuSource {
    /// `flag`: the value of `--gpus`.
    pub fn new(flag: Option<String>) -> GpuSource {
        GpuSource {
            flag,
            found: std::sync::OnceLock::new(),
        }
    }

    pub fn get(&self) -> Result<&Gpus, UserError> {
        self.found
            .get_or_init(|| Gpus::discover(self.flag.as_deref()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Refuses, before anything runs, an instance of `p` that needs more GPUs than there
    /// are; returns each instance's need.
    pub fn check(&self, p: &Pipeline) -> Result<(&Gpus, Vec<u64>), UserError> {
        let found = self.get()?;
        let demands: Vec<u64> = p
            .instances
            .iter()
            .map(|inst| demand(p, inst, found.ids.len()))
            .collect();
        check_demands(p, found, &demands)?;
        Ok((found, demands))
    }
}

/// The devices a run may use, as the ids `CUDA_VISIBLE_DEVICES` takes (indices or UUIDs),
/// and where they were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpus {
    pub ids: Vec<String>,
    pub source: &'static str,
}

impl Gpus {
    /// The devices of this machine for this run (`flag`: the value of `--gpus`).
    pub fn discover(flag: Option<&str>) -> Result<Gpus, UserError> {
        let env = |name: &str| std::env::var(name).ok();
        Self::resolve(flag, env(GPUS_ENV), env("CUDA_VISIBLE_DEVICES"), nvidia_smi)
    }

    /// [`Gpus::discover`] with its inputs given (testable without a driver).
    fn resolve(
        flag: Option<&str>,
        declared: Option<String>,
        visible: Option<String>,
        smi: impl FnOnce() -> Vec<String>,
    ) -> Result<Gpus, UserError> {
        let available = match (declared, visible) {
            (Some(d), _) => Gpus {
                ids: parse_list(&d).map_err(|e| bad_list(GPUS_ENV, &d, &e))?,
                source: GPUS_ENV,
            },
            (None, Some(v)) => Gpus {
                ids: parse_list(&v).map_err(|e| bad_list("CUDA_VISIBLE_DEVICES", &v, &e))?,
                source: "CUDA_VISIBLE_DEVICES",
            },
            (None, None) => Gpus {
                ids: smi(),
                source: "nvidia-smi",
            },
        };
        let Some(flag) = flag else {
            return Ok(available);
        };
        let wanted = parse_list(flag).map_err(|e| bad_list("--gpus", flag, &e))?;
        if let Some(missing) = wanted.iter().find(|w| !available.ids.contains(w)) {
            return Err(UserError::new(format!(
                "--gpus {flag}: device `{missing}` is not one of this machine's GPUs ({}, from {})",
                if available.ids.is_empty() {
                    "none".to_string()
                } else {
                    available.ids.join(",")
                },
                available.source
            ))
            .help(format!(
                "name devices among those, or declare ids with {GPUS_ENV}=0,1 (e.g. on a machine whose driver rst cannot ask)"
            )));
        }
        Ok(Gpus {
            ids: wanted,
            source: "--gpus",
        })
    }
}

/// This process's `CUDA_VISIBLE_DEVICES` as ids (what a worker records it was given: its
/// lease, or a cluster's binding); none when unset, empty or not a list of ids.
pub fn visible_devices() -> Vec<String> {
    std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .and_then(|v| parse_list(&v).ok())
        .unwrap_or_default()
}

/// `0,2` or `GPU-1a2b…, 3` → the ids; an empty text → none.
fn parse_list(text: &str) -> Result<Vec<String>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<String> = Vec::new();
    for id in text.split(',').map(str::trim) {
        if id.is_empty() {
            return Err("an empty id between commas".into());
        }
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
        {
            return Err(format!("`{id}` is not a device index or UUID"));
        }
        if ids.iter().any(|i| i == id) {
            return Err(format!("`{id}` is listed twice"));
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

fn bad_list(what: &str, text: &str, why: &str) -> UserError {
    UserError::new(format!("{what}=`{text}` is not a list of GPU ids: {why}"))
        .help("write device indices or UUIDs separated by commas, e.g. 0,1")
}

/// The indices `nvidia-smi -L` lists (`GPU 0: NVIDIA H200 (UUID: …)`); none when the
/// tool is missing or fails. Parsed by hand: one line per device, and no NVML crate
/// (which would link the driver's library into every build) is needed for a count.
fn nvidia_smi() -> Vec<String> {
    // Looked up first: spawning a name that is nowhere on PATH still forks rst.
    let Some(exe) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nvidia-smi"))
            .find(|p| p.is_file())
    }) else {
        return Vec::new();
    };
    let Ok(out) = std::process::Command::new(exe)
        .arg("-L")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("GPU ")?.split(':').next())
        .filter(|i| i.chars().all(|c| c.is_ascii_digit()) && !i.is_empty())
        .map(str::to_string)
        .collect()
}

/// How many whole GPUs `inst` needs when the run has `available` devices: its
/// `resources: {gpus: N}`, else, for a torch stage on a machine with GPUs, one for
/// `device: auto` or `cuda` and N + 1 for `cuda:N` (device numbers count within the
/// lease, as CUDA numbers the visible devices), else none.
fn demand(p: &Pipeline, inst: &Instance, available: usize) -> u64 {
    if let Some(n) = inst.resources.gpus {
        return n;
    }
    let stage = &p.stages[inst.stage];
    if available == 0 || !stage.kind.uses_torch() {
        return 0;
    }
    let params = p.params_of(inst);
    let device = params
        .get("device")
        .and_then(Value::as_str)
        .unwrap_or("auto")
        .trim();
    match device {
        "auto" | "cuda" => 1,
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<u64>().ok())
            .map_or(0, |n| n + 1),
    }
}

/// Refuses, before anything runs, a stage that needs more GPUs than the run has.
fn check_demands(p: &Pipeline, gpus: &Gpus, demands: &[u64]) -> Result<(), UserError> {
    let have = gpus.ids.len() as u64;
    let Some((inst, &n)) = p.instances.iter().zip(demands).find(|(_, &n)| n > have) else {
        return Ok(());
    };
    Err(UserError::new(format!(
        "stage `{}` in {} asks for {n} GPU{} (resources: gpus), but this run has {}, from {}",
        inst.name,
        p.file.display(),
        if n == 1 { "" } else { "s" },
        match have {
            0 => "none".to_string(),
            h => format!("{h} ({})", gpus.ids.join(",")),
        },
        gpus.source
    ))
    .help(format!(
        "lower `resources: {{gpus: …}}` (or --set it), run on a machine with more GPUs, or use --executor slurm; {GPUS_ENV}=0,1 declares device ids rst cannot find itself"
    )))
}

/// Which devices are lent to which running stages.
#[derive(Debug)]
pub struct Leases {
    ids: Vec<String>,
    busy: Vec<bool>,
}

impl Leases {
    pub fn new(gpus: &Gpus) -> Leases {
        Leases {
            ids: gpus.ids.clone(),
            busy: vec![false; gpus.ids.len()],
        }
    }

    pub fn free(&self) -> usize {
        self.busy.iter().filter(|b| !**b).count()
    }

    /// `n` free devices, lowest first, now busy; None when fewer are free.
    pub fn take(&mut self, n: usize) -> Option<Vec<String>> {
        if self.free() < n {
            return None;
        }
        let mut got = Vec::with_capacity(n);
        for (i, busy) in self.busy.iter_mut().enumerate() {
            if got.len() == n {
                break;
            }
            if !*busy {
                *busy = true;
                got.push(self.ids[i].clone());
            }
        }
        Some(got)
    }

    /// Returns devices taken with [`Leases::take`].
    pub fn give_back(&mut self, ids: &[String]) {
        for id in ids {
            if let Some(i) = self.ids.iter().position(|x| x == id) {
                self.busy[i] = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn declared_ids_come_before_cuda_visible_devices_and_the_driver() {
        let smi = || ids(&["0", "1", "2", "3"]);
        let g = Gpus::resolve(None, Some("0,1,2".into()), Some("3".into()), smi).unwrap();
        assert_eq!((g.ids, g.source), (ids(&["0", "1", "2"]), GPUS_ENV));
        let g = Gpus::resolve(None, None, Some("3, 1".into()), smi).unwrap();
        assert_eq!(g.ids, ids(&["3", "1"]));
        let g = Gpus::resolve(None, None, Some(String::new()), smi).unwrap();
        assert!(g.ids.is_empty(), "CUDA_VISIBLE_DEVICES= hides every GPU");
        let g = Gpus::resolve(None, None, None, smi).unwrap();
        assert_eq!((g.ids.len(), g.source), (4, "nvidia-smi"));
    }

    #[test]
    fn the_flag_picks_among_the_available_devices() {
        let smi = || ids(&["0", "1", "2"]);
        let g = Gpus::resolve(Some("2,0"), None, None, smi).unwrap();
        assert_eq!((g.ids, g.source), (ids(&["2", "0"]), "--gpus"));
        let e = Gpus::resolve(Some("0,5"), None, None, smi).unwrap_err();
        assert!(e.message.contains("device `5`"), "{}", e.message);
        assert!(
            e.message.contains("0,1,2, from nvidia-smi"),
            "{}",
            e.message
        );
        let e = Gpus::resolve(Some("0,,1"), None, None, smi).unwrap_err();
        assert!(e.message.contains("empty id"), "{}", e.message);
        let e = Gpus::resolve(None, Some("0,0".into()), None, smi).unwrap_err();
        assert!(e.message.contains("listed twice"), "{}", e.message);
    }

    #[test]
    fn leases_are_whole_devices_never_lent_twice() {
        let mut l = Leases::new(&Gpus {
            ids: ids(&["0", "1", "2"]),
            source: GPUS_ENV,
        });
        let a = l.take(2).unwrap();
        assert_eq!(a, ids(&["0", "1"]));
        assert!(l.take(2).is_none(), "one free");
        let b = l.take(1).unwrap();
        assert_eq!(b, ids(&["2"]));
        assert_eq!(l.free(), 0);
        l.give_back(&a);
        assert_eq!(l.take(2).unwrap(), ids(&["0", "1"]));
        assert_eq!(l.take(0).unwrap(), Vec::<String>::new());
    }
}
