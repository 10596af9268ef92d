//! Writes the editor's autosave over and over, alternating two large documents, until it is
//! killed: the subject of the kill -9 test in `tests/autosave_kill.rs` (the editor's own
//! autosave path, `gui::files::write_autosave`, in a process that can be killed mid-write).
//!
//! `cargo run -p cachedit --example autosave_writer -- CONFIG_DIR`

use cachedit::gui::files::write_autosave;
use cachedit_nodes::graph::document::Workflow;
use std::path::PathBuf;

/// A workflow of `n` Sampler nodes whose seeds all equal `seed` (so a half-written file
/// could not pass for either document).
pub fn document(n: usize, seed: i64) -> Workflow {
    let mut wf = Workflow::default();
    for _ in 0..n {
        let id = wf.add_node("Sampler", [0.0, 0.0]);
        wf.set_param(
            id,
            "seed",
            cachedit_nodes::graph::document::Value::Int(seed),
        );
    }
    wf
}

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("usage: autosave_writer CONFIG_DIR"))?,
    );
    let docs = [document(3000, 1), document(3000, 2)];
    println!("ready");
    for i in 0.. {
        write_autosave(&dir, &docs[i % 2]).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}
