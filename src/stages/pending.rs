//! Kinds the pipeline language admits now and the training issue implements: `train`,
//! `evaluate`, `aggregate`. Their pipelines validate and plan; running one reports clearly
//! that this build cannot run it yet, and nothing is cached.
use serde_json::Value;

use super::{Arity, InputDecl, ParamError, StageCtx, StageError, StageKind};

pub struct Pending {
    name: &'static str,
    torch: bool,
}

pub const TRAIN: Pending = Pending {
    name: "train",
    torch: true,
};
pub const EVALUATE: Pending = Pending {
    name: "evaluate",
    torch: true,
};
pub const AGGREGATE: Pending = Pending {
    name: "aggregate",
    torch: false,
};

const ANY_INPUTS: &[InputDecl] = &[];

impl StageKind for Pending {
    fn name(&self) -> &'static str {
        self.name
    }
    fn version(&self) -> u32 {
        0
    }
    fn check(&self, params: &Value) -> Result<(), ParamError> {
        if params.is_object() || params.is_null() {
            Ok(())
        } else {
            Err(ParamError::new("", "params must be a mapping"))
        }
    }
    fn inputs(&self) -> Option<&'static [InputDecl]> {
        let _ = (ANY_INPUTS, Arity::One);
        None
    }
    fn uses_torch(&self) -> bool {
        self.torch
    }
    fn run(&self, _ctx: &StageCtx<'_>) -> Result<(), StageError> {
        Err(StageError::user(format!(
            "stage kind `{}` is part of the pipeline language but not implemented in this build of rst yet",
            self.name
        )))
    }
}
