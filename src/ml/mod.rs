//! Everything that touches tch (libtorch). Compiled only into the `rst-torch` binary: the
//! engine (`rst`) stays free of libtorch, which costs ~0.4 s to load per process start.
pub mod bench;
pub mod data;
pub mod device;
pub mod evaluate;
pub mod imagenet;
pub mod model;
pub mod pth;
pub mod regsl;
pub mod train;

use rst::stages::StageKind;

/// The stage kinds this binary implements (they override the engine's placeholders).
pub fn kinds() -> Vec<&'static dyn StageKind> {
    vec![&train::TRAIN_STAGE, &evaluate::EVALUATE_STAGE]
}
