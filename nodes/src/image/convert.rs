//! Turning model output tensors (`[B, C, H, W]`) into 8-bit RGB images.

use candle_core::{DType, Device, Tensor};

use super::{ImageError, RgbImage};

/// Side length, in pixels, of one Stable-Diffusion-VAE latent cell.
pub const VAE_SCALE: usize = 8;

/// ComfyUI's `latent_rgb_factors` for SD1.x latents: rows are latent channels, columns R, G, B.
pub const SD_LATENT_RGB_FACTORS: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// All values of `t` as f32 on the CPU, flattened in row-major order.
fn cpu_f32_values(t: &Tensor) -> Result<Vec<f32>, ImageError> {
    Ok(t.to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Model-space images in `[-1, 1]` → `[0, 1]`, as diffusers' pipelines do: `x / 2 + 0.5`
/// then `clamp(0, 1)`, in the tensor's own dtype. The division by 2 is exact, so
/// `affine(0.5, 0.5)` rounds identically.
pub fn to_unit_range(images: &Tensor) -> candle_core::Result<Tensor> {
    images.affine(0.5, 0.5)?.clamp(0f64, 1f64)
}

/// Converts a `[B, 3, H, W]` pixel tensor in model space `[-1, 1]` (any float dtype, any
/// device) into `B` RGB images, exactly as diffusers' `DiTPipeline` + `numpy_to_pil` do:
/// `x = (x / 2 + 0.5).clamp(0, 1)` in the tensor's own dtype, then `(x * 255).round()` in f32.
pub fn images_from_pixel_tensor(t: &Tensor) -> Result<Vec<RgbImage>, ImageError> {
    let (batch, height, width) = check_shape(t, 3, "expected pixels [B, 3, H, W]")?;
    let (w32, h32) = (dim_u32(t, width)?, dim_u32(t, height)?);

    let x = to_unit_range(&float_input(t)?)?;
    let values = cpu_f32_values(&x)?;

    let plane = height * width;
    let mut images = Vec::with_capacity(batch);
    for b in 0..batch {
        let base = b * 3 * plane;
        let mut pixels = Vec::with_capacity(plane * 3);
        for i in 0..plane {
            for c in 0..3 {
                pixels.push(unit_to_u8(values[base + c * plane + i]));
            }
        }
        images.push(RgbImage::new(w32, h32, pixels)?);
    }
    Ok(images)
}

/// An approximate false-colour preview of 4-channel Stable-Diffusion-VAE latents
/// `[B, 4, h, w]` (what DiT-XL/2 produces). This is NOT a VAE decode: colours are only
/// roughly right and there is no detail below the 8×8 latent cell.
///
/// Like ComfyUI's latent2rgb preview for SD1.x: `rgb = Σ_c latent_c · F[c]` with
/// [`SD_LATENT_RGB_FACTORS`], mapped from `[-1, 1]` to `[0, 255]` as in
/// [`images_from_pixel_tensor`] (ComfyUI truncates; we round), then upscaled ×8
/// nearest-neighbour to the `8h × 8w` size the VAE decoder would produce.
pub fn latent_preview(t: &Tensor) -> Result<Vec<RgbImage>, ImageError> {
    let (batch, height, width) = check_shape(t, 4, "expected SD-VAE latents [B, 4, h, w]")?;
    let out_w = width
        .checked_mul(VAE_SCALE)
        .ok_or_else(|| too_big(t))
        .and_then(|w| dim_u32(t, w))?;
    let out_h = height
        .checked_mul(VAE_SCALE)
        .ok_or_else(|| too_big(t))
        .and_then(|h| dim_u32(t, h))?;

    let values = cpu_f32_values(&float_input(t)?)?;

    let plane = height * width;
    let mut images = Vec::with_capacity(batch);
    for b in 0..batch {
        let base = b * 4 * plane;
        // One RGB triple per latent cell.
        let mut small = Vec::with_capacity(plane * 3);
        for i in 0..plane {
            let mut rgb = [0f32; 3];
            for (c, factors) in SD_LATENT_RGB_FACTORS.iter().enumerate() {
                let v = values[base + c * plane + i];
                for (acc, f) in rgb.iter_mut().zip(factors) {
                    *acc += v * f;
                }
            }
            for v in rgb {
                small.push(unit_to_u8((v * 0.5 + 0.5).clamp(0.0, 1.0)));
            }
        }
        let row_bytes = width * VAE_SCALE * 3;
        let mut pixels = Vec::with_capacity(row_bytes * height * VAE_SCALE);
        for y in 0..height * VAE_SCALE {
            let row = &small[(y / VAE_SCALE) * width * 3..][..width * 3];
            for cell in row.chunks_exact(3) {
                for _ in 0..VAE_SCALE {
                    pixels.extend_from_slice(cell);
                }
            }
        }
        images.push(RgbImage::new(out_w, out_h, pixels)?);
    }
    Ok(images)
}

/// Images from a `[B, C, H, W]` tensor: 3 channels are pixels ([`images_from_pixel_tensor`]),
/// 4 channels are SD-VAE latents ([`latent_preview`], approximate); anything else is an error.
pub fn image_from_tensor(t: &Tensor) -> Result<Vec<RgbImage>, ImageError> {
    match t.dims() {
        [_, 3, _, _] => images_from_pixel_tensor(t),
        [_, 4, _, _] => latent_preview(t),
        [_, c, _, _] => Err(shape_error(
            t,
            format!("{c} channels; expected 3 (RGB pixels) or 4 (Stable-Diffusion-VAE latents)"),
        )),
        _ => Err(shape_error(
            t,
            "expected a 4-D [B, C, H, W] tensor".to_string(),
        )),
    }
}

/// `[0, 1]` → `0..=255` as numpy's `(x * 255).round().astype(uint8)`. Rust rounds halves away
/// from zero where numpy rounds half to even; after `* 255` in f32 exact halves are vanishingly
/// rare (e.g. exactly 0.5 → 127.5 → 128 here and in numpy alike). NaN maps to 0.
fn unit_to_u8(v: f32) -> u8 {
    // `as` saturates, so values just outside [0, 255] (and NaN → 0) cannot wrap.
    (v * 255.0).round() as u8
}

/// Checks `[B, channels, H, W]`; returns `(B, H, W)`.
fn check_shape(
    t: &Tensor,
    channels: usize,
    expected: &str,
) -> Result<(usize, usize, usize), ImageError> {
    match *t.dims() {
        [b, c, h, w] if c == channels => Ok((b, h, w)),
        [_, c, _, _] => Err(shape_error(t, format!("{c} channels; {expected}"))),
        _ => Err(shape_error(t, format!("not 4-D; {expected}"))),
    }
}

/// The tensor itself when it is f16/bf16/f32/f64, other float types converted to f32;
/// integer tensors are rejected (they are not model-space images).
fn float_input(t: &Tensor) -> Result<Tensor, ImageError> {
    match t.dtype() {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => Ok(t.clone()),
        d if d.is_float() => Ok(t.to_dtype(DType::F32)?),
        d => Err(shape_error(
            t,
            format!("dtype {d:?} is not a float type; expected model-space floats"),
        )),
    }
}

fn dim_u32(t: &Tensor, n: usize) -> Result<u32, ImageError> {
    u32::try_from(n).map_err(|_| too_big(t))
}

fn too_big(t: &Tensor) -> ImageError {
    shape_error(t, "image would be too large".to_string())
}

fn shape_error(t: &Tensor, message: String) -> ImageError {
    ImageError::TensorShape {
        shape: t.dims().to_vec(),
        message,
    }
}

/// Converts RGB bytes (row-major, 3 per pixel) to CHW floats in `[-1, 1]`.
pub fn rgb_to_chw(pixels: &[u8], size: usize, out: &mut Vec<f32>) {
    let plane = size * size;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    for (i, px) in pixels.chunks_exact(3).enumerate().take(plane) {
        for (c, &v) in px.iter().enumerate() {
            out[start + c * plane + i] = v as f32 / 127.5 - 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> Device {
        Device::Cpu
    }

    #[test]
    fn pixel_known_values() -> Result<(), ImageError> {
        // One 1x5 image; every channel gets the same values.
        let row = [-1f32, 1.0, 0.0, -3.0, 2.5];
        let data: Vec<f32> = (0..3).flat_map(|_| row).collect();
        let t = Tensor::from_vec(data, (1, 3, 1, 5), &cpu())?;
        let images = images_from_pixel_tensor(&t)?;
        assert_eq!(images.len(), 1);
        let img = &images[0];
        assert_eq!((img.width, img.height), (5, 1));
        let got: Vec<u8> = (0..5)
            .filter_map(|x| img.pixel(x, 0))
            .map(|p| p[0])
            .collect();
        // -1 → 0, 1 → 255, 0 → 0.5 * 255 = 127.5 → 128, clamped out-of-range values.
        assert_eq!(got, vec![0, 255, 128, 0, 255]);
        Ok(())
    }

    #[test]
    fn pixel_channels_are_interleaved() -> Result<(), ImageError> {
        // R = -1, G = 0, B = 1 everywhere in a 2x2 image.
        let data: Vec<f32> = [-1f32, 0.0, 1.0].iter().flat_map(|&v| [v; 4]).collect();
        let t = Tensor::from_vec(data, (1, 3, 2, 2), &cpu())?;
        let img = &images_from_pixel_tensor(&t)?[0];
        assert_eq!(img.pixels, [0u8, 128, 255].repeat(4));
        Ok(())
    }

    #[test]
    fn pixel_f16_and_bf16() -> Result<(), ImageError> {
        let t = Tensor::from_vec(vec![-1f32, 0.0, 1.0], (1, 3, 1, 1), &cpu())?;
        for dtype in [DType::F16, DType::BF16, DType::F64] {
            let img = &images_from_pixel_tensor(&t.to_dtype(dtype)?)?[0];
            assert_eq!(img.pixels, vec![0, 128, 255], "{dtype:?}");
        }
        Ok(())
    }

    #[test]
    fn batch_of_two_gives_two_images() -> Result<(), ImageError> {
        let t = Tensor::zeros((2, 3, 4, 6), DType::F32, &cpu())?;
        let images = images_from_pixel_tensor(&t)?;
        assert_eq!(images.len(), 2);
        for img in &images {
            assert_eq!((img.width, img.height, img.pixels.len()), (6, 4, 72));
        }
        Ok(())
    }

    #[test]
    fn wrong_shapes_error() -> Result<(), ImageError> {
        let four = Tensor::zeros((1, 4, 2, 2), DType::F32, &cpu())?;
        assert!(matches!(
            images_from_pixel_tensor(&four),
            Err(ImageError::TensorShape { .. })
        ));
        let three_d = Tensor::zeros((3, 2, 2), DType::F32, &cpu())?;
        assert!(images_from_pixel_tensor(&three_d).is_err());
        assert!(image_from_tensor(&three_d).is_err());
        let pixels = Tensor::zeros((1, 3, 2, 2), DType::F32, &cpu())?;
        assert!(latent_preview(&pixels).is_err());
        let ints = Tensor::zeros((1, 3, 2, 2), DType::U8, &cpu())?;
        assert!(images_from_pixel_tensor(&ints).is_err());
        Ok(())
    }

    #[test]
    fn dispatch_names_channel_count() -> Result<(), ImageError> {
        let five = Tensor::zeros((1, 5, 2, 2), DType::F32, &cpu())?;
        let msg = match image_from_tensor(&five) {
            Err(e) => e.to_string(),
            Ok(_) => String::from("no error"),
        };
        assert!(msg.contains("5 channels"), "{msg}");

        let pixels = Tensor::zeros((1, 3, 2, 2), DType::F32, &cpu())?;
        assert_eq!(image_from_tensor(&pixels)?[0].width, 2);
        let latents = Tensor::zeros((1, 4, 2, 2), DType::F32, &cpu())?;
        assert_eq!(image_from_tensor(&latents)?[0].width, 16);
        Ok(())
    }

    #[test]
    fn latent_preview_size_and_constant_colour() -> Result<(), ImageError> {
        // Constant latent (1, 0, 0, 0): rgb = F[0] = (0.3512, 0.2297, 0.3227);
        // mapped: (v / 2 + 0.5) * 255 → 172.28, 156.79, 168.64 → 172, 157, 169.
        let mut data = vec![1f32; 3 * 5];
        data.extend(vec![0f32; 3 * 3 * 5]);
        let t = Tensor::from_vec(data, (1, 4, 3, 5), &cpu())?;
        let images = latent_preview(&t)?;
        assert_eq!(images.len(), 1);
        let img = &images[0];
        assert_eq!((img.width, img.height), (40, 24));
        assert_eq!(img.pixels.len(), 40 * 24 * 3);
        assert!(img.pixels.chunks_exact(3).all(|p| p == [172, 157, 169]));

        // All channels 1: rgb = column sums (0.1813, 0.6417, 0.1121) → 151, 209, 142.
        let ones = Tensor::ones((2, 4, 1, 1), DType::F16, &cpu())?;
        let images = latent_preview(&ones)?;
        assert_eq!(images.len(), 2);
        assert_eq!(images[1].pixel(7, 7), Some([151, 209, 142]));
        Ok(())
    }

    #[test]
    fn latent_preview_is_nearest_neighbour() -> Result<(), ImageError> {
        // 1x2 latent: left cell zero (grey 128), right cell strongly negative channel 3 → blue.
        let t = Tensor::from_vec(
            vec![0f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -2.0],
            (1, 4, 1, 2),
            &cpu(),
        )?;
        let img = &latent_preview(&t)?[0];
        assert_eq!((img.width, img.height), (16, 8));
        for y in 0..8 {
            for x in 0..8 {
                assert_eq!(img.pixel(x, y), Some([128, 128, 128]));
            }
            for x in 8..16 {
                // -2 * (-0.2120, -0.2616, -0.7177) = (0.424, 0.5232, 1.4354) → 182, 194, 255.
                assert_eq!(img.pixel(x, y), Some([182, 194, 255]));
            }
        }
        Ok(())
    }
}
