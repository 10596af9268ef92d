//! Compare: runs up to six step-cache configs and one shared uncached reference on the same
//! seeds, classes and starting noise, timed in rotating interleaved rounds, and outputs the
//! comparison (a table of time, speedup, hit rate and quality per config) and a grid image of
//! every sample (rows) under the reference and each config (columns).

use crate::compare::{judge_with_classifier, run_comparison, Cell, CompareSpec, Comparison};
use crate::exec::context::NodeContext;
use crate::exec::data::Data;
use crate::image::RgbImage;
use crate::kinds::sampler::{loop_params, scheduler_and_cfg};
use crate::models::blocks::BlockTransformer;
use crate::registry::{
    Inputs, KindSpec, NodeError, NodeKind, Outputs, ParamSpec, Params, PortSpec, PortType,
    Preflight, PreflightContext,
};
use crate::sampling::denoise::{Flow, SampleSettings};
use crate::sampling::SamplingError;
use candle_core::Device;
use std::sync::Arc;

/// The config inputs, in column order.
pub const CACHE_PORTS: [&str; 6] = [
    "cache_1", "cache_2", "cache_3", "cache_4", "cache_5", "cache_6",
];

/// The most seeds × classes one comparison samples.
const MAX_SAMPLES: usize = 64;

/// Runs the uncached reference once per sample and every config on the same noise.
pub struct Compare;

impl NodeKind for Compare {
    fn spec(&self) -> KindSpec {
        let mut inputs = vec![PortSpec::required(
            "model",
            PortType::Model,
            "the DiT every config runs on",
        )];
        inputs.extend(CACHE_PORTS.iter().map(|&name| {
            PortSpec::optional(
                name,
                PortType::CacheConfig,
                "a step-cache config to compare",
            )
        }));
        KindSpec {
            name: "Compare",
            title: "Compare",
            category: "step cache",
            help: "Compares the linked step-cache configs against one uncached reference: every \
                   (seed, class) starts all of them from the same noise, the reference runs \
                   once per sample and round however many configs there are, and rounds \
                   rotate which run goes first. Outputs the table (time, measured and ideal \
                   speedup, hit rate, PSNR/SSIM against the reference) and a grid image.",
            inputs,
            outputs: vec![
                PortSpec::output(
                    "comparison",
                    PortType::Comparison,
                    "the table: one row per config, the reference first",
                ),
                PortSpec::output(
                    "grid",
                    PortType::Image,
                    "every sample (rows) under the reference and each config (columns)",
                ),
            ],
            params: sample_params(),
        }
    }

    fn run(
        &self,
        ctx: &NodeContext,
        inputs: &Inputs,
        params: &Params,
    ) -> Result<Outputs, NodeError> {
        let model = inputs.require("model")?.as_model("model")?.clone();
        let mut cells = Vec::new();
        for port in CACHE_PORTS {
            if let Some(data) = inputs.get(port) {
                let config = data.as_cache_config(port)?.clone();
                crate::cache::check_run(
                    &config,
                    model.model.num_blocks(),
                    params.int("steps")? as usize,
                )?;
                cells.push(Cell {
                    config: Some(config),
                });
            }
        }
        if cells.is_empty() {
            return Err(NodeError::Other(
                "link at least one step-cache config into cache_1 … cache_6".into(),
            ));
        }
        compare_cells(ctx, &model, cells, params)
    }

    /// The seeds and classes parse and the classes fit the model.
    fn preflight(&self, params: &Params, ctx: &PreflightContext) -> Preflight {
        let mut problems = Vec::new();
        let seeds = params.text("seeds").map(parse_list::<u64>);
        let classes = params.text("classes").map(parse_list::<u32>);
        if let Ok(Err(m)) = &seeds {
            problems.push(("seeds", m.clone()));
        }
        if let Ok(Err(m)) = &classes {
            problems.push(("classes", m.clone()));
        }
        if let (Ok(Ok(seeds)), Ok(Ok(classes)), Some(model)) = (&seeds, &classes, ctx.model) {
            if let Err((field, m)) = check_samples(seeds, classes, model.num_classes) {
                problems.push((field, m));
            }
        }
        Preflight {
            model: None,
            problems,
        }
    }
}

/// The params Compare and Sweep share: seeds, classes, the loop's settings, rounds.
pub(crate) fn sample_params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::text(
            "seeds",
            "42",
            "noise seeds, comma-separated (e.g. 1, 2, 3): quality is judged on the set",
        ),
        ParamSpec::text(
            "classes",
            "3",
            "class labels, comma-separated; every seed runs with every class",
        ),
    ]
    .into_iter()
    .chain(loop_params())
    .chain([ParamSpec::int(
        "rounds",
        1,
        1,
        20,
        "timed rounds per sample: the reference and every config once each \
         round, the order rotating; more rounds, a steadier median",
    )
    .advanced()])
    .chain([ParamSpec::int(
        "grid_scale",
        4,
        1,
        16,
        "the `grid` output's cells are enlarged this many times (no smoothing), \
         with each column numbered as in the table and a legend under it",
    )
    .advanced()])
    .collect()
}

/// Runs `cells` against the shared reference with the sampling params of `params` (seeds,
/// classes, steps, guidance, scheduler, cfg_mode, rounds), judges class kept where the model
/// has a classifier, and returns the `comparison` and `grid` outputs: what Compare and Sweep
/// share once their cells are known.
pub(crate) fn compare_cells(
    ctx: &NodeContext,
    model: &crate::models::LoadedModel,
    cells: Vec<Cell>,
    params: &Params,
) -> Result<Outputs, NodeError> {
    if model.model.latent().classes.is_none() {
        return Err(NodeError::Other(format!(
            "{} is text-conditioned; Compare and Sweep run class-conditional models so far \
             (compare FLUX.1 strategies with Samplers side by side)",
            model.model.family()
        )));
    }
    let (scheduler, cfg_mode) = scheduler_and_cfg(params, &model.scheduler_config)?;
    let seeds = parse_list::<u64>(params.text("seeds")?)
        .map_err(|m| NodeError::Param("seeds".into(), m))?;
    let classes = parse_list::<u32>(params.text("classes")?)
        .map_err(|m| NodeError::Param("classes".into(), m))?;
    check_samples(&seeds, &classes, model.model.latent().classes.unwrap_or(0))
        .map_err(|(field, m)| NodeError::Param(field.into(), m))?;
    let spec = CompareSpec {
        settings: SampleSettings {
            class_labels: vec![0],
            prompt: None,
            seed: 0,
            steps: params.int("steps")? as usize,
            guidance: params.float("guidance")?,
            cfg_mode,
            scheduler,
            scheduler_config: model.scheduler_config.clone(),
            size: None,
        },
        seeds,
        classes,
        cells,
        rounds: params.int("rounds")? as usize,
    };
    let mut on_progress = |p: &crate::compare::CompareProgress| {
        ctx.compare_progress(*p);
        if ctx.is_cancelled() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    };
    let total = spec.samples().len();
    let mut on_sample = |c: &Comparison| {
        if c.reference.samples.len() < total {
            ctx.comparison(Arc::new(c.clone()), false);
        }
    };
    let comparison = match run_comparison(
        &model.model,
        model.vae.as_deref(),
        &spec,
        &mut on_progress,
        &mut on_sample,
    ) {
        Err(SamplingError::Cancelled) => return Err(NodeError::Cancelled),
        other => other?,
    };
    let mut comparison = comparison;
    if model.name == crate::models::builtin::DEFAULT_MODEL {
        // The scene classifier was trained on the images scenes-dit learned from.
        let classifier = crate::eval::classifier::SceneClassifier::builtin(&Device::Cpu)
            .map_err(|e| NodeError::Other(format!("scene classifier: {e}")))?;
        let classify = |images: &[RgbImage]| {
            classifier
                .classify(images, &Device::Cpu)
                .map_err(|e| e.to_string())
        };
        let embed = |images: &[RgbImage]| {
            classifier
                .embed(images, &Device::Cpu)
                .map_err(|e| e.to_string())
        };
        judge_with_classifier(&mut comparison, &classify, &embed)
            .map_err(|e| NodeError::Other(format!("scene classifier: {e}")))?;
    }
    let comparison = Arc::new(comparison);
    ctx.comparison(comparison.clone(), true);
    let grid = crate::compare::labels::labelled_grid(&comparison, params.int("grid_scale")? as u32)
        .map_err(NodeError::Other)?;
    Ok(Outputs::from([
        ("comparison".to_string(), Data::Comparison(comparison)),
        ("grid".to_string(), Data::Image(Arc::new(grid))),
    ]))
}

/// A comma-separated list of numbers ("1, 2,3"); an empty item or a bad number is an error
/// naming it.
pub fn parse_list<T: std::str::FromStr>(text: &str) -> Result<Vec<T>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse()
                .map_err(|_| format!("{item:?} is not a whole number ≥ 0"))
        })
        .collect()
}

fn check_samples(
    seeds: &[u64],
    classes: &[u32],
    num_classes: usize,
) -> Result<(), (&'static str, String)> {
    if seeds.is_empty() {
        return Err(("seeds", "give at least one seed".into()));
    }
    if classes.is_empty() {
        return Err(("classes", "give at least one class".into()));
    }
    if let Some(c) = classes.iter().find(|&&c| c as usize >= num_classes) {
        return Err((
            "classes",
            format!(
                "class {c} is out of range: the model has classes 0..{}",
                num_classes.saturating_sub(1)
            ),
        ));
    }
    let n = seeds.len() * classes.len();
    if n > MAX_SAMPLES {
        return Err((
            "seeds",
            format!("{n} seeds × classes; at most {MAX_SAMPLES} per comparison"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_with_spaces_and_name_bad_items() {
        assert_eq!(parse_list::<u64>("1, 2,3 ,"), Ok(vec![1, 2, 3]));
        assert_eq!(parse_list::<u64>(""), Ok(vec![]));
        let err = parse_list::<u32>("1, x").unwrap_err();
        assert!(err.contains("\"x\""), "{err}");
        assert!(parse_list::<u32>("-1").is_err());
    }

    #[test]
    fn samples_are_checked_against_the_model() {
        assert!(check_samples(&[1], &[3], 10).is_ok());
        assert_eq!(check_samples(&[], &[3], 10).unwrap_err().0, "seeds");
        assert!(check_samples(&[1], &[10], 10)
            .unwrap_err()
            .1
            .contains("classes 0..9"));
        let many: Vec<u64> = (0..65).collect();
        assert_eq!(check_samples(&many, &[0], 10).unwrap_err().0, "seeds");
    }
}
