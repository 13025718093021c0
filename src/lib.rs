//! rst: declarative, content-cached experiment pipelines.
//!
//! YAML file → `spec` (parse, validate, expand matrices) → `graph` (petgraph DAG) →
//! `cache` (blake3 keys, content-addressed artifacts) → `exec` (scheduler, worker
//! processes) → results. Only `ml` and the train/evaluate stages touch tch.
pub mod cache;
pub mod cli;
pub mod commands;
pub mod data;
pub mod error;
pub mod exec;
pub mod graph;
pub mod ml;
pub mod prng;
pub mod spec;
pub mod stages;
