//! The fuzz targets: what each feeds the bytes to, the valid inputs it starts from, and a
//! short outcome label (Ok, or the kind of error) that tells new behaviour apart, so that
//! inputs reaching a new outcome join the corpus.

use cachedit_nodes::graph::ron_io::parse_workflow;
use cachedit_nodes::graph::validate::validate;
use cachedit_nodes::image::png_io::{
    encode_png, read_png_bytes, read_png_text_bytes, workflow_text_from_png_bytes, WORKFLOW_KEY,
};
use cachedit_nodes::image::RgbImage;
use cachedit_nodes::models::flux::loading::parse_flux_config;
use cachedit_nodes::models::loading::{
    load_checkpoint_bytes, parse_config, parse_vae_config, LoadLimits, WeightsFormat,
};
use cachedit_nodes::registry::Registry;
use cachedit_nodes::schedulers::config::SchedulerConfig;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::OnceLock;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// Largest input generated (the bound: inputs under 1 MB).
    pub max_len: usize,
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Runs one input; returns its outcome label.
    pub run: fn(&[u8]) -> String,
}

/// Every target, in the order `--all` runs them.
pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "workflow",
            max_len: 1 << 20,
            seeds: workflow_seeds,
            run: run_workflow,
        },
        Target {
            name: "png",
            max_len: 1 << 20,
            seeds: png_seeds,
            run: run_png,
        },
        Target {
            name: "config",
            max_len: 64 << 10,
            seeds: config_seeds,
            run: run_config,
        },
        Target {
            name: "safetensors",
            max_len: 1 << 20,
            seeds: safetensors_seeds,
            run: run_safetensors,
        },
        Target {
            name: "pytorch",
            max_len: 1 << 20,
            seeds: pytorch_seeds,
            run: run_pytorch,
        },
        Target {
            name: "pickle",
            max_len: 256 << 10,
            seeds: pickle_seeds,
            run: run_pickle,
        },
    ]
}

pub fn find(name: &str) -> Option<Target> {
    all().into_iter().find(|t| t.name == name)
}

/// An error's label: its text without digits, up to the first quote or brace, so that values
/// do not make every error new.
fn label<E: std::fmt::Display>(result: Result<(), E>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(e) => {
            let text = e.to_string();
            let kept: String = text
                .chars()
                .take_while(|&c| !matches!(c, '"' | '`' | '{' | '\''))
                .filter(|c| !c.is_ascii_digit())
                .take(64)
                .collect();
            format!("err:{kept}")
        }
    }
}

const EXAMPLES: &[&str] = &[
    include_str!("../../workflows/default.ron"),
    include_str!("../../workflows/cache_adaptive.ron"),
    include_str!("../../workflows/cache_dynamic.ron"),
    include_str!("../../workflows/cache_fixed.ron"),
    include_str!("../../workflows/cache_scm.ron"),
    include_str!("../../workflows/cache_taylorseer.ron"),
    include_str!("../../workflows/schedulers.ron"),
];

fn workflow_seeds() -> Vec<Vec<u8>> {
    EXAMPLES.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// Parse (with migration) and validate against the built-in registry.
fn run_workflow(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match parse_workflow(&text, "fuzz.ron") {
        Ok(wf) => {
            let registry = Registry::builtin();
            match validate(&wf, &registry) {
                Ok(()) => "ok".into(),
                Err(errors) => {
                    // The kinds of error found, so that an input reaching a new check joins
                    // the corpus.
                    let kinds: BTreeSet<String> = errors
                        .iter()
                        .map(|e| {
                            let debug = format!("{e:?}");
                            debug
                                .split(|c: char| !c.is_alphanumeric())
                                .next()
                                .unwrap_or("")
                                .to_string()
                        })
                        .collect();
                    format!(
                        "invalid:{}",
                        kinds.into_iter().collect::<Vec<_>>().join(",")
                    )
                }
            }
        }
        Err(e) => label(Err::<(), _>(e)),
    }
}

fn png_seeds() -> Vec<Vec<u8>> {
    let image = |w: u32, h: u32| RgbImage {
        width: w,
        height: h,
        pixels: (0..w * h * 3).map(|i| (i * 7) as u8).collect(),
    };
    let mut out = Vec::new();
    // A small workflow (stored uncompressed) and a long one (zlib-compressed iTXt).
    let long = EXAMPLES.concat();
    for (img, text) in [(image(4, 3), EXAMPLES[0]), (image(9, 5), long.as_str())] {
        if let Ok(png) = encode_png(&img, &[(WORKFLOW_KEY, text), ("cachedit:cache", "NoCache")]) {
            out.push(png);
        }
    }
    out
}

/// Decode the pixels, every text chunk, and the workflow chunk alone.
fn run_png(bytes: &[u8]) -> String {
    let origin = Path::new("fuzz.png");
    let pixels = read_png_bytes(bytes, origin).map(|_| ());
    let texts = read_png_text_bytes(bytes, origin).map(|_| ());
    let workflow = workflow_text_from_png_bytes(bytes, origin).map(|_| ());
    format!("{}|{}|{}", label(pixels), label(texts), label(workflow))
}

fn config_seeds() -> Vec<Vec<u8>> {
    [
        include_str!("../../models/scenes-dit/config.json"),
        include_str!("../../nodes/tests/fixtures/dit_pixel/config.json"),
        include_str!("../../nodes/tests/fixtures/dit_latent/config.json"),
        include_str!(
            "../../nodes/tests/fixtures/schedulers/pipeline/scheduler/scheduler_config.json"
        ),
        include_str!("../../nodes/tests/fixtures/vae_4/config.json"),
        include_str!("../../nodes/tests/fixtures/vae_16/config.json"),
        include_str!("../../nodes/tests/fixtures/flux_pipeline/transformer/config.json"),
        include_str!("../../nodes/tests/fixtures/flux_pipeline/scheduler/scheduler_config.json"),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// The same text as a DiT `config.json`, a scheduler config, a VAE config and a FLUX.1
/// config (each checked).
fn run_config(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let dit = parse_config(&text, "fuzz/config.json").map(|_| ());
    let scheduler =
        SchedulerConfig::parse(&text, "fuzz/scheduler_config.json").and_then(|c| c.check());
    let vae = parse_vae_config(&text, "fuzz/vae/config.json").map(|c| {
        // What a loader derives from it must not overflow or divide by zero.
        let _ = (c.downscale(), c.tile_latent());
    });
    let flux = parse_flux_config(&text, "fuzz/transformer/config.json").map(|c| {
        // The sizes a loader derives must not overflow.
        let _ = (c.weight_count(), c.inner_dim(), c.latent_channels());
    });
    format!(
        "{}|{}|{}|{}",
        label(dit),
        label(scheduler),
        label(vae),
        label(flux)
    )
}

/// The checkpoint the loader targets load: a two-layer DiT (see
/// `nodes/tests/fixtures/README.md`), as safetensors and as a PyTorch `.bin`.
const LOADER_CONFIG: &str = include_str!("../../nodes/tests/fixtures/dit_pixel/config.json");
const SAFETENSORS: &[u8] =
    include_bytes!("../../nodes/tests/fixtures/dit_pixel/diffusion_pytorch_model.safetensors");
const PYTORCH: &[u8] =
    include_bytes!("../../nodes/tests/fixtures/dit_pixel_bin/diffusion_pytorch_model.bin");

/// Half the worker's memory cap: a load that stays within its limits never nears the cap, so
/// an abort means a limit was not checked.
const LOADER_LIMITS: LoadLimits = LoadLimits {
    memory_bytes: 256 << 20,
};

fn safetensors_seeds() -> Vec<Vec<u8>> {
    vec![SAFETENSORS.to_vec()]
}

fn run_safetensors(bytes: &[u8]) -> String {
    let loaded = load_checkpoint_bytes(
        LOADER_CONFIG,
        bytes,
        WeightsFormat::Safetensors,
        LOADER_LIMITS,
    );
    label(loaded.map(|_| ()))
}

fn pytorch_seeds() -> Vec<Vec<u8>> {
    vec![PYTORCH.to_vec()]
}

fn run_pytorch(bytes: &[u8]) -> String {
    let loaded = load_checkpoint_bytes(LOADER_CONFIG, bytes, WeightsFormat::Pytorch, LOADER_LIMITS);
    label(loaded.map(|_| ()))
}

/// An archive's `data.pkl` and its other entries (name, bytes), in order.
type ArchiveParts = (Vec<u8>, Vec<(String, Vec<u8>)>);

/// The fixture archive's entries: `data.pkl` (the pickle seed) and the rest, in order.
fn pytorch_entries() -> &'static ArchiveParts {
    static ENTRIES: OnceLock<ArchiveParts> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let mut pickle = Vec::new();
        let mut rest = Vec::new();
        if let Ok(mut archive) = zip::ZipArchive::new(std::io::Cursor::new(PYTORCH)) {
            for i in 0..archive.len() {
                let Ok(mut entry) = archive.by_index(i) else {
                    continue;
                };
                let name = entry.name().map(|n| n.to_string()).unwrap_or_default();
                let mut bytes = Vec::new();
                if entry.read_to_end(&mut bytes).is_err() {
                    continue;
                }
                if name.ends_with("data.pkl") {
                    pickle = bytes;
                } else {
                    rest.push((name, bytes));
                }
            }
        }
        (pickle, rest)
    })
}

fn pickle_seeds() -> Vec<Vec<u8>> {
    vec![pytorch_entries().0.clone()]
}

/// The bytes as the `data.pkl` of the fixture archive (so that mutations reach the pickle
/// machine and the size checks past the zip's checksums), loaded as a `.bin`.
fn run_pickle(bytes: &[u8]) -> String {
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut write = |name: &str, data: &[u8]| -> zip::result::ZipResult<()> {
        out.start_file(name, options)?;
        out.write_all(data)?;
        Ok(())
    };
    let (_, rest) = pytorch_entries();
    let written = write("diffusion_pytorch_model/data.pkl", bytes)
        .and_then(|()| rest.iter().try_for_each(|(n, d)| write(n, d)));
    match written.and_then(|()| out.finish()) {
        Ok(archive) => run_pytorch(&archive.into_inner()),
        Err(e) => format!("zip:{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_runs_and_the_valid_ones_are_accepted() {
        for target in all() {
            let seeds = (target.seeds)();
            assert!(!seeds.is_empty(), "{}", target.name);
            for seed in seeds {
                let outcome = (target.run)(&seed);
                // Each seed is valid for at least one of the parsers a target runs.
                assert!(
                    outcome.split('|').any(|part| part == "ok"),
                    "{}: a seed is rejected: {outcome}",
                    target.name
                );
            }
        }
    }
}
