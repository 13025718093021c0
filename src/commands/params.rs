//! `rst params [KIND] [--all] [--json]`: the parameters of a stage kind, with types,
//! defaults and descriptions (see [`crate::stages::reference`]).
use std::process::ExitCode;

use crate::error::{Result, UserError};
use crate::stages::reference;

pub fn run(kind: Option<&str>, all: bool, json: bool) -> Result<ExitCode> {
    let kinds: Vec<&str> = reference::kinds().collect();
    if all {
        if json {
            let every: serde_json::Map<String, serde_json::Value> = kinds
                .iter()
                .map(|k| (k.to_string(), reference::schema(k).expect("listed kind")))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&every).expect("schemas serialise")
            );
        } else {
            print!("{}", reference::all_markdown());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(kind) = kind else {
        println!("stage kinds: {}", kinds.join(", "));
        println!("`rst params KIND` shows one kind's parameters; `rst params --all` every kind's");
        return Ok(ExitCode::SUCCESS);
    };
    if !kinds.contains(&kind) {
        let hint = crate::hint::did_you_mean(kind, kinds.iter().copied());
        return Err(UserError::new(format!("unknown stage kind `{kind}`"))
            .help(hint.unwrap_or_else(|| format!("the kinds: {}", kinds.join(", "))))
            .into());
    }
    if json {
        let schema = reference::schema(kind).expect("a listed kind has a schema");
        println!(
            "{}",
            serde_json::to_string_pretty(&schema).expect("schemas serialise")
        );
    } else {
        print!(
            "{}",
            reference::markdown(kind).expect("a listed kind has a schema")
        );
    }
    Ok(ExitCode::SUCCESS)
}
