//! Where the remote is and how to reach it, from (first found wins) the command line
//! (`--remote URL`, `--remote-read-only`, `--no-remote`), the environment (`RST_REMOTE`,
//! `RST_REMOTE_READ_ONLY`, `RST_REMOTE_ENDPOINT`) and the project's `rst.toml`:
//!
//! ```toml
//! [remote]
//! url = "s3://lab-cache/regsl"        # bucket, and a key prefix (optional)
//! endpoint = "http://127.0.0.1:9000"  # MinIO, Ceph, Garage, moto; omit for AWS
//! region = "eu-west-1"                # default: the profile's, else us-east-1
//! profile = "lab"                     # the AWS profile (default: AWS_PROFILE, else default)
//! read_only = true                    # never write to it
//! ```
//! Credentials are not settings: they come from the standard AWS variables and profile
//! files (`credentials`), so no secret is ever written into a project.
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Location, UserError};

/// The project settings file, at the project root (the directory rst runs in).
pub const PROJECT_FILE: &str = "rst.toml";

/// What the command line says about the remote.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub remote: Option<String>,
    pub read_only: bool,
    pub no_remote: bool,
}

/// A resolved remote.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `s3://bucket/prefix` as given (trailing slashes dropped): how rst names it.
    pub url: String,
    pub bucket: String,
    /// The key prefix inside the bucket, without slashes at either end ("" for none).
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub read_only: bool,
    /// Where the URL came from (`--remote`, `RST_REMOTE`, `rst.toml:2:7`), for messages.
    pub from: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    remote: Option<RemoteSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteSection {
    url: Option<toml::Spanned<String>>,
    endpoint: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    #[serde(default)]
    read_only: bool,
}

/// The remote to use, if any.
pub fn resolve(flags: &Flags, project: &Path) -> Result<Option<Settings>, UserError> {
    resolve_with(flags, project, &|name| std::env::var(name).ok())
}

fn resolve_with(
    flags: &Flags,
    project: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Settings>, UserError> {
    if flags.no_remote {
        return Ok(None);
    }
    let file_path = project.join(PROJECT_FILE);
    let (file, text) = read_project_file(&file_path)?;
    let section = file.remote.unwrap_or_default();
    let env_set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let (url, from, location) = if let Some(url) = &flags.remote {
        (url.clone(), "--remote".to_string(), None)
    } else if let Some(url) = env_set("RST_REMOTE") {
        (url, "RST_REMOTE".to_string(), None)
    } else if let Some(url) = &section.url {
        let loc = location_of(&file_path, &text, url.span().start);
        (url.get_ref().clone(), loc.to_string(), Some(loc))
    } else {
        return Ok(None);
    };
    let (bucket, prefix) = parse_url(&url).map_err(|why| {
        UserError::new(format!(
            "the remote {url:?} (from {from}) is not an S3 URL: {why}"
        ))
        .at(location)
        .help("write it as s3://BUCKET or s3://BUCKET/PREFIX (e.g. s3://lab-cache/regsl)")
    })?;
    let read_only = flags.read_only
        || env_set("RST_REMOTE_READ_ONLY").is_some_and(|v| is_true(&v))
        || section.read_only;
    let endpoint = env_set("RST_REMOTE_ENDPOINT").or(section.endpoint);
    if let Some(ep) = &endpoint {
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            return Err(UserError::new(format!(
                "the remote endpoint {ep:?} is not an http:// or https:// URL"
            ))
            .help("set RST_REMOTE_ENDPOINT or rst.toml's [remote] endpoint to the server's URL, e.g. http://127.0.0.1:9000"));
        }
    }
    let prefix_url = if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    };
    Ok(Some(Settings {
        url: prefix_url,
        bucket,
        prefix,
        endpoint,
        region: section.region,
        profile: section.profile,
        read_only,
        from,
    }))
}

fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// `rst.toml`, parsed (an empty file when there is none), and its text.
fn read_project_file(path: &Path) -> Result<(ProjectFile, String), UserError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((ProjectFile::default(), String::new()))
        }
        Err(e) => {
            return Err(UserError::new(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    match toml::from_str::<ProjectFile>(&text) {
        Ok(f) => Ok((f, text)),
        Err(e) => {
            let loc = e.span().map(|span| location_of(path, &text, span.start));
            Err(UserError::new(e.message().to_string())
                .at(loc)
                .with_source_line(&text)
                .help("rst.toml holds [remote] with url, endpoint, region, profile and read_only (see the README's Remote cache section)"))
        }
    }
}

fn location_of(file: &Path, text: &str, offset: usize) -> Location {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    Location {
        file: PathBuf::from(file),
        line,
        column,
    }
}

/// `s3://bucket[/prefix]` → (bucket, prefix without slashes at its ends).
fn parse_url(url: &str) -> Result<(String, String), String> {
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err("it does not start with s3://".to_string());
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if !valid_bucket {
        return Err(format!(
            "{bucket:?} is not a bucket name (3 to 63 lower-case letters, digits, dots and hyphens)"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|seg| seg == "." || seg == "..")
        || prefix.contains("//")
        || prefix.chars().any(|c| c.is_control())
    {
        return Err(format!(
            "the prefix {prefix:?} has an empty, . or .. segment"
        ));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn urls_are_parsed_and_refused_with_a_reason() {
        assert_eq!(
            parse_url("s3://lab-cache").unwrap(),
            ("lab-cache".into(), "".into())
        );
        assert_eq!(
            parse_url("s3://lab-cache/regsl/v1/").unwrap(),
            ("lab-cache".into(), "regsl/v1".into())
        );
        assert!(parse_url("http://x/y").unwrap_err().contains("s3://"));
        assert!(parse_url("s3://Lab_Cache")
            .unwrap_err()
            .contains("bucket name"));
        assert!(parse_url("s3://ab").unwrap_err().contains("bucket name"));
        assert!(parse_url("s3://lab/a/../b").unwrap_err().contains(".."));
    }

    #[test]
    fn the_flag_wins_over_the_environment_and_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(PROJECT_FILE),
            "[remote]\nurl = \"s3://from-file/p\"\nendpoint = \"http://127.0.0.1:9\"\nread_only = true\n",
        )
        .unwrap();
        let none = env_of(&[]);
        let s = resolve_with(&Flags::default(), d.path(), &none)
            .unwrap()
            .unwrap();
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("from-file", "p"));
        assert!(s.read_only);
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert!(s.from.ends_with("rst.toml:2:7"), "{}", s.from);
        let env = env_of(&[("RST_REMOTE", "s3://from-env")]);
        let s = resolve_with(&Flags::default(), d.path(), &env)
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.url.as_str(), s.from.as_str()),
            ("s3://from-env", "RST_REMOTE")
        );
        let flags = Flags {
            remote: Some("s3://from-flag/x/".into()),
            ..Flags::default()
        };
        let s = resolve_with(&flags, d.path(), &env).unwrap().unwrap();
        assert_eq!(s.url, "s3://from-flag/x");
        let off = Flags {
            no_remote: true,
            ..flags
        };
        assert_eq!(resolve_with(&off, d.path(), &env).unwrap(), None);
    }

    #[test]
    fn a_bad_project_file_names_its_line() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(PROJECT_FILE), "[remote]\nurll = \"s3://x\"\n").unwrap();
        let e = resolve_with(&Flags::default(), d.path(), &env_of(&[])).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("rst.toml:2:1"), "{text}");
        assert!(text.contains("unknown field `urll`"), "{text}");
        std::fs::write(d.path().join(PROJECT_FILE), "[remote]\nurl = \"gs://x\"\n").unwrap();
        let e = resolve_with(&Flags::default(), d.path(), &env_of(&[])).unwrap_err();
        assert!(e.to_string().contains("rst.toml:2:7"), "{e}");
        assert!(e.to_string().contains("not an S3 URL"), "{e}");
    }
}
