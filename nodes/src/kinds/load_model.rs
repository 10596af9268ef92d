//! Load Model: a built-in model by name, or a diffusers DiT or FLUX.1 checkpoint or pipeline
//! folder from a local path.

use crate::exec::context::NodeContext;
use crate::exec::data::Data;
use crate::models::builtin::{load_model, model_config};
use crate::models::flux::loading::flux_config;
use crate::registry::{
    Inputs, KindSpec, ModelFacts, NodeError, NodeKind, Outputs, ParamSpec, Params, PortSpec,
    PortType, Preflight, PreflightContext,
};
use std::sync::Arc;

pub struct LoadModel;

impl NodeKind for LoadModel {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "LoadModel",
            title: "Load Model",
            category: "model",
            help: "Loads a DiT or FLUX.1: a built-in model by name, or a diffusers checkpoint \
                   folder (config.json + .safetensors or .bin) or pipeline folder from a local \
                   path; a pipeline's scheduler, VAE and text encoders are read too.",
            inputs: vec![],
            outputs: vec![PortSpec::output(
                "model",
                PortType::Model,
                "the loaded model",
            )],
            params: vec![
                ParamSpec::text(
                    "model",
                    crate::models::builtin::DEFAULT_MODEL,
                    "built-in model name, or a path to a diffusers DiT or FLUX.1 checkpoint \
                     or pipeline folder",
                ),
                ParamSpec::choice(
                    "dtype",
                    "auto",
                    &["auto", "f32", "f16", "bf16"],
                    "weight precision; auto = f32 on the CPU, f16 on CUDA",
                ),
                ParamSpec::text("device", "cpu", "cpu, cuda or cuda:N"),
            ],
        }
    }

    fn run(
        &self,
        ctx: &NodeContext,
        _inputs: &Inputs,
        params: &Params,
    ) -> Result<Outputs, NodeError> {
        let model = load_model(
            params.text("model")?,
            params.text("dtype")?,
            params.text("device")?,
        )?;
        ctx.info(model.summary());
        Ok(Outputs::from([(
            "model".to_string(),
            Data::Model(Arc::new(model)),
        )]))
    }

    /// The model exists and its config reads (weights untouched).
    fn preflight(&self, params: &Params, _ctx: &PreflightContext) -> Preflight {
        let Ok(name) = params.text("model") else {
            return Preflight::default();
        };
        let facts = match flux_config(std::path::Path::new(name)) {
            // A text model: no classes, 2×2-packed latents.
            Some(flux) => flux.map(|c| ModelFacts {
                num_classes: 0,
                in_channels: c.latent_channels(),
                patch_size: 2,
            }),
            None => model_config(name).map(|config| ModelFacts {
                num_classes: config.num_classes(),
                in_channels: config.in_channels,
                patch_size: config.patch_size,
            }),
        };
        match facts {
            Ok(facts) => Preflight {
                model: Some(facts),
                problems: vec![],
            },
            Err(e) => Preflight {
                model: None,
                problems: vec![("model", e.to_string())],
            },
        }
    }
}
