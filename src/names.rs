//! What a name the user gives may look like. One rule per kind of name, so the spec and
//! the stages cannot drift apart.

/// A name rst builds on: a stage, a matrix axis, a pipeline parameter, a split or a class
/// subset name. They become YAML references (`stage[axis=value]`), tensor names
/// (`<split>.labels`) and path components, so: ASCII letters, digits, `_` and `-`, not empty.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A file name that stays one path component inside an artifact (`download`'s
/// `files[].name`): not empty, no `/`, `\` or NUL, not `.` or `..`. The error says why.
pub fn plain_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "`{name}` must be a plain file name (no `/`, not `.` or `..`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("noisy-2_b"));
        for bad in ["", "a b", "a.b", "a/b", "é", "a[1]"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(plain_file_name("train-images.gz").is_ok());
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0"] {
            assert!(plain_file_name(bad).is_err(), "{bad:?}");
        }
    }
}
