//! Helpers the tests against committed diffusers fixtures share: where the fixtures are, reading
//! one, and the "normalised max error" `max|ours − ref| / max|ref|` they are judged by.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(name), &Device::Cpu).expect("fixture loads")
}

pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .and_then(|a| a.flatten_all())
        .and_then(|a| a.max(0))
        .and_then(|a| a.to_scalar::<f32>())
        .expect("max")
}

/// `max|a − b| / max|b|`, so elements near zero do not blow the ratio up.
pub fn norm_err(ours: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(ours.dims(), reference.dims(), "shape");
    let diff = (ours.to_dtype(DType::F32).expect("f32") - reference).expect("sub");
    max_abs(&diff) / max_abs(reference).max(1e-12)
}
