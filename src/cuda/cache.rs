//! The compiled-kernel cache: in memory and on disk.
//!
//! A [`KernelCache`] returns the CUBIN of a kernel source for an architecture, compiling it with
//! NVRTC only when neither cache has it (docs/design.md principle 6):
//!
//! * **in memory**, keyed like the disk entries, so one cache serves every device of a process
//!   (devices of the same architecture share entries);
//! * **on disk**, one file per entry named `<source>-<arch>-<key>.cubin`, where the key is a
//!   128-bit hash of the source and headers, the complete option list, the NVRTC version and the
//!   architecture. The directory is a constructor argument (`None`: memory only);
//!   [`KernelCache::default_dir`] is the standard location (`$QCONV_KERNEL_CACHE_DIR`, else
//!   `$XDG_CACHE_HOME/qconv`, else `~/.cache/qconv`). The runtime's process-wide cache is chosen
//!   with [`crate::cuda::runtime::configure_kernel_cache`]: an explicit directory (the CLI's
//!   `--cache-dir`) wins over the variable, which wins over the XDG and home defaults.
//!
//! Entries carry a header with the key, the lengths and a checksum; a file that is truncated,
//! corrupt, longer than [`MAX_ENTRY`], not a regular file, or belongs to another key is recompiled
//! and rewritten, never trusted (reads are bounded and never block on a FIFO planted in the
//! directory). Writes go to a temporary file created exclusively under an unpredictable name,
//! `.<entry>.qconv-tmp-<random>`, which is renamed into place, so readers never see a partial
//! entry and a planted symbolic link is never written through (a link at an entry's own name is
//! replaced, not followed); see `crate::io` for the temporary files' cleanup. An unwritable
//! directory produces one warning (through the `log` crate) and the cache carries on in memory;
//! [`KernelCache::stats`] counts the writes that failed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::kernels::{KernelSource, HEADERS};
use super::nvrtc::{self, parse_ptxas_log, Arch, CompiledKernel};
use crate::error::{Error, Result};

/// Longest cache file read (a CUBIN and its log take a few MB); a longer one is treated as corrupt.
pub const MAX_ENTRY: u64 = 256 << 20;
/// The environment variable naming the kernel cache directory (see [`KernelCache::default_dir`]).
pub const CACHE_DIR_VAR: &str = "QCONV_KERNEL_CACHE_DIR";

/// Magic bytes at the start of every cache file (the trailing digit is the format version).
const MAGIC: &[u8; 8] = b"QCKCUBN1";
/// Bytes before the log: magic, key, NVRTC version, arch, compile time, lengths, checksum.
const HEADER_LEN: usize = 8 + 16 + 8 + 8 + 8 + 8 + 8 + 8;

/// Counters of what a [`KernelCache`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered from memory.
    pub memory_hits: u64,
    /// Requests answered from a valid disk entry.
    pub disk_hits: u64,
    /// NVRTC compilations.
    pub compiles: u64,
    /// Disk entries found corrupt (and recompiled).
    pub corrupt_entries: u64,
    /// Disk entries that could not be written.
    pub write_failures: u64,
}

/// The cache key of one compilation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub u128);

impl CacheKey {
    /// Hash of everything that determines the CUBIN.
    pub fn new(source: KernelSource, arch: Arch, options: &[String], nvrtc_version: (i32, i32)) -> Self {
        let mut h = Hasher128::new();
        h.field(b"qconv kernel cache v1");
        h.field(source.file_name().as_bytes());
        h.field(source.source().as_bytes());
        for (name, text) in HEADERS {
            h.field(name.as_bytes());
            h.field(text.as_bytes());
        }
        for o in options {
            h.field(o.as_bytes());
        }
        h.field(format!("nvrtc {}.{}", nvrtc_version.0, nvrtc_version.1).as_bytes());
        h.field(arch.to_string().as_bytes());
        CacheKey(h.finish())
    }

    /// 32 hexadecimal digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.0)
    }
}

/// FNV-1a over bytes, 64-bit (stable across Rust versions, unlike `DefaultHasher`).
fn fnv1a64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Two independent FNV-1a lanes (different offsets) over length-prefixed fields: 128 bits, so
/// that accidental collisions between cache entries are out of the question. (Not a
/// cryptographic hash: the cache directory is trusted as much as the user's home directory.)
struct Hasher128 {
    a: u64,
    b: u64,
}

impl Hasher128 {
    fn new() -> Self {
        Hasher128 { a: FNV_OFFSET, b: FNV_OFFSET ^ 0x9e37_79b9_7f4a_7c15 }
    }

    fn field(&mut self, bytes: &[u8]) {
        let len = (bytes.len() as u64).to_le_bytes();
        self.a = fnv1a64(fnv1a64(self.a, &len), bytes);
        self.b = fnv1a64(fnv1a64(self.b, bytes), &len);
    }

    fn finish(&self) -> u128 {
        ((self.a as u128) << 64) | self.b as u128
    }
}

/// Checksum of a cache file's contents (header fields before the checksum, log, CUBIN).
fn checksum(parts: &[&[u8]]) -> u64 {
    parts.iter().fold(FNV_OFFSET, |h, p| fnv1a64(h, p))
}

/// Bit of the header's arch-minor field that marks an architecture-specific target (`sm_90a`);
/// entries of plain targets keep the format they always had.
const ARCH_SPECIFIC_BIT: u32 = 1 << 16;

/// The header's arch-minor field of `arch`.
fn arch_minor_field(arch: Arch) -> u32 {
    arch.minor | if arch.specific { ARCH_SPECIFIC_BIT } else { 0 }
}

/// Serialises an entry (format: see [`decode_entry`]).
fn encode_entry(key: CacheKey, k: &CompiledKernel) -> Vec<u8> {
    let mut head = Vec::with_capacity(HEADER_LEN);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&key.0.to_le_bytes());
    head.extend_from_slice(&k.nvrtc_version.0.to_le_bytes());
    head.extend_from_slice(&k.nvrtc_version.1.to_le_bytes());
    head.extend_from_slice(&k.arch.major.to_le_bytes());
    head.extend_from_slice(&arch_minor_field(k.arch).to_le_bytes());
    head.extend_from_slice(&(k.compile_time.as_micros() as u64).to_le_bytes());
    head.extend_from_slice(&(k.log.len() as u64).to_le_bytes());
    head.extend_from_slice(&(k.cubin.len() as u64).to_le_bytes());
    let sum = checksum(&[&head, k.log.as_bytes(), &k.cubin]);
    head.extend_from_slice(&sum.to_le_bytes());
    debug_assert_eq!(head.len(), HEADER_LEN);
    let mut out = head;
    out.extend_from_slice(k.log.as_bytes());
    out.extend_from_slice(&k.cubin);
    out
}

/// Parses and verifies an entry; `None` when anything is off (wrong magic, key, arch or lengths,
/// checksum mismatch, invalid UTF-8 log, empty CUBIN).
///
/// Layout (little endian): magic `[u8; 8]`, key `u128`, NVRTC major/minor `i32`, arch
/// major/minor `u32` (the minor with bit 16 set for an architecture-specific `sm_XYa`), compile time in µs `u64`, log length `u64`, CUBIN length `u64`, checksum
/// `u64`, log bytes, CUBIN bytes.
fn decode_entry(
    bytes: &[u8],
    key: CacheKey,
    source: KernelSource,
    arch: Arch,
    options: &[String],
) -> Option<CompiledKernel> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if u128::from_le_bytes(bytes[8..24].try_into().expect("16 bytes")) != key.0 {
        return None;
    }
    let nvrtc_version = (u32_at(24) as i32, u32_at(28) as i32);
    let file_arch = match u32_at(36) {
        m if m & ARCH_SPECIFIC_BIT != 0 => Arch::specific(u32_at(32), m & !ARCH_SPECIFIC_BIT),
        m => Arch::new(u32_at(32), m),
    };
    let compile_us = u64_at(40);
    let log_len = usize::try_from(u64_at(48)).ok()?;
    let cubin_len = usize::try_from(u64_at(56)).ok()?;
    let sum = u64_at(64);
    if file_arch != arch || cubin_len == 0 || HEADER_LEN.checked_add(log_len)?.checked_add(cubin_len)? != bytes.len() {
        return None;
    }
    let log = &bytes[HEADER_LEN..HEADER_LEN + log_len];
    let cubin = &bytes[HEADER_LEN + log_len..];
    if checksum(&[&bytes[..64], log, cubin]) != sum {
        return None;
    }
    let log = String::from_utf8(log.to_vec()).ok()?;
    Some(CompiledKernel {
        source,
        arch,
        options: options.to_vec(),
        nvrtc_version,
        cubin: cubin.to_vec(),
        resources: parse_ptxas_log(&log),
        log,
        compile_time: Duration::from_micros(compile_us),
        from_disk_cache: true,
    })
}

/// The callback of [`KernelCache::warm_all_with`]: one call per finished program.
pub type WarmReport<'a> = dyn Fn(KernelSource, Arch, &Result<Arc<CompiledKernel>>) + Sync + 'a;

/// Compiled kernels in memory and (optionally) on disk. `Send + Sync`; share it per process.
#[derive(Debug)]
pub struct KernelCache {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<CacheKey, Arc<CompiledKernel>>>,
    warned: AtomicBool,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    compiles: AtomicU64,
    corrupt: AtomicU64,
    write_failures: AtomicU64,
}

impl KernelCache {
    /// A cache that stores entries under `dir` (created on first write), or only in memory when
    /// `dir` is `None`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        KernelCache {
            dir,
            memory: Mutex::new(HashMap::new()),
            warned: AtomicBool::new(false),
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
        }
    }

    /// A cache without a disk part.
    pub fn memory_only() -> Self {
        KernelCache::new(None)
    }

    /// The default directory: `$QCONV_KERNEL_CACHE_DIR`, else `$XDG_CACHE_HOME/qconv`, else
    /// `$HOME/.cache/qconv` (empty variables count as unset); `None` when none is set. An explicit
    /// directory ([`DiskCache::Dir`](super::runtime::DiskCache::Dir), `qconv --cache-dir`) wins
    /// over all three.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os(CACHE_DIR_VAR).filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(dir));
        }
        let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
        let base = xdg
            .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("qconv"))
    }

    /// The disk directory, if the disk cache is enabled.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            compiles: self.compiles.load(Ordering::Relaxed),
            corrupt_entries: self.corrupt.load(Ordering::Relaxed),
            write_failures: self.write_failures.load(Ordering::Relaxed),
        }
    }

    /// The key and file of an entry (the file only when the disk cache is enabled).
    ///
    /// Needs the NVRTC version, so it fails like [`nvrtc::compile`] when NVRTC is unavailable.
    pub fn entry_path(&self, source: KernelSource, arch: Arch, extra: &[&str]) -> Result<Option<PathBuf>> {
        let version = nvrtc::nvrtc_available()?;
        let options = nvrtc::full_options(source, arch, extra);
        let key = CacheKey::new(source, arch, &options, version);
        Ok(self.file_for(source, arch, key))
    }

    fn file_for(&self, source: KernelSource, arch: Arch, key: CacheKey) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{}-{}-{}.cubin", source.name(), arch, key.hex())))
    }

    /// The compiled `source` for `arch` (with `extra` NVRTC options): from memory, else from disk,
    /// else compiled now (and stored in both).
    pub fn get(&self, source: KernelSource, arch: Arch, extra: &[&str]) -> Result<Arc<CompiledKernel>> {
        let version = nvrtc::nvrtc_available()?;
        let options = nvrtc::full_options(source, arch, extra);
        let key = CacheKey::new(source, arch, &options, version);
        if let Some(k) = self.lock().get(&key) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Arc::clone(k));
        }
        let file = self.file_for(source, arch, key);
        if let Some(path) = &file {
            match read_entry(path) {
                Ok(bytes) => match bytes.and_then(|b| decode_entry(&b, key, source, arch, &options)) {
                    Some(k) => {
                        self.disk_hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(self.remember(key, k));
                    }
                    None => {
                        self.corrupt.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => self.warn_once(&format!("cannot read {}: {e}", path.display())),
            }
        }
        let compiled = nvrtc::compile(source, arch, extra)?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        if let Some(path) = &file {
            if let Err(e) = write_atomically(path, &encode_entry(key, &compiled)) {
                self.write_failures.fetch_add(1, Ordering::Relaxed);
                self.warn_once(&format!("cannot write {}: {e}", path.display()));
            }
        }
        Ok(self.remember(key, compiled))
    }

    /// Compiles (or loads) every kernel program for every architecture in `archs` that the
    /// program targets ([`KernelSource::targets`]: `sm_90a` takes only the Hopper program, the
    /// plain architectures every other one) — what `qconv warmup` and
    /// [`crate::cuda::runtime::Runtime::load_all`] do — on up to
    /// `available_parallelism` threads (NVRTC compiles one program per thread). One result per
    /// (program, architecture), in order; failures do not stop the others.
    pub fn warm_all(&self, archs: &[Arch]) -> Vec<(KernelSource, Arch, Result<Arc<CompiledKernel>>)> {
        self.warm_all_with(archs, &|_, _, _| {})
    }

    /// [`warm_all`](Self::warm_all), calling `on_done` (from the thread that did the work) as each
    /// program finishes, for progress reports.
    pub fn warm_all_with(
        &self,
        archs: &[Arch],
        on_done: &WarmReport<'_>,
    ) -> Vec<(KernelSource, Arch, Result<Arc<CompiledKernel>>)> {
        let jobs: Vec<(KernelSource, Arch)> =
            archs.iter().flat_map(|&arch| KernelSource::for_arch(arch).map(move |source| (source, arch))).collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, jobs.len().max(1));
        // Longest first: the tensor-core tiles (0.4-0.9 s each on a 2-core Zen 4 with NVRTC
        // 13.2) start before the CUDA-core pairs and the weight kernels, so that no long program
        // starts last and runs alone.
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by_key(|&i| {
            let s = jobs[i].0;
            s.file_name() != "conv_tc.cu"
        });
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<Arc<CompiledKernel>>>>> =
            Mutex::new((0..jobs.len()).map(|_| None).collect());
        let work = || {
            while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                let (source, arch) = jobs[i];
                let r = self.get(source, arch, &[]);
                on_done(source, arch, &r);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..threads {
                // A thread that cannot be created (RLIMIT_NPROC, no memory for its stack) is no
                // error: the calling thread works through the jobs too.
                if std::thread::Builder::new().name("qconv-nvrtc".into()).spawn_scoped(scope, work).is_err() {
                    break;
                }
            }
            work();
        });
        let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        jobs.into_iter()
            .zip(results)
            .map(|((source, arch), r)| {
                let r = r.unwrap_or_else(|| {
                    Err(Error::Cuda { call: "kernel warm-up", message: "a compile thread stopped early".into() })
                });
                (source, arch, r)
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Arc<CompiledKernel>>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts).
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, key: CacheKey, k: CompiledKernel) -> Arc<CompiledKernel> {
        // Two threads may compile the same entry concurrently; the first one stored wins.
        Arc::clone(self.lock().entry(key).or_insert_with(|| Arc::new(k)))
    }

    fn warn_once(&self, what: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!("kernel cache: {what}; continuing without the disk cache for this entry (the stats count every write that failed)");
        }
    }
}

/// The bytes of the cache file `path`: `Ok(None)` when it is not a regular file (or a link) or
/// longer than [`MAX_ENTRY`] (to be recompiled), an error when it cannot be opened.
fn read_entry(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO planted under an entry's name must not wait for a writer;
    // O_NOFOLLOW: a planted link is not an entry (it fails with ELOOP and is recompiled).
    let f = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW).open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.is_file() || meta.len() > MAX_ENTRY {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    if bytes.try_reserve_exact(meta.len() as usize).is_err() {
        return Ok(None);
    }
    f.take(MAX_ENTRY + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= MAX_ENTRY).then_some(bytes))
}

/// Writes `bytes` to a temporary file next to `path` (created exclusively, unpredictable name),
/// then renames it over `path`; a symbolic link at `path` is replaced, not followed.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    crate::io::atomic::write_output(path, false, &mut |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CompiledKernel {
        CompiledKernel {
            source: KernelSource::FakeQuant,
            arch: Arch::new(8, 0),
            options: vec!["-arch=sm_80".into()],
            nvrtc_version: (13, 2),
            cubin: (0..200u8).collect(),
            log: "ptxas info    : Compiling entry function 'qc_quantize' for 'sm_80'\nptxas info    : Used 32 registers, used 0 barriers\n".into(),
            resources: vec![],
            compile_time: Duration::from_micros(1234),
            from_disk_cache: false,
        }
    }

    #[test]
    fn entries_round_trip_and_reject_any_damage() {
        let k = sample();
        let key = CacheKey::new(k.source, k.arch, &k.options, k.nvrtc_version);
        let bytes = encode_entry(key, &k);
        let back = decode_entry(&bytes, key, k.source, k.arch, &k.options).expect("valid entry");
        assert_eq!(back.cubin, k.cubin);
        assert_eq!(back.log, k.log);
        assert_eq!(back.nvrtc_version, (13, 2));
        assert_eq!(back.compile_time, Duration::from_micros(1234));
        assert!(back.from_disk_cache);
        assert_eq!(back.resources.len(), 1);
        assert_eq!(back.resources[0].registers, 32);

        // Every single-byte corruption and every truncation is detected.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            assert!(decode_entry(&bad, key, k.source, k.arch, &k.options).is_none(), "flip at {i}");
        }
        for len in [0, 7, HEADER_LEN - 1, HEADER_LEN, bytes.len() - 1] {
            assert!(decode_entry(&bytes[..len], key, k.source, k.arch, &k.options).is_none(), "truncated to {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_entry(&longer, key, k.source, k.arch, &k.options).is_none());
        // Another key or architecture is not this entry.
        assert!(decode_entry(&bytes, CacheKey(key.0 ^ 1), k.source, k.arch, &k.options).is_none());
        assert!(decode_entry(&bytes, key, k.source, Arch::new(9, 0), &k.options).is_none());

        // sm_90a round-trips as itself and is neither sm_90 nor sm_90's entry.
        let a = CompiledKernel { arch: Arch::SM90A, source: KernelSource::ConvWg, ..sample() };
        let key_a = CacheKey::new(a.source, a.arch, &a.options, a.nvrtc_version);
        let bytes_a = encode_entry(key_a, &a);
        assert_eq!(decode_entry(&bytes_a, key_a, a.source, Arch::SM90A, &a.options).unwrap().arch, Arch::SM90A);
        assert!(decode_entry(&bytes_a, key_a, a.source, Arch::new(9, 0), &a.options).is_none());
        let plain = CompiledKernel { arch: Arch::new(9, 0), ..a.clone() };
        let bytes_p = encode_entry(key_a, &plain);
        assert!(decode_entry(&bytes_p, key_a, a.source, Arch::SM90A, &a.options).is_none());
    }

    #[test]
    fn keys_depend_on_every_input() {
        let o = vec!["-arch=sm_80".to_string()];
        let base = CacheKey::new(KernelSource::ConvF32T128M32, Arch::new(8, 0), &o, (13, 2));
        assert_eq!(base, CacheKey::new(KernelSource::ConvF32T128M32, Arch::new(8, 0), &o, (13, 2)));
        assert_ne!(base, CacheKey::new(KernelSource::ConvTransposeF32T128M32, Arch::new(8, 0), &o, (13, 2)));
        assert_ne!(base, CacheKey::new(KernelSource::ConvF32T128M32, Arch::new(9, 0), &o, (13, 2)));
        // The architecture-specific target is a key of its own (same options otherwise).
        let o90 = vec!["-arch=sm_90".to_string()];
        assert_ne!(
            CacheKey::new(KernelSource::ConvWg, Arch::new(9, 0), &o90, (13, 2)),
            CacheKey::new(KernelSource::ConvWg, Arch::SM90A, &o90, (13, 2))
        );
        assert_ne!(base, CacheKey::new(KernelSource::ConvF32T128M32, Arch::new(8, 0), &o, (13, 1)));
        assert_ne!(base, CacheKey::new(KernelSource::ConvF32T128M32, Arch::new(8, 0), &["-lineinfo".into()], (13, 2)));
        // Field boundaries matter: ["ab", "c"] differs from ["a", "bc"].
        let ab = CacheKey::new(KernelSource::ConvF32T128M32, Arch::new(8, 0), &["ab".into(), "c".into()], (13, 2));
        let bc = CacheKey::new(KernelSource::ConvF32T128M32, Arch::new(8, 0), &["a".into(), "bc".into()], (13, 2));
        assert_ne!(ab, bc);
        assert_eq!(base.hex().len(), 32);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporaries() {
        let dir = std::env::temp_dir().join(format!("qconv-cache-unit-{}", std::process::id()));
        let path = dir.join("sub").join("entry.cubin");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn entries_are_never_written_through_links_nor_read_unbounded() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("entry.cubin");
        // A link planted at the entry's name is replaced, not followed; links planted at temp
        // names in the old predictable pattern and the new one are never touched.
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let planted =
            [format!(".entry.cubin.{}.0.tmp", std::process::id()), ".entry.cubin.qconv-tmp-0000000000".into()];
        for p in &planted {
            std::os::unix::fs::symlink(&victim, dir.path().join(p)).unwrap();
        }
        assert_eq!(read_entry(&path).unwrap(), None, "a link is not an entry");
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(read_entry(&path).unwrap().unwrap(), b"new");
        for p in &planted {
            assert!(std::fs::symlink_metadata(dir.path().join(p)).unwrap().file_type().is_symlink());
        }
        // A 255-byte entry name still fits its temporary name.
        let long = dir.path().join("e".repeat(255));
        write_atomically(&long, b"x").unwrap();
        assert_eq!(std::fs::read(&long).unwrap(), b"x");
        // A FIFO under an entry's name: not read (no blocking), and replaced by the next write.
        let fifo = dir.path().join("fifo.cubin");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(read_entry(&fifo).unwrap(), None);
        assert!(write_atomically(&fifo, b"y").is_err(), "a FIFO is refused, not renamed over");
        // Directories and oversized files are not entries.
        assert_eq!(read_entry(dir.path()).unwrap(), None);
        let big = dir.path().join("big.cubin");
        std::fs::File::create(&big).unwrap().set_len(MAX_ENTRY + 1).unwrap();
        assert_eq!(read_entry(&big).unwrap(), None);
    }

    #[test]
    fn default_dir_and_memory_only() {
        assert!(KernelCache::memory_only().dir().is_none());
        if let Some(d) = KernelCache::default_dir() {
            assert!(d.ends_with("qconv"));
        }
        let c = KernelCache::new(Some(PathBuf::from("/nonexistent/qconv")));
        assert_eq!(c.dir(), Some(Path::new("/nonexistent/qconv")));
        assert_eq!(c.stats(), CacheStats::default());
    }
}
