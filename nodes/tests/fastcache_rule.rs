//! FastCache (FastCache-xDiT): no reference implementation runs (one code path fails to build on
//! diffusers blocks, the other replaces every block by a random linear map), so the rule is
//! checked on itself: the first call runs every block on every token exactly as the plain
//! forward does; every later call approximates a block exactly when its recorded change is
//! within its recorded threshold; static tokens bypass the stack (all of them when no token
//! moves); runs on the trace DiT and the FLUX.1 fixture, where FLUX's motion tokens run with
//! their own rotary rows.

use cachedit_nodes::cache::fastcache::{FastCacheParams, LinearMap};
use cachedit_nodes::cache::hook::PlainForward;
use cachedit_nodes::cache::{CallRecord, Decision, StepCacheConfig, Strategy};
use cachedit_nodes::sampling::denoise::{denoise, CfgMode, Flow};
use candle_core::Tensor;

mod traces;
use traces::{dit_settings, flux_pipeline, flux_settings, run, trace_dit};

fn fastcache(c: f64, motion: f64, map: LinearMap) -> StepCacheConfig {
    StepCacheConfig {
        fastcache: FastCacheParams {
            cache_ratio_threshold: c,
            motion_threshold: motion,
            linear_map: map,
        },
        ..StepCacheConfig::threshold_free(Strategy::FastCache)
    }
}

/// Each call's first block is approximated iff its δ is within its threshold.
fn decisions_follow_the_rule(calls: &[CallRecord]) {
    for c in calls {
        let pattern = c.pattern.as_deref().expect("pattern");
        assert_eq!(pattern.len(), c.blocks_total);
        match (c.diff, c.threshold, pattern.chars().next()) {
            (Some(d), Some(t), Some(first)) => {
                assert_eq!(
                    first == 'A',
                    d <= t,
                    "step {}: δ {d} vs {t}: {pattern}",
                    c.step
                )
            }
            _ => assert!(
                pattern.chars().all(|p| p == 'C' || p == 'S'),
                "unmeasured call {pattern}"
            ),
        }
        let computed = pattern.chars().filter(|p| *p == 'C').count();
        assert_eq!(c.blocks_run, computed);
        assert_eq!(
            c.decision == Decision::Reused,
            c.block_work() < c.blocks_total as f64
        );
    }
}

fn noise(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    cachedit_nodes::rng::Rng::new(seed)
        .randn(shape, &candle_core::Device::Cpu)
        .expect("noise")
}

#[test]
fn the_first_call_is_the_plain_forward_and_later_calls_follow_the_rule() {
    let loaded = trace_dit();
    let settings = dit_settings(CfgMode::Batched);
    let x = noise((1, 3, 16, 16), 7);
    let (_, calls) = run(
        &loaded.model,
        &settings,
        &x,
        fastcache(0.05, 0.1, LinearMap::Residual),
    );
    assert_eq!(calls[0].pattern.as_deref(), Some("CCCCCCCCCCCC"));
    assert_eq!(calls[0].decision, Decision::Computed);
    decisions_follow_the_rule(&calls);
    let reused = calls
        .iter()
        .filter(|c| c.decision == Decision::Reused)
        .count();
    eprintln!("trace DiT, defaults: {reused} of 25 calls approximated something");
    assert!(reused > 0, "the defaults approximate on the trace DiT");

    // One step: FastCache's first call is the plain forward, bit for bit.
    let one = cachedit_nodes::sampling::denoise::SampleSettings {
        steps: 1,
        ..settings.clone()
    };
    let (cached, _) = run(
        &loaded.model,
        &one,
        &x,
        fastcache(0.05, 0.1, LinearMap::Residual),
    );
    let plain = denoise(
        &loaded.model,
        &one,
        &x,
        &mut PlainForward::default(),
        &mut |_| Flow::Continue,
    )
    .expect("plain")
    .sample;
    let same = (cached - plain)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff");
    assert_eq!(same, 0.0);
}

#[test]
fn static_tokens_bypass_the_stack_and_no_motion_runs_no_block() {
    let loaded = trace_dit();
    let settings = dit_settings(CfgMode::Batched);
    let x = noise((1, 3, 16, 16), 7);
    // τ_s = 1: no token's normalised saliency is above it, so after the first call every
    // token is static and no block runs.
    let (out, calls) = run(
        &loaded.model,
        &settings,
        &x,
        fastcache(0.05, 1.0, LinearMap::Residual),
    );
    assert_eq!(calls[0].blocks_run, 12);
    for c in &calls[1..] {
        assert_eq!(c.blocks_run, 0, "step {}", c.step);
        assert_eq!(c.pattern.as_deref(), Some("SSSSSSSSSSSS"));
        assert_eq!(c.block_work(), 0.0);
    }
    assert!(out
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("values")
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn fastcache_runs_flux_with_motion_tokens_on_their_own_rotary_rows() {
    let loaded = flux_pipeline();
    let settings = flux_settings(&loaded, "a red fox in the snow", 1.0);
    let x = noise((1, 16, 8, 8), 8);
    let mut subsets_seen = 0;
    for (motion, map) in [
        (0.3, LinearMap::Residual),
        (0.7, LinearMap::Residual),
        (0.7, LinearMap::Identity),
    ] {
        let (out, calls) = run(&loaded.model, &settings, &x, fastcache(0.05, motion, map));
        decisions_follow_the_rule(&calls);
        let subsets = calls
            .iter()
            .filter(|c| c.work.is_some_and(|w| w < c.blocks_run as f64))
            .count();
        eprintln!(
            "FLUX, τ_s {motion}, {}: {subsets} calls ran a token subset",
            map.name()
        );
        subsets_seen += subsets;
        let values = out
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values");
        assert!(values.iter().all(|v| v.is_finite()));
    }
    assert!(subsets_seen > 0, "some calls ran only their motion tokens");
    assert_eq!(
        fastcache(0.05, 0.1, LinearMap::Residual).signature(),
        "FastCache_R0.05_M0.1_residual"
    );
}
