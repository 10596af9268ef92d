//! Data flowing along links between nodes. Cheap to clone (shared), so node reuse can keep it.

use super::{NodeError, PortType};
use crate::cache::StepCacheConfig;
use crate::compare::Comparison;
use crate::image::RgbImage;
use crate::models::LoadedModel;
use crate::sampling::stats::SamplerStats;
use std::sync::Arc;

#[derive(Clone)]
pub enum Data {
    Model(Arc<LoadedModel>),
    CacheConfig(Arc<StepCacheConfig>),
    Image(Arc<RgbImage>),
    RunStats(Arc<SamplerStats>),
    Comparison(Arc<Comparison>),
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Data::Model(m) => write!(f, "Model({})", m.name),
            Data::CacheConfig(c) => write!(f, "CacheConfig({c:?})"),
            Data::Image(i) => write!(f, "Image({}x{})", i.width, i.height),
            Data::RunStats(s) => write!(f, "RunStats({} steps)", s.steps.len()),
            Data::Comparison(c) => write!(f, "Comparison({} cells)", c.cells.len()),
        }
    }
}

impl Data {
    pub fn port_type(&self) -> PortType {
        match self {
            Data::Model(_) => PortType::Model,
            Data::CacheConfig(_) => PortType::CacheConfig,
            Data::Image(_) => PortType::Image,
            Data::RunStats(_) => PortType::RunStats,
            Data::Comparison(_) => PortType::Comparison,
        }
    }

    fn mismatch(&self, port: &str, expected: PortType) -> NodeError {
        NodeError::InputType {
            port: port.to_string(),
            expected,
            found: self.port_type(),
        }
    }

    pub fn as_model(&self, port: &str) -> Result<&Arc<LoadedModel>, NodeError> {
        match self {
            Data::Model(m) => Ok(m),
            other => Err(other.mismatch(port, PortType::Model)),
        }
    }

    pub fn as_cache_config(&self, port: &str) -> Result<&Arc<StepCacheConfig>, NodeError> {
        match self {
            Data::CacheConfig(c) => Ok(c),
            other => Err(other.mismatch(port, PortType::CacheConfig)),
        }
    }

    pub fn as_run_stats(&self, port: &str) -> Result<&Arc<SamplerStats>, NodeError> {
        match self {
            Data::RunStats(s) => Ok(s),
            other => Err(other.mismatch(port, PortType::RunStats)),
        }
    }

    pub fn as_comparison(&self, port: &str) -> Result<&Arc<Comparison>, NodeError> {
        match self {
            Data::Comparison(c) => Ok(c),
            other => Err(other.mismatch(port, PortType::Comparison)),
        }
    }

    pub fn as_image(&self, port: &str) -> Result<&Arc<RgbImage>, NodeError> {
        match self {
            Data::Image(i) => Ok(i),
            other => Err(other.mismatch(port, PortType::Image)),
        }
    }
}
