//! The checkpoint loader against hostile files: every finding of the hardening review (a
//! panic in the pickle reader, huge declared sizes, config arithmetic, integer weights, a
//! FIFO or an oversized config) is an error naming the file, before anything is allocated.

use cachedit_nodes::models::loading::{
    load_checkpoint_bytes, load_dit, LoadLimits, WeightsFormat, MAX_CONFIG_BYTES,
};
use candle_core::{DType, Device, Tensor};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn pixel_config() -> String {
    std::fs::read_to_string(fixtures().join("dit_pixel/config.json")).expect("config")
}

fn fixture_bin() -> Vec<u8> {
    std::fs::read(fixtures().join("dit_pixel_bin/diffusion_pytorch_model.bin")).expect("bin")
}

const LIMITS: LoadLimits = LoadLimits {
    memory_bytes: 256 << 20,
};

/// A small pickle writer: just the opcodes `torch.save` uses for a state dict.
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Pickle(vec![0x80, 2])
    }
    fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(mut self, s: &str) -> Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn int(mut self, n: u64) -> Self {
        self.0.push(0x8a);
        self.0.push(8);
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }
    fn global(mut self, module: &str, name: &str) -> Self {
        self.0.push(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }
    fn ints(mut self, values: &[u64]) -> Self {
        self.0.push(b'(');
        for &v in values {
            self = self.int(v);
        }
        self.op(b"t")
    }
    /// `('storage', torch.<class>, key, 'cpu', numel)` as a persistent id.
    fn storage(self, class: &str, key: &str, numel: u64) -> Self {
        self.op(b"(")
            .str("storage")
            .global("torch", class)
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b"tQ")
    }
    /// `_rebuild_tensor_v2(storage, 0, shape, contiguous stride, False, OrderedDict())`.
    fn tensor(self, class: &str, key: &str, numel: u64, shape: &[u64]) -> Self {
        let mut stride = vec![1u64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1];
        }
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"(")
            .storage(class, key, numel)
            .int(0)
            .ints(shape)
            .ints(&stride)
            .op(&[0x89])
            .global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR")
    }
}

/// A state dict of one tensor, `pos_embed.proj.weight`, built by [`Pickle::tensor`].
fn one_tensor(class: &str, key: &str, numel: u64, shape: &[u64]) -> Vec<u8> {
    Pickle::new()
        .op(b"}(")
        .str("pos_embed.proj.weight")
        .tensor(class, key, numel, shape)
        .op(b"u.")
        .0
}

/// The fixture's archive with its `data.pkl` replaced by `pickle`.
fn bin_with_pickle(pickle: &[u8]) -> Vec<u8> {
    let mut source = zip::ZipArchive::new(std::io::Cursor::new(fixture_bin())).expect("zip");
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..source.len() {
        let mut entry = source.by_index(i).expect("entry");
        let name = entry.name().expect("name").to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        out.start_file(&name, options).expect("start");
        if name.ends_with("data.pkl") {
            out.write_all(pickle).expect("write");
        } else {
            out.write_all(&bytes).expect("write");
        }
    }
    out.finish().expect("finish").into_inner()
}

fn load_bin(bytes: &[u8]) -> String {
    match load_checkpoint_bytes(&pixel_config(), bytes, WeightsFormat::Pytorch, LIMITS) {
        Ok(_) => "loaded".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_rebuilt_fixture_archive_still_loads() {
    // The helper itself: the fixture's own pickle, re-zipped, loads.
    let mut source = zip::ZipArchive::new(std::io::Cursor::new(fixture_bin())).expect("zip");
    let mut pickle = Vec::new();
    source
        .by_name("diffusion_pytorch_model/data.pkl")
        .expect("pkl")
        .read_to_end(&mut pickle)
        .expect("read");
    assert_eq!(load_bin(&bin_with_pickle(&pickle)), "loaded");
}

#[test]
fn a_rebuild_tuple_with_too_few_arguments_is_an_error() {
    // candle's reader panicked on this (`args.remove(3)`), killing the executor thread.
    let pickle = Pickle::new()
        .op(b"}(")
        .str("pos_embed.proj.weight")
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b"(")
        .storage("FloatStorage", "0", 1536)
        .int(0)
        .op(b"tRu.");
    let err = load_bin(&bin_with_pickle(&pickle.0));
    assert!(err.contains("2 arguments"), "{err}");
}

#[test]
fn a_storage_id_with_too_few_fields_is_an_error() {
    // … and on this (`storage.remove(4)`).
    let pickle = Pickle::new()
        .op(b"}(")
        .str("pos_embed.proj.weight")
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b"((")
        .str("storage")
        .global("torch", "FloatStorage")
        .op(b"tQ")
        .int(0)
        .ints(&[4])
        .ints(&[1])
        .op(b"tRu.");
    let err = load_bin(&bin_with_pickle(&pickle.0));
    assert!(err.contains("2 fields"), "{err}");
}

#[test]
fn a_tensor_declaring_384_gib_is_refused_before_allocating() {
    // candle's reader aborted the process asking for 384 GiB.
    let numel = 96u64 << 30;
    let err = load_bin(&bin_with_pickle(&one_tensor(
        "FloatStorage",
        "0",
        numel,
        &[numel],
    )));
    assert!(err.contains("the entry holds 6144"), "{err}");
}

#[test]
fn a_small_bin_declaring_3_gib_of_f16_is_refused_before_reading() {
    // A 271 KB file that used to fill 3 GB before failing.
    let numel = 3u64 << 29;
    let err = load_bin(&bin_with_pickle(&one_tensor(
        "HalfStorage",
        "2",
        numel,
        &[numel],
    )));
    assert!(err.contains("declared") && err.contains("32768"), "{err}");
}

#[test]
fn an_integer_storage_is_an_error() {
    let err = load_bin(&bin_with_pickle(&one_tensor(
        "IntStorage",
        "0",
        1536,
        &[32, 3, 4, 4],
    )));
    assert!(err.contains("IntStorage"), "{err}");
}

#[test]
fn a_pickle_calling_anything_else_is_refused_without_running_it() {
    let pickle = Pickle::new()
        .global("os", "system")
        .str("touch /tmp/pwned")
        .op(&[0x85])
        .op(b"R.");
    let err = load_bin(&bin_with_pickle(&pickle.0));
    assert!(
        err.contains("os.system") && err.contains("refused"),
        "{err}"
    );
}

#[test]
fn a_huge_sample_size_is_refused_before_the_position_table_is_built() {
    // It used to abort the process allocating a 34 GB position embedding.
    let config = pixel_config().replace("\"sample_size\": 16", "\"sample_size\": 65536");
    let err = load_checkpoint_bytes(&config, &fixture_bin(), WeightsFormat::Pytorch, LIMITS)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("needs about") && err.contains("sample_size 65536"),
        "{err}"
    );
}

#[test]
fn a_huge_sample_size_in_a_folder_is_refused_against_the_machine() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = pixel_config().replace("\"sample_size\": 16", "\"sample_size\": 16384");
    std::fs::write(tmp.path().join("config.json"), config).expect("config");
    std::fs::copy(
        fixtures().join("dit_pixel/diffusion_pytorch_model.safetensors"),
        tmp.path().join("diffusion_pytorch_model.safetensors"),
    )
    .expect("weights");
    let err = load_dit(tmp.path(), DType::F32, &Device::Cpu)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("config.json") && err.contains("available"),
        "{err}"
    );
}

#[test]
fn integer_safetensors_weights_are_an_error_naming_the_tensor() {
    // An I32 tensor where F32 was expected used to load silently (converted).
    let mut tensors = candle_core::safetensors::load(
        fixtures().join("dit_pixel/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .expect("load");
    let name = "pos_embed.proj.bias".to_string();
    let shape = tensors[&name].dims().to_vec();
    let as_int = Tensor::zeros(shape, DType::I64, &Device::Cpu).expect("zeros");
    tensors.insert(name.clone(), as_int);
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("w.safetensors");
    candle_core::safetensors::save(&tensors, &path).expect("save");
    let bytes = std::fs::read(&path).expect("read");
    let err = load_checkpoint_bytes(&pixel_config(), &bytes, WeightsFormat::Safetensors, LIMITS)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains(&name) && err.contains("I64"), "{err}");
}

#[test]
fn an_oversized_config_json_is_refused_unread() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut config = pixel_config();
    config.insert_str(
        1,
        &format!("\"pad\": \"{}\",", "x".repeat(MAX_CONFIG_BYTES as usize)),
    );
    std::fs::write(tmp.path().join("config.json"), config).expect("config");
    std::fs::copy(
        fixtures().join("dit_pixel/diffusion_pytorch_model.safetensors"),
        tmp.path().join("diffusion_pytorch_model.safetensors"),
    )
    .expect("weights");
    let err = load_dit(tmp.path(), DType::F32, &Device::Cpu)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("config.json") && err.contains("more than the"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn a_fifo_as_config_json_is_refused_at_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let fifo = tmp.path().join("config.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    std::fs::copy(
        fixtures().join("dit_pixel/diffusion_pytorch_model.safetensors"),
        tmp.path().join("diffusion_pytorch_model.safetensors"),
    )
    .expect("weights");
    let err = load_dit(tmp.path(), DType::F32, &Device::Cpu)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn the_safetensors_fixture_loads_from_bytes_like_from_its_folder() {
    let bytes = std::fs::read(fixtures().join("dit_pixel/diffusion_pytorch_model.safetensors"))
        .expect("st");
    let from_bytes =
        load_checkpoint_bytes(&pixel_config(), &bytes, WeightsFormat::Safetensors, LIMITS)
            .expect("loads");
    let from_folder =
        load_dit(&fixtures().join("dit_pixel"), DType::F32, &Device::Cpu).expect("loads");
    assert_eq!(from_bytes.config(), from_folder.config());
}
