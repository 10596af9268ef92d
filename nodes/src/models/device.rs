//! Device and dtype selection from the strings users write: `cpu`, `cuda`, `cuda:N`;
//! `auto`, `f32`, `f16`, `bf16`.

use super::ModelError;
use candle_core::{DType, Device};

/// Where a model runs, as written in a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let t = text.trim().to_ascii_lowercase();
        if t == "cpu" {
            return Ok(DeviceSpec::Cpu);
        }
        if t == "cuda" {
            return Ok(DeviceSpec::Cuda(0));
        }
        if let Some(n) = t.strip_prefix("cuda:") {
            if let Ok(i) = n.parse::<usize>() {
                return Ok(DeviceSpec::Cuda(i));
            }
        }
        Err(ModelError::Device(format!(
            "unknown device {text:?}: use \"cpu\", \"cuda\" or \"cuda:N\""
        )))
    }

    /// Opens the device. Asking for CUDA in a build without the `cuda` feature is a clear error.
    pub fn open(self) -> Result<Device, ModelError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(i) => {
                if !cfg!(feature = "cuda") {
                    return Err(ModelError::Device(format!(
                        "cuda:{i} requested, but this build has no CUDA support \
                         (rebuild with `cargo build --release --features cuda`)"
                    )));
                }
                Device::new_cuda(i)
                    .map_err(|e| ModelError::Device(format!("cannot open cuda:{i}: {e}")))
            }
        }
    }
}

/// Devices this build and machine can use, as strings for a picker (`cpu` first).
pub fn available_devices() -> Vec<String> {
    let mut out = vec!["cpu".to_string()];
    if cfg!(feature = "cuda") && candle_core::utils::cuda_is_available() {
        for i in 0..16 {
            if Device::new_cuda(i).is_ok() {
                out.push(format!("cuda:{i}"));
            } else {
                break;
            }
        }
    }
    out
}

/// Resolves a dtype name for a device: `auto` is f32 on the CPU and f16 on CUDA.
pub fn parse_dtype(text: &str, device: &Device) -> Result<DType, ModelError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(if device.is_cuda() {
            DType::F16
        } else {
            DType::F32
        }),
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" | "half" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(ModelError::Device(format!(
            "unknown dtype {other:?}: use auto, f32, f16 or bf16"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(DeviceSpec::parse("cpu").ok(), Some(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("CUDA").ok(), Some(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::parse("cuda:3").ok(), Some(DeviceSpec::Cuda(3)));
        assert!(DeviceSpec::parse("tpu").is_err());
        assert!(DeviceSpec::parse("cuda:x").is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_clear_error() {
        let err = DeviceSpec::Cuda(0).open().err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[test]
    fn auto_dtype_is_f32_on_cpu() {
        assert_eq!(parse_dtype("auto", &Device::Cpu).ok(), Some(DType::F32));
        assert_eq!(parse_dtype("bf16", &Device::Cpu).ok(), Some(DType::BF16));
        assert!(parse_dtype("f8", &Device::Cpu).is_err());
    }
}
