//! PNG encoding/decoding with UTF-8 text chunks, used to embed the workflow in saved images.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use png::text_metadata::ITXtChunk;

use super::{ImageError, RgbImage};

/// Text-chunk keyword under which the workflow (RON text) is stored.
pub const WORKFLOW_KEY: &str = "cachedit.workflow";

/// Texts at least this long (bytes) are stored zlib-compressed.
const COMPRESS_TEXT_FROM: usize = 1024;

/// Upper bound on one decompressed text chunk when reading (guards against zip bombs).
const TEXT_DECOMPRESSION_LIMIT: usize = 64 * 1024 * 1024;

/// Encodes `img` as an 8-bit RGB PNG. Each `(keyword, text)` becomes an iTXt chunk (UTF-8 text,
/// zlib-compressed when long) placed before the image data. Keywords must be 1–79 printable
/// Latin-1 characters.
pub fn encode_png(img: &RgbImage, text_chunks: &[(&str, &str)]) -> Result<Vec<u8>, ImageError> {
    img.check_len()?;
    if img.width == 0 || img.height == 0 {
        return Err(encode_error(format!(
            "image is {}x{}; PNG needs at least 1x1",
            img.width, img.height
        )));
    }
    for (keyword, _) in text_chunks {
        check_keyword(keyword)?;
    }

    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, img.width, img.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(encode_err)?;
    for (keyword, text) in text_chunks {
        let mut chunk = ITXtChunk::new(*keyword, *text);
        chunk.compressed = text.len() >= COMPRESS_TEXT_FROM;
        writer.write_text_chunk(&chunk).map_err(encode_err)?;
    }
    writer.write_image_data(&img.pixels).map_err(encode_err)?;
    writer.finish().map_err(encode_err)?;
    Ok(out)
}

/// Writes `img` (see [`encode_png`]) to `path` atomically: the PNG goes to a temporary file in
/// the same folder which is then renamed over `path`, so readers never see a half-written file.
/// Creates the parent folder if missing.
pub fn write_png_atomic(
    path: &Path,
    img: &RgbImage,
    text_chunks: &[(&str, &str)],
) -> Result<(), ImageError> {
    let bytes = encode_png(img, text_chunks)?;
    let file_name = path.file_name().ok_or_else(|| ImageError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;

    let (tmp_path, mut file) = create_temp_file(dir, &file_name.to_string_lossy())?;
    let written = file
        .write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&tmp_path, e));
    drop(file);
    let result = written.and_then(|()| fs::rename(&tmp_path, path).map_err(|e| io_error(path, e)));
    if result.is_err() {
        // Best effort: the original error matters more than a failed cleanup.
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// All text chunks of the PNG at `path` as `(keyword, text)`: tEXt, then zTXt, then iTXt
/// (file order within each kind), compressed ones decompressed. Reads chunks after the
/// image data too.
pub fn read_png_text(path: &Path) -> Result<Vec<(String, String)>, ImageError> {
    let mut reader = open_reader(path)?;
    reader.finish().map_err(|e| png_error(path, e))?;
    let info = reader.info();

    let mut out = Vec::new();
    for chunk in &info.uncompressed_latin1_text {
        out.push((chunk.keyword.clone(), chunk.text.clone()));
    }
    for chunk in &info.compressed_latin1_text {
        let mut chunk = chunk.clone();
        let text = chunk
            .decompress_text_with_limit(TEXT_DECOMPRESSION_LIMIT)
            .and_then(|()| chunk.get_text())
            .map_err(|e| text_error(path, &chunk.keyword, e))?;
        out.push((chunk.keyword, text));
    }
    for chunk in &info.utf8_text {
        let mut chunk = chunk.clone();
        let text = chunk
            .decompress_text_with_limit(TEXT_DECOMPRESSION_LIMIT)
            .and_then(|()| chunk.get_text())
            .map_err(|e| text_error(path, &chunk.keyword, e))?;
        out.push((chunk.keyword, text));
    }
    Ok(out)
}

/// Decodes an 8-bit RGB or RGBA PNG (alpha is dropped); other formats are an error.
pub fn read_png(path: &Path) -> Result<RgbImage, ImageError> {
    let mut reader = open_reader(path)?;
    let (color, depth) = reader.output_color_type();
    let channels = match (color, depth) {
        (png::ColorType::Rgb, png::BitDepth::Eight) => 3,
        (png::ColorType::Rgba, png::BitDepth::Eight) => 4,
        _ => {
            return Err(ImageError::Png {
                path: path.to_path_buf(),
                message: format!(
                    "unsupported PNG format {color:?} {depth:?}; only 8-bit RGB or RGBA is read"
                ),
            })
        }
    };
    let size = reader.output_buffer_size().ok_or_else(|| ImageError::Png {
        path: path.to_path_buf(),
        message: "image too large".to_string(),
    })?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| png_error(path, e))?;

    let (width, height) = (frame.width, frame.height);
    let row_len = usize::try_from(width)
        .unwrap_or(usize::MAX)
        .saturating_mul(channels);
    let mut pixels = Vec::with_capacity(super::rgb_len(width, height).unwrap_or(0));
    for row in buf.chunks(frame.line_size).take(frame.height as usize) {
        let row = row.get(..row_len).ok_or_else(|| ImageError::Png {
            path: path.to_path_buf(),
            message: "decoded row shorter than expected".to_string(),
        })?;
        for px in row.chunks_exact(channels) {
            pixels.extend_from_slice(&px[..3]);
        }
    }
    RgbImage::new(width, height, pixels)
}

/// The workflow text stored under [`WORKFLOW_KEY`], or [`ImageError::NoWorkflow`].
pub fn workflow_text_from_png(path: &Path) -> Result<String, ImageError> {
    read_png_text(path)?
        .into_iter()
        .find(|(keyword, _)| keyword == WORKFLOW_KEY)
        .map(|(_, text)| text)
        .ok_or_else(|| ImageError::NoWorkflow {
            path: path.to_path_buf(),
        })
}

fn open_reader(path: &Path) -> Result<png::Reader<BufReader<File>>, ImageError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    png::Decoder::new(BufReader::new(file))
        .read_info()
        .map_err(|e| png_error(path, e))
}

/// Creates a new, uniquely named temporary file next to the target.
fn create_temp_file(dir: &Path, file_name: &str) -> Result<(PathBuf, File), ImageError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut attempt = 0;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{file_name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => return Err(io_error(&tmp, e)),
        }
    }
}

/// Keywords: 1–79 Latin-1 characters, printable (no control characters, no NUL).
fn check_keyword(keyword: &str) -> Result<(), ImageError> {
    let count = keyword.chars().count();
    let printable = keyword
        .chars()
        .all(|c| matches!(c as u32, 0x20..=0x7e | 0xa1..=0xff));
    if (1..=79).contains(&count) && printable {
        Ok(())
    } else {
        Err(encode_error(format!(
            "invalid text chunk keyword {keyword:?}: must be 1-79 printable Latin-1 characters"
        )))
    }
}

fn encode_error(message: String) -> ImageError {
    ImageError::Encode { message }
}

fn encode_err(e: png::EncodingError) -> ImageError {
    encode_error(e.to_string())
}

fn io_error(path: &Path, source: std::io::Error) -> ImageError {
    ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn png_error(path: &Path, e: png::DecodingError) -> ImageError {
    let message = match e {
        png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "not a valid PNG (empty or truncated file)".to_string()
        }
        e => format!("not a valid PNG: {e}"),
    };
    ImageError::Png {
        path: path.to_path_buf(),
        message,
    }
}

fn text_error(path: &Path, keyword: &str, e: png::DecodingError) -> ImageError {
    ImageError::Png {
        path: path.to_path_buf(),
        message: format!("text chunk {keyword:?} cannot be read: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn gradient(width: u32, height: u32) -> RgbImage {
        let mut pixels = Vec::new();
        for y in 0..height {
            for x in 0..width {
                pixels.extend_from_slice(&[(x * 7) as u8, (y * 13) as u8, ((x + y) * 3) as u8]);
            }
        }
        RgbImage {
            width,
            height,
            pixels,
        }
    }

    fn long_ron() -> String {
        let mut s = String::from("(nodes: [\n");
        let mut i = 0;
        while s.len() < 100 * 1024 {
            s.push_str(&format!(
                "    (id: {i}, kind: \"KSampler\", title: \"Étape {i} — 采样\", params: {{\"steps\": Int(50)}}),\n"
            ));
            i += 1;
        }
        s.push_str("])");
        s
    }

    #[test]
    fn png_round_trip_pixels() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.png");
        let img = gradient(13, 7);
        write_png_atomic(&path, &img, &[])?;
        assert_eq!(read_png(&path)?, img);
        // The in-memory encoding is what lands on disk.
        assert_eq!(fs::read(&path)?, encode_png(&img, &[])?);
        Ok(())
    }

    #[test]
    fn text_chunks_round_trip() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("nested/deeper/t.png");
        let ron = long_ron();
        assert!(ron.len() >= 100 * 1024);
        let chunks = [
            (WORKFLOW_KEY, ron.as_str()),
            ("title", "Ünïcödé — 日本語 🎨"),
            ("empty", ""),
        ];
        let img = gradient(4, 3);
        write_png_atomic(&path, &img, &chunks)?;

        let got = read_png_text(&path)?;
        let want: Vec<(String, String)> = chunks
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(workflow_text_from_png(&path)?, ron);
        assert_eq!(read_png(&path)?, img);
        // The long text was stored compressed.
        assert!(fs::metadata(&path)?.len() < ron.len() as u64 / 2);
        Ok(())
    }

    #[test]
    fn reads_latin1_text_chunks_from_other_writers() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("other.png");
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 1, 1);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        enc.add_text_chunk("Software".into(), "café".into())?;
        enc.add_ztxt_chunk("Comment".into(), "zipped ÿ".into())?;
        let mut w = enc.write_header()?;
        w.write_image_data(&[10, 20, 30, 40])?;
        w.finish()?;
        fs::write(&path, out)?;

        let got = read_png_text(&path)?;
        assert_eq!(
            got,
            vec![
                ("Software".to_string(), "café".to_string()),
                ("Comment".to_string(), "zipped ÿ".to_string()),
            ]
        );
        // RGBA is read with alpha dropped.
        assert_eq!(read_png(&path)?.pixels, vec![10, 20, 30]);
        assert!(matches!(
            workflow_text_from_png(&path),
            Err(ImageError::NoWorkflow { .. })
        ));
        Ok(())
    }

    #[test]
    fn no_workflow_chunk() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("plain.png");
        write_png_atomic(&path, &gradient(2, 2), &[("other", "x")])?;
        match workflow_text_from_png(&path) {
            Err(e @ ImageError::NoWorkflow { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("plain.png"), "{msg}");
                assert!(msg.contains("not written by CacheDiT Studio"), "{msg}");
            }
            other => return Err(format!("expected NoWorkflow, got {other:?}").into()),
        }
        Ok(())
    }

    #[test]
    fn bad_files_error_with_path() -> TestResult {
        let dir = tempfile::tempdir()?;
        let not_png = dir.path().join("notes.png");
        fs::write(&not_png, b"this is not a png at all")?;
        let full = encode_png(&gradient(8, 8), &[(WORKFLOW_KEY, "(nodes: [])")])?;
        let truncated = dir.path().join("cut.png");
        fs::write(&truncated, &full[..full.len() / 2])?;
        let empty = dir.path().join("empty.png");
        fs::write(&empty, b"")?;
        let missing = dir.path().join("missing.png");

        for path in [&not_png, &truncated, &empty, &missing] {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            for result in [
                read_png(path).map(|_| ()),
                read_png_text(path).map(|_| ()),
                workflow_text_from_png(path).map(|_| ()),
            ] {
                match result {
                    Err(e) => assert!(e.to_string().contains(&name), "{e}"),
                    Ok(()) => return Err(format!("{name}: expected an error").into()),
                }
            }
        }
        Ok(())
    }

    #[test]
    fn atomic_write_leaves_no_temp_files() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("out.png");
        write_png_atomic(&path, &gradient(3, 3), &[(WORKFLOW_KEY, "first")])?;
        // Overwrite in place.
        write_png_atomic(&path, &gradient(5, 2), &[(WORKFLOW_KEY, "second")])?;
        assert_eq!(workflow_text_from_png(&path)?, "second");
        assert_eq!(read_png(&path)?.width, 5);
        // A failed encode writes nothing at all.
        let bad = RgbImage {
            width: 2,
            height: 2,
            pixels: vec![0; 5],
        };
        assert!(write_png_atomic(&dir.path().join("bad.png"), &bad, &[]).is_err());

        let names: Vec<String> = fs::read_dir(dir.path())?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        assert_eq!(names, vec!["out.png".to_string()]);
        Ok(())
    }

    #[test]
    fn invalid_keyword_is_rejected() {
        let img = gradient(1, 1);
        for key in ["", "has\nnewline", "日本", &"k".repeat(80)] {
            assert!(
                matches!(
                    encode_png(&img, &[(key, "v")]),
                    Err(ImageError::Encode { .. })
                ),
                "{key:?}"
            );
        }
        assert!(encode_png(&img, &[(&"k".repeat(79), "v")]).is_ok());
    }
}
