//! Fetching and uploading entries and their objects.
//!
//! ```text
//! <prefix>/entries/ab/<key>.json     the entry (as the local cache has it)
//! <prefix>/objects/cd/<digest>.tar   the artifact (remote::pack)
//! <prefix>/logs/<key>.log            the stage's log
//! ```
//! Fetching (a local miss): the entry is read and checked (its key, and its key record
//! hashes to that key), the object is downloaded into a staging directory of the local
//! cache, unpacked, and stored only if its blake3 digest is the one the entry names
//! (`Store::publish_fetched`); only then is the entry written locally, marked as fetched.
//! Uploading (a computed stage, or `rst push`): the object first (content-addressed, so
//! rewriting it is harmless), then the log, then the entry, create-if-absent: a reader
//! never sees an entry whose object is missing, and of two writers of one key the second
//! finds it there. An object is one PUT, or a multipart upload above
//! [`SINGLE_PUT_MAX`]: S3 shows neither before it is complete, so a killed upload leaves
//! nothing visible.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use object_store::aws::AmazonS3;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::client::{classify, key_path, Client, Failure};
use crate::cache::shared::{Fetch, Fetched, SharedCache};
use crate::cache::store::{self, Entry, Store};

/// Objects up to this size are one PUT from memory; larger ones a multipart upload from
/// a temporary file, in parts of [`PART_SIZE`].
pub const SINGLE_PUT_MAX: u64 = 32 << 20;
const PART_SIZE: usize = 16 << 20;
/// Transfers at once.
const PARALLEL: usize = 16;

fn entry_rel(key: &str) -> String {
    format!("entries/{}/{key}.json", &key[..2])
}

fn object_rel(digest: &str) -> String {
    format!("objects/{}/{digest}.tar", &digest[..2])
}

fn log_rel(key: &str) -> String {
    format!("logs/{key}.log")
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Counters of what moved, for the summary and the progress bar.
#[derive(Default)]
pub struct Stats {
    pub fetched: AtomicU64,
    pub fetched_objects: AtomicU64,
    pub fetched_bytes: AtomicU64,
    pub uploaded: AtomicU64,
    pub uploaded_objects: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    /// Entries an upload found on the remote already.
    pub present: AtomicU64,
    /// Seconds spent with a transfer in flight (wall time, not summed).
    busy: Mutex<Busy>,
}

#[derive(Default)]
struct Busy {
    in_flight: usize,
    since: Option<Instant>,
    total_s: f64,
}

/// A transfer in flight, for [`Stats::busy_s`]; ended when dropped (also when its task is
/// aborted).
struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl Stats {
    fn busy(&self) -> InFlight<'_> {
        self.begin();
        InFlight(self)
    }

    fn begin(&self) {
        let mut b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if b.in_flight == 0 {
            b.since = Some(Instant::now());
        }
        b.in_flight += 1;
    }
    fn end(&self) {
        let mut b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        b.in_flight = b.in_flight.saturating_sub(1);
        if b.in_flight == 0 {
            if let Some(t) = b.since.take() {
                b.total_s += t.elapsed().as_secs_f64();
            }
        }
    }
    /// Wall seconds during which at least one transfer was in flight.
    pub fn busy_s(&self) -> f64 {
        let b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        b.total_s + b.since.map_or(0.0, |t| t.elapsed().as_secs_f64())
    }
}

/// What one upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploaded {
    /// Entry (and object when missing) written.
    Written,
    /// The remote had the entry already.
    There,
    /// No local entry for the key any more (nothing to send).
    Gone,
}

/// An upload in flight: its key and what it gave.
type UploadTask = tokio::task::JoinHandle<(String, Result<Uploaded, String>)>;

/// What an async transfer needs, owned (it runs on the runtime's threads).
#[derive(Clone)]
struct Ctx {
    s3: Arc<AmazonS3>,
    prefix: String,
    url: String,
    stats: Arc<Stats>,
    limit: Arc<tokio::sync::Semaphore>,
    bar: indicatif::ProgressBar,
    /// Objects this process made sure the remote has (or is uploading), by digest.
    objects: Arc<Mutex<HashMap<String, ObjectCell>>>,
    /// Digests whose remote copy a fetch found damaged: uploaded even though the remote
    /// has an object of that name.
    corrupt: Arc<Mutex<HashSet<String>>>,
}

/// One object's upload, shared by every entry that needs it.
type ObjectCell = Arc<tokio::sync::OnceCell<Result<(), String>>>;

impl Ctx {
    fn path(&self, rel: &str) -> object_store::path::Path {
        key_path(&self.prefix, rel)
    }
}

/// An open remote cache: the [`SharedCache`] the scheduler and `rst status` use, and
/// what `rst push` / `rst pull` drive.
pub struct Remote {
    client: Client,
    ctx: Ctx,
    /// Keys whose remote copy was rejected in this process: their upload replaces it.
    rejected: Mutex<HashSet<String>>,
    uploads: Mutex<Vec<UploadTask>>,
    /// Upload failures, for the end of the run.
    failures: Mutex<Vec<String>>,
}

impl Remote {
    pub fn new(client: Client) -> Remote {
        let ctx = Ctx {
            s3: client.s3.clone(),
            prefix: client.settings.prefix.clone(),
            url: client.settings.url.clone(),
            stats: Arc::new(Stats::default()),
            limit: Arc::new(tokio::sync::Semaphore::new(PARALLEL)),
            bar: indicatif::ProgressBar::hidden(),
            objects: Arc::default(),
            corrupt: Arc::default(),
        };
        Remote {
            client,
            ctx,
            rejected: Mutex::new(HashSet::new()),
            uploads: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
        }
    }

    /// Shows a progress bar (bytes, speed, entries) on a terminal while transferring.
    pub fn with_progress(mut self, what: &str, entries: u64) -> Remote {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(entries),
            indicatif::ProgressDrawTarget::stderr_with_hz(10),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} {pos}/{len} entries  {msg}  {elapsed_precise}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(what.to_string());
        self.ctx.bar = bar;
        self
    }

    pub fn url(&self) -> &str {
        &self.client.settings.url
    }

    pub fn read_only(&self) -> bool {
        self.client.settings.read_only
    }

    fn tick(&self) {
        tick(&self.ctx);
    }

    /// Uploads `keys` from `store` now (for `rst push`), in parallel; per key what it did.
    pub fn upload_all(&self, store: &Store, keys: &[String]) -> Vec<Result<Uploaded, String>> {
        let futs: Vec<_> = keys
            .iter()
            .map(|k| {
                let replace = self.is_rejected(k);
                upload_one(self.ctx.clone(), store.clone(), k.clone(), replace)
            })
            .collect();
        let ctx = self.ctx.clone();
        let done = self.client.run(async move {
            futures::stream::iter(futs)
                .buffered(PARALLEL)
                .inspect(|_| ctx.bar.inc(1))
                .collect::<Vec<_>>()
                .await
        });
        self.tick();
        done
    }

    /// Uploads started and not finished.
    pub fn uploads_in_flight(&self) -> usize {
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|h| !h.is_finished())
            .count()
    }

    fn is_rejected(&self, key: &str) -> bool {
        self.rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    /// Waits for the uploads [`SharedCache::offer`] started (a run's end), or abandons
    /// those still in flight once `cancelled()` (Ctrl-C: what was not complete is not
    /// visible on the remote). Returns the failures (each a line: the key and why) and how
    /// many were abandoned.
    pub fn finish_uploads(&self, cancelled: &dyn Fn() -> bool) -> (Vec<String>, usize) {
        let handles = std::mem::take(&mut *self.uploads.lock().unwrap_or_else(|e| e.into_inner()));
        let mut abandoned = 0;
        // On a terminal: what is left and how fast it goes (a large model can take minutes).
        let bar = indicatif::ProgressBar::with_draw_target(
            None,
            indicatif::ProgressDrawTarget::stderr_with_hz(4),
        )
        .with_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let results = self.client.rt().block_on(async {
            while !handles.iter().all(|h| h.is_finished()) {
                let left = handles.iter().filter(|h| !h.is_finished()).count();
                let sent = self.ctx.stats.uploaded_bytes.load(Ordering::Relaxed);
                bar.set_message(format!(
                    "uploading to {}: {left} left, {} sent, {}/s",
                    self.url(),
                    crate::human::human_bytes(sent),
                    crate::human::human_bytes(
                        (sent as f64 / self.ctx.stats.busy_s().max(1e-3)) as u64
                    )
                ));
                bar.tick();
                if cancelled() {
                    for h in handles.iter().filter(|h| !h.is_finished()) {
                        h.abort();
                        abandoned += 1;
                    }
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            futures::future::join_all(handles).await
        });
        bar.finish_and_clear();
        let mut failures =
            std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner()));
        for r in results {
            match r {
                Ok((_, Ok(_))) => {}
                Ok((key, Err(why))) => {
                    failures.push(format!("{}: {why}", crate::human::short(&key)))
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => failures.push(format!("an upload task failed: {e}")),
            }
        }
        (failures, abandoned)
    }

    /// One line saying what moved, or None when nothing did.
    pub fn summary(&self) -> Option<String> {
        let s = &self.ctx.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let secs = s.busy_s().max(1e-3);
        let rate = |bytes: u64| {
            format!(
                "{}/s",
                crate::human::human_bytes((bytes as f64 / secs) as u64)
            )
        };
        let mut parts = Vec::new();
        for (verb, entries, objects, bytes) in [
            ("fetched", &s.fetched, &s.fetched_objects, &s.fetched_bytes),
            (
                "uploaded",
                &s.uploaded,
                &s.uploaded_objects,
                &s.uploaded_bytes,
            ),
        ] {
            if get(entries) > 0 {
                parts.push(format!(
                    "{verb} {} entries ({} objects, {}, {})",
                    get(entries),
                    get(objects),
                    crate::human::human_bytes(get(bytes)),
                    rate(get(bytes))
                ));
            }
        }
        if get(&s.present) > 0 {
            parts.push(format!("{} were there already", get(&s.present)));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "remote {}: {} in {}",
                self.url(),
                parts.join("; "),
                crate::human::seconds(s.busy_s())
            )
        })
    }
}

fn tick(ctx: &Ctx) {
    let s = &ctx.stats;
    let bytes = s.fetched_bytes.load(Ordering::Relaxed) + s.uploaded_bytes.load(Ordering::Relaxed);
    let secs = s.busy_s().max(1e-3);
    ctx.bar.set_message(format!(
        "{}  {}/s",
        crate::human::human_bytes(bytes),
        crate::human::human_bytes((bytes as f64 / secs) as u64)
    ));
}

impl SharedCache for Remote {
    fn peek(&self, keys: &[&str]) -> Vec<Option<String>> {
        let futs: Vec<_> = keys
            .iter()
            .map(|k| {
                let ctx = self.ctx.clone();
                let key = k.to_string();
                async move {
                    read_entry(&ctx, &key)
                        .await
                        .ok()
                        .flatten()
                        .map(|e| e.artifact)
                }
            })
            .collect();
        self.client.run(async move {
            futures::stream::iter(futs)
                .buffered(PARALLEL)
                .collect::<Vec<_>>()
                .await
        })
    }

    fn fetch(&self, store: &Store, keys: &[&str], cancelled: &dyn Fn() -> bool) -> Vec<Fetch> {
        let futs: Vec<_> = keys
            .iter()
            .map(|k| fetch_one(self.ctx.clone(), store.clone(), k.to_string()))
            .collect();
        let ctx = self.ctx.clone();
        let batch = async move {
            futures::stream::iter(futs)
                .buffered(PARALLEL)
                .inspect(|_| ctx.bar.inc(1))
                .collect::<Vec<_>>()
                .await
        };
        // Ctrl-C abandons the batch: what was not stored is not (a staging dir is
        // removed when its fetch is dropped), and the rest count as misses.
        let Some(done) = self.client.run_unless(batch, cancelled) else {
            return keys.iter().map(|_| Fetch::Miss).collect();
        };
        let mut rejected = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        let mut corrupt = self.ctx.corrupt.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(done.len());
        for (k, (f, bad)) in keys.iter().zip(done) {
            if let Some(Bad::Damaged { object, .. }) = bad {
                rejected.insert(k.to_string());
                corrupt.extend(object);
            }
            out.push(f);
        }
        drop((rejected, corrupt));
        self.tick();
        out
    }

    fn offer(&self, store: &Store, key: &str) {
        if self.read_only() {
            return;
        }
        let replace = self.is_rejected(key);
        let fut = upload_one(self.ctx.clone(), store.clone(), key.to_string(), replace);
        let key = key.to_string();
        let handle = self.client.rt().spawn(async move { (key, fut.await) });
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }
}

/// Why a remote copy was not used.
enum Bad {
    /// It is damaged (an entry that is not this key's, an object that is missing, cut
    /// short or hashes to another digest): the upload of the recomputed stage replaces
    /// it, and `object` (a digest) is re-uploaded even though the remote has one.
    Damaged { why: String, object: Option<String> },
    /// It could not be read now (the server, the local disk): nothing to repair.
    Failed(String),
}

impl Bad {
    fn why(&self) -> &str {
        match self {
            Bad::Damaged { why, .. } | Bad::Failed(why) => why,
        }
    }
}

fn failed(why: impl Into<String>) -> Bad {
    Bad::Failed(why.into())
}

/// The most an entry or a log may be (a server sending more is refused).
const ENTRY_MAX: u64 = 16 << 20;
const LOG_MAX: u64 = 64 << 20;

/// The body of `path`, at most `max` bytes; Ok(None) when there is no such key.
async fn get_small(
    ctx: &Ctx,
    path: &object_store::path::Path,
    max: u64,
) -> Result<Option<Vec<u8>>, String> {
    let got = match ctx.s3.get(path).await {
        Ok(got) => got,
        Err(e) => {
            return match classify(&e) {
                Failure::NotFound => Ok(None),
                f => Err(format!("cannot read {path}: {f}")),
            }
        }
    };
    let mut stream = got.into_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("cannot read {path}: {}", classify(&e)))?;
        if (body.len() + chunk.len()) as u64 > max {
            return Err(format!("{path} is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The remote's entry for `key`: Ok(None) when there is none; Err when it cannot be read
/// or is not a valid entry of that key.
async fn read_entry(ctx: &Ctx, key: &str) -> Result<Option<Entry>, Bad> {
    let path = ctx.path(&entry_rel(key));
    let Some(bytes) = get_small(ctx, &path, ENTRY_MAX)
        .await
        .map_err(|why| failed(format!("its remote entry: {why}")))?
    else {
        return Ok(None);
    };
    let damaged = |why: String| Bad::Damaged { why, object: None };
    let entry: Entry = serde_json::from_slice(&bytes)
        .map_err(|e| damaged(format!("its remote entry {path} is not an rst entry: {e}")))?;
    if entry.key != key || entry.record.key() != key || !is_hex64(&entry.artifact) {
        return Err(damaged(format!(
            "its remote entry {path} is not the entry of this key (its key record hashes to another)"
        )));
    }
    Ok(Some(entry))
}

async fn fetch_one(ctx: Ctx, store: Store, key: String) -> (Fetch, Option<Bad>) {
    let _permit = ctx.limit.acquire().await;
    let busy = ctx.stats.busy();
    let r = fetch_inner(&ctx, &store, &key).await;
    drop(busy);
    match r {
        Ok(Some(f)) => {
            ctx.stats.fetched.fetch_add(1, Ordering::Relaxed);
            ctx.stats
                .fetched_bytes
                .fetch_add(f.bytes, Ordering::Relaxed);
            if f.bytes > 0 {
                ctx.stats.fetched_objects.fetch_add(1, Ordering::Relaxed);
            }
            tick(&ctx);
            (Fetch::Hit(f), None)
        }
        Ok(None) => (Fetch::Miss, None),
        Err(bad) => (Fetch::Rejected(bad.why().to_string()), Some(bad)),
    }
}

async fn fetch_inner(ctx: &Ctx, store: &Store, key: &str) -> Result<Option<Fetched>, Bad> {
    let Some(mut entry) = read_entry(ctx, key).await? else {
        return Ok(None);
    };
    entry.run.fetched = Some(store::FetchedFrom {
        from: ctx.url.clone(),
        unix: crate::time::unix_now(),
        host: store::this_host().to_string(),
    });
    let artifact = entry.artifact.clone();
    // The key's lock, as a computation of it takes it. Held by another process (it is
    // computing or fetching the key): a miss here, so that the scheduler runs the stage,
    // whose worker waits for that process and reuses what it stored.
    let locked = blocking(store, key, |store, key| {
        let Some(lock) = store.try_lock(key)? else {
            return Ok(None);
        };
        // Stored meanwhile (by the process that held the lock): nothing to fetch.
        if let Some(here) = store.entry(key) {
            return Ok(Some(Err(here.artifact)));
        }
        let staging = store.staging(key)?;
        Ok(Some(Ok((lock, staging))))
    })
    .await?;
    let (lock, staging) = match locked {
        None => return Ok(None),
        Some(Err(artifact)) => return Ok(Some(Fetched { artifact, bytes: 0 })),
        Some(Ok(held)) => held,
    };
    let rel = object_rel(&artifact);
    // Tar headers and padding: at most 1 KiB per file and 10 KiB at the end.
    let max = entry
        .size_bytes
        .saturating_add((entry.files as u64 + 10).saturating_mul(1024));
    let log_path = ctx.path(&log_rel(key));
    let (got, log) = futures::join!(
        fetch_object(ctx, store, staging, &rel, &artifact, entry.size_bytes, max),
        get_small(ctx, &log_path, LOG_MAX)
    );
    let (bytes, (size_bytes, files)) = got?;
    // What this cache measured, not what the remote's entry said.
    entry.size_bytes = size_bytes;
    entry.files = files;
    // A dataset view names the artifact it reads its pixels from: that object too.
    let base = crate::exec::integrity::view_base(&store.object_path(&artifact));
    let mut base_bytes = 0;
    if let Some(base) = base.filter(|b| is_hex64(b) && !store.object_path(b).is_dir()) {
        let staging = blocking(store, key, |store, key| store.staging(key)).await?;
        // Its size is in no entry: the digest check is what bounds what is used.
        base_bytes = fetch_object(
            ctx,
            store,
            staging,
            &object_rel(&base),
            &base,
            u64::MAX,
            u64::MAX,
        )
        .await
        .map_err(|bad| match bad {
            Bad::Damaged { why, object } => Bad::Damaged {
                why: format!(
                    "the base {} of its dataset view: {why}",
                    crate::human::short(&base)
                ),
                object,
            },
            Bad::Failed(why) => failed(format!(
                "the base {} of its dataset view: {why}",
                crate::human::short(&base)
            )),
        })?
        .0;
    }
    let store = store.clone();
    let log_to = store.log_path(key);
    tokio::task::spawn_blocking(move || {
        let r = store.adopt_entry(&entry);
        // The log is provenance, not part of the artifact: best effort, once the entry is in.
        if let (Ok(()), Ok(Some(log))) = (&r, log) {
            if !log_to.exists() {
                let _ = store::write_replace(&log_to, &log);
            }
        }
        drop(lock);
        r
    })
    .await
    .map_err(|e| failed(format!("a fetch task failed: {e}")))?
    .map_err(|e| {
        failed(format!(
            "cannot store its entry: {}",
            crate::error::chain(&e)
        ))
    })?;
    Ok(Some(Fetched {
        artifact,
        bytes: bytes + base_bytes,
    }))
}

/// `f(store, key)` on a blocking thread (locks and staging dirs are file system work);
/// its error is a local failure to stage the fetch.
async fn blocking<T: Send + 'static>(
    store: &Store,
    key: &str,
    f: impl FnOnce(&Store, &str) -> Result<T, store::StoreError> + Send + 'static,
) -> Result<T, Bad> {
    let (store, key) = (store.clone(), key.to_string());
    tokio::task::spawn_blocking(move || f(&store, &key))
        .await
        .map_err(|e| failed(format!("a fetch task failed: {e}")))?
        .map_err(|e| {
            failed(format!(
                "cannot stage it locally: {}",
                crate::error::chain(&e)
            ))
        })
}

/// Downloads the object `rel` (at most `max` bytes) into `staging`, unpacks it (at most
/// `max_content` bytes of files) and stores it if it hashes to `digest` (nothing to do
/// when that object is here already: another key made the same content); returns the
/// bytes transferred and the stored size and file count.
async fn fetch_object(
    ctx: &Ctx,
    store: &Store,
    staging: store::Staging,
    rel: &str,
    digest: &str,
    max_content: u64,
    max: u64,
) -> Result<(u64, (u64, usize)), Bad> {
    if store.object_path(digest).is_dir() {
        return Ok((0, store::dir_size(&store.object_path(digest))));
    }
    let damaged = |why: String| Bad::Damaged {
        why,
        object: Some(digest.to_string()),
    };
    let tar_path = staging.work.join("object.tar");
    let bytes = download(ctx, rel, &tar_path, max)
        .await
        .map_err(|e| match e {
            Download::Missing(why) | Download::TooLarge(why) => damaged(why),
            Download::Failed(why) => failed(why),
        })?;
    let (store, digest_owned) = (store.clone(), digest.to_string());
    let stored = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&tar_path)
            .map_err(|e| Err(format!("{}: {e}", tar_path.display())))?;
        super::pack::unpack(std::io::BufReader::new(file), &staging.out, max_content)
            .map_err(|why| Ok(format!("its remote object is damaged ({why})")))?;
        let _ = std::fs::remove_file(&tar_path);
        store
            .publish_fetched(staging, &digest_owned)
            .map_err(|e| match e {
                store::StoreError::Corrupt { message, .. } => {
                    Ok(format!("its remote object is corrupt: {message}"))
                }
                e => Err(format!(
                    "cannot store it locally: {}",
                    crate::error::chain(&e)
                )),
            })
    })
    .await
    .map_err(|e| failed(format!("a fetch task failed: {e}")))?;
    match stored {
        Ok(sealed) => Ok((bytes, sealed)),
        // Ok(why): the copy is bad; Err(why): this machine could not store it.
        Err(Ok(why)) => Err(damaged(why)),
        Err(Err(why)) => Err(failed(why)),
    }
}

enum Download {
    Missing(String),
    TooLarge(String),
    Failed(String),
}

/// Downloads `rel` into the file `to`, streaming, at most `max` bytes; returns its length.
async fn download(ctx: &Ctx, rel: &str, to: &std::path::Path, max: u64) -> Result<u64, Download> {
    use std::io::Write;
    let path = ctx.path(rel);
    let got = ctx.s3.get(&path).await.map_err(|e| match classify(&e) {
        Failure::NotFound => Download::Missing(format!(
            "its remote entry is there but not its object {path}"
        )),
        f => Download::Failed(format!("cannot download {path}: {f}")),
    })?;
    let mut file = std::fs::File::create(to)
        .map_err(|e| Download::Failed(format!("{}: {e}", to.display())))?;
    let mut stream = got.into_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Download::Failed(format!("cannot download {path}: {}", classify(&e))))?;
        n += chunk.len() as u64;
        if n > max {
            return Err(Download::TooLarge(format!(
                "its remote object {path} is larger than its entry allows ({max} bytes)"
            )));
        }
        file.write_all(&chunk)
            .map_err(|e| Download::Failed(format!("{}: {e}", to.display())))?;
    }
    Ok(n)
}

async fn upload_one(
    ctx: Ctx,
    store: Store,
    key: String,
    replace: bool,
) -> Result<Uploaded, String> {
    let _permit = ctx.limit.acquire().await;
    let busy = ctx.stats.busy();
    let r = upload_inner(&ctx, &store, &key, replace).await;
    drop(busy);
    tick(&ctx);
    r
}

async fn upload_inner(
    ctx: &Ctx,
    store: &Store,
    key: &str,
    replace: bool,
) -> Result<Uploaded, String> {
    let Some(mut entry) = store.entry(key) else {
        return Ok(Uploaded::Gone);
    };
    // The remote's entry says how it was computed, not how it reached this cache.
    entry.run.fetched = None;
    let entry_path = ctx.path(&entry_rel(key));
    let fail =
        |what: &str, e: object_store::Error| format!("cannot upload its {what}: {}", classify(&e));
    if !replace {
        match ctx.s3.head(&entry_path).await {
            Ok(_) => {
                ctx.stats.present.fetch_add(1, Ordering::Relaxed);
                return Ok(Uploaded::There);
            }
            Err(e) if matches!(classify(&e), Failure::NotFound) => {}
            Err(e) => return Err(fail("entry", e)),
        }
    }
    ensure_object(ctx, store, &entry.artifact, entry.size_bytes, replace).await?;
    // A dataset view reads its pixels from a base artifact it names: that object too,
    // before the entry (a reader must find everything the entry needs).
    if let Some(base) = crate::exec::integrity::view_base(&store.object_path(&entry.artifact))
        .filter(|b| is_hex64(b))
    {
        let size = store::dir_size(&store.object_path(&base)).0;
        ensure_object(ctx, store, &base, size, false).await?;
    }
    if let Ok(log) = std::fs::read(store.log_path(key)) {
        ctx.s3
            .put(&ctx.path(&log_rel(key)), PutPayload::from(log))
            .await
            .map_err(|e| fail("log", e))?;
    }
    let bytes =
        serde_json::to_vec_pretty(&entry).map_err(|e| format!("cannot encode its entry: {e}"))?;
    let mode = if replace {
        PutMode::Overwrite
    } else {
        PutMode::Create
    };
    let opts = PutOptions {
        mode,
        ..PutOptions::default()
    };
    match ctx
        .s3
        .put_opts(&entry_path, PutPayload::from(bytes), opts)
        .await
    {
        Ok(_) => {
            ctx.stats.uploaded.fetch_add(1, Ordering::Relaxed);
            Ok(Uploaded::Written)
        }
        // Another writer of the same key was first: its entry stands (same inputs).
        Err(e) if matches!(classify(&e), Failure::Exists) => {
            ctx.stats.present.fetch_add(1, Ordering::Relaxed);
            Ok(Uploaded::There)
        }
        Err(e) => Err(fail("entry", e)),
    }
}

/// Makes sure the remote has the object `digest`: uploaded once per process however many
/// entries (or views) share it, the others waiting for that one upload; `replace`
/// uploads it even if the remote has it (a copy found corrupt).
async fn ensure_object(
    ctx: &Ctx,
    store: &Store,
    digest: &str,
    size: u64,
    replace: bool,
) -> Result<(), String> {
    let replace = replace
        || ctx
            .corrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest);
    let cell = {
        let mut objects = ctx.objects.lock().unwrap_or_else(|e| e.into_inner());
        if replace {
            // Whatever an earlier check found, this copy is to be replaced.
            objects.remove(digest);
        }
        objects.entry(digest.to_string()).or_default().clone()
    };
    let done = cell
        .get_or_init(|| async {
            let path = ctx.path(&object_rel(digest));
            if !replace && ctx.s3.head(&path).await.is_ok() {
                return Ok(());
            }
            // (its bytes are counted as they go, for the progress line)
            upload_object(ctx, store, digest, size, &path).await?;
            ctx.stats.uploaded_objects.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .await
        .clone();
    if done.is_err() {
        // A later attempt (another entry, `rst push` again) tries afresh: this cell is
        // forgotten, unless another attempt has replaced it meanwhile.
        let mut objects = ctx.objects.lock().unwrap_or_else(|e| e.into_inner());
        if objects.get(digest).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            objects.remove(digest);
        }
    }
    done
}

/// Packs the object `digest` (of `size` bytes) and uploads it; returns the bytes sent.
async fn upload_object(
    ctx: &Ctx,
    store: &Store,
    digest: &str,
    size: u64,
    path: &object_store::path::Path,
) -> Result<u64, String> {
    let dir = store.object_path(digest);
    if !dir.is_dir() {
        return Err(format!(
            "its object {} is not in the local cache",
            crate::human::short(digest)
        ));
    }
    let fail = |e: object_store::Error| format!("cannot upload its object: {}", classify(&e));
    if size <= SINGLE_PUT_MAX {
        let packed = tokio::task::spawn_blocking(move || {
            let mut buf = Vec::new();
            super::pack::pack(&dir, &mut buf).map(|_| buf)
        })
        .await
        .map_err(|e| format!("a packing task failed: {e}"))?
        .map_err(|e| format!("cannot pack its object: {e}"))?;
        let n = packed.len() as u64;
        ctx.s3
            .put(path, PutPayload::from(packed))
            .await
            .map_err(fail)?;
        ctx.stats.uploaded_bytes.fetch_add(n, Ordering::Relaxed);
        return Ok(n);
    }
    // Large: packed into a temporary file, sent in parts; S3 shows it only once complete.
    // Named as `write_atomic`'s temp files are, so a killed upload's is swept
    // (`cache::leftovers`).
    let tmp = store
        .root()
        .join("tmp")
        .join(format!(".upload-{digest}.{}.0.tmp", std::process::id()));
    let tmp2 = tmp.clone();
    let n = tokio::task::spawn_blocking(move || {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp2)?);
        let n = super::pack::pack(&dir, &mut file)?;
        std::io::Write::flush(&mut file)?;
        Ok::<u64, std::io::Error>(n)
    })
    .await
    .map_err(|e| format!("a packing task failed: {e}"))?
    .map_err(|e| format!("cannot pack its object: {e}"))?;
    let sent = send_parts(ctx, &tmp, path).await;
    let _ = std::fs::remove_file(&tmp);
    sent.map(|()| n)
}

async fn send_parts(
    ctx: &Ctx,
    file: &std::path::Path,
    path: &object_store::path::Path,
) -> Result<(), String> {
    use std::io::Read;
    let fail = |e: object_store::Error| format!("cannot upload its object: {}", classify(&e));
    let upload = ctx.s3.put_multipart(path).await.map_err(fail)?;
    let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let mut f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut buf = vec![0u8; PART_SIZE];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = w.abort().await;
                return Err(format!("{}: {e}", file.display()));
            }
        };
        if let Err(e) = w.wait_for_capacity(4).await {
            let _ = w.abort().await;
            return Err(fail(e));
        }
        w.write(&buf[..n]);
        ctx.stats
            .uploaded_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
    }
    // `finish` aborts the upload itself when a part fails: nothing is left on the server
    // but what a lifecycle rule for incomplete multipart uploads removes after a kill.
    w.finish().await.map_err(fail)?;
    Ok(())
}
