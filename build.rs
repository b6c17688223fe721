//! Records how the crate was built, for `qconv info` and bug reports
//! (`qconv::BUILD_INFO`: target triple, profile, CUDA bindings version).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    let cuda = if std::env::var_os("CARGO_FEATURE_CUDA_12").is_some() { "12.9" } else { "13.0" };
    println!("cargo:rustc-env=QCONV_BUILD_INFO=target {target}, profile {profile}, CUDA bindings {cuda}");
    println!("cargo:rerun-if-changed=build.rs");
}
