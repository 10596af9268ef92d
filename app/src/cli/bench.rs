//! `cachedit bench`: per-step time of the DiT forward (a CFG batch of 2, random weights) for
//! several model sizes; prints a table and can write it into BENCHMARKS.md.

use anyhow::{Context, Result};
use cachedit_nodes::device::{parse_dtype, DeviceSpec};
use cachedit_nodes::models::builtin::random_tiny_config;
use cachedit_nodes::models::dit::{random, DiTConfig};
use cachedit_nodes::models::loading::dit_from_tensors;
use cachedit_nodes::rng::Rng;
use candle_core::Tensor;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Configs to time: tiny, s2, xl2 (comma-separated).
    #[arg(long, default_value = "tiny,s2,xl2", value_delimiter = ',')]
    pub configs: Vec<String>,
    /// Timed forwards per config (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[command(flatten)]
    pub target: DeviceArgs,
    /// Replace the DiT-forward section of this markdown file with the results.
    #[arg(long)]
    pub write: Option<PathBuf>,
}

/// Where a benchmark runs.
#[derive(clap::Args)]
pub struct DeviceArgs {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// auto, f32, f16 or bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
}

struct BenchConfig {
    name: &'static str,
    label: &'static str,
    config: DiTConfig,
}

fn bench_config(name: &str) -> Option<BenchConfig> {
    let (name, label, config) = match name {
        "tiny" => (
            "tiny",
            "tiny (built-in size): 32×32 RGB, patch 4, 192 wide, 6 blocks",
            random_tiny_config(),
        ),
        "s2" => (
            "s2",
            "DiT-S/2: latent 32×32×4, 384 wide, 12 blocks",
            DiTConfig {
                num_attention_heads: 6,
                attention_head_dim: 64,
                num_layers: 12,
                out_channels: Some(8),
                ..DiTConfig::default()
            },
        ),
        "xl2" => (
            "xl2",
            "DiT-XL/2 (256 px): latent 32×32×4, 1152 wide, 28 blocks",
            DiTConfig::xl_2_256(),
        ),
        _ => return None,
    };
    Some(BenchConfig {
        name,
        label,
        config,
    })
}

struct Row {
    label: String,
    params_m: f64,
    tokens: usize,
    mean_ms: f64,
    min_ms: f64,
    per_block_ms: f64,
}

/// The CPU model and core count, for benchmark headers.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {cores} cores")
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let device = DeviceSpec::parse(&args.target.device)?.open()?;
    let dtype = parse_dtype(&args.target.dtype, &device)?;
    let repeats = args.repeats.max(1);
    let mut rows = Vec::new();
    for name in &args.configs {
        let bc = bench_config(name.trim())
            .with_context(|| format!("unknown bench config {name:?} (use tiny, s2, xl2)"))?;
        let cfg = &bc.config;
        eprintln!("{}: building random weights …", bc.name);
        let tensors = random::random_tensors(cfg, 0)?;
        let params: usize = tensors.values().map(|t| t.elem_count()).sum();
        let dit = dit_from_tensors(cfg, tensors, dtype, &device)?;
        let mut rng = Rng::new(1);
        let s = cfg.sample_size;
        let x = rng.randn((2, cfg.in_channels, s, s), &device)?;
        let t = Tensor::new(&[500f32, 500.0], &device)?;
        let y = Tensor::new(&[1u32, cfg.num_classes() as u32], &device)?;
        let mut times = Vec::with_capacity(repeats);
        for i in 0..=repeats {
            let started = Instant::now();
            let out = dit.forward(&x, &t, &y)?;
            device.synchronize()?;
            drop(out);
            let ms = started.elapsed().as_secs_f64() * 1e3;
            if i > 0 {
                times.push(ms);
            }
        }
        let mean_ms = times.iter().sum::<f64>() / times.len() as f64;
        let min_ms = times.iter().cloned().fold(f64::INFINITY, f64::min);
        let tokens = (s / cfg.patch_size).pow(2);
        eprintln!("{}: {mean_ms:.1} ms/step (min {min_ms:.1})", bc.name);
        rows.push(Row {
            label: bc.label.to_string(),
            params_m: params as f64 / 1e6,
            tokens,
            mean_ms,
            min_ms,
            per_block_ms: mean_ms / cfg.num_layers as f64,
        });
    }

    let mut table = format!(
        "Device: {} ({dtype:?}) on {}. One step = one DiT forward on a CFG batch of 2 \
         (conditional + null class), random weights; mean of {repeats} after a warm-up.\n\n\
         | config | params | tokens | ms/step (mean) | ms/step (min) | ms/block |\n\
         |---|---:|---:|---:|---:|---:|\n",
        args.target.device,
        machine()
    );
    for r in &rows {
        table.push_str(&format!(
            "| {} | {:.1} M | {} | {:.1} | {:.1} | {:.2} |\n",
            r.label, r.params_m, r.tokens, r.mean_ms, r.min_ms, r.per_block_ms
        ));
    }
    println!("{table}");
    if let Some(path) = &args.write {
        let command = format!(
            "cargo run {}-p cachedit -- bench --configs {} --repeats {repeats} --device {} --write {}",
            if cfg!(debug_assertions) { "" } else { "--release " },
            args.configs.join(","),
            args.target.device,
            path.display()
        );
        write_section(
            path,
            "dit-forward",
            "DiT forward, per step",
            &format!("{table}\nReproduce: `{command}`\n"),
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Replaces (or appends) the section between `<!-- bench:{marker}:start -->` and its end
/// marker, keeping the rest of the file.
pub fn write_section(path: &PathBuf, marker: &str, title: &str, body: &str) -> Result<()> {
    let start = format!("<!-- bench:{marker}:start -->");
    let end = format!("<!-- bench:{marker}:end -->");
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    let section = format!("{start}\n## {title}\n\n{body}{end}");
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if b > a => format!("{}{section}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    cachedit_nodes::safe_io::write_atomic(path, new.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
