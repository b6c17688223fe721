//! Arbitrary module configurations, qparams and input shapes (the logic lives in
//! `src/module_config.rs`, so that the main crate's tests can replay the corpus through it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qconv_fuzz::module_config::run(data));
