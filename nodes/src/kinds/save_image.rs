//! Save Image: writes a PNG into the output folder with the workflow embedded, so the file
//! alone restores the workflow; with a sampler's stats linked, the step-cache signature names
//! the file.

use crate::exec::context::NodeContext;
use crate::image::png_io::{write_png_atomic, WORKFLOW_KEY};
use crate::registry::{
    Inputs, KindSpec, NodeError, NodeKind, Outputs, ParamSpec, Params, PortSpec, PortType,
    Preflight, PreflightContext,
};
use std::path::{Path, PathBuf};

pub struct SaveImage;

/// PNG text key holding the step-cache signature of the run that made the image.
pub const SIGNATURE_KEY: &str = "cachedit:cache";
/// PNG text key of the prompt a text-conditioned image was made from.
pub const PROMPT_KEY: &str = "cachedit:prompt";

/// `<dir>/<prefix>_00001.png`, the first number not taken yet (ComfyUI's naming).
fn next_free_path(dir: &Path, prefix: &str) -> PathBuf {
    let mut n = 1u32;
    loop {
        let path = dir.join(format!("{prefix}_{n:05}.png"));
        if !path.exists() || n == u32::MAX {
            return path;
        }
        n += 1;
    }
}

fn check_prefix(prefix: &str) -> Result<(), NodeError> {
    let bad = prefix.is_empty() || prefix.contains(['/', '\\', '\0']) || prefix.starts_with('.');
    if bad {
        return Err(NodeError::Param(
            "filename_prefix".into(),
            format!("{prefix:?} is not a plain file name (no slashes, not empty, no leading dot)"),
        ));
    }
    Ok(())
}

/// Creates `dir` if needed and writes and removes a probe file in it, so that a run learns
/// before sampling that its images could not be saved.
fn check_writable(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the output folder {}: {e}", dir.display()))?;
    tempfile_probe(dir)
        .map_err(|e| format!("cannot write into the output folder {}: {e}", dir.display()))
}

fn tempfile_probe(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".cachedit-write-test-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

impl NodeKind for SaveImage {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "SaveImage",
            title: "Save Image",
            category: "output",
            help: "Saves the image as PNG in the output folder, with the workflow embedded.",
            inputs: vec![
                PortSpec::required("image", PortType::Image, "image to save"),
                PortSpec::optional(
                    "stats",
                    PortType::RunStats,
                    "the sampler's stats: its step-cache signature goes into the file name",
                ),
            ],
            outputs: vec![],
            params: vec![ParamSpec::text(
                "filename_prefix",
                "cachedit",
                "file name start; a 5-digit counter and .png follow",
            )],
        }
    }

    fn run(
        &self,
        ctx: &NodeContext,
        inputs: &Inputs,
        params: &Params,
    ) -> Result<Outputs, NodeError> {
        let image = inputs.require("image")?.as_image("image")?;
        let prefix = params.text("filename_prefix")?;
        check_prefix(prefix)?;
        let stats = match inputs.get("stats") {
            Some(stats) => Some(stats.as_run_stats("stats")?),
            None => None,
        };
        let signature = stats
            .and_then(|s| s.summary.as_ref())
            .map(|s| s.signature.clone());
        let prompt = stats.and_then(|s| s.prompt.clone());
        let name = match &signature {
            Some(sig) => format!("{prefix}_{sig}"),
            None => prefix.to_string(),
        };
        check_prefix(&name)?;
        std::fs::create_dir_all(ctx.output_dir)
            .map_err(|e| NodeError::Io(format!("{}: {e}", ctx.output_dir.display())))?;
        let path = next_free_path(ctx.output_dir, &name);
        let mut chunks = vec![(WORKFLOW_KEY, ctx.workflow_ron)];
        if let Some(sig) = &signature {
            chunks.push((SIGNATURE_KEY, sig.as_str()));
        }
        if let Some(prompt) = &prompt {
            chunks.push((PROMPT_KEY, prompt.as_str()));
        }
        write_png_atomic(&path, image, &chunks)?;
        ctx.file_written(&path);
        Ok(Outputs::new())
    }

    /// A plain prefix, and an output folder that takes a file.
    fn preflight(&self, params: &Params, ctx: &PreflightContext) -> Preflight {
        let mut problems = match params.text("filename_prefix").map(check_prefix) {
            Ok(Err(NodeError::Param(_, message))) => vec![("filename_prefix", message)],
            _ => vec![],
        };
        if let Some(dir) = ctx.output_dir {
            if let Err(message) = check_writable(dir) {
                problems.push(("filename_prefix", message));
            }
        }
        Preflight {
            model: None,
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_must_be_a_plain_name() {
        assert!(check_prefix("cachedit").is_ok());
        assert!(check_prefix("../x").is_err());
        assert!(check_prefix("").is_err());
        assert!(check_prefix(".hidden").is_err());
    }

    #[test]
    fn counter_skips_taken_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = next_free_path(dir.path(), "img");
        assert!(first.ends_with("img_00001.png"));
        std::fs::write(&first, b"x").expect("write");
        assert!(next_free_path(dir.path(), "img").ends_with("img_00002.png"));
    }
}
