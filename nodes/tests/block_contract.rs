//! The block contract with two block lists (joint, then image-only): the step cache's Fn /
//! middle / Bn partition runs over the flattened order across the lists, a reused call adds
//! the stored text-stream residual exactly where a middle block is joint, and the generic
//! denoise loop samples the second family as it does DiT.

use cachedit_nodes::cache::hook::{CallInfo, PlainForward, TransformerHook};
use cachedit_nodes::cache::{CfgBranch, Decision, StepCache, StepCacheConfig, Strategy};
use cachedit_nodes::models::blocks::{self, run_order, BlockTransformer, Conditioning, Streams};
use cachedit_nodes::models::two_list::{TwoList, TwoListConfig};
use cachedit_nodes::rng::Rng;
use cachedit_nodes::sampling::denoise::{denoise, initial_noise, CfgMode, Flow, SampleSettings};
use cachedit_nodes::schedulers::{SchedulerConfig, SchedulerKind};
use candle_core::{Device, Tensor};
use std::sync::Arc;

fn model() -> TwoList {
    TwoList::new(TwoListConfig::default(), 7, &Device::Cpu).expect("two-list model")
}

/// Adaptive DBCache with no warmup and no limits: threshold 1 reuses every call after the
/// first, threshold 0 never reuses.
fn config(front: usize, back: usize, threshold: f64) -> StepCacheConfig {
    let mut c = StepCacheConfig {
        strategy: Strategy::Adaptive,
        ..StepCacheConfig::default()
    };
    c.db.fn_compute_blocks = front;
    c.db.bn_compute_blocks = back;
    c.db.residual_diff_threshold = threshold;
    c.db.max_warmup_steps = 0;
    c.db.max_cached_steps = -1;
    c.db.max_continuous_cached_steps = -1;
    c
}

struct Inputs {
    x: [Tensor; 2],
    t: Tensor,
    cond: Conditioning,
}

fn inputs() -> Inputs {
    let mut rng = Rng::new(3);
    let x0 = rng.randn((2, 2, 4, 4), &Device::Cpu).expect("x");
    let x1 =
        (&x0 + (rng.randn((2, 2, 4, 4), &Device::Cpu).expect("x") * 0.01).expect("x")).expect("x");
    Inputs {
        x: [x0, x1],
        t: Tensor::new(&[500f32, 500.0], &Device::Cpu).expect("t"),
        cond: Conditioning::Class(Tensor::new(&[1u32, 2], &Device::Cpu).expect("labels")),
    }
}

fn info(step: usize) -> CallInfo {
    CallInfo {
        step_index: step,
        total_steps: 10,
        timestep: 500.0,
        batched_cfg: false,
        branch: CfgBranch::Batched,
        shares: Default::default(),
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().and_then(|t| t.to_vec1()).expect("values")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs blocks `range` of the flattened order.
fn run(m: &TwoList, range: std::ops::Range<usize>, mut s: Streams, x: &Tensor) -> Streams {
    let i = inputs();
    let (_, call) = m.embed(x, &i.t, &i.cond).expect("embed");
    for at in &run_order(m.block_lists())[range] {
        s = m.block(*at, &s, &call).expect("block");
    }
    s
}

/// What a reused call must give by hand: fresh front, the stored residuals of the last
/// computed call added (the text one only when `with_text`), fresh back blocks, the head.
fn by_hand(m: &TwoList, front: usize, back: usize, with_text: bool) -> Tensor {
    let i = inputs();
    let total = blocks::total_blocks(m.block_lists());
    let middle = front..total - back;
    // The computed call on x[0]: its middle residuals.
    let (s0, _) = m.embed(&i.x[0], &i.t, &i.cond).expect("embed");
    let f0 = run(m, 0..front, s0, &i.x[0]);
    let m0 = run(m, middle.clone(), f0.clone(), &i.x[0]);
    let dh = (&m0.hidden - &f0.hidden).expect("residual");
    let de = (m0.encoder.as_ref().expect("text") - f0.encoder.as_ref().expect("text"))
        .expect("residual");
    // The reused call on x[1].
    let (s1, call1) = m.embed(&i.x[1], &i.t, &i.cond).expect("embed");
    let f1 = run(m, 0..front, s1, &i.x[1]);
    let e1 = f1.encoder.clone().expect("text");
    let approx = Streams {
        hidden: (&f1.hidden + dh).expect("add"),
        encoder: Some(if with_text {
            (e1 + de).expect("add")
        } else {
            e1
        }),
    };
    let last = run(m, middle.end..total, approx, &i.x[1]);
    m.finish(&last, &call1).expect("finish")
}

#[test]
fn a_reused_call_crosses_the_lists_and_adds_the_text_residual() {
    let m = model();
    let i = inputs();
    // 3 joint + 3 image-only blocks; F2B2: the middle is joint block 2 and image block 0.
    let mut cache =
        StepCache::for_run(Arc::new(config(2, 2, 1.0)), m.block_lists(), 10).expect("valid config");
    TransformerHook::<TwoList>::reset(&mut cache);
    let first = cache
        .call(&m, &info(0), &i.x[0], &i.t, &i.cond)
        .expect("call 0");
    let second = cache
        .call(&m, &info(1), &i.x[1], &i.t, &i.cond)
        .expect("call 1");
    let records = cache.drain_records();
    assert_eq!(records[0].decision, Decision::Computed);
    assert_eq!(records[1].decision, Decision::Reused);
    assert_eq!((records[0].blocks_run, records[0].blocks_total), (6, 6));
    assert_eq!((records[1].blocks_run, records[1].blocks_total), (4, 6));

    // A computed call is the plain forward, bit for bit.
    let plain = blocks::forward(&m, &i.x[0], &i.t, &i.cond).expect("forward");
    assert_eq!(values(&first), values(&plain));
    // The reused call is the hand-made one with the text residual, bit for bit ...
    assert_eq!(values(&second), values(&by_hand(&m, 2, 2, true)));
    // ... and leaving the text residual out would show in the output.
    let stale = by_hand(&m, 2, 2, false);
    assert!(
        max_diff(&second, &stale) > 1e-4,
        "the text residual matters"
    );
}

#[test]
fn the_text_residual_is_kept_only_where_a_middle_block_is_joint() {
    let m = model();
    let i = inputs();
    let peak = |front: usize, back: usize| {
        let mut cache = StepCache::for_run(Arc::new(config(front, back, 1.0)), m.block_lists(), 10)
            .expect("valid config");
        let mut out = Vec::new();
        for (step, x) in i.x.iter().enumerate() {
            out.push(cache.call(&m, &info(step), x, &i.t, &i.cond).expect("call"));
        }
        (cache.peak_bytes(), out.pop().expect("second call"))
    };
    // F3B1: the middle is image blocks 0 and 1; no joint block, so no text residual.
    let (without_text, reused) = peak(3, 1);
    assert_eq!(values(&reused), values(&by_hand(&m, 3, 1, false)));
    // F2B1: joint block 2 is in the middle; the text residual [2, 3, 8] f32 is kept too.
    let (with_text, _) = peak(2, 1);
    assert_eq!(with_text - without_text, 2 * 3 * 8 * 4);
}

#[test]
fn the_denoise_loop_samples_the_two_list_family_with_guidance() {
    let m = model();
    for cfg_mode in [CfgMode::Batched, CfgMode::Separate] {
        let s = SampleSettings {
            class_labels: vec![1, 2],
            prompt: None,
            seed: 11,
            steps: 6,
            guidance: 3.0,
            cfg_mode,
            scheduler: SchedulerKind::DpmSolverMultistep,
            scheduler_config: SchedulerConfig::default(),
            size: None,
        };
        let noise = initial_noise(&m, &s, &Device::Cpu).expect("noise");
        let sample = |hook: &mut dyn TransformerHook<TwoList>| {
            let mut calls = Vec::new();
            let out = denoise(&m, &s, &noise, hook, &mut |p| {
                calls.extend(p.calls.iter().cloned());
                Flow::Continue
            })
            .expect("sampling");
            (values(&out.sample), calls)
        };
        let (plain, plain_calls) = sample(&mut PlainForward::default());
        assert!(plain.iter().all(|v| v.is_finite()));
        assert_eq!(
            plain_calls.len(),
            if cfg_mode == CfgMode::Separate { 12 } else { 6 }
        );
        // Threshold 0 never reuses: the cached loop is the plain one, bit for bit.
        let mut never = StepCache::for_run(Arc::new(config(2, 1, 0.0)), m.block_lists(), 6)
            .expect("valid config");
        assert_eq!(sample(&mut never).0, plain);
        // Threshold 1 reuses, so the image moves, but stays finite.
        let mut always = StepCache::for_run(Arc::new(config(2, 1, 1.0)), m.block_lists(), 6)
            .expect("valid config");
        let (cached, calls) = sample(&mut always);
        assert!(calls.iter().any(|c| c.decision == Decision::Reused));
        assert!(cached.iter().all(|v| v.is_finite()));
        assert_ne!(cached, plain);
    }
}

#[test]
fn a_partition_larger_than_every_list_together_names_the_field() {
    let m = model();
    let err = StepCache::for_run(Arc::new(config(7, 0, 0.1)), m.block_lists(), 10)
        .expect_err("7 front blocks of 6");
    assert_eq!(err.field, "Fn_compute_blocks");
    assert!(err.message.contains("6 blocks"), "{}", err.message);
}

#[test]
fn taylorseer_forecasts_the_text_residual_as_it_does_the_image_one() {
    use cachedit_nodes::cache::{TaylorIndexing, TaylorSeerConfig};
    let m = model();
    let i = inputs();
    let x2 = (&i.x[1] + (&i.x[1] - &i.x[0]).expect("step")).expect("x2");
    let xs = [i.x[0].clone(), i.x[1].clone(), x2];
    // Steps 0 and 1 compute (warmup), step 2 reuses with a first-order forecast.
    let mut c = config(2, 1, 1.0);
    c.db.max_warmup_steps = 2;
    c.taylorseer = Some(TaylorSeerConfig {
        order: 1,
        indexing: TaylorIndexing::Intended,
    });
    let mut cache = StepCache::for_run(Arc::new(c), m.block_lists(), 10).expect("valid config");
    let mut outs = Vec::new();
    for (step, x) in xs.iter().enumerate() {
        outs.push(cache.call(&m, &info(step), x, &i.t, &i.cond).expect("call"));
    }
    let decisions: Vec<Decision> = cache.drain_records().iter().map(|r| r.decision).collect();
    assert_eq!(
        decisions,
        [Decision::Computed, Decision::Computed, Decision::Reused]
    );

    // By hand: the middle (joint block 2, image blocks 0 and 1) residuals of steps 0 and 1,
    // each stream forecast as r1 + (r1 − r0)·1.
    let residuals = |x: &Tensor| {
        let (s, _) = m.embed(x, &i.t, &i.cond).expect("embed");
        let f = run(&m, 0..2, s, x);
        let mid = run(&m, 2..5, f.clone(), x);
        let text = |s: &Streams| s.encoder.clone().expect("text");
        (
            (&mid.hidden - &f.hidden).expect("r"),
            (text(&mid) - text(&f)).expect("r"),
        )
    };
    let forecast = |r0: &Tensor, r1: &Tensor| {
        let d = ((r1 - r0).expect("d") / 1.0).expect("d");
        (r1 + d.affine(1.0, 0.0).expect("d")).expect("forecast")
    };
    let (h0, e0) = residuals(&xs[0]);
    let (h1, e1) = residuals(&xs[1]);
    let (s2, call2) = m.embed(&xs[2], &i.t, &i.cond).expect("embed");
    let f2 = run(&m, 0..2, s2, &xs[2]);
    let text2 = f2.encoder.clone().expect("text");
    let finish = |encoder: Tensor| {
        let approx = Streams {
            hidden: (&f2.hidden + forecast(&h0, &h1)).expect("add"),
            encoder: Some(encoder),
        };
        let last = run(&m, 5..6, approx, &xs[2]);
        m.finish(&last, &call2).expect("finish")
    };
    let expected = finish((&text2 + forecast(&e0, &e1)).expect("add"));
    assert_eq!(values(&outs[2]), values(&expected));
    // The stale text residual (no forecast) would show.
    let stale = finish((&text2 + &e1).expect("add"));
    assert!(
        max_diff(&outs[2], &stale) > 1e-5,
        "the text forecast matters"
    );
}
