//! SCM, cache-dit's steps-computation masks (`steps_mask`, ALGORITHMS.md §1.10): which steps
//! must compute, for the slow / medium / fast / ultra policies at any step count.

use super::config::{invalid, CacheConfigError};
use serde::Serialize;

/// cache-dit's four mask policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ScmPreset {
    Slow,
    Medium,
    Fast,
    Ultra,
}

type Bins = (&'static [usize], &'static [usize]);

impl ScmPreset {
    pub const NAMES: &'static [&'static str] = &["slow", "medium", "fast", "ultra"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "slow" => Some(ScmPreset::Slow),
            "medium" => Some(ScmPreset::Medium),
            "fast" => Some(ScmPreset::Fast),
            "ultra" => Some(ScmPreset::Ultra),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScmPreset::Slow => "slow",
            ScmPreset::Medium => "medium",
            ScmPreset::Fast => "fast",
            ScmPreset::Ultra => "ultra",
        }
    }

    /// The 28-step base bins (compute, cache).
    fn base(self) -> Bins {
        match self {
            ScmPreset::Slow => (&[8, 3, 3, 2, 1, 1], &[1, 2, 2, 2, 3]),
            ScmPreset::Medium => (&[6, 2, 2, 2, 2, 1], &[1, 3, 3, 3, 3]),
            ScmPreset::Fast => (&[6, 1, 1, 1, 1, 1], &[1, 3, 4, 5, 4]),
            ScmPreset::Ultra => (&[4, 1, 1, 1, 1], &[2, 5, 6, 7]),
        }
    }

    /// The distilled-model bins for 8 to 15 steps.
    fn distilled(self, n: usize) -> Bins {
        match (n, self) {
            (8, ScmPreset::Slow) => (&[5, 1, 1], &[1]),
            (8, ScmPreset::Medium) => (&[4, 1, 1], &[1, 1]),
            (8, ScmPreset::Fast) => (&[3, 1, 1], &[1, 2]),
            (8, ScmPreset::Ultra) => (&[2, 1, 1], &[2, 2]),
            (9, ScmPreset::Slow) => (&[5, 2, 1], &[1]),
            (9, ScmPreset::Medium) => (&[5, 1, 1], &[1, 1]),
            (9, ScmPreset::Fast) => (&[4, 1, 1], &[1, 2]),
            (9, ScmPreset::Ultra) => (&[3, 1, 1], &[2, 2]),
            (_, ScmPreset::Slow) => (&[4, 2, 2, 2, 1], &[1, 1, 1, 1]),
            (_, ScmPreset::Medium) => (&[4, 2, 1, 1, 1], &[1, 1, 2, 2]),
            (_, ScmPreset::Fast) => (&[3, 1, 1, 1, 1], &[1, 2, 2, 3]),
            (_, ScmPreset::Ultra) => (&[2, 1, 1, 1, 1], &[1, 2, 3, 3]),
        }
    }
}

fn total(compute: &[usize], cache: &[usize]) -> usize {
    compute.iter().sum::<usize>() + cache.iter().sum::<usize>()
}

/// `_truncate_policy`: take one step off the last cache bin, then off the last compute bin,
/// until the bins sum to at most `n`.
fn shrink(compute: &mut Vec<usize>, cache: &mut Vec<usize>, n: usize) {
    fn take_one(bins: &mut Vec<usize>) {
        if let Some(last) = bins.last_mut() {
            *last -= 1;
            if *last == 0 {
                bins.pop();
            }
        }
    }
    while total(compute, cache) > n {
        if compute.is_empty() && cache.is_empty() {
            return;
        }
        take_one(cache);
        if total(compute, cache) <= n {
            return;
        }
        take_one(compute);
    }
}

/// Grows the 28-step bins for `n > 28` steps, by `max(floor(bin·f), 1)` per bin in turn with
/// `f = (n/28)·0.5`, until they reach `n`.
fn grow(base: Bins, n: usize) -> (Vec<usize>, Vec<usize>) {
    let (c0, k0) = base;
    let (mut c, mut k) = (c0.to_vec(), k0.to_vec());
    let f = n as f64 / 28.0 * 0.5;
    let step = |bin: usize| ((bin as f64 * f).floor() as usize).max(1);
    let pairs = c0.len().min(k0.len());
    'outer: while total(&c, &k) < n {
        for i in 0..pairs {
            c[i] += step(c0[i]);
            if total(&c, &k) >= n {
                break 'outer;
            }
            k[i] += step(k0[i]);
            if total(&c, &k) >= n {
                break 'outer;
            }
        }
        if let Some(last) = c.last_mut() {
            *last += 1;
        }
    }
    (c, k)
}

/// Alternates `compute[0]` ones, `cache[0]` zeros, `compute[1]` ones, …; cut or padded (with
/// cache steps) to `n`.
fn interleave(compute: &[usize], cache: &[usize], n: usize) -> Vec<bool> {
    let mut mask = Vec::with_capacity(n);
    for i in 0..compute.len().max(cache.len()) {
        if let Some(&c) = compute.get(i) {
            mask.extend(std::iter::repeat_n(true, c));
        }
        if let Some(&k) = cache.get(i) {
            mask.extend(std::iter::repeat_n(false, k));
        }
    }
    mask.resize(n, false);
    mask
}

/// `steps_mask(total_steps=n, mask_policy=preset)`: one entry per step, `true` = must compute.
/// The last step always computes. cache-dit accepts 4, 6 and 8 or more steps.
pub fn steps_mask(preset: ScmPreset, n: usize) -> Result<Vec<bool>, CacheConfigError> {
    let (compute, cache) = match n {
        4 => (vec![2, 1], vec![1]),
        6 => (vec![3, 1], vec![2]),
        0..8 => {
            return Err(invalid(
                "scm_policy",
                format!("SCM masks exist for 4, 6 or at least 8 steps, not {n}"),
            ))
        }
        8..16 => {
            let (c, k) = preset.distilled(n);
            let (mut c, mut k) = (c.to_vec(), k.to_vec());
            shrink(&mut c, &mut k, n);
            (c, k)
        }
        16..=28 => {
            let (c, k) = preset.base();
            let (mut c, mut k) = (c.to_vec(), k.to_vec());
            shrink(&mut c, &mut k, n);
            (c, k)
        }
        _ => {
            let (mut c, mut k) = grow(preset.base(), n);
            shrink(&mut c, &mut k, n);
            (c, k)
        }
    };
    let mut mask = interleave(&compute, &cache, n);
    if let Some(last) = mask.last_mut() {
        *last = true;
    }
    Ok(mask)
}

/// cache-dit's mask from explicit bins (`steps_mask(compute_bins, cache_bins)`): no
/// adaptation and no last-step forcing. `n` defaults to the bins' sum and may not exceed it.
pub fn mask_from_bins(
    compute: &[usize],
    cache: &[usize],
    n: Option<usize>,
) -> Result<Vec<bool>, CacheConfigError> {
    let sum = total(compute, cache);
    let n = n.unwrap_or(sum);
    if n > sum {
        return Err(invalid(
            "scm_mask",
            format!("the bins cover {sum} steps, fewer than {n}"),
        ));
    }
    Ok(interleave(compute, cache, n))
}

/// Parses a user mask: `1` computes, `0` caches; spaces, commas and underscores are ignored.
pub fn parse_mask(text: &str) -> Result<Vec<bool>, CacheConfigError> {
    text.chars()
        .filter(|c| !matches!(c, ' ' | ',' | '_' | '\t' | '\n'))
        .map(|c| match c {
            '1' => Ok(true),
            '0' => Ok(false),
            other => Err(invalid(
                "scm_mask",
                format!("{other:?} is not 0 or 1 (write one digit per step, e.g. 1111011101)"),
            )),
        })
        .collect()
}

/// The mask as cache-dit prints it: `1` compute, `0` cache.
pub fn mask_string(mask: &[bool]) -> String {
    mask.iter().map(|&c| if c { '1' } else { '0' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ALGORITHMS.md §1.10 test vectors: steps, policy, computes, mask.
    const VECTORS: &[(usize, &str, usize, &str)] = &[
        (28, "slow", 18, "1111111101110011100110010001"),
        (28, "medium", 15, "1111110110001100011000110001"),
        (28, "fast", 11, "1111110100010000100000100001"),
        (28, "ultra", 8, "1111001000001000000100000001"),
        (
            50,
            "slow",
            38,
            "11111111111111111111110011111000111110001110001101",
        ),
        (
            50,
            "medium",
            29,
            "11111111111111110011100000111000001110000011100001",
        ),
        (
            50,
            "fast",
            20,
            "11111111111001100000110000000110000000001100000001",
        ),
        (
            50,
            "ultra",
            14,
            "11111110001100000000011000000000001100000000000001",
        ),
        (30, "fast", 14, "111111111010001000010000010001"),
        (40, "fast", 18, "1111111111001100000110000001100000100001"),
        (20, "slow", 15, "11111111011100111001"),
        (20, "medium", 12, "11111101100011000101"),
        (20, "fast", 8, "11111101000000000001"),
        (20, "ultra", 5, "11110000000000000001"),
        (16, "fast", 6, "1111100000000001"),
        (16, "ultra", 3, "1100000000000001"),
        (15, "fast", 7, "111010010010001"),
        (10, "slow", 9, "1111011111"),
        (9, "fast", 6, "111101001"),
        (8, "medium", 6, "11110101"),
    ];

    #[test]
    fn every_spec_vector_is_reproduced() {
        for &(n, policy, computes, expected) in VECTORS {
            let preset = ScmPreset::parse(policy).expect("policy");
            let mask = steps_mask(preset, n).expect("mask");
            assert_eq!(mask_string(&mask), expected, "n={n} {policy}");
            assert_eq!(mask.iter().filter(|&&c| c).count(), computes);
        }
    }

    #[test]
    fn short_runs_take_the_fixed_masks_and_others_are_refused() {
        for preset in [
            ScmPreset::Slow,
            ScmPreset::Medium,
            ScmPreset::Fast,
            ScmPreset::Ultra,
        ] {
            assert_eq!(mask_string(&steps_mask(preset, 6).expect("6")), "111001");
            assert_eq!(mask_string(&steps_mask(preset, 4).expect("4")), "1101");
            for n in [0, 1, 2, 3, 5, 7] {
                let err = steps_mask(preset, n).expect_err("refused");
                assert_eq!(err.field, "scm_policy");
            }
        }
    }

    #[test]
    fn the_slow_28_mask_matches_the_reference_comment() {
        // cache-dit's literal: 11111111 0 111 00 111 00 11 00 1 000 1
        let literal = "11111111 0 111 00 111 00 11 00 1 000 1";
        let mask = steps_mask(ScmPreset::Slow, 28).expect("mask");
        assert_eq!(mask, parse_mask(literal).expect("parses"));
    }

    #[test]
    fn every_length_from_8_to_120_is_exact_and_ends_computing() {
        for preset in [ScmPreset::Slow, ScmPreset::Ultra] {
            for n in 8..=120 {
                let mask = steps_mask(preset, n).expect("mask");
                assert_eq!(mask.len(), n);
                assert_eq!(mask.last(), Some(&true));
                assert_eq!(mask.first(), Some(&true));
            }
        }
    }

    #[test]
    fn bins_interleave_without_forcing_the_last_step() {
        let mask = mask_from_bins(&[2, 1], &[1, 2], None).expect("mask");
        assert_eq!(mask_string(&mask), "110100");
        let cut = mask_from_bins(&[2, 1], &[1, 2], Some(4)).expect("mask");
        assert_eq!(mask_string(&cut), "1101");
        assert!(mask_from_bins(&[2], &[1], Some(5)).is_err());
    }

    #[test]
    fn user_masks_parse_and_bad_characters_name_the_field() {
        assert_eq!(
            parse_mask("11, 0 1_0").expect("parses"),
            vec![true, true, false, true, false]
        );
        assert_eq!(parse_mask("1x0").expect_err("bad").field, "scm_mask");
    }
}
