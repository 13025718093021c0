//! "Did you mean" for a misspelt value of any stage kind's parameter (serde's "unknown
//! variant"), not only for the kinds that used to write the hint out themselves.

use crate::common::TestDir;

/// A download stage (never run: the planner rejects the pipeline first) feeding `stage`.
fn pipeline(stage: &str) -> String {
    format!(
        "name: t\nstages:\n  d:\n    kind: download\n    params:\n      files: [{{name: x, mirrors: [x]}}]\n{stage}"
    )
}

#[test]
fn misspelt_model_suggests_the_kebab_case_name() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        &pipeline(
            "  m:\n    kind: train\n    inputs: {data: d}\n    params: {model: resnet_mini, epochs: 1, batch_size: 8}\n",
        ),
    );
    let out = t.rst(&["check", "p.yaml"]);
    out.assert_code(2);
    out.assert_stderr_contains("unknown variant `resnet_mini`");
    out.assert_stderr_contains("did you mean `resnet-mini`?");
}

#[test]
fn misspelt_noise_mode_is_still_hinted() {
    let t = TestDir::new();
    t.write(
        "p.yaml",
        &pipeline(
            "  n:\n    kind: noise\n    inputs: {data: d}\n    params: {mode: exclude_tru, rate: 0.2, seed: 1}\n",
        ),
    );
    let out = t.rst(&["check", "p.yaml"]);
    out.assert_code(2);
    out.assert_stderr_contains("did you mean `exclude-true`?");
}
