//! `QCONV_KERNEL_CACHE_DIR` sits between an explicit directory (`--cache-dir`,
//! `DiskCache::Dir`) and the XDG / HOME defaults. The only test of this binary: it changes the
//! process environment.
#![cfg(feature = "cuda")]

#[test]
fn kernel_cache_dir_precedence() {
    use qconv::cuda::cache::KernelCache;
    use std::path::PathBuf;
    let saved: Vec<_> = ["QCONV_KERNEL_CACHE_DIR", "XDG_CACHE_HOME", "HOME"].map(|k| (k, std::env::var_os(k))).into();
    std::env::set_var("HOME", "/home/u");
    std::env::remove_var("XDG_CACHE_HOME");
    std::env::remove_var("QCONV_KERNEL_CACHE_DIR");
    assert_eq!(KernelCache::default_dir(), Some(PathBuf::from("/home/u/.cache/qconv")));
    std::env::set_var("XDG_CACHE_HOME", "/xdg");
    assert_eq!(KernelCache::default_dir(), Some(PathBuf::from("/xdg/qconv")));
    std::env::set_var("QCONV_KERNEL_CACHE_DIR", "/srv/kernels");
    assert_eq!(KernelCache::default_dir(), Some(PathBuf::from("/srv/kernels")));
    std::env::set_var("QCONV_KERNEL_CACHE_DIR", "");
    assert_eq!(KernelCache::default_dir(), Some(PathBuf::from("/xdg/qconv")), "empty counts as unset");
    for (k, v) in saved {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
}
