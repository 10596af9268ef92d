//! The quick version of `cachedit eval`: the shipped classifier still recognises the dataset,
//! the embedded default model draws the classes it is asked for, and the untrained control
//! does not (so the check can fail).

use cachedit_nodes::eval::conditional::{conditional_accuracy, ConditionalCheck};
use cachedit_nodes::eval::SceneClassifier;
use cachedit_nodes::models::builtin::{load_model, DEFAULT_MODEL};
use cachedit_nodes::train::classifier::heldout_accuracy;
use candle_core::Device;

fn quick_check() -> ConditionalCheck {
    ConditionalCheck {
        per_class: 3,
        // A seed range the full evaluation (seed 1000 + class) does not use.
        seed: 5000,
        ..ConditionalCheck::default()
    }
}

#[test]
fn the_shipped_classifier_recognises_held_out_scenes() {
    let classifier = SceneClassifier::builtin(&Device::Cpu).expect("built-in classifier");
    let (accuracy, per_class) = heldout_accuracy(&classifier, 20, &Device::Cpu).expect("accuracy");
    assert!(
        accuracy >= 0.95,
        "held-out accuracy {accuracy}: {per_class:?}"
    );
}

#[test]
fn the_default_model_draws_the_class_it_is_asked_for() {
    let model = load_model(DEFAULT_MODEL, "f32", "cpu").expect("default model");
    let classifier = SceneClassifier::builtin(&Device::Cpu).expect("built-in classifier");
    let report = conditional_accuracy(&model.model, &classifier, &quick_check(), &mut |_, _, _| {})
        .expect("sampling");
    assert!(
        report.accuracy() >= 0.8,
        "conditional accuracy {}: {:?}",
        report.accuracy(),
        report.per_class
    );
}

#[test]
fn the_untrained_control_does_not_pass_the_check() {
    let model = load_model("random-tiny", "f32", "cpu").expect("random-tiny");
    let classifier = SceneClassifier::builtin(&Device::Cpu).expect("built-in classifier");
    let check = ConditionalCheck {
        per_class: 2,
        steps: 10,
        ..quick_check()
    };
    let report = conditional_accuracy(&model.model, &classifier, &check, &mut |_, _, _| {})
        .expect("sampling");
    assert!(
        report.accuracy() <= 0.3,
        "an untrained model scored {}",
        report.accuracy()
    );
}
