//! The local executor: each stage runs in a worker process (`rst worker JOB`), which
//! isolates tch's process-global RNG and thread settings and contains crashes.
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{Cancel, Executor, Job, WorkerEvent};

/// Running worker processes by pid, shared with the Ctrl-C handler.
type Children = Arc<Mutex<Vec<(u32, Arc<Mutex<Child>>)>>>;

pub struct LocalExecutor {
    exe: PathBuf,
    children: Children,
}

impl LocalExecutor {
    pub fn new() -> std::io::Result<Self> {
        Ok(LocalExecutor {
            exe: std::env::current_exe()?,
            children: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// What the Ctrl-C handler calls: kills every running worker. Their staging dirs are
    /// cleaned by the next run of the same key.
    pub fn killer(&self) -> impl Fn() + Send + 'static {
        let children = self.children.clone();
        move || {
            for (_, child) in children.lock().unwrap().iter() {
                let _ = child.lock().unwrap().kill();
            }
        }
    }
}

impl Executor for LocalExecutor {
    fn run_job(
        &self,
        job_file: &Path,
        job: &Job,
        cancel: &Cancel,
        on_event: &mut dyn FnMut(WorkerEvent),
    ) -> Result<(), String> {
        if cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        let log_tmp =
            job.cache_dir
                .join("logs")
                .join(format!("{}.{}.log", job.key, std::process::id()));
        let log = std::fs::File::create(&log_tmp)
            .map_err(|e| format!("cannot create log {}: {e}", log_tmp.display()))?;
        let exe = super::worker_exe(&self.exe, job)?;
        let mut child = Command::new(&exe)
            .arg("worker")
            .arg(job_file)
            .env("RAYON_NUM_THREADS", job.threads.to_string())
            .env("OMP_NUM_THREADS", job.threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start worker {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let pid = child.id();
        let child = Arc::new(Mutex::new(child));
        self.children.lock().unwrap().push((pid, child.clone()));
        let mut finished = false;
        let mut reused = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(ev) = serde_json::from_str::<WorkerEvent>(&line) {
                finished |= matches!(ev, WorkerEvent::Done { .. } | WorkerEvent::Failed(_));
                reused |= matches!(ev, WorkerEvent::Done { reused: true, .. });
                on_event(ev);
            }
        }
        let status = child.lock().unwrap().wait();
        self.children.lock().unwrap().retain(|(p, _)| *p != pid);
        if reused {
            // Another process computed the artifact: its log (the entry's) stays.
            let _ = std::fs::remove_file(&log_tmp);
        } else {
            let _ = std::fs::rename(
                &log_tmp,
                job.cache_dir.join("logs").join(format!("{}.log", job.key)),
            );
        }
        if !finished {
            return Err(match status {
                Ok(s) if cancel.is_cancelled() || s.signal() == Some(2) => {
                    format!("interrupted ({s})")
                }
                Ok(s) => format!(
                    "the worker process ended without a result ({s}); see {}",
                    job.cache_dir
                        .join("logs")
                        .join(format!("{}.log", job.key))
                        .display()
                ),
                Err(e) => format!("cannot wait for the worker: {e}"),
            });
        }
        Ok(())
    }
}
