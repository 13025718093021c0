//! Dataset artifacts: the canonical on-disk form every data stage reads and writes.
pub mod dataset;
