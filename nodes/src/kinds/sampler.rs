//! Placeholder, replaced in this session.
use crate::exec::context::NodeContext;
use crate::registry::*;
pub struct Sampler;
impl NodeKind for Sampler {
    fn spec(&self) -> KindSpec {
        KindSpec { name: "Sampler", title: "Sampler", category: "", help: "", inputs: vec![], outputs: vec![], params: vec![] }
    }
    fn run(&self, _ctx: &NodeContext, _inputs: &Inputs, _params: &Params) -> Result<Outputs, NodeError> {
        Err(NodeError::Other("placeholder".into()))
    }
}
