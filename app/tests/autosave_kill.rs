//! The editor's autosave survives kill -9 mid-write: a process writing it in a loop is killed
//! at many moments, and each time the autosave reads back as one of the two documents it
//! alternates between, never as a broken file; the temporary files the kills leave are
//! removed by the next save.

use cachedit::gui::files::{autosave_path, read_autosave, write_autosave};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The example binary cargo builds beside this test.
fn writer() -> PathBuf {
    let mut dir = std::env::current_exe().expect("test exe");
    dir.pop(); // deps/
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("examples").join("autosave_writer")
}

#[test]
fn autosave_reads_back_whole_after_any_kill() {
    let exe = writer();
    if !exe.is_file() {
        // cargo test builds examples; a bare `cargo test --test autosave_kill` may not have.
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "cachedit", "--example", "autosave_writer"])
            .status()
            .expect("cargo");
        assert!(status.success());
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("config");
    let mut seen = [0usize; 2];
    let kills: usize = 25;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .arg(&dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("writer starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut line).expect("ready");
        // Different moments in the write cycle each round.
        std::thread::sleep(Duration::from_millis(30 + (round as u64 * 37) % 200));
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
        if !autosave_path(&dir).exists() {
            continue; // killed before the first save finished
        }
        let wf = read_autosave(&dir).expect("the autosave reads back whole");
        assert_eq!(wf.nodes.len(), 3000, "round {round}");
        let seed = wf.nodes[0].params.get("seed").cloned();
        let which = match seed {
            Some(cachedit_nodes::graph::document::Value::Int(1)) => 0,
            Some(cachedit_nodes::graph::document::Value::Int(2)) => 1,
            other => panic!("round {round}: unexpected seed {other:?}"),
        };
        assert!(
            wf.nodes
                .iter()
                .all(|n| n.params.get("seed") == seed.as_ref()),
            "round {round}: a mix of both documents"
        );
        seen[which] += 1;
    }
    assert!(seen[0] + seen[1] >= kills / 2, "{seen:?}");
    // Kills mid-write leave temporary files; the next save removes them.
    write_autosave(&dir, &cachedit_nodes::graph::document::Workflow::default()).expect("save");
    let left: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "stale temp files: {left:?}");
}
