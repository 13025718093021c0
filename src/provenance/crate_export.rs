//! RO-Crate export.
