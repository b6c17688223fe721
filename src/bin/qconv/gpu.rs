//! The commands that drive the CUDA backend: `warmup` and `bench --device cuda` (CUDA builds).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use qconv::cuda::kernels::KernelSource;
use qconv::cuda::nvrtc::{nvrtc_available, Arch, CompiledKernel};
use qconv::cuda::runtime::{configure_kernel_cache, kernel_cache, DiskCache};

use crate::{CacheArgs, CliError, CliResult, WarmupArgs};

/// Applies `--cache-dir` / `--no-disk-cache` to the process-wide kernel cache.
pub fn configure_cache(c: &CacheArgs) -> CliResult {
    let disk = match (&c.cache_dir, c.no_disk_cache) {
        (Some(d), _) => DiskCache::Dir(d.clone()),
        (None, true) => DiskCache::Off,
        (None, false) => DiskCache::Default,
    };
    Ok(configure_kernel_cache(disk)?)
}

/// The GPU suite of docs/benchmarks.md, timed with CUDA events by the library; one JSON row per
/// line.
pub fn bench(ordinal: usize, case: Option<&str>, batch: Option<usize>) -> CliResult {
    qconv::bench::gpu::run_suite(ordinal, case, batch, &mut |row| println!("{row}"))?;
    Ok(())
}

/// The rows `warmup` prints for one finished program.
fn rows(arch: Arch, source: &str, result: &qconv::Result<std::sync::Arc<CompiledKernel>>) -> Vec<String> {
    match result {
        Ok(k) => {
            let time =
                if k.from_disk_cache { "cached".into() } else { format!("{:.2} s", k.compile_time.as_secs_f64()) };
            if k.resources.is_empty() {
                return vec![format!("{:<9} {:<18} {:>10}  (no ptxas report)", arch.to_string(), source, time)];
            }
            k.resources
                .iter()
                .map(|r| {
                    format!(
                        "{:<9} {:<18} {:>10}  {:<26} {:>4} {:>12} {:>9}",
                        arch.to_string(),
                        source,
                        time,
                        r.name,
                        r.registers,
                        format!("{}/{}", r.spill_stores, r.spill_loads),
                        r.shared_bytes
                    )
                })
                .collect()
        }
        Err(e) => {
            // The first line of the compiler's message; the whole log at debug level.
            log::debug!("{source} for {arch}: {e}");
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("");
            let cut = (0..=200.min(first.len())).rev().find(|&i| first.is_char_boundary(i)).unwrap_or(0);
            let more =
                if cut < first.len() || msg.lines().nth(1).is_some() { " … (RUST_LOG=debug shows all)" } else { "" };
            vec![format!("{:<9} {:<18} FAILED: {}{more}", arch.to_string(), source, &first[..cut])]
        }
    }
}

/// Fails unless a file can be created in the kernel cache directory (before anything compiles).
fn check_writable(dir: &Path) -> CliResult {
    let probe = dir.join(format!(".qconv-write-test-{}", std::process::id()));
    let result = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::OpenOptions::new().write(true).create_new(true).open(&probe)?;
        std::fs::remove_file(&probe)
    });
    result.map_err(|e| {
        CliError::Run(format!(
            "cannot save compiled kernels in {}: {e}; choose another --cache-dir, or pass --no-disk-cache",
            dir.display()
        ))
    })
}

pub fn warmup(a: &WarmupArgs) -> CliResult {
    configure_cache(&a.cache)?;
    let cache = kernel_cache();
    if let Some(dir) = cache.dir() {
        check_writable(dir)?;
    }
    let version = nvrtc_available()?;
    let archs: Vec<Arch> = match &a.arch {
        Some(list) => list
            .0
            .iter()
            .map(
                |&(major, minor, specific)| {
                    if specific {
                        Arch::specific(major, minor)
                    } else {
                        Arch::new(major, minor)
                    }
                },
            )
            .collect(),
        None => {
            let mut v = Vec::new();
            for d in &qconv::cuda::probe().devices {
                if d.compute_capability < qconv::cuda::MIN_COMPUTE_CAPABILITY {
                    log::warn!("skipping cuda:{} ({}): older than sm_80", d.ordinal, d.name);
                    continue;
                }
                let arch = Arch::from_compute_capability(d.compute_capability)?;
                // The device's own target, and sm_90a on compute capability 9.0 (the Hopper
                // program, compiled there for that target only).
                for target in std::iter::once(arch).chain(KernelSource::ALL.iter().filter_map(|s| s.target_on(arch))) {
                    if !v.contains(&target) {
                        v.push(target);
                    }
                }
            }
            v
        }
    };
    if archs.is_empty() {
        return Err(CliError::Usage(
            "no CUDA device (sm_80 or newer) to take the architecture from; pass --arch sm_80,sm_90,...".into(),
        ));
    }
    match cache.dir() {
        Some(d) => println!("nvrtc {}.{}; kernel cache: {}", version.0, version.1, d.display()),
        None => println!("nvrtc {}.{}; kernel cache: memory only (nothing is kept)", version.0, version.1),
    }
    println!(
        "{:<9} {:<18} {:>10}  {:<26} {:>4} {:>12} {:>9}",
        "arch", "source", "time", "kernel", "regs", "spill st/ld", "smem B"
    );
    let total: usize = archs.iter().map(|&a| KernelSource::for_arch(a).count()).sum();
    // A progress bar on a terminal (on stderr, the rows above it); plain lines otherwise.
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total as u64);
        let style = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} programs, {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    });
    let done = Mutex::new(0usize);
    let start = std::time::Instant::now();
    let results = cache.warm_all_with(&archs, &|source, arch, result| {
        let lines = rows(arch, source.name(), result);
        // One program's rows together, in the order programs finish.
        let mut n = done.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        match &bar {
            Some(bar) => {
                for l in &lines {
                    bar.println(l);
                }
                bar.set_message(format!("{} {arch}", source.name()));
                bar.inc(1);
            }
            None => {
                for l in &lines {
                    println!("{l}");
                }
            }
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let wall = start.elapsed();
    let failures = results.iter().filter(|r| r.2.is_err()).count();
    let cached = results.iter().filter(|r| r.2.as_ref().is_ok_and(|k| k.from_disk_cache)).count();
    let compiled = results.len() - failures - cached;
    println!(
        "total: {} programs ({compiled} compiled, {cached} from the disk cache, {failures} failed) in {:.3} s wall, on up to {} threads",
        results.len(),
        wall.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if failures > 0 {
        return Err(CliError::Run(format!("{failures} of {} kernel program(s) failed to compile", results.len())));
    }
    let unsaved = cache.stats().write_failures as usize;
    if let (Some(dir), true) = (cache.dir(), unsaved > 0) {
        if unsaved >= compiled {
            return Err(CliError::Run(format!(
                "none of the {compiled} compiled program(s) could be saved to {}: choose another --cache-dir, or pass --no-disk-cache",
                dir.display()
            )));
        }
        log::warn!("{unsaved} of {compiled} compiled program(s) could not be saved to {}", dir.display());
    }
    Ok(())
}
