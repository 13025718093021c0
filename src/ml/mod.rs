//! Everything that touches tch (libtorch). The engine (spec, graph, cache, exec) never
//! imports tch; it asks this module for the few facts it needs (the device a stage runs on).
pub mod device;
