//! Writes the `model_file` seed corpus: every module of tests/fixtures/*.safetensors extracted
//! (reference and lowered int8 modules) into its own small safetensors file, plus a few whole
//! small fixture files.
//!
//! Run from fuzz/: `cargo run --bin gen_seeds`.

use std::path::Path;

use qconv::io::StateDict;
use qconv::{AnyConv, AnyQuantizedConv};

fn main() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/model_file");
    std::fs::create_dir_all(&out).expect("corpus folder");
    let mut names: Vec<_> = std::fs::read_dir(&fixtures)
        .expect("tests/fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    names.sort();
    let mut written = 0;
    for path in names {
        let bytes = std::fs::read(&path).expect("fixture");
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if bytes.len() <= 8192 {
            std::fs::write(out.join(format!("seed-{stem}.safetensors")), &bytes).expect("write");
            written += 1;
        }
        let Ok(sd) = StateDict::from_bytes(&bytes) else { continue };
        for (i, prefix) in sd.module_prefixes().iter().enumerate() {
            let bytes = if let Ok((m, _)) = AnyConv::from_state_dict_lenient(&sd, prefix) {
                m.state_dict("").to_bytes()
            } else if let Ok((m, _)) = AnyQuantizedConv::from_state_dict_lenient(&sd, prefix) {
                m.state_dict("").to_bytes()
            } else {
                continue;
            };
            let Ok(b) = bytes else { continue };
            if b.len() <= 16384 && !out.join(format!("seed-{stem}-{i:03}.safetensors")).exists() {
                std::fs::write(out.join(format!("seed-{stem}-{i:03}.safetensors")), &b).expect("write");
                written += 1;
            }
        }
    }
    println!("wrote {written} seeds to {}", out.display());
}
