//! Replays the fuzz corpus (`fuzz/corpus/<target>/`, minimised with `cargo fuzz cmin`) and the
//! crash inputs kept in `fuzz/regressions/<target>/` through the fuzz targets' own code
//! (`fuzz/src/`, included here as a module): deterministic, and fast enough for every CI run, so
//! that a change that re-opens a class the fuzzers closed fails here, not 194 s into a fuzz run.
//! `fuzz/regressions/module_config-slow/` (inputs that once took seconds) replays in release
//! builds only.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod qconv_fuzz;

use std::path::{Path, PathBuf};

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let mut v: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Runs `target` on every file of `dirs`; fails naming every input that panicked.
fn replay(dirs: &[&str], target: fn(&[u8])) -> usize {
    let mut failed = Vec::new();
    let mut n = 0;
    for dir in dirs {
        for f in files(dir) {
            let bytes = std::fs::read(&f).unwrap();
            n += 1;
            if std::panic::catch_unwind(|| target(&bytes)).is_err() {
                failed.push(f.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "{} of {n} inputs failed: {failed:#?}", failed.len());
    n
}

#[test]
fn model_file_corpus_and_regressions() {
    let n = replay(&["corpus/model_file", "regressions/model_file"], qconv_fuzz::model_file::run);
    assert!(n > 100, "only {n} inputs: is fuzz/corpus/model_file there?");
}

#[test]
fn module_config_corpus_and_regressions() {
    let mut dirs = vec!["corpus/module_config", "regressions/module_config"];
    if !cfg!(debug_assertions) {
        dirs.push("regressions/module_config-slow");
    }
    let n = replay(&dirs, qconv_fuzz::module_config::run);
    assert!(n > 100, "only {n} inputs: is fuzz/corpus/module_config there?");
}
