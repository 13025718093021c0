//! The content-addressed cache: stage keys, artifact digests, the on-disk store.
pub mod digest;
pub mod durable;
pub mod key;
pub mod leftovers;
pub mod recent;
pub mod shared;
pub mod space;
pub mod store;
