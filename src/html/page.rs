//! Phase 2 of the report: the HTML document of a [`Report`], sections in the order a
//! reader asks (what came out, is the gain real, how did training go, how was it run,
//! what went in, does it reproduce). Every value is escaped by `maud`; the Markdown of
//! `table.md` and `audit.md` goes through `pulldown-cmark` with raw HTML shown as text.
use base64::Engine as _;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::gather::{Figure, Report};
use super::{curves, dag, timeline};
use crate::provenance::iso_time;
use crate::report::value_text;

const STYLE: &str = include_str!("style.css");

/// Marks `<body>` with how many images decoded (`data-images-loaded`) and did not
/// (`data-images-failed`), and counts uncaught errors (`data-script-errors`); opens every
/// `<details>` before printing.
const SCRIPT: &str = r#"(function () {
  var body = document.body;
  window.addEventListener('error', function () {
    body.dataset.scriptErrors = String(Number(body.dataset.scriptErrors || 0) + 1);
  });
  window.addEventListener('load', function () {
    var images = Array.prototype.slice.call(document.images);
    var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
    body.dataset.imagesLoaded = String(ok);
    body.dataset.imagesFailed = String(images.length - ok);
  });
  window.addEventListener('beforeprint', function () {
    document.querySelectorAll('details').forEach(function (d) { d.open = true; });
  });
})();"#;

/// The whole page.
pub fn render(r: &Report) -> String {
    let run = &r.run;
    let title = format!("rst report: {}", r.pipeline);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="generator" content=(format!("rst {}", env!("CARGO_PKG_VERSION")));
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body data-run=(run.id) data-instances=(run.stages.len()) {
                main {
                    (header(r))
                    @if !r.notes.is_empty() {
                        div class="notes" {
                            @for n in &r.notes { p { (n) } }
                        }
                    }
                    (results(r))
                    (training(r))
                    (studies(r))
                    (timeline_section(r))
                    (dag_section(r))
                    (parameters(r))
                    (provenance(r))
                    (audit(r))
                    footer {
                        "Written by rst " (env!("CARGO_PKG_VERSION"))
                        @if let Some(c) = option_env!("RST_GIT_COMMIT") { " (" (crate::human::short(c)) ")" }
                        " at " (iso_time(crate::time::unix_now()))
                        " from the run record " code { (run.id) } " and the cache it names. "
                        "`rst report " (r.file.display()) "` writes it again."
                    }
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    };
    page.into_string()
}

fn header(r: &Report) -> Markup {
    let run = &r.run;
    let c = &run.counts;
    html! {
        header class="top" {
            h1 { "Report of " code { (r.pipeline) } }
            div class="facts" {
                span { "pipeline " code { (r.file.display()) } }
                span { "run " code { (run.id) } " " span class=(format!("badge {}", run.status)) { (run.status) } }
                span { "started " (iso_time(run.started_unix)) }
                span { "took " (crate::human::seconds(run.ended_unix - run.started_unix)) }
                span { (c.ran) " ran, " (c.cached) " from the cache, " (c.failed) " failed, " (c.not_run) " not run" }
                span { "host " (run.host) }
            }
            @if !run.set.is_empty() {
                div class="facts" { span { "overrides: " @for s in &run.set { code { "--set " (s) } " " } } }
            }
            nav class="toc" {
                a href="#results" { "Results" }
                a href="#curves" { "Training curves" }
                @if !r.studies.is_empty() { a href="#studies" { "Search" } }
                a href="#timeline" { "Timeline" }
                a href="#dag" { "Pipeline" }
                a href="#parameters" { "Parameters" }
                a href="#provenance" { "Provenance" }
                a href="#audit" { "Audit" }
            }
        }
    }
}

fn results(r: &Report) -> Markup {
    html! {
        section id="results" {
            h2 { "Results" }
            @if r.tables.is_empty() {
                p class="muted" { "This run made no table (no `aggregate` stage)." }
            }
            @for t in &r.tables {
                h3 { code { (t.instance) } }
                div class="table-md scroll" { (markdown(&t.markdown)) }
                (figures(&t.figures))
            }
        }
    }
}

fn figures(figs: &[Figure]) -> Markup {
    html! {
        @if !figs.is_empty() {
            div class="figures" {
                @for f in figs {
                    figure {
                        img src=(data_uri("image/png", &f.png)) alt=(f.name) loading="eager";
                        figcaption { (f.name) }
                    }
                }
            }
        }
    }
}

fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn training(r: &Report) -> Markup {
    let any = r.tables.iter().any(|t| !t.curves.is_empty()) || !r.curves.is_empty();
    html! {
        section id="curves" {
            h2 { "Training curves" }
            @if !any {
                p class="muted" { "No training run in this run recorded validation accuracy." }
            }
            @for t in r.tables.iter().filter(|t| !t.curves.is_empty()) {
                h3 { "Every run of " code { (t.instance) } }
                p class="muted" {
                    "Validation accuracy (%) per epoch, one line per run, in the colour of its row in the table; "
                    "the table's curves.png shows their mean with a min–max band."
                }
                (curves::charts(&t.curves))
            }
            @if !r.curves.is_empty() {
                h3 { "Other training runs" }
                (curves::charts(&r.curves))
            }
        }
    }
}

fn studies(r: &Report) -> Markup {
    html! {
        @if !r.studies.is_empty() {
            section id="studies" {
                h2 { "Search" }
                @for s in &r.studies {
                    h3 { code { (s.instance) } " · " (s.trials) " trials" }
                    @if let Some(best) = &s.best {
                        table {
                            tr { th { "best trial" } td { (value_text(&best["number"])) } }
                            tr { th { "value" } td { (value_text(&best["value"])) } }
                            @if let Some(params) = best["params"].as_object() {
                                @for (k, v) in params {
                                    tr { th { code { (k) } } td { (value_text(v)) } }
                                }
                            }
                        }
                    }
                    (figures(&s.figures))
                }
            }
        }
    }
}

fn timeline_section(r: &Report) -> Markup {
    let shown = r.bars.len().min(timeline::MAX_BARS);
    let ran = r.bars.iter().filter(|b| b.outcome == "ran").count();
    html! {
        section id="timeline" {
            h2 { "Timeline" }
            p class="muted" {
                "One bar per stage instance, in the order they started: "
                span class="swatch" style="background:var(--ran)" {} "ran (" (ran) ") "
                span class="swatch" style="background:var(--cached)" {} "from the cache "
                span class="swatch" style="background:var(--reused)" {} "computed by another rst meanwhile "
                span class="swatch" style="background:var(--failed)" {} "failed. "
                "A slot is one of the run's parallel places (--jobs); hover a bar for details."
            }
            @if shown > 0 { div class="scroll" { (timeline::svg(&r.bars)) } }
            @if r.bars.len() > shown {
                p class="muted" { (r.bars.len() - shown) " more instances are not drawn." }
            }
            @if r.untimed > 0 {
                p class="muted" { (r.untimed) " instances have no times (a run record from before rst kept them)." }
            }
        }
    }
}

fn dag_section(r: &Report) -> Markup {
    html! {
        section id="dag" {
            h2 { "Pipeline" }
            @match dag::svg(&r.stages, &r.edges) {
                Some(svg) => {
                    p class="muted" { "Stages and what they read; blue: some instances ran, grey: all from the cache, red: a failure." }
                    img class="dag" src=(data_uri("image/svg+xml", svg.as_bytes())) alt=(format!("the stage graph of {}", r.pipeline));
                }
                None => {
                    p class="muted" { (r.stages.len()) " stages: too many to draw here; `rst graph " (r.file.display()) "` exports the graph." }
                }
            }
        }
    }
}

fn parameters(r: &Report) -> Markup {
    let overridden: Vec<&str> = r
        .run
        .set
        .iter()
        .filter_map(|s| s.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    html! {
        section id="parameters" {
            h2 { "Parameters" }
            @if r.run.params.is_empty() {
                p class="muted" { "The pipeline has no parameters (or the run record is older than rst's keeping them)." }
            } @else {
                table {
                    tr { th { "parameter" } th { "value in this run" } }
                    @for (k, v) in &r.run.params {
                        @let over = overridden.contains(&k.as_str());
                        tr class=[over.then_some("overridden")] {
                            td { code { (k) } @if over { " (--set)" } }
                            td { code { (v.to_string()) } }
                        }
                    }
                }
            }
        }
    }
}

fn provenance(r: &Report) -> Markup {
    html! {
        section id="provenance" {
            h2 { "Provenance" }
            table {
                @for (k, v) in &r.environment { tr { th { (k) } td { (v) } } }
            }
            h3 { "Downloads" }
            @if r.downloads.is_empty() {
                p class="muted" { "No download stage in this run." }
            } @else {
                div class="scroll" {
                    table {
                        tr { th { "stage" } th { "file" } th { "sha256" } th { "mirrors" } }
                        @for (inst, d) in &r.downloads {
                            tr {
                                td { code { (inst) } }
                                td { code { (d.name) } }
                                td class="hash" { (d.sha256.as_deref().unwrap_or("-")) }
                                td { @for m in &d.mirrors { code { (m) } br; } }
                            }
                        }
                    }
                }
            }
            h3 { "Published files" }
            @if r.results.is_empty() {
                p class="muted" { "Nothing published (no provenance.json in results/)." }
            } @else {
                details {
                    summary { (r.results.len()) " files, each with the instance it was copied from and its sha256" }
                    div class="scroll" {
                        table {
                            tr { th { "file" } th { "from" } th { "sha256" } }
                            @for (path, sha, inst) in &r.results {
                                tr { td { code { (path) } } td { code { (inst) } } td class="hash" { (sha) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn audit(r: &Report) -> Markup {
    html! {
        section id="audit" {
            h2 { "Audit" }
            @match &r.audit {
                None => p class="muted" {
                    "Not audited yet: `rst audit " (r.file.display()) "` recomputes the stages and compares them with the cache."
                },
                Some(a) => {
                    p {
                        "Latest audit, ended " (a.ended) ": "
                        @match a.passed {
                            Some(true) => span class="badge ok" { "every stage met its standard" },
                            Some(false) => span class="badge failed" { "some stages did not" },
                            None => span { "verdict unknown" },
                        }
                    }
                    div class="scroll" { (markdown(&a.markdown)) }
                }
            }
        }
    }
}

/// Markdown as HTML (tables on). The labels in it are the user's, so nothing in it may
/// act: raw HTML is shown as text, and links and images as their text (no `javascript:`
/// link, no image fetched when the page opens).
fn markdown(text: &str) -> Markup {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let events = Parser::new_ext(text, Options::ENABLE_TABLES).filter_map(|e| match e {
        Event::Html(h) | Event::InlineHtml(h) => Some(Event::Text(h)),
        Event::Start(Tag::Link { .. } | Tag::Image { .. })
        | Event::End(TagEnd::Link | TagEnd::Image) => None,
        other => Some(other),
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events);
    PreEscaped(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_tables_render_and_raw_html_is_text() {
        let html = markdown("| a | b |\n|---|---|\n| 1 <b>x</b> | 2 |\n\n<script>x</script>\n")
            .into_string();
        assert!(html.contains("<table>"));
        assert!(html.contains("<td>1 &lt;b&gt;x&lt;/b&gt;</td>"));
        assert!(!html.contains("<script>"));
        // Links and images (a row label can be anything) are their text only.
        let html = markdown(
            "| [Ours](javascript:alert(1)) | ![x](http://host/p.png) | <https://host/> |\n|---|---|---|\n",
        )
        .into_string();
        assert!(!html.contains("<a") && !html.contains("<img"), "{html}");
        assert!(html.contains("Ours") && html.contains(">x<"), "{html}");
    }
}
