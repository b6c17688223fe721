//! Arbitrary bytes as a safetensors model file (the logic lives in `src/model_file.rs`, so that
//! the main crate's tests can replay the corpus through it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qconv_fuzz::model_file::run(data));
