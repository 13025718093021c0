//! Everything that touches tch (libtorch). Compiled only into the `rst-torch` binary: the
//! engine (`rst`) stays free of libtorch, which costs ~0.4 s to load per process start.
pub mod bench;
pub mod data;
pub mod device;
pub mod evaluate;
pub mod imagenet;
pub mod model;
pub mod precision;
pub mod pth;
pub mod regsl;
pub mod selftest;
pub mod train;

use rst::stages::StageRunner;

/// The runners this binary adds to the engine's (the engine declares these kinds only).
pub fn kinds() -> Vec<&'static dyn StageRunner> {
    vec![&train::TRAIN_STAGE, &evaluate::EVALUATE_STAGE]
}
