//! Honest quality checks for the default model: a small CNN classifier trained on the dataset
//! generator's images, its held-out accuracy, and the share of generated samples it labels as
//! the class that was asked for.

pub mod classifier;
pub mod conditional;

pub use classifier::SceneClassifier;
