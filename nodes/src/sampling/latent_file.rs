//! A starting latent read from a file (`.npy` or `.safetensors`), so a run can start from the
//! exact noise a PyTorch run drew (torch's RNG cannot be reproduced in Rust).
//!
//! The file holds the unscaled standard-normal noise, as `randn_tensor` draws it: shape
//! `[C, H, W]` or `[1, C, H, W]`, any float dtype. The scheduler's `init_noise_sigma` is applied
//! after, as the pipelines do. Sizes are checked against the bytes present before anything is
//! allocated.

use candle_core::{DType, Device, Tensor};
use std::path::Path;

/// The largest latent file read (a 16-channel 256×256 f32 latent is 4 MiB).
pub const MAX_LATENT_FILE_BYTES: u64 = 256 << 20;

/// Tensor names tried, in order, when a safetensors file holds more than one tensor.
pub const SAFETENSORS_NAMES: &[&str] = &["latents", "latent", "noise"];

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LatentFileError {
    pub path: String,
    pub message: String,
}

fn error(path: &Path, message: impl Into<String>) -> LatentFileError {
    LatentFileError {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// A latent as read: its shape as stored and its values as f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Latent {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Latent {
    /// The latent as a `[1, C, H, W]` tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor, LatentFileError> {
        let (c, h, w) = self.chw().ok_or_else(|| LatentFileError {
            path: String::new(),
            message: self.shape_problem(),
        })?;
        Tensor::from_vec(self.values.clone(), (1, c, h, w), device).map_err(|e| LatentFileError {
            path: String::new(),
            message: e.to_string(),
        })
    }

    /// `(C, H, W)` when the shape is `[C, H, W]` or `[1, C, H, W]`.
    pub fn chw(&self) -> Option<(usize, usize, usize)> {
        match self.shape.as_slice() {
            [c, h, w] | [1, c, h, w] => Some((*c, *h, *w)),
            _ => None,
        }
    }

    fn shape_problem(&self) -> String {
        format!(
            "the latent has shape {:?}; a Sampler takes [C, H, W] or [1, C, H, W]",
            self.shape
        )
    }

    /// Checks the latent against a model's channels and patch size; the message says what
    /// the model needs.
    pub fn check_for_model(&self, channels: usize, patch: usize) -> Result<(), String> {
        let (c, h, w) = self.chw().ok_or_else(|| self.shape_problem())?;
        if c != channels {
            return Err(format!(
                "the latent has {c} channels ({:?}); the model takes {channels}",
                self.shape
            ));
        }
        if h == 0 || w == 0 || h % patch != 0 || w % patch != 0 {
            return Err(format!(
                "the latent is {h}×{w}; the model needs a positive multiple of its patch \
                 size {patch}"
            ));
        }
        Ok(())
    }
}

/// Reads `path` (`.npy` or `.safetensors`, by extension).
pub fn read_latent(path: &Path) -> Result<Latent, LatentFileError> {
    let bytes = read_bounded(path)?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let latent = match ext.as_deref() {
        Some("npy") => parse_npy(&bytes).map_err(|m| error(path, m))?,
        Some("safetensors") => parse_safetensors(&bytes).map_err(|m| error(path, m))?,
        _ => {
            return Err(error(
                path,
                "a starting latent must be a .npy or .safetensors file",
            ))
        }
    };
    if let Some(bad) = latent.values.iter().position(|v| !v.is_finite()) {
        return Err(error(
            path,
            format!("value {bad} of the latent is not finite"),
        ));
    }
    Ok(latent)
}

/// The whole file, refusing what is not a regular file or is larger than the cap.
fn read_bounded(path: &Path) -> Result<Vec<u8>, LatentFileError> {
    crate::safe_io::read_bounded(path, MAX_LATENT_FILE_BYTES)
        .map_err(|e| error(path, e.to_string()))
}

/// Element count of `shape` times `item` bytes, or an error when it overflows.
fn byte_len(shape: &[usize], item: usize) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(item, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("the shape {shape:?} overflows"))
}

/// Decodes little-endian floats of `dtype` into f32.
fn decode(data: &[u8], dtype: DType) -> Result<Vec<f32>, String> {
    Ok(match dtype {
        DType::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        DType::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        DType::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        DType::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => return Err(format!("dtype {other:?} is not a float type")),
    })
}

/// A `.npy` file (format 1.0, 2.0 or 3.0), C order, little-endian floats.
fn parse_npy(bytes: &[u8]) -> Result<Latent, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || !bytes.starts_with(MAGIC) {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (len as usize, 12)
        }
        v => return Err(format!(".npy format version {v} is not supported")),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or("the .npy header runs past the end of the file")?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| "the .npy header is not text".to_string())?;
    let descr = dict_value(header, "descr").ok_or("the .npy header has no 'descr'")?;
    let dtype = match descr.trim_matches(['\'', '"']) {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "<f2" => DType::F16,
        other => {
            return Err(format!(
                "dtype {other} is not supported (little-endian float16/32/64 are)"
            ))
        }
    };
    let fortran = dict_value(header, "fortran_order").ok_or("no 'fortran_order'")?;
    if fortran.trim() != "False" {
        return Err("Fortran-order arrays are not supported (save with C order)".into());
    }
    let shape_text = dict_value(header, "shape").ok_or("the .npy header has no 'shape'")?;
    let shape = parse_shape(shape_text)?;
    let data = &bytes[end..];
    let expected = byte_len(&shape, dtype.size_in_bytes())?;
    if data.len() != expected {
        return Err(format!(
            "the shape {shape:?} needs {expected} bytes of data but the file has {}",
            data.len()
        ));
    }
    Ok(Latent {
        values: decode(data, dtype)?,
        shape,
    })
}

/// The text of `'key': value` in a numpy header dict, up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0usize;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                if depth == 0 {
                    return Some(&rest[..i]);
                }
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    None
}

/// `(1, 3, 32, 32)` or `(4,)` or `()`.
fn parse_shape(text: &str) -> Result<Vec<usize>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("the shape {text} is not a tuple"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("the shape {text} is not a tuple of sizes"))
        })
        .collect()
}

/// A safetensors file with one tensor, or one named like [`SAFETENSORS_NAMES`].
fn parse_safetensors(bytes: &[u8]) -> Result<Latent, String> {
    if bytes.len() < 8 {
        return Err("not a safetensors file (shorter than its header length)".into());
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[..8]);
    let header_len = u64::from_le_bytes(len8);
    let end = usize::try_from(header_len)
        .ok()
        .and_then(|l| l.checked_add(8))
        .filter(|&e| e <= bytes.len())
        .ok_or("the safetensors header runs past the end of the file")?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..end]).map_err(|e| format!("safetensors header: {e}"))?;
    let tensors: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    let name = match tensors.as_slice() {
        [] => return Err("the file holds no tensor".into()),
        [one] => *one,
        many => SAFETENSORS_NAMES
            .iter()
            .find_map(|n| many.iter().find(|k| k.as_str() == *n).copied())
            .ok_or_else(|| {
                let names: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
                format!(
                    "the file holds {} tensors ({}); name the latent one of {}",
                    many.len(),
                    names.join(", "),
                    SAFETENSORS_NAMES.join(", ")
                )
            })?,
    };
    let info = &header[name];
    let dtype = match info.get("dtype").and_then(|d| d.as_str()) {
        Some("F32") => DType::F32,
        Some("F64") => DType::F64,
        Some("F16") => DType::F16,
        Some("BF16") => DType::BF16,
        other => {
            return Err(format!(
                "tensor {name}: dtype {other:?} is not supported (F16, BF16, F32, F64 are)"
            ))
        }
    };
    let shape: Vec<usize> = info
        .get("shape")
        .and_then(|s| s.as_array())
        .and_then(|dims| {
            dims.iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        })
        .ok_or_else(|| format!("tensor {name}: no shape"))?;
    let offsets: Vec<usize> = info
        .get("data_offsets")
        .and_then(|s| s.as_array())
        .and_then(|o| o.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
        .filter(|o: &Vec<usize>| o.len() == 2 && o[0] <= o[1])
        .ok_or_else(|| format!("tensor {name}: bad data_offsets"))?;
    let data_len = bytes.len() - end;
    if offsets[1] > data_len {
        return Err(format!(
            "tensor {name}: its data ends at byte {} but the file has {data_len} bytes of data",
            offsets[1]
        ));
    }
    let data = &bytes[end + offsets[0]..end + offsets[1]];
    let expected = byte_len(&shape, dtype.size_in_bytes())?;
    if data.len() != expected {
        return Err(format!(
            "tensor {name}: the shape {shape:?} needs {expected} bytes but it has {}",
            data.len()
        ));
    }
    Ok(Latent {
        values: decode(data, dtype)?,
        shape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn npy_round_trips_values_and_shape() {
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let latent = parse_npy(&npy("<f4", "(1, 3, 2, 2)", &f32_bytes(&values))).unwrap();
        assert_eq!(latent.shape, vec![1, 3, 2, 2]);
        assert_eq!(latent.values, values);
        assert_eq!(latent.chw(), Some((3, 2, 2)));
        let f64s: Vec<u8> = values
            .iter()
            .flat_map(|v| (*v as f64).to_le_bytes())
            .collect();
        assert_eq!(
            parse_npy(&npy("<f8", "(3, 2, 2)", &f64s)).unwrap().values,
            values
        );
    }

    #[test]
    fn npy_sizes_are_checked_before_reading() {
        let data = f32_bytes(&[0.0; 4]);
        let short = parse_npy(&npy("<f4", "(1, 3, 2, 2)", &data)).unwrap_err();
        assert!(short.contains("needs 48 bytes"), "{short}");
        let huge = format!("({}, {})", usize::MAX, usize::MAX);
        let overflow = parse_npy(&npy("<f4", &huge, &data)).unwrap_err();
        assert!(overflow.contains("overflows"), "{overflow}");
        let int = parse_npy(&npy("<i4", "(4,)", &data)).unwrap_err();
        assert!(int.contains("<i4"), "{int}");
        assert!(parse_npy(b"\x93NUMPY\x01\x00\xff\xff{").is_err());
        assert!(parse_npy(b"PK\x03\x04").is_err());
    }

    #[test]
    fn safetensors_picks_the_only_tensor_or_the_named_one() {
        let values = vec![1.0f32, -2.0, 3.5, 0.25];
        let t = Tensor::from_vec(values.clone(), (1, 1, 2, 2), &Device::Cpu).unwrap();
        let other = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one.safetensors");
        candle_core::safetensors::save(&std::collections::HashMap::from([("x", t.clone())]), &one)
            .unwrap();
        assert_eq!(read_latent(&one).unwrap().values, values);
        let two = dir.path().join("two.safetensors");
        candle_core::safetensors::save(
            &std::collections::HashMap::from([
                ("latents", t.clone()),
                ("timesteps", other.clone()),
            ]),
            &two,
        )
        .unwrap();
        assert_eq!(read_latent(&two).unwrap().shape, vec![1, 1, 2, 2]);
        let ambiguous = dir.path().join("ambiguous.safetensors");
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("a", t.clone()), ("b", other.clone())]),
            &ambiguous,
        )
        .unwrap();
        let err = read_latent(&ambiguous).unwrap_err().to_string();
        assert!(
            err.contains("ambiguous.safetensors") && err.contains("a, b"),
            "{err}"
        );
    }

    #[test]
    fn the_model_check_names_what_the_model_needs() {
        let latent = Latent {
            shape: vec![1, 4, 8, 8],
            values: vec![0.0; 256],
        };
        assert!(latent.check_for_model(4, 2).is_ok());
        assert!(latent
            .check_for_model(3, 2)
            .unwrap_err()
            .contains("takes 3"));
        assert!(latent
            .check_for_model(4, 3)
            .unwrap_err()
            .contains("patch size 3"));
        let batch = Latent {
            shape: vec![2, 4, 8, 8],
            values: vec![0.0; 512],
        };
        assert!(batch.check_for_model(4, 2).is_err());
    }

    #[test]
    fn non_regular_and_non_finite_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_latent(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let nan = dir.path().join("nan.npy");
        std::fs::write(&nan, npy("<f4", "(1,)", &f32_bytes(&[f32::NAN]))).unwrap();
        let err = read_latent(&nan).unwrap_err().to_string();
        assert!(err.contains("not finite"), "{err}");
        let txt = dir.path().join("latent.txt");
        std::fs::write(&txt, b"1 2 3").unwrap();
        assert!(read_latent(&txt).unwrap_err().to_string().contains(".npy"));
    }
}
