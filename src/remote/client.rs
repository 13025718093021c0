//! The S3 client: object_store's `AmazonS3`, configured from [`Settings`] and the AWS
//! variables and profile files, on a tokio runtime of its own (object_store is async;
//! rst's engine is threads), and what its errors mean to a user.
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::config::Settings;
use super::credentials;
use crate::error::UserError;

/// An open remote: its settings, the client and the runtime that drives it.
pub struct Client {
    pub settings: Settings,
    pub s3: Arc<AmazonS3>,
    /// Always Some but in `drop` (which shuts it down without waiting for ever).
    rt_slot: Option<tokio::runtime::Runtime>,
    /// The endpoint as shown in messages (`AWS S3` when none is set).
    pub shown_endpoint: String,
}

/// What a failed request means to rst.
#[derive(Debug)]
pub enum Failure {
    /// No such key (or no such bucket: S3 answers both with 404).
    NotFound,
    /// A create-if-absent found the key there: another writer was first.
    Exists,
    /// The server refused the credentials or the request (403).
    Denied(String),
    /// The server did not answer (refused, reset, timed out, no such host).
    Unreachable(String),
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotFound => write!(f, "not found"),
            Failure::Exists => write!(f, "already there"),
            Failure::Denied(m) => write!(f, "access denied: {m}"),
            Failure::Unreachable(m) => write!(f, "the server does not answer: {m}"),
            Failure::Other(m) => write!(f, "{m}"),
        }
    }
}

/// The innermost cause of `e` (what went wrong, without object_store's wrapping), and
/// whether it says the server could not be reached.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() {
            last = text;
        }
        cause = c.source();
    }
    last
}

pub fn classify(e: &object_store::Error) -> Failure {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => Failure::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => Failure::Exists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => Failure::Denied(innermost(e)),
        _ => {
            let all = format!("{e:?}").to_ascii_lowercase();
            // Answers of the server (S3 error codes) first: only then a failure to reach it.
            if all.contains("nosuchbucket") {
                return Failure::NotFound;
            }
            if [
                "accessdenied",
                "invalidaccesskeyid",
                "signaturedoesnotmatch",
                "403 forbidden",
            ]
            .iter()
            .any(|w| all.contains(w))
            {
                return Failure::Denied(innermost(e));
            }
            if all.contains("non-2xx status code") {
                return Failure::Other(innermost(e));
            }
            let unreachable = [
                "connect",
                "connection refused",
                "connection reset",
                "timed out",
                "timeout",
                "dns error",
                "error sending request",
                "incompletemessage",
                "broken pipe",
            ]
            .iter()
            .any(|w| all.contains(w));
            if unreachable {
                Failure::Unreachable(innermost(e))
            } else {
                Failure::Other(crate::error::chain(e))
            }
        }
    }
}

impl Drop for Client {
    /// Abandoned transfers may leave a packing or unpacking thread busy: a second at most
    /// is given to them (what they write is staged, never half-visible).
    fn drop(&mut self) {
        if let Some(rt) = self.rt_slot.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Client {
    /// The runtime that drives the client.
    pub fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt_slot
            .as_ref()
            .expect("the runtime lives as long as the client")
    }

    /// Builds the client and checks, with one listing, that the bucket exists, the
    /// credentials are accepted and the server answers: each is exit 2 with the fix.
    pub fn connect(settings: Settings) -> Result<Client, UserError> {
        let client = Client::build(settings, &|name| std::env::var(name).ok())?;
        client.probe()?;
        Ok(client)
    }

    fn build(
        settings: Settings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Client, UserError> {
        // object_store's rustls is built without a default crypto provider (ring, not
        // aws-lc: a lighter build); installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let env_set = |name: &str| env(name).filter(|v| !v.is_empty());
        let profile = credentials::load(settings.profile.as_deref(), env)?;
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&settings.bucket);
        let endpoint = settings
            .endpoint
            .clone()
            .or_else(|| env_set("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env_set("AWS_ENDPOINT_URL"))
            .or(profile.endpoint_url.clone());
        if let Some(ep) = &endpoint {
            b = b.with_endpoint(ep);
        }
        let region = settings
            .region
            .clone()
            .or_else(|| env_set("AWS_REGION"))
            .or_else(|| env_set("AWS_DEFAULT_REGION"))
            .or(profile.region.clone())
            .unwrap_or_else(|| "us-east-1".to_string());
        b = b.with_region(region);
        if env_set("AWS_ACCESS_KEY_ID").is_none() {
            match (&profile.access_key_id, &profile.secret_access_key) {
                (Some(id), Some(secret)) => {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                    if let Some(token) = &profile.session_token {
                        b = b.with_token(token);
                    }
                }
                // On AWS itself an instance role may still answer (object_store asks the
                // metadata service); another server has none of those.
                _ if endpoint.is_some() => {
                    return Err(UserError::new(format!(
                        "no credentials for the remote {} (from {})",
                        settings.url, settings.from
                    ))
                    .help("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put them in ~/.aws/credentials (the profile AWS_PROFILE or rst.toml's profile names)"));
                }
                _ => {}
            }
        }
        let allow_http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        b = b
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_connect_timeout(Duration::from_secs(3))
                    .with_timeout(Duration::from_secs(300)),
            );
        let s3 = b.build().map_err(|e| {
            UserError::new(format!(
                "cannot set up the remote {} (from {}): {}",
                settings.url,
                settings.from,
                innermost(&e)
            ))
            .help("check the URL, the endpoint and the AWS_* variables")
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("rst-remote")
            .on_thread_start(block_sigpipe)
            .enable_all()
            .build()
            .map_err(|e| UserError::new(format!("cannot start the remote's I/O threads: {e}")))?;
        let shown_endpoint = endpoint.unwrap_or_else(|| "AWS S3".to_string());
        Ok(Client {
            settings,
            s3: Arc::new(s3),
            rt_slot: Some(rt),
            shown_endpoint,
        })
    }

    /// Runs `f` as a task on the runtime's threads, where SIGPIPE is blocked
    /// ([`block_sigpipe`]), and waits for it: requests are never made on the caller's
    /// thread.
    pub fn run<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.rt().block_on(self.rt().spawn(f)) {
            Ok(v) => v,
            // A panic in a transfer is a bug: it goes on as the panic it was.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// [`Client::run`], giving up (None) once `cancelled()`: the task is aborted, which
    /// drops its requests (a partial upload is never visible) and its staging dirs.
    pub fn run_unless<F>(&self, f: F, cancelled: &dyn Fn() -> bool) -> Option<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = self.rt().spawn(f);
        let done = self.rt().block_on(async {
            while !task.is_finished() {
                if cancelled() {
                    task.abort();
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            true
        });
        if !done {
            return None;
        }
        match self.rt().block_on(task) {
            Ok(v) => Some(v),
            Err(e) if e.is_cancelled() => None,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// The key of `rel` under the remote's prefix.
    pub fn path(&self, rel: &str) -> object_store::path::Path {
        key_path(&self.settings.prefix, rel)
    }

    fn probe(&self) -> Result<(), UserError> {
        let s3 = self.s3.clone();
        let at = self.path("entries");
        let listed = self.run(async move {
            tokio::time::timeout(Duration::from_secs(30), s3.list_with_delimiter(Some(&at))).await
        });
        let failure = match listed {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => classify(&e),
            Err(_) => Failure::Unreachable("no answer in 30 s".to_string()),
        };
        let (url, from, ep) = (
            &self.settings.url,
            &self.settings.from,
            &self.shown_endpoint,
        );
        Err(match failure {
            Failure::NotFound => UserError::new(format!(
                "the remote {url} (from {from}): there is no bucket {:?} at {ep}",
                self.settings.bucket
            ))
            .help("create the bucket (aws s3 mb s3://BUCKET), or fix the URL's bucket name"),
            Failure::Denied(why) => UserError::new(format!(
                "the remote {url} (from {from}) at {ep} refused the credentials: {why}"
            ))
            .help("check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile's keys (AWS_PROFILE, ~/.aws/credentials)"),
            Failure::Unreachable(why) => UserError::new(format!(
                "cannot reach the remote {url} (from {from}) at {ep}: {why}"
            ))
            .help("start the server or fix the endpoint (RST_REMOTE_ENDPOINT, rst.toml's endpoint); --no-remote runs without it"),
            Failure::Exists | Failure::Other(_) => UserError::new(format!(
                "the remote {url} (from {from}) at {ep} does not work: {failure}"
            ))
            .help("check the endpoint and the URL; --no-remote runs without it"),
        })
    }
}

/// Blocks SIGPIPE in the calling thread (each of the runtime's). `rst` restores SIGPIPE's
/// default action at start (so that `rst status | head` ends quietly), and a write to a
/// connection the server has closed raises SIGPIPE in the writing thread: unblocked, it
/// would kill rst in the middle of an upload instead of failing that request (seen when
/// a server died mid-upload). Blocked here, the write returns EPIPE, which object_store
/// retries or reports; the main thread keeps the default.
fn block_sigpipe() {
    // SAFETY: sigemptyset/sigaddset fill a local set; pthread_sigmask changes only this
    // thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// `prefix/rel` as an object key.
pub fn key_path(prefix: &str, rel: &str) -> object_store::path::Path {
    if prefix.is_empty() {
        object_store::path::Path::from(rel)
    } else {
        object_store::path::Path::from(format!("{prefix}/{rel}"))
    }
}
