//! Config fields several scheduler classes share, each with the class's own default:
//! `timestep_spacing`, `steps_offset`, `prediction_type`, `final_sigmas_type`.

use super::config::{SchedulerConfig, SchedulerConfigError};

/// diffusers' `timestep_spacing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    Linspace,
    Leading,
    Trailing,
}

impl TimestepSpacing {
    pub fn from_config(c: &SchedulerConfig, default: Self) -> Result<Self, SchedulerConfigError> {
        c.choice_or(
            "timestep_spacing",
            default,
            &[
                ("linspace", TimestepSpacing::Linspace),
                ("leading", TimestepSpacing::Leading),
                ("trailing", TimestepSpacing::Trailing),
            ],
        )
    }
}

/// What the model predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// The noise ε.
    Epsilon,
    /// The clean sample x₀ ("sample", and Euler's legacy "original_sample").
    Sample,
    /// The velocity v = α·ε − σ·x₀.
    VPrediction,
}

impl PredictionType {
    /// `extra` names class-specific aliases (Euler's "original_sample").
    pub fn from_config(
        c: &SchedulerConfig,
        extra: &[(&str, PredictionType)],
    ) -> Result<Self, SchedulerConfigError> {
        let mut choices = vec![
            ("epsilon", PredictionType::Epsilon),
            ("sample", PredictionType::Sample),
            ("v_prediction", PredictionType::VPrediction),
        ];
        choices.extend_from_slice(extra);
        c.choice_or("prediction_type", PredictionType::Epsilon, &choices)
    }
}

/// The sigma after the last step (`final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalSigma {
    Zero,
    /// The first training sigma, `sqrt((1 − ᾱ₀)/ᾱ₀)`.
    SigmaMin,
}

impl FinalSigma {
    pub fn from_config(c: &SchedulerConfig) -> Result<Self, SchedulerConfigError> {
        c.choice_or(
            "final_sigmas_type",
            FinalSigma::Zero,
            &[
                ("zero", FinalSigma::Zero),
                ("sigma_min", FinalSigma::SigmaMin),
            ],
        )
    }

    /// The value after the last step, given the training sigmas.
    pub fn value(self, train_sigmas: &[f64]) -> f64 {
        match self {
            FinalSigma::Zero => 0.0,
            FinalSigma::SigmaMin => train_sigmas.first().copied().unwrap_or(0.0),
        }
    }
}

/// The settings of every class: the training table, spacing, offset and prediction type.
#[derive(Debug, Clone)]
pub struct CommonOptions {
    pub train: super::table::TrainSchedule,
    pub spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub prediction: PredictionType,
}

impl CommonOptions {
    pub fn from_config(
        c: &SchedulerConfig,
        default_spacing: TimestepSpacing,
        extra_predictions: &[(&str, PredictionType)],
    ) -> Result<Self, SchedulerConfigError> {
        Ok(CommonOptions {
            train: super::table::TrainSchedule::from_config(c)?,
            spacing: TimestepSpacing::from_config(c, default_spacing)?,
            steps_offset: c.usize_or("steps_offset", 0)?,
            prediction: PredictionType::from_config(c, extra_predictions)?,
        })
    }

    /// DiT's: the default linear table, epsilon prediction, no offset.
    pub fn dit(table: super::table::NoiseTable, spacing: TimestepSpacing) -> Self {
        CommonOptions {
            train: super::table::TrainSchedule {
                table,
                beta_schedule: super::table::BetaSchedule::Linear,
                rescale_betas_zero_snr: false,
            },
            spacing,
            steps_offset: 0,
            prediction: PredictionType::Epsilon,
        }
    }
}
