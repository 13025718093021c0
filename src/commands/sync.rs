//! `rst push FILE...` / `rst pull FILE...`: explicit sync of what pipelines use with the
//! remote cache (`rst run --remote` does both as it goes). Push sends every instance
//! cached here (object first, entry last; entries the remote has are skipped); pull
//! fetches every instance the remote has and this cache lacks, level by level (a key
//! needs its inputs' artifacts), each object verified before it is stored. Neither runs
//! a stage.
use std::path::PathBuf;
use std::process::ExitCode;

use crate::cache::shared::SharedCache;
use crate::error::{Result, UserError};
use crate::project::{cache_dir, open_store};
use crate::remote::transfer::Uploaded;
use crate::status::{status_lines, status_lines_with, Tier};

fn open(remote: Option<String>, what: &str, entries: u64) -> Result<crate::remote::Remote> {
    let flags = crate::remote::Flags {
        remote,
        ..Default::default()
    };
    match super::open_remote(&flags)? {
        Some(r) => Ok(r.with_progress(what, entries)),
        None => Err(UserError::new(format!("rst {what}: no remote cache is set"))
            .help("pass --remote s3://BUCKET/PREFIX, set RST_REMOTE, or add [remote] url = \"s3://...\" to rst.toml")
            .into()),
    }
}

pub fn push(
    files: &[PathBuf],
    set: &[String],
    cache: &Option<PathBuf>,
    remote: Option<String>,
) -> Result<ExitCode> {
    let store = open_store(&cache_dir(cache))?;
    let mut keys: Vec<String> = Vec::new();
    let mut not_cached = 0;
    for f in files {
        let p = super::replayed(f, set, crate::spec::DEFAULT_MAX_INSTANCES, &store)?;
        for l in status_lines(&p, &store)? {
            match (l.state, l.key) {
                ("cached", Some(k)) => keys.push(k),
                _ => not_cached += 1,
            }
        }
    }
    keys.sort();
    keys.dedup();
    let remote = open(remote, "push", keys.len() as u64)?;
    if remote.read_only() {
        return Err(UserError::new(format!(
            "rst push: the remote {} is read-only (RST_REMOTE_READ_ONLY or rst.toml's read_only)",
            remote.url()
        ))
        .help("unset RST_REMOTE_READ_ONLY or read_only to write to it")
        .into());
    }
    let results = remote.upload_all(&store, &keys);
    let failed: Vec<String> = keys
        .iter()
        .zip(&results)
        .filter_map(|(k, r)| {
            r.as_ref()
                .err()
                .map(|why| format!("{}: {why}", crate::human::short(k)))
        })
        .collect();
    let gone = results
        .iter()
        .filter(|r| matches!(r, Ok(Uploaded::Gone)))
        .count();
    println!(
        "{}",
        remote
            .summary()
            .unwrap_or_else(|| format!("remote {}: nothing to push", remote.url()))
    );
    if not_cached > 0 {
        println!(
            "{not_cached} stage instance{} not cached here, so not pushed (run the pipeline first)",
            if not_cached == 1 { " is" } else { "s are" }
        );
    }
    if gone > 0 {
        println!("{gone} entries were removed from the local cache meanwhile");
    }
    if !failed.is_empty() {
        let mut u = UserError::new(format!(
            "{} of {} uploads to {} failed:\n  {}",
            failed.len(),
            keys.len(),
            remote.url(),
            failed.join("\n  ")
        ));
        u.help = Some("what was pushed stays; run rst push again to send the rest".to_string());
        return Err(u.into());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn pull(
    files: &[PathBuf],
    set: &[String],
    cache: &Option<PathBuf>,
    remote: Option<String>,
) -> Result<ExitCode> {
    let store = open_store(&cache_dir(cache))?;
    let pipelines = files
        .iter()
        .map(|f| super::replayed(f, set, crate::spec::DEFAULT_MAX_INSTANCES, &store))
        .collect::<Result<Vec<_>>>()?;
    let total: usize = pipelines.iter().map(|p| p.instances.len()).sum();
    let remote = open(remote, "pull", total as u64)?;
    let mut missing = 0;
    let mut rejected = Vec::new();
    // One batch at a time, so that a fetch's writes are durable before the next reads.
    let batch = crate::cache::durable::LazyBatch::new(&store);
    batch.ensure()?;
    for p in &pipelines {
        let lines = status_lines_with(p, &store, Some(Tier::Fetch(&remote as &dyn SharedCache)))?;
        for l in &lines {
            match l.state {
                "cached" | "fetched" => {}
                _ => {
                    missing += 1;
                    if let Some(why) = l.reasons.iter().find(|r| r.starts_with("not fetched: ")) {
                        rejected.push(format!("{}: {}", l.instance, &why["not fetched: ".len()..]));
                    }
                }
            }
        }
    }
    batch.commit()?;
    println!(
        "{}",
        remote
            .summary()
            .unwrap_or_else(|| format!("remote {}: nothing to pull", remote.url()))
    );
    for r in &rejected {
        eprintln!("warning: {r}");
    }
    if missing > 0 {
        println!(
            "{missing} stage instance{} neither here nor on the remote (rst run computes {})",
            if missing == 1 { " is" } else { "s are" },
            if missing == 1 { "it" } else { "them" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
