//! AWS credentials and settings from the standard places, for object_store, which reads
//! the `AWS_*` variables itself but not the profile files: `AWS_SHARED_CREDENTIALS_FILE`
//! (default `~/.aws/credentials`, sections `[NAME]`) and `AWS_CONFIG_FILE` (default
//! `~/.aws/config`, sections `[profile NAME]` or `[default]`), for the profile named by
//! `AWS_PROFILE`, else rst.toml's `profile`, else `default`.
use std::path::{Path, PathBuf};

use crate::error::UserError;

/// What a profile holds (keys in the credentials file; region and endpoint in either).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Profile {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// The profile to use and the files it is read from.
pub fn load(
    configured: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Profile, UserError> {
    let home = env("HOME").map(PathBuf::from);
    let file = |var: &str, default: &str| {
        env(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    let explicit = env("AWS_PROFILE").or_else(|| configured.map(str::to_string));
    let name = explicit.clone().unwrap_or_else(|| "default".to_string());
    let credentials = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config = file("AWS_CONFIG_FILE", "config");
    let mut found = false;
    let mut profile = Profile::default();
    if let Some(path) = &credentials {
        if let Some(section) = section(path, &[name.as_str()])? {
            found = true;
            profile.access_key_id = section.get("aws_access_key_id").map(str::to_string);
            profile.secret_access_key = section.get("aws_secret_access_key").map(str::to_string);
            profile.session_token = section.get("aws_session_token").map(str::to_string);
            profile.region = section.get("region").map(str::to_string);
        }
    }
    if let Some(path) = &config {
        let titled = format!("profile {name}");
        let names: Vec<&str> = if name == "default" {
            vec!["default", "profile default"]
        } else {
            vec![titled.as_str()]
        };
        if let Some(section) = section(path, &names)? {
            found = true;
            if profile.region.is_none() {
                profile.region = section.get("region").map(str::to_string);
            }
            profile.endpoint_url = section.get("endpoint_url").map(str::to_string);
        }
    }
    if !found && explicit.is_some() {
        let files: Vec<String> = [credentials, config]
            .into_iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect();
        return Err(UserError::new(format!(
            "the AWS profile {name:?} is in none of {}",
            files.join(", ")
        ))
        .help("add it there (aws configure --profile NAME), or set AWS_PROFILE / rst.toml's profile to one that exists"));
    }
    Ok(profile)
}

/// The first of `names` among the sections of the INI file at `path` (None: no such file
/// or section).
fn section(path: &Path, names: &[&str]) -> Result<Option<ini::Properties>, UserError> {
    let ini = match ini::Ini::load_from_file(path) {
        Ok(ini) => ini,
        Err(ini::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(
                UserError::new(format!("cannot read {}: {e}", path.display()))
                    .help("fix the file's syntax (INI: [section] and key = value lines)"),
            )
        }
    };
    Ok(names.iter().find_map(|n| ini.section(Some(*n)).cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_credentials_file_and_the_region_from_config() {
        let d = tempfile::tempdir().unwrap();
        let aws = d.path().join(".aws");
        std::fs::create_dir(&aws).unwrap();
        std::fs::write(
            aws.join("credentials"),
            "[default]\naws_access_key_id = A\naws_secret_access_key = S\n[lab]\naws_access_key_id = LA\naws_secret_access_key = LS\n",
        )
        .unwrap();
        std::fs::write(
            aws.join("config"),
            "[default]\nregion = eu-west-1\n[profile lab]\nregion = us-west-2\nendpoint_url = http://127.0.0.1:9\n",
        )
        .unwrap();
        let home = d.path().display().to_string();
        let env = |vars: Vec<(&'static str, String)>| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let p = load(None, &env(vec![("HOME", home.clone())])).unwrap();
        assert_eq!(p.access_key_id.as_deref(), Some("A"));
        assert_eq!(p.region.as_deref(), Some("eu-west-1"));
        let p = load(Some("lab"), &env(vec![("HOME", home.clone())])).unwrap();
        assert_eq!(p.secret_access_key.as_deref(), Some("LS"));
        assert_eq!(p.region.as_deref(), Some("us-west-2"));
        assert_eq!(p.endpoint_url.as_deref(), Some("http://127.0.0.1:9"));
        let e = load(
            None,
            &env(vec![("HOME", home), ("AWS_PROFILE", "nope".into())]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("profile \"nope\""), "{e}");
    }
}
