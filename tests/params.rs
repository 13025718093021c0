//! `rst params` (issue #14): the parameter reference of each stage kind from the real
//! binary; an unknown kind is a user error with a suggestion.
use crate::common::TestDir;

#[test]
fn params_prints_each_kind_and_refuses_an_unknown_one() {
    let t = TestDir::new();
    let out = t.ok(&["params", "aggregate"]);
    out.assert_stdout_contains("### `aggregate`")
        .assert_stdout_contains("| `compare` | map of string | none |")
        .assert_stdout_contains("| `columns` | string | **required** |");
    let list = t.ok(&["params"]);
    list.assert_stdout_contains(
        "stage kinds: download, split, noise, command, train, evaluate, aggregate, search",
    );
    let schema: serde_json::Value =
        serde_json::from_str(&t.ok(&["params", "split", "--json"]).stdout).unwrap();
    assert!(schema["properties"]["splits"].is_object(), "{schema}");
    let all = t.ok(&["params", "--all"]);
    assert_eq!(all.stdout.matches("\n### `").count() + 1, 8, "every kind");
    t.rst(&["params", "split", "--all"]).assert_code(2);
    t.rst(&["params", "agregate"])
        .assert_code(2)
        .assert_stderr_contains("unknown stage kind `agregate`")
        .assert_stderr_contains("aggregate");
}
