//! Images produced by samplers: RGB buffers and PNG files with the workflow embedded.

pub mod convert;
pub mod grid;
pub mod png_io;

use std::path::PathBuf;

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// Wraps `pixels` (row-major RGB) after checking that it holds exactly `width * height * 3` bytes.
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Result<Self, ImageError> {
        let expected = rgb_len(width, height);
        if expected != Some(pixels.len()) {
            return Err(ImageError::PixelCount {
                width,
                height,
                actual: pixels.len(),
            });
        }
        Ok(Self {
            width,
            height,
            pixels,
        })
    }

    /// The RGB value at column `x`, row `y`; `None` when out of bounds (or the buffer is short).
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (usize::try_from(y).ok()?)
            .checked_mul(usize::try_from(self.width).ok()?)?
            .checked_add(usize::try_from(x).ok()?)?
            .checked_mul(3)?;
        match self.pixels.get(i..i.checked_add(3)?)? {
            [r, g, b] => Some([*r, *g, *b]),
            _ => None,
        }
    }

    /// Errors unless `pixels.len() == width * height * 3` (the fields are public, so this can drift).
    pub(crate) fn check_len(&self) -> Result<(), ImageError> {
        if rgb_len(self.width, self.height) == Some(self.pixels.len()) {
            Ok(())
        } else {
            Err(ImageError::PixelCount {
                width: self.width,
                height: self.height,
                actual: self.pixels.len(),
            })
        }
    }
}

/// `width * height * 3` as a `usize`, or `None` on overflow.
pub(crate) fn rgb_len(width: u32, height: u32) -> Option<usize> {
    usize::try_from(width)
        .ok()?
        .checked_mul(usize::try_from(height).ok()?)?
        .checked_mul(3)
}

/// Errors from tensor→image conversion and PNG reading/writing. File errors name the path.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A candle operation failed (dtype/device conversion, arithmetic).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),

    /// The tensor does not have a shape this module can turn into images.
    #[error("cannot make images from a tensor of shape {shape:?}: {message}")]
    TensorShape { shape: Vec<usize>, message: String },

    /// The pixel buffer length does not match `width * height * 3`.
    #[error(
        "RGB image {width}x{height} needs {width}*{height}*3 bytes, but the buffer has {actual}"
    )]
    PixelCount {
        width: u32,
        height: u32,
        actual: usize,
    },

    /// Images that must agree (e.g. grid tiles) do not.
    #[error("{0}")]
    Mismatch(String),

    /// PNG encoding failed in memory (bad text keyword, empty image, ...).
    #[error("cannot encode PNG: {message}")]
    Encode { message: String },

    /// Reading, writing, renaming or creating a folder failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not a PNG this module can handle (not a PNG, truncated, corrupt, unsupported format).
    #[error("{}: {message}", path.display())]
    Png { path: PathBuf, message: String },

    /// The PNG has no CacheDiT Studio workflow chunk.
    #[error(
        "{}: no CacheDiT Studio workflow found in this PNG (it was not written by CacheDiT Studio, \
         or its metadata was stripped)",
        path.display()
    )]
    NoWorkflow { path: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_length() {
        assert!(RgbImage::new(2, 2, vec![0; 12]).is_ok());
        let err = RgbImage::new(2, 2, vec![0; 11]);
        assert!(matches!(
            err,
            Err(ImageError::PixelCount { actual: 11, .. })
        ));
        assert!(RgbImage::new(u32::MAX, u32::MAX, vec![]).is_err());
    }

    #[test]
    fn pixel_in_and_out_of_bounds() -> Result<(), ImageError> {
        let img = RgbImage::new(2, 1, vec![1, 2, 3, 4, 5, 6])?;
        assert_eq!(img.pixel(0, 0), Some([1, 2, 3]));
        assert_eq!(img.pixel(1, 0), Some([4, 5, 6]));
        assert_eq!(img.pixel(2, 0), None);
        assert_eq!(img.pixel(0, 1), None);
        let short = RgbImage {
            width: 2,
            height: 1,
            pixels: vec![1, 2, 3],
        };
        assert_eq!(short.pixel(1, 0), None);
        assert!(short.check_len().is_err());
        Ok(())
    }
}
