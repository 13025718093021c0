//! The HTML report (issue #14): written by every publishing `rst run` and by `rst report`,
//! self-contained, with the table and its statistics, the plots, every run's curve, one
//! timeline bar per instance, the DAG, parameters and overrides, downloads with sha256 and
//! the latest audit; then rendered by a real browser (headless Chromium, which the setup
//! installs), asserting on its DOM and on a screenshot.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::TestDir;

/// "Training" writes a history.json, "evaluation" a metrics.json: no torch, known numbers.
/// Ours at rate 0.2 scores 87.3 / 87.6 / 87.9 over the three seeds.
const PIPELINE: &str = r#"
name: rep
params: {seeds: [1, 2, 3], rates: [0.2, 0.4]}
stages:
  data:
    kind: download
    params:
      format: raw
      files:
        - {name: raw.txt, sha256: SHA, mirrors: [raw.txt]}
  fit:
    kind: command
    matrix: {base: [0.9, 0.85], rate: "${rates}", seed: "${seeds}"}
    inputs: {data: data}
    params:
      shell: |
        awk -v b=${base} -v r=${rate} -v s=${seed} 'BEGIN { printf "["; for (e = 1; e <= 5; e++) printf "%s{\"epoch\": %d, \"val_acc\": %.4f}", (e > 1 ? ", " : ""), e, b - r * 0.3 + 0.01 * e + 0.003 * s; print "]" }' > $RST_OUT/history.json
  eval:
    kind: command
    matrix: {base: [0.9, 0.85], rate: "${rates}", seed: "${seeds}"}
    inputs: {fit: "fit[base=${base}, rate=${rate}, seed=${seed}]"}
    params:
      shell: |
        awk -v b=${base} -v r=${rate} -v s=${seed} 'BEGIN { printf "{\"top1\": %.4f}\n", b - r * 0.3 + 0.03 + 0.003 * s }' > $RST_OUT/metrics.json
  table:
    kind: aggregate
    inputs: {evals: eval, trains: fit}
    publish: "."
    params:
      rows: base
      columns: rate
      over: [seed]
      row_labels: {"0.9": Ours, "0.85": Fine-tuning}
      compare: {Ours: Fine-tuning}
"#;

/// 1 download + 12 fits + 12 evaluations + 1 table.
const INSTANCES: usize = 26;

fn project() -> TestDir {
    let t = TestDir::new();
    t.write("raw.txt", "hello data\n");
    let sha = sha256_hex(b"hello data\n");
    t.write("p.yaml", &PIPELINE.replace("SHA", &sha));
    t
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_publishing_run_writes_a_self_contained_report() {
    let t = project();
    t.ok(&["run", "p.yaml"])
        .assert_stdout_contains("report: results/p/report.html");
    let html = t.read("results/p/report.html");
    // The table and its statistics, as table.md has them.
    assert!(html.contains("<td>87.60 ± 0.24</td>"), "{html}");
    assert!(html.contains("<td>Fine-tuning</td>"));
    assert!(html.contains("Ours − Fine-tuning, paired by"));
    assert!(html.contains("<td>mean difference</td>"));
    // The plots and the DAG, inline; nothing the page would fetch.
    assert_eq!(
        html.matches("<img ").count(),
        3,
        "accuracy.png, curves.png, the DAG"
    );
    assert_eq!(html.matches("<img src=\"data:image/").count(), 2);
    assert_eq!(html.matches("src=\"data:image/svg+xml;base64,").count(), 1);
    for remote in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(
            !html.contains(remote),
            "the report fetches something: {remote}"
        );
    }
    // Every run's curve, in its row's colour.
    assert_eq!(html.matches("<polyline class=\"run\"").count(), 12);
    assert!(html.contains("stroke=\"#1f77b4\""));
    // One timeline bar per instance, each where it ran.
    assert_eq!(html.matches("<rect class=\"bar ").count(), INSTANCES);
    assert_eq!(html.matches("<rect class=\"bar ran\"").count(), INSTANCES);
    assert!(html.contains("slot 1"));
    // Parameters, provenance.
    assert!(html.contains("<code>seeds</code>"));
    assert!(html.contains(&sha256_hex(b"hello data\n")));
    assert!(html.contains("Not audited yet"));

    // A run that changes nothing leaves the report of the run that made the results.
    let before = std::fs::metadata(t.join("results/p/report.html")).unwrap();
    let noop = t.ok(&["run", "p.yaml"]);
    assert!(!noop.stdout.contains("report:"), "{}", noop.stdout);
    let after = std::fs::metadata(t.join("results/p/report.html")).unwrap();
    assert_eq!(before.modified().unwrap(), after.modified().unwrap());

    // A run with overrides says so; cached instances are grey bars that say when they were
    // computed.
    t.ok(&[
        "run",
        "p.yaml",
        "--set",
        "seeds=[1, 2]",
        "--replace-results",
    ]);
    let html = t.read("results/p/report.html");
    assert!(html.contains("<code>--set seeds=[1, 2]</code>"));
    assert!(html.contains("<tr class=\"overridden\"><td><code>seeds</code> (--set)</td>"));
    assert_eq!(html.matches("<rect class=\"bar ").count(), 1 + 8 + 8 + 1);
    assert_eq!(
        html.matches("<rect class=\"bar cached\"").count(),
        1 + 8 + 8
    );
    assert!(html.contains("cached (computed earlier in"));
}

#[test]
fn rst_report_writes_any_run_with_the_latest_audit() {
    let t = project();
    t.rst(&["report", "p.yaml"])
        .assert_code(2)
        .assert_stderr_contains("the cache directory");
    t.ok(&["run", "p.yaml"]);
    t.ok(&["audit", "p.yaml", "--stage", "eval"]);
    let out = t.ok(&["report", "p.yaml", "-o", "elsewhere/r.html"]);
    out.assert_stdout_contains("elsewhere/r.html: report of run ");
    let html = t.read("elsewhere/r.html");
    assert!(html.contains("Latest audit, ended"));
    assert!(html.contains("every stage met its standard"));
    assert!(html.contains("bit-identical"));
    // An older run by id prefix: the page is that run's, and says a newer one exists.
    let first = t
        .ok(&["log"])
        .stdout
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    t.ok(&[
        "run",
        "p.yaml",
        "--set",
        "seeds=[1, 2]",
        "--replace-results",
    ]);
    t.ok(&["report", "p.yaml", "--run", &first, "-o", "old.html"]);
    let old = t.read("old.html");
    assert!(old.contains(&format!("data-run=\"{first}\"")));
    assert!(old.contains("this is not the newest successful run"));
    assert_eq!(old.matches("<rect class=\"bar ").count(), INSTANCES);
    // The pipeline as that run had it (three seeds), not as the newest (two).
    assert!(
        dag_of(&old).contains("command · 12 instances"),
        "{}",
        dag_of(&old)
    );
    let new = t.ok(&["report", "p.yaml", "-o", "new.html"]);
    new.assert_stdout_contains("new.html: report of run ");
    assert!(dag_of(&t.read("new.html")).contains("command · 8 instances"));
    t.rst(&["report", "p.yaml", "-o", "p.yaml/r.html"])
        .assert_code(2)
        .assert_stderr_contains("cannot write the report to p.yaml/r.html")
        .assert_stderr_contains("help: give -o a path");
    t.rst(&["report", "p.yaml", "--run", "nosuchrun"])
        .assert_code(2)
        .assert_stderr_contains("no run `nosuchrun`");
    // A copy with the same `name:` has its own results/ and none of these runs.
    t.write("copy.yaml", &t.read("p.yaml"));
    t.rst(&["report", "copy.yaml"])
        .assert_code(2)
        .assert_stderr_contains("no successful run");
}

#[test]
fn a_failed_run_has_a_report_and_an_unwritable_report_is_a_warning() {
    let t = project();
    // The report's place taken by a folder: the run publishes and warns.
    std::fs::create_dir_all(t.join("results/p/report.html/x")).unwrap();
    t.ok(&["run", "p.yaml"])
        .assert_stderr_contains("warning: cannot write")
        .assert_stderr_contains("report.html");
    assert!(t.exists("results/p/table.md"));
    // A failed run: `rst report --run` shows its failure on the timeline.
    std::fs::remove_dir_all(t.join("results/p/report.html")).unwrap();
    let bad = t
        .read("p.yaml")
        .replace("> $RST_OUT/metrics.json", "> $RST_OUT/metrics.json; exit 3");
    t.write("p.yaml", &bad);
    t.rst(&["run", "p.yaml"]).assert_code(1);
    let failed = t
        .ok(&["log"])
        .stdout
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    t.ok(&["report", "p.yaml", "--run", &failed, "-o", "failed.html"]);
    let html = t.read("failed.html");
    assert!(html.contains("badge failed"), "the run's status");
    assert!(html.contains("<rect class=\"bar failed\""));
}

/// The DAG's SVG, decoded from its `data:` URI.
fn dag_of(html: &str) -> String {
    use base64::Engine as _;
    let start = html
        .find("class=\"dag\" src=\"data:image/svg+xml;base64,")
        .expect("a DAG")
        + 43;
    let end = start + html[start..].find('"').unwrap();
    let svg = base64::engine::general_purpose::STANDARD
        .decode(&html[start..end])
        .unwrap();
    String::from_utf8(svg).unwrap()
}

/// The browser: `RST_CHROMIUM`, else Debian's `chromium` (the setup installs it).
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RST_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

fn headless(browser: &Path, profile: &Path, args: &[&str], page: &Path) -> (String, String) {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{} failed: {stderr}",
        browser.display()
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

#[test]
fn the_report_renders_in_a_real_browser() {
    let Some(browser) = chromium() else {
        eprintln!(
            "\n\n*** SKIPPED the_report_renders_in_a_real_browser: no Chromium found \
             (./scripts/setup installs Debian's `chromium`; or set RST_CHROMIUM) ***\n"
        );
        return;
    };
    let t = project();
    t.ok(&["run", "p.yaml"]);
    let page = t.join("results/p/report.html");
    let profile = t.join("chromium-profile");

    // The DOM after the page loaded and ran its script.
    let (dom, stderr) = headless(&browser, &profile, &["--dump-dom"], &page);
    let body = dom
        .split("<body")
        .nth(1)
        .and_then(|b| b.split('>').next())
        .unwrap_or_else(|| panic!("no <body> in the DOM: {dom}"));
    assert!(body.contains("data-images-loaded=\"3\""), "{body}");
    assert!(body.contains("data-images-failed=\"0\""), "{body}");
    assert!(!body.contains("data-script-errors"), "{body}");
    assert!(!stderr.contains("Uncaught"), "script errors: {stderr}");
    assert!(dom.contains("<td>87.60 ± 0.24</td>"));
    assert!(dom.contains("<td>82.60 ± 0.24</td>"));
    assert_eq!(dom.matches("<rect class=\"bar ").count(), INSTANCES);

    // A screenshot: the page is drawn (not blank), with the timeline's bars in their colour.
    let shot = t.join("shot.png");
    let arg = format!("--screenshot={}", shot.display());
    headless(
        &browser,
        &profile,
        &[&arg, "--window-size=1280,3600"],
        &page,
    );
    let img = image::open(&shot).expect("a PNG screenshot").to_rgb8();
    assert_eq!(img.width(), 1280);
    let pixels = img.pixels().count();
    let inked = img
        .pixels()
        .filter(|p| p.0.iter().any(|&c| c < 200))
        .count();
    assert!(
        inked * 50 > pixels,
        "the page looks blank: {inked} of {pixels} pixels"
    );
    // --ran: #4a7fc1
    let bar_blue = img.pixels().filter(|p| p.0 == [0x4a, 0x7f, 0xc1]).count();
    assert!(
        bar_blue > 500,
        "the timeline's bars are not drawn ({bar_blue} pixels)"
    );
    // The table plots' own blue (tab10), from the decoded PNGs.
    let tab_blue = img.pixels().filter(|p| p.0 == [31, 119, 180]).count();
    assert!(
        tab_blue > 200,
        "the plots are not drawn ({tab_blue} pixels)"
    );
}

#[test]
fn a_study_shows_its_best_trial_plots_and_every_trial_on_the_timeline() {
    let t = TestDir::new();
    t.write("p.yaml", &crate::search::pipeline(6, 2, "tpe"));
    t.ok(&["run", "p.yaml"]);
    let html = t.read("results/p/report.html");
    assert!(html.contains("<section id=\"studies\">"));
    assert_eq!(
        html.matches("<h3><code>tune[rate=").count(),
        2,
        "one block per study"
    );
    assert!(html.contains(" · 6 trials</h3>"));
    assert!(html.contains("<th>best trial</th>"));
    // objective.png and one plot per parameter (x, y) per study, and the DAG.
    assert_eq!(html.matches("<img ").count(), 2 * 3 + 1);
    // Every trial ran in a round before the final run: each keeps its bar and slot.
    // data + 2 × 6 trials + 2 studies.
    assert_eq!(html.matches("<rect class=\"bar ran\"").count(), 1 + 12 + 2);
    assert!(!html.contains("have no times"));
}
