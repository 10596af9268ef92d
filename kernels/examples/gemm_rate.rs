//! GFLOP/s of the gemm kernels on the DiT block's shapes (x · Wᵀ as a Linear does) against the
//! measured one-thread FMA peak: `cargo run --release -p cachedit-kernels --example gemm_rate`.

use cachedit_kernels::gemm::{matmul, MatMut, MatRef};
use cachedit_kernels::{peak, Isa};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    let peak = peak::fma_gflops(300);
    println!(
        "{}: one-thread FMA peak {peak:.1} GFLOP/s",
        Isa::detect().name()
    );
    let shapes: Vec<(usize, usize, usize)> = match std::env::args().nth(1).as_deref() {
        Some("tiny") => vec![
            (256, 128, 384),
            (256, 128, 128),
            (256, 128, 512),
            (256, 512, 128),
            (64, 64, 256),
            (64, 256, 64),
            (256, 64, 256),
            (256, 256, 64),
        ],
        _ => vec![
            (512, 384, 1152),
            (512, 384, 1536),
            (512, 1536, 384),
            (512, 128, 384),
            (512, 128, 512),
            (512, 1152, 4608),
            (256, 64, 256),
        ],
    };
    for (m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0f32; m * n];
        let mut best = f64::INFINITY;
        for _ in 0..20 {
            let started = Instant::now();
            matmul(
                MatMut::row_major(&mut out, m, n)?,
                MatRef::row_major(&a, m, k)?,
                MatRef::row_major(&w, n, k)?.t(),
                false,
                1.0,
                1,
            )?;
            best = best.min(started.elapsed().as_secs_f64());
        }
        let rate = 2.0 * (m * n * k) as f64 / best / 1e9;
        println!(
            "{m}×{k}·({n}×{k})ᵀ: {rate:.1} GFLOP/s ({:.0} % of peak)",
            100.0 * rate / peak
        );
    }
    Ok(())
}
