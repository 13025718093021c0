//! Subcommands and flags.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "rst", version, about = "Declarative, content-cached experiment pipelines", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// The pipeline file (YAML).
    pub file: PathBuf,
    /// Override a pipeline parameter: --set key=value (value is YAML: 0.1, [1,2], text). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Cache directory [default: ./cache]
    #[arg(long, env = "RST_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Refuse a pipeline that would expand to more stage instances than N (checked before expanding).
    #[arg(long, env = "RST_MAX_INSTANCES", value_name = "N", default_value_t = crate::spec::DEFAULT_MAX_INSTANCES)]
    pub max_instances: u64,
}

/// Stages, instances or slices (`'regsl[rate=0.4]'`) to work on, with what they need.
#[derive(Args, Debug, Clone, Default)]
pub struct TargetArgs {
    /// Only these stages, instances (`noisy[rate=0.4]`) or slices, and what they need [default: all]
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a pipeline: stages in dependency order, independent ones in parallel, cached ones skipped.
    Run {
        #[command(flatten)]
        p: PipelineArgs,
        #[command(flatten)]
        targets: TargetArgs,
        /// Thread budget for concurrent stages [default: number of cores]
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Recompute this stage (or instance) even if cached. Repeatable.
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Keep running independent branches after a stage fails.
        #[arg(long)]
        keep_going: bool,
        /// Use files from the network that no sha256 pins (trust on first use; the log prints the digest to pin).
        #[arg(long)]
        accept_new_checksums: bool,
        /// Publish to results/<pipeline>/ even though its results come from a run with other `--set` overrides (or none).
        #[arg(long)]
        replace_results: bool,
        #[command(flatten)]
        remote: RemoteArgs,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Show every stage instance: cached, or stale and why.
    Status {
        #[command(flatten)]
        p: PipelineArgs,
        #[command(flatten)]
        targets: TargetArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Upload to the remote cache every cached stage the pipelines use now (entries and artifacts).
    Push {
        #[command(flatten)]
        files: SyncArgs,
    },
    /// Download from the remote cache every stage of the pipelines it has and this cache lacks (verified; nothing is computed).
    Pull {
        #[command(flatten)]
        files: SyncArgs,
    },
    /// Print the pipeline's DAG.
    Graph {
        #[command(flatten)]
        p: PipelineArgs,
        #[command(flatten)]
        targets: TargetArgs,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// Check a pipeline file without running anything.
    Check {
        #[command(flatten)]
        p: PipelineArgs,
    },
    /// Re-hash every cached artifact; quarantine corrupted ones (they are recomputed next run).
    Verify {
        #[arg(long, env = "RST_CACHE_DIR", value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Remove cache entries and artifacts that none of the listed pipelines references.
    Gc {
        /// Pipeline files whose current stages are kept.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long, env = "RST_CACHE_DIR", value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show everything a stage's artifact or a published result came from, down to the downloaded files.
    Lineage {
        /// A pipeline file (then name STAGE), or a published result (results/<pipeline>/table.md).
        target: PathBuf,
        /// Stage or instance name (with a pipeline file).
        stage: Option<String>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long, env = "RST_CACHE_DIR", value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List past runs, newest first (`rst log RUN_ID` shows one).
    Log {
        /// A run id (or its first characters).
        run: Option<String>,
        #[arg(long, env = "RST_CACHE_DIR", value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Show at most N runs.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
    },
    /// Recompute cached stages in a scratch cache and compare with the cached artifacts (exit 0: all reproduced, 1: some differ).
    Audit {
        #[command(flatten)]
        p: PipelineArgs,
        /// Only stages or instances matching this pattern (`*` matches any characters).
        #[arg(long, value_name = "PATTERN")]
        stage: Option<String>,
        /// Audit a random sample of N of the chosen stage instances.
        #[arg(long, value_name = "N")]
        sample: Option<usize>,
        /// Seed of the --sample choice.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Thread budget for concurrent recomputations [default: number of cores]
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Accept accuracy changes up to X percentage points (audits across machines).
        #[arg(long, value_name = "X")]
        tolerance: Option<f64>,
    },
    /// The parameters of a stage kind: types, defaults and what each does (from the structs the validator uses).
    Params {
        /// download, split, noise, command, train, evaluate, aggregate or search.
        kind: Option<String>,
        /// Every kind's reference.
        #[arg(long, conflicts_with = "kind")]
        all: bool,
        /// The JSON schema instead.
        #[arg(long)]
        json: bool,
    },
    /// What changed between two runs: overrides and parameters, the stage instances computed in one but not the other, every published table cell side by side (default: the last two runs of the newest run's pipeline).
    Diff {
        /// A run id or its first characters (default: the run before B of the same pipeline).
        a: Option<String>,
        /// Another run id (default: the newest run; with only A given, A is compared with the run before it).
        b: Option<String>,
        #[arg(long, env = "RST_CACHE_DIR", value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// What the cache holds for a stage, instance or slice: per instance its key, how and when it was computed, the record of its key (kind, params, inputs) and the files of its artifact with their sizes.
    Show {
        #[command(flatten)]
        p: PipelineArgs,
        /// A stage (`train`), an instance (`noisy[rate=0.4]`) or a slice (`regsl[rate=0.4]`).
        target: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write the HTML report of a run (default: the newest successful one) to results/<pipeline>/report.html: tables and their statistics, plots, training curves, a timeline, the DAG, parameters, provenance, the latest audit.
    Report {
        #[command(flatten)]
        p: PipelineArgs,
        /// Where to write it [default: results/<pipeline>/report.html]
        #[arg(long, short = 'o', value_name = "PATH")]
        output: Option<PathBuf>,
        /// The run to report on: a run id or its first characters (`rst log` lists them).
        #[arg(long, value_name = "ID")]
        run: Option<String>,
    },
    /// Export the last run of a pipeline as a Workflow Run RO-Crate (ro-crate-metadata.json, the pipeline file, published results, logs).
    ExportCrate {
        #[command(flatten)]
        p: PipelineArgs,
        /// Directory to write the crate into (new or empty).
        dir: PathBuf,
    },
    /// Internal: compute one stage (what `run` starts per stage, and what a cluster job runs).
    #[command(hide = true)]
    Worker { job: PathBuf },
}

/// The remote cache shared with other machines (S3: AWS, MinIO, Ceph, Garage, moto).
#[derive(Args, Debug, Clone, Default)]
pub struct RemoteArgs {
    /// Remote cache: s3://BUCKET[/PREFIX] [default: RST_REMOTE, else rst.toml's [remote] url]
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    /// Read from the remote, never write to it (also RST_REMOTE_READ_ONLY=1, or read_only = true in rst.toml)
    #[arg(long)]
    pub remote_read_only: bool,
    /// Use no remote, whatever RST_REMOTE or rst.toml say.
    #[arg(long, conflicts_with_all = ["remote", "remote_read_only"])]
    pub no_remote: bool,
}

/// `push` and `pull`: the pipelines, and the remote.
#[derive(Args, Debug, Clone)]
pub struct SyncArgs {
    /// Pipeline files whose current stages are sent or fetched.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long, env = "RST_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Remote cache: s3://BUCKET[/PREFIX] [default: RST_REMOTE, else rst.toml's [remote] url]
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
}

/// Where `run` computes stages.
#[derive(Args, Debug, Clone, Default)]
pub struct ExecArgs {
    /// Where stages run: worker processes here, or one Slurm job per stage.
    #[arg(long, value_enum, default_value = "local")]
    pub executor: ExecutorKind,
    /// Slurm partition for the stage jobs (--executor slurm).
    #[arg(long, value_name = "P")]
    pub partition: Option<String>,
    /// Slurm account for the stage jobs (--executor slurm).
    #[arg(long, value_name = "A")]
    pub account: Option<String>,
    /// Any other sbatch option for every stage job: --slurm-opt qos=high. Repeatable.
    #[arg(long = "slurm-opt", value_name = "KEY=VALUE")]
    pub slurm_opt: Vec<String>,
    /// Run up to N ready stages with the same resources in one Slurm job, one after
    /// another (for sweeps of many short stages) [default: 1]
    #[arg(long = "slurm-bundle", value_name = "N")]
    pub slurm_bundle: Option<usize>,
    /// GPUs the local executor lends to stages, whole devices each (ids as
    /// CUDA_VISIBLE_DEVICES takes them: 0,2) [default: RST_GPUS, else
    /// CUDA_VISIBLE_DEVICES, else those nvidia-smi -L lists]
    #[arg(long, value_name = "IDS")]
    pub gpus: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    #[default]
    Local,
    Slurm,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}
