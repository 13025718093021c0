//! The `command` stage kind: a user program as a stage.
//!
//! ```yaml
//! kind: command
//! inputs: {data: split}
//! params:
//!   argv: [python3, "${project}/scripts/prep.py", "${rate}"]   # or: shell: "sort $RST_IN_DATA/x > $RST_OUT/y"
//!   env: {MODE: fast}
//!   deps: [scripts/prep.py]      # local files whose content goes into the cache key
//! ```
//! The program runs in an empty temporary working directory with:
//! `RST_OUT` (write the artifact here), `RST_WORK` (the working dir), `RST_PROJECT`,
//! `RST_THREADS`, and per input `RST_IN_<NAME>` (paths joined with `:`, unless over 64 KiB),
//! `RST_IN_<NAME>_COUNT`, `RST_IN_<NAME>_<i>`, plus `RST_INPUTS` (the path of a JSON file with instance names,
//! digests and paths). Its stdout and stderr go to the stage log.
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;
use serde_json::Value;

use super::{parse_params, InputDecl, ParamError, StageCtx, StageError, StageKind, StageRunner};

pub struct Command;

/// Set in a worker that was told to stop (SIGINT/SIGTERM; see `exec::local`): a program
/// that exits 0 after its SIGTERM (a `trap`) may have written half an artifact, which must
/// not be stored.
pub static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Params {
    /// The program and its arguments, run without a shell (give this or `shell`).
    #[serde(default)]
    argv: Option<Vec<Value>>,
    /// A `sh -c` script (give this or `argv`); rst fills in `${name}` first, `$${` writes a
    /// literal `${` (the shell's own `$VAR` needs no escape).
    #[serde(default)]
    shell: Option<String>,
    /// Extra environment variables for the program (part of the key).
    #[serde(default)]
    env: BTreeMap<String, Value>,
    /// Declared so that it is type-checked (a list of strings); [`Command::local_deps`]
    /// reads it from the JSON.
    #[serde(default)]
    #[allow(dead_code)]
    deps: Vec<String>,
}

fn scalar_text(v: &Value, what: &str) -> Result<String, ParamError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
        _ => Err(ParamError::new(what, "must be a string, number or boolean")),
    }
}

/// Whether `v` can be a program argument or an environment value (checked per instance of
/// a sweep: the error's path is only built when there is an error).
fn check_scalar(v: &Value, what: impl FnOnce() -> String) -> Result<(), ParamError> {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(()),
        _ => Err(ParamError::new(
            what(),
            "must be a string, number or boolean",
        )),
    }
}

impl Params {
    fn parse(params: &Value) -> Result<Params, ParamError> {
        let p: Params = parse_params(params)?;
        match (&p.argv, &p.shell) {
            (Some(_), Some(_)) => {
                return Err(ParamError::new(
                    "shell",
                    "give either `argv` or `shell`, not both",
                ))
            }
            (None, None) => {
                return Err(ParamError::new(
                    "",
                    "a command stage needs `argv: [program, args...]` or `shell: \"...\"`",
                ))
            }
            (Some(a), None) if a.is_empty() => {
                return Err(ParamError::new("argv", "`argv` is empty")
                    .help("e.g. argv: [python3, script.py]"))
            }
            _ => {}
        }
        for (i, a) in p.argv.iter().flatten().enumerate() {
            check_scalar(a, || format!("argv[{i}]"))?;
        }
        for (k, v) in &p.env {
            check_scalar(v, || format!("env.{k}"))?;
            if k.starts_with("RST_") {
                return Err(ParamError::new(
                    format!("env.{k}"),
                    "names starting with RST_ are set by rst",
                ));
            }
        }
        Ok(p)
    }
}

impl StageKind for Command {
    fn params_schema(&self) -> schemars::Schema {
        params_schema()
    }
    fn name(&self) -> &'static str {
        "command"
    }
    fn version(&self) -> u32 {
        1
    }
    fn check(&self, params: &Value) -> Result<(), ParamError> {
        Params::parse(params).map(|_| ())
    }
    fn inputs(&self) -> Option<&'static [InputDecl]> {
        None
    }
    /// `deps:` as [`Command::check`] accepted it (a list of strings), read without parsing
    /// the params a second time (a sweep of a million instances does this for each).
    fn local_deps(&self, params: &Value) -> Vec<String> {
        params
            .get("deps")
            .and_then(Value::as_array)
            .map(|deps| {
                deps.iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl StageRunner for Command {
    fn kind(&self) -> &'static dyn StageKind {
        &Command
    }
    fn run(&self, ctx: &StageCtx<'_>) -> Result<(), StageError> {
        let mut program = prepare(ctx)?;
        // stdout is rst's progress channel: send the program's stdout to the log.
        program.cmd.stdout(Stdio::from(
            std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| StageError::io("stderr", e))?,
        ));
        program.cmd.stderr(Stdio::inherit());
        let status = program.cmd.status().map_err(|e| program.start_error(e))?;
        program.judge(ctx, status, STOP_REQUESTED.load(Ordering::SeqCst))
    }
}

/// A command stage's program, ready to start: the caller sets where its stdout and stderr
/// go and how it is started (`rst worker` waits for it as its child; the local executor
/// starts it in a process group of its own, see `exec::direct`).
pub struct Program {
    pub cmd: std::process::Command,
    /// The program as the user wrote it, for messages.
    pub what: String,
}

/// Builds the stage's program: its argv or `sh -c`, the working directory, and the
/// environment (`RST_OUT`, `RST_IN_*`, the inputs file, the stage's `env`).
pub fn prepare(ctx: &StageCtx<'_>) -> Result<Program, StageError> {
    use std::os::unix::process::CommandExt;
    let p = Params::parse(ctx.params)
        .map_err(|e| StageError::user(format!("params {}: {}", e.path, e.message)))?;
    let mut cmd = if let Some(shell) = &p.shell {
        let mut c = std::process::Command::new(program_path("sh", p.env.contains_key("PATH")));
        // The name the program sees as argv[0] stays the one it was asked by.
        c.arg0("sh");
        c.arg("-c").arg(shell);
        c
    } else {
        let argv: Vec<String> = p
            .argv
            .iter()
            .flatten()
            .map(|a| scalar_text(a, "argv").unwrap_or_default())
            .collect();
        let mut c = std::process::Command::new(program_path(&argv[0], p.env.contains_key("PATH")));
        c.arg0(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    // The inputs as JSON in a file: with hundreds of inputs it would exceed the
    // kernel's 128 KiB limit for one environment string.
    let inputs_file = ctx.work.join("rst-inputs.json");
    std::fs::write(
        &inputs_file,
        serde_json::to_vec_pretty(ctx.inputs).unwrap_or_default(),
    )
    .map_err(|e| StageError::io(inputs_file.display(), e))?;
    cmd.current_dir(ctx.work)
        .env("RST_OUT", ctx.out)
        .env("RST_WORK", ctx.work)
        .env("RST_PROJECT", ctx.project_dir)
        .env("RST_THREADS", ctx.threads.to_string())
        .env("OMP_NUM_THREADS", ctx.threads.to_string())
        .env("RST_INPUTS", &inputs_file)
        .stdin(Stdio::null());
    for (name, arts) in ctx.inputs {
        let var = format!("RST_IN_{}", name.to_uppercase().replace('-', "_"));
        let paths: Vec<String> = arts.iter().map(|a| a.path.display().to_string()).collect();
        let joined = paths.join(":");
        if joined.len() < 64 * 1024 {
            cmd.env(&var, joined);
        }
        cmd.env(format!("{var}_COUNT"), paths.len().to_string());
        for (i, path) in paths.iter().enumerate() {
            cmd.env(format!("{var}_{i}"), path);
        }
    }
    for (k, v) in &p.env {
        cmd.env(k, scalar_text(v, k).unwrap_or_default());
    }
    let what = p.shell.clone().unwrap_or_else(|| {
        p.argv
            .iter()
            .flatten()
            .map(|a| scalar_text(a, "").unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ")
    });
    Ok(Program { cmd, what })
}

/// Where `name` is found on rst's `PATH`, looked up once per process; `name` itself when
/// it has a `/`, when the stage sets its own `PATH` (`path_set`), when `PATH` has a
/// relative entry (found from the stage's work dir, not ours), or when it is not found
/// (the start then fails as it would have).
///
/// Why: the program is otherwise looked up by the standard library at every start, one
/// failing `execve` per `PATH` entry before the one that has it: eight for every `sh` of
/// a thousand-stage run here.
fn program_path(name: &str, path_set: bool) -> std::path::PathBuf {
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};
    static FOUND: OnceLock<Mutex<HashMap<String, Option<PathBuf>>>> = OnceLock::new();
    if name.contains('/') || path_set {
        return PathBuf::from(name);
    }
    let lookup = || -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        if dirs.iter().any(|d| !d.is_absolute()) {
            return None;
        }
        dirs.iter().map(|d| d.join(name)).find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    };
    let mut found = FOUND
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    found
        .entry(name.to_string())
        .or_insert_with(lookup)
        .clone()
        .unwrap_or_else(|| Path::new(name).to_path_buf())
}

impl Program {
    /// The stage's error when the program cannot be started.
    pub fn start_error(&self, e: std::io::Error) -> StageError {
        match e.kind() {
            std::io::ErrorKind::NotFound => {
                StageError::user(format!("command not found: {}", self.what))
            }
            _ => StageError::io(format!("cannot start `{}`", self.what), e),
        }
    }

    /// The stage's result from how its program ended. `stop_requested`: rst was told to
    /// stop meanwhile, so even a 0 exit (a `trap` on SIGTERM) may have left half an
    /// artifact, which must not be stored.
    pub fn judge(
        &self,
        ctx: &StageCtx<'_>,
        status: std::process::ExitStatus,
        stop_requested: bool,
    ) -> Result<(), StageError> {
        use std::os::unix::process::ExitStatusExt;
        let what = &self.what;
        let stopped = matches!(status.signal(), Some(libc::SIGINT | libc::SIGTERM));
        if stop_requested || stopped {
            return Err(StageError::internal(format!(
                "interrupted: `{what}` was stopped ({status})"
            )));
        }
        if status.success() {
            let wrote = std::fs::read_dir(ctx.out)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            return if wrote {
                Ok(())
            } else {
                Err(StageError::user(format!("`{what}` succeeded but wrote nothing to $RST_OUT; a stage's output is what it writes there")))
            };
        }
        let why = match (status.code(), status.signal()) {
            (Some(code), _) => format!("`{what}` exited with status {code}"),
            (None, Some(sig)) => format!("`{what}` was killed by signal {sig}"),
            (None, None) => format!("`{what}` was killed by a signal"),
        };
        // The usual cause of a write error in a stage is a full cache disk, and its log
        // (on the same disk) may not say so: check, and name it.
        match crate::cache::space::nearly_full(ctx.out) {
            Some(free) => Err(StageError::user(format!(
                "{why}: the cache's file system ({}) is full (No space left on device, \
                 {free} bytes free); free space there or use --cache-dir on a larger disk",
                ctx.downloads.parent().unwrap_or(ctx.out).display()
            ))),
            None => Err(StageError::internal(why)),
        }
    }
}

/// The JSON schema of this kind's `params:` (what the validator deserialises), for the
/// parameter reference (`rst params`).
pub fn params_schema() -> schemars::Schema {
    schemars::schema_for!(Params)
}

#[cfg(test)]
mod tests {
    use super::program_path;
    use std::path::Path;

    #[test]
    fn programs_are_found_on_path_once_unless_the_stage_sets_its_own() {
        let sh = program_path("sh", false);
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        assert_eq!(
            program_path("sh", false),
            sh,
            "the same answer from the cache"
        );
        assert_eq!(program_path("sh", true), Path::new("sh"));
        assert_eq!(program_path("./run.sh", false), Path::new("./run.sh"));
        assert_eq!(
            program_path("no-such-program-rst", false),
            Path::new("no-such-program-rst")
        );
    }
}
