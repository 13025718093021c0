//! Shell quoting (POSIX `sh`), for the scripts rst writes and the command lines it shows.

/// `s` as one `sh` word, always quoted (`it's` → `'it'\''s'`).
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A command line as a user would type it: a word with nothing `sh` treats specially as
/// it is, any other quoted.
pub fn words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                quote(a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let argv = ["rst", "run", "p.yaml", "--set", "seeds=[1, 2]", "it's"].map(String::from);
        assert_eq!(
            words(&argv),
            "rst run p.yaml --set 'seeds=[1, 2]' 'it'\\''s'"
        );
        assert_eq!(quote(""), "''");
    }
}
