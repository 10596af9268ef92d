//! Every input the fuzzers ever found to crash a target (`fuzz/regressions/<target>/*.bin`)
//! runs through that target again, under the same memory cap: none may panic, abort or hold
//! more than the cap.

use cachedit_fuzz::alloc::{self, Counting, MEMORY_CAP};
use cachedit_fuzz::engine::run_one;
use cachedit_fuzz::targets;
use std::path::PathBuf;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn every_saved_crash_input_is_handled() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for target in targets::all() {
        let dir = root.join(target.name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "bin"))
        {
            let bytes = std::fs::read(file).expect("regression input");
            let before = alloc::live();
            alloc::reset_peak();
            let outcome = run_one(&target, &bytes);
            let peak = alloc::peak().saturating_sub(before);
            assert!(outcome.is_ok(), "{}: panicked: {outcome:?}", file.display());
            assert!(peak < MEMORY_CAP, "{}: held {peak} bytes", file.display());
            replayed += 1;
        }
    }
    println!("{replayed} regression inputs replayed");
}
