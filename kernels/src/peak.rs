//! The machine's measured f32 FMA peak for one thread: independent fused multiply-adds in the
//! widest vectors the detected instruction set has, the yardstick for a GFLOP/s figure.

use crate::simd::Isa;
use std::time::Instant;

/// Independent accumulators: enough to cover the FMA latency on two pipes.
const CHAINS: usize = 12;

/// The portable loop: scalar chains (what the compiler makes of it without vector FMA).
fn fma_loop_scalar(iterations: usize, seed: f32) -> f32 {
    let mut acc = [seed; CHAINS];
    for _ in 0..iterations {
        for v in acc.iter_mut() {
            *v = *v * 0.999_99 + 1e-7;
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn fma_avx512(iterations: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let (mul, add) = (_mm512_set1_ps(0.999_99), _mm512_set1_ps(1e-7));
    let mut acc = [_mm512_set1_ps(seed); CHAINS];
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, mul, add);
        }
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(iterations: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let (mul, add) = (_mm256_set1_ps(0.999_99), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_set1_ps(seed); CHAINS];
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, mul, add);
        }
    }
    let mut lanes = [0f32; 8];
    let mut total = 0.0;
    for a in acc {
        // SAFETY: `lanes` holds exactly 8 f32, what an unaligned 256-bit store writes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
        total += lanes.iter().sum::<f32>();
    }
    total
}

/// GFLOP/s of one thread running FMAs for about `millis` ms (an FMA counts as two FLOPs).
pub fn fma_gflops(millis: u64) -> f64 {
    let isa = Isa::detect();
    let lanes = match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Portable => 1,
    };
    let run = |iterations: usize| -> f32 {
        let seed = std::hint::black_box(1.0f32);
        #[cfg(target_arch = "x86_64")]
        match isa {
            // SAFETY: `Isa::detect` found these features at run time.
            Isa::Avx512 => return unsafe { fma_avx512(iterations, seed) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { fma_avx2(iterations, seed) },
            Isa::Portable => {}
        }
        fma_loop_scalar(iterations, seed)
    };
    let mut iterations = 1 << 16;
    loop {
        let started = Instant::now();
        std::hint::black_box(run(iterations));
        let secs = started.elapsed().as_secs_f64();
        if secs * 1e3 >= millis as f64 || iterations >= 1 << 34 {
            return (iterations * CHAINS * lanes * 2) as f64 / secs / 1e9;
        }
        iterations *= 2;
    }
}
