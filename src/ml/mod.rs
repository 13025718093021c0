//! Everything that touches tch (libtorch). Compiled only into the `rst-torch` binary: the
//! engine (`rst`) stays free of libtorch, which costs ~0.4 s to load per process start.
pub mod device;
