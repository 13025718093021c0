//! The pipeline file as written: serde structs that reject unknown keys. Nothing here is
//! interpolated or checked beyond its YAML type; [`super::build`] does that by phase.
use indexmap::IndexMap;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPipeline {
    pub name: String,
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(default)]
    pub params: IndexMap<String, serde_yaml::Value>,
    /// Defaults of every stage's cluster resources.
    #[serde(default)]
    pub resources: super::resources::RawResources,
    /// Stage files whose parameters and stages join this pipeline's (`spec::include`).
    #[serde(default)]
    pub include: Vec<RawInclude>,
    /// How torch stages choose CPU kernels, unless a stage says otherwise (`crate::numerics`).
    #[serde(default)]
    pub numerics: Option<crate::numerics::Numerics>,
    pub stages: IndexMap<String, RawStage>,
}

/// One `include:` item: a stage file, and values for its parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInclude {
    /// Relative to the including file's folder.
    pub file: String,
    #[serde(default)]
    pub params: IndexMap<String, serde_yaml::Value>,
}

/// An included stage file: parameters with their defaults, and stages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFragment {
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(default)]
    pub params: IndexMap<String, serde_yaml::Value>,
    pub stages: IndexMap<String, RawStage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStage {
    pub kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(default)]
    pub params: Option<serde_yaml::Value>,
    #[serde(default)]
    pub inputs: IndexMap<String, RawInput>,
    #[serde(default)]
    pub matrix: IndexMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub threads: Option<serde_yaml::Value>,
    #[serde(default)]
    pub resources: super::resources::RawResources,
    /// This stage's numerics mode (torch stages; default: the pipeline's, else native).
    #[serde(default)]
    pub numerics: Option<crate::numerics::Numerics>,
    #[serde(default)]
    pub publish: Option<Publish>,
    /// The `search` stage this stage is one trial of: it is expanded once per proposed
    /// trial of each of that study's instances (see `spec::trials`).
    #[serde(default)]
    pub trial_of: Option<String>,
    /// A study (`tune[rate=${rate}]`) whose best trial's values this stage binds (see
    /// `spec::best`).
    #[serde(default)]
    pub best: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawInput {
    One(String),
    Many(Vec<String>),
}

impl RawInput {
    /// The references as written, with the source-map path of each.
    pub fn items<'a>(&'a self, path: &'a str) -> impl Iterator<Item = (String, &'a str)> + 'a {
        let (many, list): (bool, &[String]) = match self {
            RawInput::One(s) => (false, std::slice::from_ref(s)),
            RawInput::Many(v) => (true, v),
        };
        list.iter().enumerate().map(move |(j, s)| {
            let p = if many {
                format!("{path}[{j}]")
            } else {
                path.to_string()
            };
            (p, s.as_str())
        })
    }

    /// Whether one of the references names `stage` (for locating a cycle).
    pub fn refers_to(&self, stage: &str) -> bool {
        self.items("")
            .any(|(_, s)| s.split('[').next().map(str::trim) == Some(stage))
    }
}

/// Where a stage's artifacts are copied under `results/<pipeline file stem>/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Publish {
    Flag(bool),
    Dir(String),
}
