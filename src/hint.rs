//! "Did you mean" hints for a misspelt name: one scoring rule and one wording, shared by
//! the spec (keys, kinds, stages, inputs), the stages (params, splits, rows), the data
//! readers (classes, variants) and the CLI (partitions, targets).
//!
//! It sits at the bottom of the module graph (it needs nothing of rst), so every layer
//! can use it without importing another.

/// The candidate closest to `word` (Jaro-Winkler above 0.75), if any is close.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// "did you mean `x`?" for the candidate closest to `word`, if any is close.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(word, candidates).map(|s| format!("did you mean `{s}`?"))
}

/// The hint for serde's "unknown field `x`, expected one of `a`, `b`" (the closest key,
/// else the valid keys) and "unknown variant `x`, expected one of `a`, `b`" (the closest
/// value; a spelling that differs only in case, `-`, `_` or blanks, `Top-1` for `top1`,
/// is matched first). `message` may carry text after the list (a location).
pub fn serde_unknown(message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = word_and_expected(rest)?;
        return did_you_mean(field, expected.iter().copied()).or_else(|| {
            (!expected.is_empty()).then(|| format!("valid keys: {}", expected.join(", ")))
        });
    }
    let rest = message.strip_prefix("unknown variant `")?;
    let (word, expected) = word_and_expected(rest)?;
    let squash = |s: &str| s.to_ascii_lowercase().replace(['-', '_', ' '], "");
    match expected.iter().find(|e| squash(e) == squash(word)) {
        Some(same) => Some(format!("did you mean `{same}`?")),
        None => did_you_mean(word, expected.iter().copied())
            .or_else(|| (!expected.is_empty()).then(|| format!("one of: {}", expected.join(", ")))),
    }
}

/// `x`, expected one of `a`, `b` → (`x`, [`a`, `b`]).
fn word_and_expected(rest: &str) -> Option<(&str, Vec<&str>)> {
    let (word, rest) = rest.split_once('`')?;
    Some((word, rest.split('`').skip(1).step_by(2).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            closest("inptus", ["inputs", "params", "kind"]),
            Some("inputs")
        );
        assert_eq!(closest("zzz", ["inputs", "params"]), None);
        assert_eq!(
            did_you_mean("resnet_mini", ["resnet-mini", "resnet50"]).as_deref(),
            Some("did you mean `resnet-mini`?")
        );
    }

    #[test]
    fn serde_messages_become_hints() {
        let field = "unknown field `sed`, expected `rate` or `seed`";
        assert_eq!(
            serde_unknown(field).as_deref(),
            Some("did you mean `seed`?")
        );
        let far = "unknown field `zzz`, expected `rate` or `seed`";
        assert_eq!(
            serde_unknown(far).as_deref(),
            Some("valid keys: rate, seed")
        );
        let variant = "unknown variant `Top-1`, expected one of `top1`, `top5`, `loss`";
        assert_eq!(
            serde_unknown(variant).as_deref(),
            Some("did you mean `top1`?")
        );
        let variant = "unknown variant `exclude_tru`, expected `uniform` or `exclude-true`";
        assert_eq!(
            serde_unknown(variant).as_deref(),
            Some("did you mean `exclude-true`?")
        );
        assert_eq!(serde_unknown("invalid type: string"), None);
    }
}
