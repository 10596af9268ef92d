//! The VAE and a whole DiT pipeline folder against diffusers (tools/make_fixtures.py): tiny
//! seeded `AutoencoderKL`s with 4 and 16 latent channels decode as diffusers does, plain and
//! tiled, and a `DiTPipeline` folder (`model_index.json`, `transformer/`, `vae/`,
//! `scheduler/`) samples the pipeline's latents and renders its RGB image. Errors are
//! `max|ours − ref| / max|ref|`.

use cachedit_nodes::cache::hook::PlainForward;
use cachedit_nodes::image::convert::to_unit_range;
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::models::loading::load_vae;
use cachedit_nodes::models::LoadedModel;
use cachedit_nodes::sampling::denoise::{denoise, CfgMode, Flow, SampleSettings};
use cachedit_nodes::schedulers::SchedulerKind;
use candle_core::{DType, Device};

mod golden;
use golden::{fixtures, load, norm_err};

/// The pipeline fixture's run (seed 5, 12 DPM-Solver++ steps, guidance 4) for `classes`.
fn pipeline_settings(loaded: &LoadedModel, classes: Vec<u32>) -> SampleSettings {
    SampleSettings {
        class_labels: classes,
        prompt: None,
        seed: 5,
        steps: 12,
        guidance: 4.0,
        cfg_mode: CfgMode::Batched,
        scheduler: SchedulerKind::DpmSolverMultistep,
        scheduler_config: loaded.scheduler_config.clone(),
        size: None,
    }
}

#[test]
fn both_vaes_decode_as_diffusers_plain_and_tiled() {
    let f = load("vae_decode.safetensors");
    for name in ["vae_16", "vae_4"] {
        let vae = load_vae(&fixtures().join(name), DType::F32, &Device::Cpu).expect("VAE loads");
        let key = |k: &str| &f[&format!("{name}.{k}")];
        let plain = vae.decode(key("latents"), true).expect("decode");
        let e = norm_err(&plain, key("decoded"));
        assert!(e <= 1e-4, "{name} decode: {e}");
        eprintln!("{name} decode: {e}");
        // Larger than one 8-latent tile: decoded whole, or in blended tiles.
        let whole = vae.decode(key("large_latents"), false).expect("decode");
        let e = norm_err(&whole, key("untiled_large"));
        assert!(e <= 1e-4, "{name} untiled decode: {e}");
        eprintln!("{name} untiled decode: {e}");
        let tiled = vae
            .decode(key("large_latents"), true)
            .expect("tiled decode");
        let e = norm_err(&tiled, key("tiled_large"));
        assert!(e <= 1e-4, "{name} tiled decode: {e}");
        eprintln!("{name} tiled decode: {e}");
        // The tiles show: blended tiles are not the whole decode.
        assert!(
            norm_err(&tiled, key("untiled_large")) > 1e-3,
            "{name}: tiling had no effect"
        );
    }
}

#[test]
fn a_dit_pipeline_folder_renders_the_pipelines_rgb_image() {
    let f = load("sample_dit_pipeline.safetensors");
    let folder = fixtures().join("dit_pipeline");
    let loaded = load_model(&folder.display().to_string(), "f32", "cpu").expect("pipeline loads");
    let vae = loaded.vae.clone().expect("the pipeline's VAE is loaded");
    assert_eq!(vae.config().latent_channels, 4);
    assert!(
        loaded.scheduler_config.source().is_some(),
        "the pipeline's scheduler config is read"
    );
    let summary = loaded.summary();
    assert!(
        summary.contains("3 × transformer_blocks") && summary.contains("VAE: 4 latent channels"),
        "{summary}"
    );

    let settings = pipeline_settings(&loaded, vec![2, 7]);
    let out = denoise(
        &loaded.model,
        &settings,
        &f["noise"],
        &mut PlainForward::default(),
        &mut |_| Flow::Continue,
    )
    .expect("sampling");
    let e = norm_err(&out.sample, &f["latents"]);
    assert!(e <= 1e-4, "final latents: {e}");
    eprintln!("final latents: {e}");

    // The pipeline's image: decode, /2 + 0.5, clamp, [B, H, W, 3].
    let pixels = vae.decode(&out.sample, true).expect("decode");
    let image = to_unit_range(&pixels)
        .and_then(|x| x.permute((0, 2, 3, 1)))
        .expect("image");
    let e = norm_err(&image, &f["image"]);
    assert!(e <= 1e-4, "RGB image: {e}");
    eprintln!("RGB image: {e}");

    // What the Sampler saves: 16×16 RGB through the VAE, not the latent preview.
    let images = loaded.images(&out.sample).expect("images");
    assert_eq!(images.len(), 2);
    assert_eq!((images[0].width, images[0].height), (16, 16));
}

#[test]
fn a_vae_whose_tensors_do_not_fit_its_config_names_the_tensor_and_both_shapes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("vae");
    std::fs::create_dir(&dir).expect("dir");
    let src = fixtures().join("vae_4");
    std::fs::copy(
        src.join("diffusion_pytorch_model.safetensors"),
        dir.join("diffusion_pytorch_model.safetensors"),
    )
    .expect("copy");
    let config = std::fs::read_to_string(src.join("config.json")).expect("config");
    let wrong = config.replace("\"latent_channels\": 4", "\"latent_channels\": 6");
    assert_ne!(wrong, config);
    std::fs::write(dir.join("config.json"), wrong).expect("write");
    let err = load_vae(&dir, DType::F32, &Device::Cpu)
        .expect_err("6 latent channels do not fit 4-channel weights")
        .to_string();
    assert!(err.contains("diffusion_pytorch_model.safetensors"), "{err}");
    // 6 latent channels → the encoder's conv_out makes 2·6 moments; the file has 2·4.
    assert!(
        err.contains("shape mismatch for encoder.conv_out.weight")
            && err.contains("expected: [12, 16, 3, 3], got: [8, 16, 3, 3]"),
        "names the tensor and both shapes: {err}"
    );
}

#[test]
fn a_vae_config_that_cannot_build_is_an_error_naming_the_field() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("vae");
    std::fs::create_dir(&dir).expect("dir");
    std::fs::write(
        dir.join("config.json"),
        r#"{"block_out_channels": [], "latent_channels": 4}"#,
    )
    .expect("write");
    std::fs::write(dir.join("diffusion_pytorch_model.safetensors"), b"").expect("write");
    let err = load_vae(&dir, DType::F32, &Device::Cpu)
        .expect_err("no blocks")
        .to_string();
    assert!(err.contains("block_out_channels is empty"), "{err}");
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn live_previews_go_through_the_vae_every_few_steps_and_on_the_last() {
    use cachedit_nodes::sampling::denoise::denoise_with_preview;
    use cachedit_nodes::sampling::vae_preview::{VaePreview, VAE_PREVIEW_EVERY};
    let f = load("sample_dit_pipeline.safetensors");
    let folder = fixtures().join("dit_pipeline");
    let loaded = load_model(&folder.display().to_string(), "f32", "cpu").expect("pipeline loads");
    let settings = pipeline_settings(&loaded, vec![2]);
    let noise = f["noise"].narrow(0, 0, 1).expect("one item");
    let mut preview = VaePreview::new(loaded.vae.clone().expect("VAE"));
    let mut sizes = Vec::new();
    denoise_with_preview(
        &loaded.model,
        &settings,
        &noise,
        &mut PlainForward::default(),
        &mut preview,
        &mut |p| {
            sizes.push(p.preview.as_ref().map(|i| (p.index, i.width)));
            Flow::Continue
        },
    )
    .expect("sampling");
    let vae_steps: Vec<usize> = sizes
        .iter()
        .flatten()
        .filter(|(_, w)| *w == 16)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        vae_steps,
        [VAE_PREVIEW_EVERY - 1, 2 * VAE_PREVIEW_EVERY - 1, 11],
        "VAE previews every {VAE_PREVIEW_EVERY} steps and on the last: {sizes:?}"
    );
    // In between, the cheap latent preview (×8 false colour) where one is due.
    assert!(sizes.iter().flatten().any(|(_, w)| *w == 64), "{sizes:?}");
}
