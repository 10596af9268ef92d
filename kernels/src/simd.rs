//! Vectorised element-wise kernels on f32 slices: exp, tanh-GELU (with a bias), softmax rows,
//! LayerNorm rows with an adaLN modulation, gate-and-residual. Each body is written once as
//! straight-line lane arithmetic and compiled three times (AVX-512, AVX2 + FMA, portable); the
//! instruction set is detected once at run time ([`Isa::detect`]).

use std::sync::OnceLock;

/// The instruction set the kernels run with on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F/BW/DQ/VL with FMA (16 f32 lanes).
    Avx512,
    /// AVX2 with FMA (8 f32 lanes).
    Avx2,
    /// No vector extension detected: plain code (the compiler still uses SSE2 on x86-64).
    Portable,
}

impl Isa {
    /// Detected once per process; `CACHEDIT_ISA=avx2|portable` caps it (for tests and
    /// benchmarks of the fallbacks).
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let cap = std::env::var("CACHEDIT_ISA").ok();
            let found = detect_hardware();
            match (cap.as_deref(), found) {
                (Some("portable"), _) => Isa::Portable,
                (Some("avx2"), Isa::Avx512) => Isa::Avx2,
                _ => found,
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512",
            Isa::Avx2 => "AVX2+FMA",
            Isa::Portable => "portable",
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn detect_hardware() -> Isa {
    if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("fma")
    {
        Isa::Avx512
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Isa::Avx2
    } else {
        Isa::Portable
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_hardware() -> Isa {
    Isa::Portable
}

/// `a·b + c`: fused where the instruction set has FMA, two roundings otherwise (a software
/// `fmaf` would be far slower than the kernel it sits in).
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

struct Fused;
struct Unfused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl MulAdd for Unfused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Lanes the reductions keep apart, so that the compiler can vectorise them without
/// reassociating (16 = one AVX-512 register, two AVX2 ones).
const LANES: usize = 16;

/// Compiles `body` for each instruction set and dispatches on [`Isa::detect`]. The body is an
/// `#[inline(always)]` function generic over [`MulAdd`], so each copy is vectorised for its
/// target.
macro_rules! dispatch {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body::<Fused>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body::<Fused>($($arg),*)
                }
                match Isa::detect() {
                    // SAFETY: `Isa::detect` found these features on this CPU at run time.
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Portable => {}
                }
            }
            $body::<Unfused>($($arg),*)
        }
    };
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n·LN2_HI` is exact for the `n` that occur (Cephes' `expf`).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
const ROUNDER: f32 = 12_582_912.0;
/// The inputs of `exp` are clamped here: 2ⁿ stays a normal number.
const EXP_HI: f32 = 88.0;
const EXP_LO: f32 = -87.0;

/// `e^x` for one lane: `2ⁿ·p(r)`, `r = x − n·ln 2`, Cephes' degree-6 polynomial (about 1
/// ulp); inputs clamped to [-87, 88].
#[inline(always)]
fn exp_lane<F: MulAdd>(x: f32) -> f32 {
    let x = if x > EXP_HI { EXP_HI } else { x };
    let x = if x < EXP_LO { EXP_LO } else { x };
    let t = F::mul_add(x, LOG2E, ROUNDER);
    let n = t - ROUNDER;
    let r = F::mul_add(n, -LN2_HI, x);
    let r = F::mul_add(n, -LN2_LO, r);
    let mut p = 1.987_569_1e-4;
    p = F::mul_add(p, r, 1.398_2e-3);
    p = F::mul_add(p, r, 8.333_452e-3);
    p = F::mul_add(p, r, 4.166_579_6e-2);
    p = F::mul_add(p, r, 0.166_666_65);
    p = F::mul_add(p, r, 0.5);
    let p = F::mul_add(p, r * r, r) + 1.0;
    // The rounded n sits in t's low bits; move n + 127 into the exponent field.
    let n_bits = t.to_bits().wrapping_sub(ROUNDER.to_bits()) as i32;
    let scale = f32::from_bits(((n_bits + 127) as u32) << 23);
    p * scale
}

/// `sqrt(2/π)` and the cubic coefficient of the tanh approximation of GELU.
const GELU_K: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// tanh-GELU, `0.5·x·(1 + tanh(k(x + c·x³)))`, computed as `x·σ(2k(x + c·x³))` (the same
/// function; one exp instead of a tanh).
#[inline(always)]
fn gelu_lane<F: MulAdd>(x: f32) -> f32 {
    let inner = x * F::mul_add(GELU_C * x, x, 1.0);
    x / (1.0 + exp_lane::<F>(-2.0 * GELU_K * inner))
}

#[inline(always)]
fn exp_body<F: MulAdd>(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = exp_lane::<F>(*x);
    }
}

#[inline(always)]
fn bias_gelu_body<F: MulAdd>(rows: &mut [f32], bias: &[f32]) {
    let width = bias.len();
    if width == 0 {
        return;
    }
    for row in rows.chunks_exact_mut(width) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x = gelu_lane::<F>(*x + *b);
        }
    }
}

/// Maximum of a slice, lanes kept apart so that it vectorises.
#[inline(always)]
fn max_lanes(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = if v > *a { v } else { *a };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(tail) {
        m = if v > m { v } else { m };
    }
    m
}

/// Sum of a slice in [`LANES`] partial sums.
#[inline(always)]
fn sum_lanes(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// Sum of squared deviations from `mean`, in [`LANES`] partial sums.
#[inline(always)]
fn sq_dev_lanes<F: MulAdd>(xs: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            let d = v - mean;
            *a = F::mul_add(d, d, *a);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &v in tail {
        s += (v - mean) * (v - mean);
    }
    s
}

#[inline(always)]
fn softmax_rows_body<F: MulAdd>(rows: &mut [f32], width: usize) {
    if width == 0 {
        return;
    }
    for row in rows.chunks_exact_mut(width) {
        let max = max_lanes(row);
        for x in row.iter_mut() {
            *x = exp_lane::<F>(*x - max);
        }
        let inv = 1.0 / sum_lanes(row);
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

#[inline(always)]
fn layer_norm_modulate_body<F: MulAdd>(
    x: &[f32],
    out: &mut [f32],
    shift: &[f32],
    scale: &[f32],
    eps: f32,
) {
    let width = shift.len();
    if width == 0 || scale.len() != width {
        return;
    }
    for (row, o) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let mean = sum_lanes(row) / width as f32;
        let var = sq_dev_lanes::<F>(row, mean) / width as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        for (((o, &v), &sh), &sc) in o.iter_mut().zip(row).zip(shift).zip(scale) {
            *o = F::mul_add((v - mean) * rstd, 1.0 + sc, sh);
        }
    }
}

#[inline(always)]
fn gated_residual_body<F: MulAdd>(residual: &[f32], y: &mut [f32], gate: &[f32]) {
    let width = gate.len();
    if width == 0 {
        return;
    }
    for (r, yrow) in residual.chunks_exact(width).zip(y.chunks_exact_mut(width)) {
        for ((y, &x), &g) in yrow.iter_mut().zip(r).zip(gate) {
            *y = F::mul_add(*y, g, x);
        }
    }
}

/// `(Σ term(a − b), Σ term(a))` in [`LANES`] f32 partial sums each, added up in f64; `term`
/// adds one element's share to a running sum (`|d|` for L1, `d²` for L2).
#[inline(always)]
fn distance_sums<T: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], term: T) -> (f64, f64) {
    let mut diff = [0f32; LANES];
    let mut norm = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for i in 0..LANES {
            diff[i] = term(diff[i], xa[i] - xb[i]);
            norm[i] = term(norm[i], xa[i]);
        }
    }
    let mut d: f64 = diff.iter().map(|&v| v as f64).sum();
    let mut n: f64 = norm.iter().map(|&v| v as f64).sum();
    for (&x, &y) in ta.iter().zip(tb) {
        d += term(0.0, x - y) as f64;
        n += term(0.0, x) as f64;
    }
    (d, n)
}

#[inline(always)]
fn l1_distance_body<F: MulAdd>(a: &[f32], b: &[f32]) -> (f64, f64) {
    distance_sums(a, b, |sum, d| sum + d.abs())
}

#[inline(always)]
fn l2_distance_body<F: MulAdd>(a: &[f32], b: &[f32]) -> (f64, f64) {
    distance_sums(a, b, |sum, d| F::mul_add(d, d, sum))
}

dispatch! {
    /// `(Σ|a − b|, Σ|a|)` over two slices of one length (a relative L1 distance's sums).
    pub fn l1_distance(a: &[f32], b: &[f32]) -> (f64, f64) = l1_distance_body
}

dispatch! {
    /// `(Σ(a − b)², Σa²)` over two slices of one length (a relative L2 distance's sums).
    pub fn l2_distance(a: &[f32], b: &[f32]) -> (f64, f64) = l2_distance_body
}

dispatch! {
    /// `x ← e^x` for every element (inputs clamped to [-87, 88]).
    pub fn exp_in_place(xs: &mut [f32]) = exp_body
}

dispatch! {
    /// Each row of `rows` (rows of `bias.len()`): `x ← gelu_tanh(x + bias)`.
    pub fn bias_gelu_in_place(rows: &mut [f32], bias: &[f32]) = bias_gelu_body
}

dispatch! {
    /// Softmax of each row of `width` elements, in place (max subtracted first).
    pub fn softmax_rows_in_place(rows: &mut [f32], width: usize) = softmax_rows_body
}

dispatch! {
    /// Each row of `x` (rows of `shift.len()`): `LayerNorm(x)·(1 + scale) + shift` into the same
    /// row of `out`; no affine params, variance over the row (biased), `eps` inside the root.
    pub fn layer_norm_modulate(x: &[f32], out: &mut [f32], shift: &[f32], scale: &[f32], eps: f32) = layer_norm_modulate_body
}

dispatch! {
    /// Each row: `y ← residual + gate ⊙ y` (adaLN-Zero's gated residual; rows of `gate.len()`).
    pub fn gated_residual(residual: &[f32], y: &mut [f32], gate: &[f32]) = gated_residual_body
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Max relative error against an f64 reference, with an absolute floor for values near 0.
    fn worst(ours: &[f32], reference: impl Fn(usize) -> f64, floor: f64) -> f64 {
        ours.iter()
            .enumerate()
            .map(|(i, &v)| {
                let r = reference(i);
                (v as f64 - r).abs() / r.abs().max(floor)
            })
            .fold(0.0, f64::max)
    }

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
            .collect()
    }

    #[test]
    fn exp_is_within_two_ulp_on_its_range() {
        let xs = grid(-87.0, 88.0, 100_003);
        let mut ours = xs.clone();
        exp_in_place(&mut ours);
        let e = worst(&ours, |i| (xs[i] as f64).exp(), 0.0);
        assert!(e < 2.5e-7, "exp: {e:e} relative ({})", Isa::detect().name());
        // Beyond the range it clamps instead of overflowing or going to NaN.
        let mut edge = vec![1000.0, -1000.0, 0.0];
        exp_in_place(&mut edge);
        assert!(edge[0].is_finite() && edge[0] > 1e38);
        assert!(edge[1] >= 0.0 && edge[1] < 1e-37);
        assert_eq!(edge[2], 1.0);
    }

    #[test]
    fn gelu_matches_the_tanh_form_in_f64() {
        let xs = grid(-12.0, 12.0, 48_001);
        let bias = vec![0.25f32; 48_001];
        let mut ours = xs.clone();
        bias_gelu_in_place(&mut ours, &bias);
        let reference = |i: usize| {
            // The input as the kernel sees it: the sum rounded to f32 (far left, GELU's
            // relative slope amplifies that rounding a hundredfold).
            let x = (xs[i] + 0.25) as f64;
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
        };
        // Relative to max(|value|, 1e-3). On the left GELU's relative slope reaches ~10 where
        // |value| ≥ 1e-3 (and far more beyond), so the f32 rounding of the input and of the
        // exponent alone moves any f32 evaluation by about 1e-6 of the value there.
        let e = worst(&ours, reference, 1e-3);
        assert!(e < 2e-6, "gelu: {e:e} ({})", Isa::detect().name());
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_f64() {
        let width = 37; // not a multiple of the lanes: the tail path runs too
        let rows: Vec<f32> = (0..width * 5)
            .map(|i| ((i * 7919) % 113) as f32 / 7.0 - 8.0)
            .collect();
        let mut ours = rows.clone();
        softmax_rows_in_place(&mut ours, width);
        for (r, (row, out)) in rows.chunks(width).zip(ours.chunks(width)).enumerate() {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            let e = worst(out, |i| (row[i] as f64 - max).exp() / sum, 1e-30);
            assert!(e < 1e-6, "row {r}: {e:e}");
            let total: f32 = out.iter().sum();
            assert!((total - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn layer_norm_modulate_matches_f64() {
        let width = 72;
        let x: Vec<f32> = (0..width * 3)
            .map(|i| ((i * 31) % 17) as f32 * 0.3 - 2.0)
            .collect();
        let shift: Vec<f32> = (0..width).map(|i| i as f32 * 0.01).collect();
        let scale: Vec<f32> = (0..width).map(|i| 0.5 - i as f32 * 0.02).collect();
        let mut out = vec![0f32; x.len()];
        layer_norm_modulate(&x, &mut out, &shift, &scale, 1e-6);
        for (row, o) in x.chunks(width).zip(out.chunks(width)) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / width as f64;
            let e = worst(
                o,
                |i| {
                    (row[i] as f64 - mean) / (var + 1e-6).sqrt() * (1.0 + scale[i] as f64)
                        + shift[i] as f64
                },
                1.0,
            );
            assert!(e < 1e-6, "{e:e}");
        }
    }

    #[test]
    fn distance_sums_match_f64() {
        let a: Vec<f32> = (0..1037)
            .map(|i| ((i * 37) % 101) as f32 * 0.01 - 0.5)
            .collect();
        let b: Vec<f32> = (0..1037)
            .map(|i| ((i * 53) % 97) as f32 * 0.01 - 0.4)
            .collect();
        let (d1, n1) = l1_distance(&a, &b);
        let want1: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum();
        let norm1: f64 = a.iter().map(|x| (*x as f64).abs()).sum();
        assert!((d1 - want1).abs() < 1e-5 * want1 && (n1 - norm1).abs() < 1e-5 * norm1);
        let (d2, n2) = l2_distance(&a, &b);
        let want2: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        let norm2: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
        assert!((d2 - want2).abs() < 1e-5 * want2 && (n2 - norm2).abs() < 1e-5 * norm2);
    }

    #[test]
    fn gated_residual_adds_the_gated_branch() {
        let residual = vec![1.0f32, 2.0, 3.0, 4.0];
        let mut y = vec![10.0f32, 20.0, 30.0, 40.0];
        gated_residual(&residual, &mut y, &[0.5, -1.0]);
        assert_eq!(y, vec![6.0, -18.0, 18.0, -36.0]);
    }
}
