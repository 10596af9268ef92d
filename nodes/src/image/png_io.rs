//! PNG encoding/decoding with UTF-8 text chunks, used to embed the workflow in saved images.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Cursor, Seek};
use std::path::Path;

use png::text_metadata::ITXtChunk;

use super::{ImageError, RgbImage};

/// Text-chunk keyword under which the workflow (RON text) is stored.
pub const WORKFLOW_KEY: &str = "cachedit.workflow";

/// Texts at least this long (bytes) are stored zlib-compressed.
const COMPRESS_TEXT_FROM: usize = 1024;

/// Upper bound on one decompressed text chunk when reading (guards against zip bombs).
const TEXT_DECOMPRESSION_LIMIT: usize = 64 * 1024 * 1024;

/// Upper bound on all decompressed text of one file together.
const TEXT_TOTAL_LIMIT: usize = 64 * 1024 * 1024;

/// Upper bound on a decoded image (bytes).
const MAX_DECODED_BYTES: u64 = 256 << 20;

/// Deflate's largest compression ratio (258-byte matches coded in one bit each, about
/// 1032:1): the most decoded bytes a file of a given size can really hold.
const DEFLATE_MAX_RATIO: u64 = 1032;

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
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    crate::safe_io::write_atomic(path, &bytes).map_err(|e| io_error(path, e))
}

/// All text chunks of the PNG at `path` as `(keyword, text)`: tEXt, then zTXt, then iTXt
/// (file order within each kind), compressed ones decompressed. Reads chunks after the
/// image data too. At most 64 MiB of text in all.
pub fn read_png_text(path: &Path) -> Result<Vec<(String, String)>, ImageError> {
    read_texts(open_file(path)?, path, |_| true)
}

/// [`read_png_text`] on the bytes of a PNG; `origin` names it in errors.
pub fn read_png_text_bytes(
    bytes: &[u8],
    origin: &Path,
) -> Result<Vec<(String, String)>, ImageError> {
    read_texts(open_bytes(bytes, origin)?, origin, |_| true)
}

/// The text chunks whose keyword `wanted` accepts. Keywords are looked at before anything is
/// inflated, so a file full of other compressed chunks costs nothing; what is inflated is
/// capped per chunk and in total.
fn read_texts<R: BufRead + Seek>(
    mut reader: png::Reader<R>,
    path: &Path,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, ImageError> {
    reader.finish().map_err(|e| png_error(path, e))?;
    let info = reader.info();
    let mut total = 0usize;
    let mut out = Vec::new();
    for chunk in info
        .uncompressed_latin1_text
        .iter()
        .filter(|c| wanted(&c.keyword))
    {
        charge(&mut total, path, &chunk.keyword, chunk.text.len())?;
        out.push((chunk.keyword.clone(), chunk.text.clone()));
    }
    for chunk in info
        .compressed_latin1_text
        .iter()
        .filter(|c| wanted(&c.keyword))
    {
        let mut chunk = chunk.clone();
        let left = TEXT_TOTAL_LIMIT.saturating_sub(total);
        let text = chunk
            .decompress_text_with_limit(TEXT_DECOMPRESSION_LIMIT.min(left))
            .and_then(|()| chunk.get_text())
            .map_err(|e| text_error(path, &chunk.keyword, e))?;
        charge(&mut total, path, &chunk.keyword, text.len())?;
        out.push((chunk.keyword, text));
    }
    for chunk in info.utf8_text.iter().filter(|c| wanted(&c.keyword)) {
        let mut chunk = chunk.clone();
        let left = TEXT_TOTAL_LIMIT.saturating_sub(total);
        let text = chunk
            .decompress_text_with_limit(TEXT_DECOMPRESSION_LIMIT.min(left))
            .and_then(|()| chunk.get_text())
            .map_err(|e| text_error(path, &chunk.keyword, e))?;
        charge(&mut total, path, &chunk.keyword, text.len())?;
        out.push((chunk.keyword, text));
    }
    Ok(out)
}

/// Decodes an 8-bit RGB or RGBA PNG (alpha is dropped); other formats are an error.
pub fn read_png(path: &Path) -> Result<RgbImage, ImageError> {
    decode(open_file(path)?, path)
}

/// [`read_png`] on the bytes of a PNG; `origin` names it in errors.
pub fn read_png_bytes(bytes: &[u8], origin: &Path) -> Result<RgbImage, ImageError> {
    decode(open_bytes(bytes, origin)?, origin)
}

fn decode<R: BufRead + Seek>(
    mut reader: png::Reader<R>,
    path: &Path,
) -> Result<RgbImage, ImageError> {
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
    workflow_text(
        read_texts(open_file(path)?, path, |k| k == WORKFLOW_KEY)?,
        path,
    )
}

/// [`workflow_text_from_png`] on the bytes of a PNG; `origin` names it in errors.
pub fn workflow_text_from_png_bytes(bytes: &[u8], origin: &Path) -> Result<String, ImageError> {
    let texts = read_texts(open_bytes(bytes, origin)?, origin, |k| k == WORKFLOW_KEY)?;
    workflow_text(texts, origin)
}

fn workflow_text(texts: Vec<(String, String)>, path: &Path) -> Result<String, ImageError> {
    texts
        .into_iter()
        .find(|(keyword, _)| keyword == WORKFLOW_KEY)
        .map(|(_, text)| text)
        .ok_or_else(|| ImageError::NoWorkflow {
            path: path.to_path_buf(),
        })
}

/// Counts `len` more bytes of text against [`TEXT_TOTAL_LIMIT`].
fn charge(total: &mut usize, path: &Path, keyword: &str, len: usize) -> Result<(), ImageError> {
    *total = total.saturating_add(len);
    if *total > TEXT_TOTAL_LIMIT {
        return Err(ImageError::Png {
            path: path.to_path_buf(),
            message: format!(
                "text chunk {keyword:?}: more than {} MiB of text in one file",
                TEXT_TOTAL_LIMIT >> 20
            ),
        });
    }
    Ok(())
}

/// A reader past the header of the regular file at `path`.
fn open_file(path: &Path) -> Result<png::Reader<BufReader<File>>, ImageError> {
    let file = crate::safe_io::open_regular(path).map_err(|e| io_error(path, e))?;
    let file_len = file.metadata().map_err(|e| io_error(path, e))?.len();
    open_reader(BufReader::new(file), file_len, path)
}

fn open_bytes<'a>(
    bytes: &'a [u8],
    origin: &Path,
) -> Result<png::Reader<Cursor<&'a [u8]>>, ImageError> {
    open_reader(Cursor::new(bytes), bytes.len() as u64, origin)
}

/// A reader past the header, refusing images larger than `file_len` bytes could really hold
/// (deflate's ratio) or than [`MAX_DECODED_BYTES`], before any pixel buffer exists.
fn open_reader<R: BufRead + Seek>(
    source: R,
    file_len: u64,
    path: &Path,
) -> Result<png::Reader<R>, ImageError> {
    let room = file_len
        .saturating_mul(DEFLATE_MAX_RATIO)
        .min(MAX_DECODED_BYTES);
    // The decoder's own buffers (chunk data, inflate state) get the same bound, but never
    // less than its default, which small valid files may need.
    let limits = png::Limits {
        bytes: usize::try_from(room.max(64 << 20)).unwrap_or(usize::MAX),
    };
    let reader = png::Decoder::new_with_limits(source, limits)
        .read_info()
        .map_err(|e| png_error(path, e))?;
    let info = reader.info();
    // Four bytes a pixel (RGBA, 8 bit) is the most this reader decodes to.
    let decoded = u64::from(info.width)
        .saturating_mul(u64::from(info.height))
        .saturating_mul(4);
    if decoded > room {
        return Err(ImageError::Png {
            path: path.to_path_buf(),
            message: format!(
                "the image declares {}×{} pixels ({decoded} bytes decoded), more than a \
                 {file_len}-byte file can hold or than the {} MiB this reader decodes",
                info.width,
                info.height,
                MAX_DECODED_BYTES >> 20
            ),
        });
    }
    Ok(reader)
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
    // png reports a limit reached as "out of decompression space": say which limit.
    let message = if e.to_string().contains("decompression space") {
        format!(
            "text chunk {keyword:?} inflates past the limit of {} MiB per chunk and {} MiB in all",
            TEXT_DECOMPRESSION_LIMIT >> 20,
            TEXT_TOTAL_LIMIT >> 20
        )
    } else {
        format!("text chunk {keyword:?} cannot be read: {e}")
    };
    ImageError::Png {
        path: path.to_path_buf(),
        message,
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

    /// The hostile PNGs `tools/make_hostile_inputs.py` writes for the fuzzers' regressions.
    fn hostile(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/regressions/png")
            .join(name);
        fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn a_2_kb_png_declaring_four_billion_rows_is_refused_before_allocating() {
        // It used to ask for 73 GB.
        let bytes = hostile("huge-dimensions.bin");
        let origin = Path::new("huge.png");
        let err = read_png_bytes(&bytes, origin).unwrap_err().to_string();
        assert!(
            err.contains("huge.png") && err.contains("4060086313"),
            "{err}"
        );
    }

    #[test]
    fn text_chunks_of_other_keys_are_not_inflated_and_all_text_is_capped() {
        // 16 zTXt chunks of 60 MiB each: reading them all took `restore` past 1 GB.
        let bytes = hostile("text-bomb.bin");
        let origin = Path::new("bomb.png");
        let workflow = workflow_text_from_png_bytes(&bytes, origin).unwrap();
        assert!(workflow.starts_with("(version: 1"), "{workflow}");
        let err = read_png_text_bytes(&bytes, origin).unwrap_err().to_string();
        assert!(err.contains("bomb.png") && err.contains("MiB"), "{err}");
    }
}
