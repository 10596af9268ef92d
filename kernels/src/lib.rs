//! CacheDiT Studio's CPU inference kernels: vectorised element-wise ops with run-time
//! instruction-set detection (`simd`), strided matrix products (`gemm`), fused self-attention
//! (`attention`), and read access to the f32 values of a CPU tensor without copying them
//! ([`CpuF32`]). A crate of its own so that it is built optimised in every profile.

pub mod attention;
pub mod gemm;
pub mod peak;
pub mod scratch;
pub mod simd;

pub use simd::Isa;

use candle_core::{CpuStorage, Storage, StorageRef, Tensor};

/// The contiguous f32 values of a CPU tensor, borrowed (the storage stays read-locked while
/// this lives).
pub struct CpuF32<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> CpuF32<'a> {
    /// `None` unless the tensor is f32, on the CPU and contiguous.
    pub fn of(t: &'a Tensor) -> Option<CpuF32<'a>> {
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        match &*guard {
            Storage::Cpu(CpuStorage::F32(values)) if end <= values.len() => {}
            _ => return None,
        }
        Some(CpuF32 { guard, start, end })
    }

    pub fn values(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(values)) => &values[self.start..self.end],
            _ => &[],
        }
    }
}

/// Threads the CPU kernels split work over (candle's count: `RAYON_NUM_THREADS`, else the
/// cores).
pub fn threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}
