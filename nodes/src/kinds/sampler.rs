//! Sampler: runs the denoise loop (seeded noise, classifier-free guidance, scheduler) on a
//! model, every transformer call through the step-cache hook, and reports each step.

use crate::exec::context::NodeContext;
use crate::exec::data::Data;
use crate::image::convert::image_from_tensor;
use crate::registry::{
    Inputs, KindSpec, NodeError, NodeKind, Outputs, ParamSpec, Params, PortSpec, PortType,
};
use crate::sampling::denoise::{denoise, initial_noise, Flow, SampleSettings};
use crate::sampling::hook::PlainForward;
use crate::sampling::schedulers::SchedulerKind;
use crate::sampling::stats::{SamplerStats, StepStat};
use crate::sampling::SamplingError;
use std::sync::Arc;
use std::time::Instant;

pub struct Sampler;

impl NodeKind for Sampler {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "Sampler",
            title: "Sampler",
            category: "sampling",
            help: "Denoises seeded noise into an image of the chosen class with classifier-free \
                   guidance. A step-cache config on `cache` lets it reuse transformer work.",
            inputs: vec![
                PortSpec::required("model", PortType::Model, "the DiT to sample"),
                PortSpec::optional("cache", PortType::CacheConfig, "step-cache settings"),
            ],
            outputs: vec![
                PortSpec::output("image", PortType::Image, "the generated image"),
                PortSpec::output("stats", PortType::RunStats, "per-step timings of this run"),
            ],
            params: vec![
                ParamSpec::int(
                    "class_label",
                    0,
                    0,
                    999,
                    "class to generate (model classes 0..N-1)",
                ),
                ParamSpec::int(
                    "seed",
                    0,
                    0,
                    u32::MAX as i64,
                    "noise seed; same seed, same image",
                ),
                ParamSpec::int("steps", 25, 1, 1000, "denoising steps"),
                ParamSpec::float(
                    "guidance",
                    4.0,
                    1.0,
                    30.0,
                    "classifier-free guidance scale; 1 = off",
                ),
                ParamSpec::choice(
                    "scheduler",
                    "dpm++2m",
                    SchedulerKind::NAMES,
                    "dpm++2m (DPM-Solver++ 2M), ddim or euler, as in diffusers",
                ),
            ],
        }
    }

    fn run(
        &self,
        ctx: &NodeContext,
        inputs: &Inputs,
        params: &Params,
    ) -> Result<Outputs, NodeError> {
        let model = inputs.require("model")?.as_model("model")?.clone();
        if let Some(cache) = inputs.get("cache") {
            cache.as_cache_config("cache")?;
        }
        let scheduler_name = params.text("scheduler")?;
        let scheduler = SchedulerKind::parse(scheduler_name).ok_or_else(|| {
            NodeError::Param(
                "scheduler".into(),
                format!("unknown scheduler {scheduler_name:?}"),
            )
        })?;
        let settings = SampleSettings {
            class_labels: vec![params.int("class_label")? as u32],
            seed: params.int("seed")? as u64,
            steps: params.int("steps")? as usize,
            guidance: params.float("guidance")?,
            scheduler,
            size: None,
        };
        let started = Instant::now();
        let noise = initial_noise(&model.dit, &settings, &model.device)?;
        let mut hook = PlainForward::default();
        let result = denoise(&model.dit, &settings, &noise, &mut hook, &mut |progress| {
            ctx.step(progress.clone());
            if ctx.is_cancelled() {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        let result = match result {
            Err(SamplingError::Cancelled) => return Err(NodeError::Cancelled),
            other => other?,
        };
        let image = image_from_tensor(&result.sample)?
            .into_iter()
            .next()
            .ok_or_else(|| NodeError::Other("the sampler produced no image".into()))?;
        let calls = result.steps.len();
        let stats = SamplerStats {
            model: model.name.clone(),
            scheduler: scheduler.name().to_string(),
            seed: settings.seed,
            class_labels: settings.class_labels.clone(),
            guidance: settings.guidance,
            transformer_calls: calls,
            block_evaluations: calls * model.dit.num_blocks(),
            total_ms: started.elapsed().as_secs_f64() * 1e3,
            steps: result.steps.iter().map(StepStat::from).collect(),
        };
        Ok(Outputs::from([
            ("image".to_string(), Data::Image(Arc::new(image))),
            ("stats".to_string(), Data::RunStats(Arc::new(stats))),
        ]))
    }
}
