//! The remote cache: entries and artifacts shared between machines through an
//! S3-compatible object store (AWS, MinIO, Ceph, Garage, moto), as Bazel's remote cache
//! (action cache + CAS) and DVC's remotes do.
//!
//! - [`config`]: where the remote is (`--remote`, `RST_REMOTE`, `rst.toml`), read-only or not
//! - [`credentials`]: the AWS profile files object_store does not read
//! - [`client`]: the S3 client and what its errors mean (exit 2 with the fix at start)
//! - [`pack`]: an artifact directory as one deterministic tar object
//! - [`transfer`]: fetch (verify, then store) and upload (object first, entry last)
//!
//! The engine sees it as a [`crate::cache::shared::SharedCache`]: on a local miss the
//! scheduler asks it, and offers it what it computed.
pub mod client;
pub mod config;
pub mod credentials;
pub mod pack;
pub mod transfer;

pub use config::Flags;
pub use transfer::Remote;

use crate::error::UserError;

/// The remote the flags, the environment and `rst.toml` in `project` name, connected
/// and checked (bucket, credentials, server); None when none is set.
pub fn open(flags: &Flags, project: &std::path::Path) -> Result<Option<Remote>, UserError> {
    let Some(settings) = config::resolve(flags, project)? else {
        return Ok(None);
    };
    Ok(Some(Remote::new(client::Client::connect(settings)?)))
}
