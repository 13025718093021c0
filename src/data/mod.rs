//! Dataset artifacts: the canonical on-disk form every data stage reads and writes.
pub mod archive;
pub mod copy;
pub mod dataset;
pub mod error;
pub mod fetch;
pub mod idx;
pub mod imagefolder;
pub mod layouts;
pub mod matfile;
#[doc(hidden)]
pub mod miniature;
pub mod transform;
