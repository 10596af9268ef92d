//! The relative-L1 indicator (cache-dit's `similarity`, ALGORITHMS.md §1.6–1.7): how far the
//! front blocks' residual moved since the last computed call, reduced in f32, with cache-dit's
//! negative sentinels for "not measured".

use candle_core::{DType, Result, Tensor};

/// Recorded when the threshold is ≤ 0 (caching off): not similar.
pub const DIFF_DISABLED: f64 = -0.0;
/// Recorded when the threshold is ≥ 1 ("always similar").
pub const DIFF_ALWAYS: f64 = -1.0;
/// Recorded when the stored and current tensors differ in shape: not similar.
pub const DIFF_SHAPE: f64 = -2.0;

/// The outcome of one comparison: the diff to record and whether it allows reuse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub diff: f64,
    pub similar: bool,
}

/// The outcomes that need no tensors: thresholds ≤ 0 and ≥ 1.
pub fn sentinel(threshold: f64) -> Option<Similarity> {
    if threshold <= 0.0 {
        Some(Similarity {
            diff: DIFF_DISABLED,
            similar: false,
        })
    } else if threshold >= 1.0 {
        Some(Similarity {
            diff: DIFF_ALWAYS,
            similar: true,
        })
    } else {
        None
    }
}

/// `mean|prev − cur| / mean|prev|` over all elements (batch included), normalised by the
/// stored tensor. Both sums are taken in f32 (f64 for f64 tensors, as torch reduces in the
/// tensor's dtype) and fetched in one transfer (one device sync); the ratio of sums equals the
/// ratio of means.
pub fn rel_l1(prev: &Tensor, cur: &Tensor) -> Result<f64> {
    // f32 on the CPU: both sums in one vectorised pass (f32 lanes, as torch's f32 reduction).
    if prev.dims() == cur.dims() {
        if let (Some(a), Some(b)) = (
            crate::kernels::CpuF32::of(prev),
            crate::kernels::CpuF32::of(cur),
        ) {
            let (num, den) = crate::kernels::simd::l1_distance(a.values(), b.values());
            return Ok(if den > 0.0 { num / den } else { f64::INFINITY });
        }
    }
    let work = if prev.dtype() == DType::F64 || cur.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let prev = prev.to_dtype(work)?;
    let cur = cur.to_dtype(work)?;
    let num = (&prev - &cur)?.abs()?.sum_all()?;
    let den = prev.abs()?.sum_all()?;
    let sums = Tensor::stack(&[num, den], 0)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    let (num, den) = match sums.as_slice() {
        [n, d] => (*n, *d),
        _ => candle_core::bail!("relative L1: expected two sums"),
    };
    // cache-dit divides 0 by 0 into NaN, which never counts as similar; +inf says the same.
    Ok(if den > 0.0 { num / den } else { f64::INFINITY })
}

/// cache-dit's `similarity(prev, cur, threshold)`: sentinels first, then a shape check, then
/// the relative L1, similar iff strictly below the threshold. `shared` is a diff already
/// measured for this step (the unconditional call reusing the conditional call's diff).
pub fn similarity(
    prev: &Tensor,
    cur: &Tensor,
    threshold: f64,
    shared: Option<f64>,
) -> Result<Similarity> {
    if let Some(s) = sentinel(threshold) {
        return Ok(s);
    }
    if prev.shape() != cur.shape() {
        return Ok(Similarity {
            diff: DIFF_SHAPE,
            similar: false,
        });
    }
    let diff = match shared {
        Some(d) => d,
        None => rel_l1(prev, cur)?,
    };
    Ok(Similarity {
        diff,
        similar: diff < threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).expect("tensor")
    }

    #[test]
    fn relative_l1_normalises_by_the_stored_tensor() {
        let prev = t(&[1.0, -2.0, 3.0, -4.0]);
        let cur = t(&[1.5, -2.0, 2.0, -4.0]);
        // mean|prev-cur| = 1.5/4, mean|prev| = 10/4.
        let d = rel_l1(&prev, &cur).expect("diff");
        assert!((d - 0.15).abs() < 1e-7, "{d}");
        let back = rel_l1(&cur, &prev).expect("diff");
        assert!((back - 1.5 / 9.5).abs() < 1e-7, "not symmetric: {back}");
    }

    #[test]
    fn half_precision_inputs_are_reduced_in_f32() {
        let prev = t(&[1000.0; 4096]).to_dtype(DType::F16).expect("f16");
        let cur = t(&[1001.0; 4096]).to_dtype(DType::F16).expect("f16");
        // An f16 sum of 4096 × 1000 would overflow (max 65504).
        let d = rel_l1(&prev, &cur).expect("diff");
        assert!((d - 1e-3).abs() < 1e-6, "{d}");
    }

    #[test]
    fn sentinels_and_the_strict_threshold() {
        let a = t(&[1.0, 1.0]);
        let b = t(&[1.1, 0.9]);
        let off = similarity(&a, &b, 0.0, None).expect("s");
        assert!(!off.similar && off.diff == 0.0 && off.diff.is_sign_negative());
        let always = similarity(&a, &b, 1.0, None).expect("s");
        assert_eq!((always.diff, always.similar), (DIFF_ALWAYS, true));
        let shape = similarity(&a, &t(&[1.0, 1.0, 1.0]), 0.5, None).expect("s");
        assert_eq!((shape.diff, shape.similar), (DIFF_SHAPE, false));
        let at = similarity(&a, &b, 0.1, None).expect("s");
        assert!((at.diff - 0.1).abs() < 1e-6);
        let just_above = similarity(&a, &b, at.diff, None).expect("s");
        assert!(!just_above.similar, "diff == threshold computes");
        let shared = similarity(&a, &b, 0.5, Some(0.7)).expect("s");
        assert_eq!((shared.diff, shared.similar), (0.7, false));
        let zero = rel_l1(&t(&[0.0, 0.0]), &t(&[0.0, 0.0])).expect("d");
        assert!(zero.is_infinite(), "0/0 never counts as similar");
    }
}
