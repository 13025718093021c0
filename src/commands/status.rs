//! `rst status FILE`: every stage instance, cached or stale and why (and, with the Slurm
//! executor, queued or running there).
use std::io::Write;
use std::process::ExitCode;

use crate::cli::PipelineArgs;
use crate::error::Result;
use crate::exec::slurm;
use crate::project::{cache_dir, open_store};
use crate::status::{status_lines_with, StatusLine, Tier};

pub fn run(
    args: &PipelineArgs,
    targets: &[String],
    json: bool,
    remote: &crate::remote::Flags,
) -> Result<ExitCode> {
    let store = open_store(&cache_dir(&args.cache_dir))?;
    let p = super::load_replayed(args, &store)?.select(targets)?;
    let remote = super::open_remote(remote)?;
    let tier = remote
        .as_ref()
        .map(|r| Tier::Peek(r as &dyn crate::cache::shared::SharedCache));
    let mut lines = status_lines_with(&p, &store, tier)?;
    mark_slurm_jobs(&mut lines, &store);
    mark_pruned_trials(&p, &mut lines, &store);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&lines).expect("status lines serialise")
        );
    } else {
        // Written as it is rendered: a million lines need not be one string first. A
        // closed pipe (`| head`) ends the process quietly (SIGPIPE, see main.rs).
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let _ = render(&lines, &mut out).and_then(|()| out.flush());
    }
    Ok(ExitCode::SUCCESS)
}

/// Stages submitted to Slurm and still queued or running there.
fn mark_slurm_jobs(lines: &mut [StatusLine], store: &crate::cache::store::Store) {
    let jobs = slurm::outstanding(store.root());
    for l in lines.iter_mut().filter(|l| l.state != "cached") {
        if let Some((id, state)) = l.key.as_ref().and_then(|k| jobs.get(k)) {
            l.state = state;
            l.reasons.insert(0, format!("slurm {id}"));
        }
    }
}

/// Cached trials that a study's pruner stopped: `pruned after epoch N` (their
/// `summary.json` says so).
fn mark_pruned_trials(
    p: &crate::spec::Pipeline,
    lines: &mut [StatusLine],
    store: &crate::cache::store::Store,
) {
    let trial_stages: std::collections::HashSet<&str> = p
        .stages
        .iter()
        .filter(|s| s.trial_of.is_some())
        .map(|s| s.name.as_str())
        .collect();
    for l in lines
        .iter_mut()
        .filter(|l| l.state == "cached" && trial_stages.contains(l.stage.as_str()))
    {
        let Some(artifact) = &l.artifact else {
            continue;
        };
        if let (true, epochs) = crate::stages::search::trial_end(&store.object_path(artifact)) {
            l.reasons.push(match epochs {
                Some(n) => format!("trial pruned after epoch {n}"),
                None => "trial pruned".to_string(),
            });
        }
    }
}

/// One line per instance (state, name, reasons; where a cached one was computed on GPUs),
/// then the count.
fn render(lines: &[StatusLine], out: &mut impl std::io::Write) -> std::io::Result<()> {
    let width = lines.iter().map(|l| l.instance.len()).max().unwrap_or(0);
    for l in lines {
        let on_gpus = (!l.gpus.is_empty()).then(|| format!("computed on GPU {}", l.gpus.join(",")));
        let mut reasons = l
            .reasons
            .iter()
            .map(String::as_str)
            .chain(on_gpus.as_deref());
        match reasons.next() {
            None => writeln!(out, "{:<6}  {:<width$}", l.state, l.instance)?,
            Some(first) => {
                write!(out, "{:<6}  {:<width$}  {first}", l.state, l.instance)?;
                for r in reasons {
                    write!(out, "; {r}")?;
                }
                writeln!(out)?;
            }
        }
    }
    let stale = lines.iter().filter(|l| l.state != "cached").count();
    let remote = lines.iter().filter(|l| l.state == "remote").count();
    let remote = match remote {
        0 => String::new(),
        n => format!(" ({n} of them on the remote: nothing to compute for those)"),
    };
    writeln!(
        out,
        "{} of {} stage instances cached, {stale} to run{remote}",
        lines.len() - stale,
        lines.len()
    )
}
