//! Progress output: a live multi-line view on a terminal (indicatif), plain log lines
//! otherwise (CI logs, pipes).
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::eta::Eta;
use crate::stages::Progress;

pub enum Report<'a> {
    Cached(&'a str),
    /// Fetched from the remote (bytes transferred; 0: only its entry).
    Fetched {
        name: &'a str,
        bytes: u64,
    },
    /// Submitted to a cluster: (instance, job label such as `slurm 123`).
    Queued(&'a str, &'a str),
    LockWait(&'a str),
    /// (instance, the GPUs leased to it).
    Started(&'a str, &'a [String]),
    Progress(&'a str, &'a Progress),
    Done {
        name: &'a str,
        secs: f64,
        reused: bool,
    },
    Failed {
        name: &'a str,
        message: &'a str,
    },
    Skipped {
        name: &'a str,
        cause: &'a str,
    },
    /// Something the user should know that is not a stage's own outcome (a corrupt cached
    /// artifact found and recomputed).
    Warning(&'a str),
}

pub trait Reporter: Sync {
    fn report(&self, r: Report<'_>);
    fn finish(&self) {}
}

/// One line per event, for logs. The `cached` lines of a burst of cache hits are written
/// together (before the next other line, or at most [`CACHED_BUFFER`] bytes at a time):
/// one `write(2)` per line was a tenth of a no-op run of 1,000 stages.
#[derive(Default)]
pub struct Plain {
    cached: Mutex<String>,
}

/// The most `cached` lines [`Plain`] holds back, in bytes.
const CACHED_BUFFER: usize = 16 << 10;

impl Plain {
    fn flush_cached(&self) {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if !cached.is_empty() {
            use std::io::Write as _;
            let _ = std::io::stderr().lock().write_all(cached.as_bytes());
            cached.clear();
        }
    }
}

impl Reporter for Plain {
    fn report(&self, r: Report<'_>) {
        if let Report::Cached(n) = r {
            let full = {
                let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
                cached.push_str("cached   ");
                cached.push_str(n);
                cached.push('\n');
                cached.len() >= CACHED_BUFFER
            };
            if full {
                self.flush_cached();
            }
            return;
        }
        self.flush_cached();
        match r {
            Report::Cached(_) => {}
            Report::Fetched { name, bytes } => crate::elog!(
                "fetched  {name} (from the remote, {})",
                crate::human::human_bytes(bytes)
            ),
            Report::Queued(n, job) => crate::elog!("queued   {n} ({job})"),
            Report::LockWait(n) => {
                crate::elog!("waiting  {n} (another rst process is computing it)")
            }
            Report::Started(n, []) => crate::elog!("running  {n}"),
            Report::Started(n, gpus) => crate::elog!("running  {n} on GPU {}", gpus.join(",")),
            Report::Progress(..) => {}
            Report::Done {
                name,
                secs,
                reused: false,
            } => crate::elog!("done     {name} ({secs:.2}s)"),
            Report::Done {
                name, reused: true, ..
            } => crate::elog!("reused   {name} (computed by another rst process)"),
            Report::Failed { name, message } => crate::elog!("FAILED   {name}: {message}"),
            Report::Skipped { name, cause } => {
                crate::elog!("skipped  {name} (input {cause} failed)")
            }
            Report::Warning(message) => crate::elog!("warning: {message}"),
        }
    }

    fn finish(&self) {
        self.flush_cached();
    }
}

/// How long a stage took when it was last computed, if known (for the ETA).
pub type Earlier<'a> = Box<dyn Fn(&str) -> Option<f64> + Sync + 'a>;

/// The live view: a header bar counting finished stages (with an overall ETA) and one
/// line per running stage.
pub struct Live<'a> {
    multi: MultiProgress,
    total: ProgressBar,
    bars: Mutex<HashMap<String, ProgressBar>>,
    eta: Mutex<Eta>,
    earlier: Earlier<'a>,
}

impl<'a> Live<'a> {
    pub fn new(total: usize, earlier: Earlier<'a>) -> Live<'a> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let bar = multi.add(ProgressBar::new(total as u64));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30}] {pos}/{len} stages {elapsed} {msg}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        bar.set_prefix("rst");
        Live {
            multi,
            total: bar,
            bars: Mutex::new(HashMap::new()),
            eta: Mutex::new(Eta::new(total)),
            earlier,
        }
    }

    /// Updates the ETA with `f` and shows it on the header.
    fn eta(&self, f: impl FnOnce(&mut Eta)) {
        let mut eta = self.eta.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut eta);
        self.total.set_message(eta.text(std::time::Instant::now()));
    }

    fn line(&self, name: &str, f: impl FnOnce(&ProgressBar)) {
        let mut bars = self.bars.lock().unwrap();
        let bar = bars.entry(name.to_string()).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(0));
            b.set_style(
                ProgressStyle::with_template("  {spinner} {prefix} {wide_msg} {elapsed}").unwrap(),
            );
            b.set_prefix(name.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        f(bar);
    }

    fn close(&self, name: &str, secs: Option<f64>, text: String) {
        self.eta(|e| e.closed(name, secs));
        if let Some(b) = self.bars.lock().unwrap().remove(name) {
            b.finish_and_clear();
            self.multi.remove(&b);
        }
        let _ = self.multi.println(text);
        self.total.inc(1);
    }
}

impl Reporter for Live<'_> {
    fn report(&self, r: Report<'_>) {
        match r {
            Report::Cached(n) => self.close(n, None, format!("  cached   {n}")),
            Report::Fetched { name, bytes } => self.close(
                name,
                None,
                format!(
                    "  fetched  {name} (from the remote, {})",
                    crate::human::human_bytes(bytes)
                ),
            ),
            Report::Queued(n, job) => self.line(n, |b| {
                b.set_prefix(format!("{n} ({job})"));
                b.set_message("queued");
            }),
            Report::LockWait(n) => {
                self.line(n, |b| b.set_message("waiting for another rst process"))
            }
            Report::Started(n, gpus) => {
                let earlier = (self.earlier)(n);
                self.eta(|e| e.started(n, earlier));
                let on = match gpus {
                    [] => "running".to_string(),
                    gpus => format!("running on GPU {}", gpus.join(",")),
                };
                self.line(n, |b| b.set_message(on))
            }
            Report::Progress(n, p) => self.line(n, |b| {
                if b.length() == Some(0) {
                    // A stage that counts: its position and an ETA from its rate.
                    b.set_style(
                        ProgressStyle::with_template(
                            "  {spinner} {prefix} {wide_msg} {pos}/{len} {elapsed} (eta {eta})",
                        )
                        .unwrap(),
                    );
                }
                b.set_length(p.len);
                b.set_position(p.pos);
                b.set_message(p.message.clone());
            }),
            Report::Done { name, secs, reused } => self.close(
                name,
                (!reused).then_some(secs),
                if reused {
                    format!("  reused   {name}")
                } else {
                    format!("  done     {name} ({secs:.2}s)")
                },
            ),
            Report::Failed { name, message } => {
                self.close(name, None, format!("  FAILED   {name}: {message}"))
            }
            Report::Skipped { name, cause } => self.close(
                name,
                None,
                format!("  skipped  {name} (input {cause} failed)"),
            ),
            Report::Warning(message) => {
                let _ = self.multi.println(format!("warning: {message}"));
            }
        }
    }

    fn finish(&self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

/// The live view on a terminal, plain lines elsewhere.
pub fn reporter<'a>(total: usize, earlier: Earlier<'a>) -> Box<dyn Reporter + 'a> {
    if std::io::stderr().is_terminal() && std::env::var_os("RST_PLAIN").is_none() {
        Box::new(Live::new(total, earlier))
    } else {
        Box::new(Plain::default())
    }
}
