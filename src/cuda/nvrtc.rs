//! NVRTC compilation of the kernel sources into CUBINs for one exact architecture.
//!
//! Kernels are compiled to CUBIN for the device's exact `sm_XY` (a PTX from an NVRTC newer than
//! the driver would not load). Every program is compiled with [`BASE_OPTIONS`]:
//! `--std=c++17`, `--fmad=false` (no contraction of `a*b+c`; the fake-quant arithmetic must round
//! exactly where the CPU's does, the convolutions use explicit FMAs), `-default-device` and
//! `--ptxas-options=-v`, whose report is parsed per entry point into [`KernelResources`]
//! (registers, spills, shared memory).
//!
//! Nothing here panics on a machine without NVRTC: [`compile`] checks the crate's probe and every
//! NVRTC symbol it calls first, and returns a typed [`Error`] instead (docs/design.md principle 4).
//! Most callers want [`crate::cuda::cache::KernelCache`], which adds the in-memory and on-disk
//! caches on top of [`compile`].

use std::collections::BTreeMap;
use std::ffi::{c_char, CString};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use cudarc::nvrtc::sys as nsys;

use super::kernels::{KernelSource, HEADERS};
use crate::error::{Error, Result};

/// Options every program is compiled with (before the caller's options).
pub const BASE_OPTIONS: &[&str] = &["--std=c++17", "--fmad=false", "-default-device", "--ptxas-options=-v"];

/// A GPU architecture, `sm_<major><minor>` (compute capability `major.minor`), or its
/// architecture-specific variant `sm_<major><minor>a` ([`Arch::specific`]): the target whose
/// CUBIN may use instructions of exactly that generation (wgmma and setmaxnreg on `sm_90a`) and
/// runs only on devices of exactly that compute capability. The two are different compilation
/// targets: separate cache entries, separate `qconv warmup --arch` items.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    /// Compute capability major version (8 for sm_80).
    pub major: u32,
    /// Compute capability minor version (0 for sm_80).
    pub minor: u32,
    /// The architecture-specific target (`sm_90a`): only the programs that need it are compiled
    /// for it ([`KernelSource::targets`]).
    pub specific: bool,
}

impl Arch {
    /// `sm_<major><minor>`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Arch { major, minor, specific: false }
    }

    /// `sm_<major><minor>a`, the architecture-specific target of compute capability
    /// `major.minor` (qconv uses `sm_90a` only: [`Arch::SM90A`]).
    pub const fn specific(major: u32, minor: u32) -> Self {
        Arch { major, minor, specific: true }
    }

    /// `sm_90a`: Hopper's wgmma/TMA kernels (`cuda/conv_wg.cu`).
    pub const SM90A: Arch = Arch::specific(9, 0);

    /// The plain `sm_XY` of the same compute capability (itself when not specific).
    pub const fn base(&self) -> Arch {
        Arch::new(self.major, self.minor)
    }

    /// From a device's compute capability as the driver reports it (e.g. `(9, 0)`).
    pub fn from_compute_capability(cc: (i32, i32)) -> Result<Self> {
        if cc.0 <= 0 || cc.1 < 0 || cc.1 > 9 {
            return Err(Error::config(
                "compute capability",
                format!("{}.{}", cc.0, cc.1),
                "expected major >= 1 and minor 0..=9",
            ));
        }
        Ok(Arch::new(cc.0 as u32, cc.1 as u32))
    }

    /// The `-arch=` option NVRTC needs for a CUBIN of exactly this architecture.
    pub fn nvrtc_option(&self) -> String {
        format!("-arch={self}")
    }
}

impl From<(u32, u32)> for Arch {
    /// `(major, minor)` → `sm_<major><minor>`.
    fn from((major, minor): (u32, u32)) -> Self {
        Arch::new(major, minor)
    }
}

impl fmt::Display for Arch {
    /// `sm_80`, `sm_90`, `sm_90a`, `sm_120`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sm_{}{}{}", self.major, self.minor, if self.specific { "a" } else { "" })
    }
}

impl FromStr for Arch {
    type Err = Error;
    /// Parses `sm_80`, `80`, `8.0` or `compute_80`, and the architecture-specific `sm_90a`
    /// (`90a`, `compute_90a`): the only one qconv has programs for.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Parse {
            what: "GPU architecture",
            value: s.to_string(),
            expected: "sm_XY (e.g. sm_80, sm_90), XY or X.Y, or sm_90a".into(),
        };
        if let Some(base) = s.trim().strip_suffix('a') {
            let arch = base.parse::<Arch>().map_err(|_| bad())?;
            return if arch == Arch::new(9, 0) && !base.contains('.') { Ok(Arch::SM90A) } else { Err(bad()) };
        }
        let t = s.trim();
        if let Some((major, minor)) = t.split_once('.') {
            let major = major.parse::<u32>().map_err(|_| bad())?;
            let minor = minor.parse::<u32>().map_err(|_| bad())?;
            return if major > 0 && minor <= 9 { Ok(Arch::new(major, minor)) } else { Err(bad()) };
        }
        let digits = t.strip_prefix("sm_").or_else(|| t.strip_prefix("compute_")).unwrap_or(t);
        if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (major, minor) = digits.split_at(digits.len() - 1);
        let major = major.parse::<u32>().map_err(|_| bad())?;
        let minor = minor.parse::<u32>().map_err(|_| bad())?;
        if major == 0 {
            return Err(bad());
        }
        Ok(Arch::new(major, minor))
    }
}

/// Resource usage of one kernel entry point, from ptxas' `-v` report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    /// Entry point (the `extern "C"` symbol).
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of register spill stores.
    pub spill_stores: u32,
    /// Bytes of register spill loads.
    pub spill_loads: u32,
    /// Bytes of stack frame (local memory) per thread.
    pub stack_frame: u32,
    /// Bytes of static shared memory per block.
    pub shared_bytes: u32,
    /// Named barriers used.
    pub barriers: u32,
}

impl KernelResources {
    /// `true` when ptxas spilled registers to local memory.
    pub fn spills(&self) -> bool {
        self.spill_stores > 0 || self.spill_loads > 0
    }
}

/// One compiled program: a CUBIN with every entry point of a [`KernelSource`].
#[derive(Clone, Debug)]
pub struct CompiledKernel {
    /// The program.
    pub source: KernelSource,
    /// The architecture the CUBIN is for.
    pub arch: Arch,
    /// The complete option list NVRTC was given (including `-arch`).
    pub options: Vec<String>,
    /// NVRTC version (major, minor) that compiled it.
    pub nvrtc_version: (i32, i32),
    /// The CUBIN image (load it with `cuModuleLoadData`).
    pub cubin: Vec<u8>,
    /// The program log (ptxas report, warnings).
    pub log: String,
    /// Resource usage per entry point, in the order ptxas reported them.
    pub resources: Vec<KernelResources>,
    /// Time NVRTC took (for a kernel read from the disk cache: the original compile time).
    pub compile_time: Duration,
    /// `true` when this copy was read from the disk cache rather than compiled in this process.
    pub from_disk_cache: bool,
}

impl CompiledKernel {
    /// Resource usage of one entry point.
    pub fn resources_of(&self, entry: &str) -> Option<&KernelResources> {
        self.resources.iter().find(|r| r.name == entry)
    }
}

/// The complete NVRTC option list for `source` on `arch` with the caller's `extra` options (every
/// program gets the same ones: what distinguishes programs is their source text).
pub fn full_options(_source: KernelSource, arch: Arch, extra: &[&str]) -> Vec<String> {
    BASE_OPTIONS.iter().chain(extra).map(|s| s.to_string()).chain(std::iter::once(arch.nvrtc_option())).collect()
}

/// Names of the NVRTC functions [`compile`] calls; all are checked before the first call, since
/// cudarc panics on a missing symbol.
const REQUIRED_SYMBOLS: &[&str] = &[
    "nvrtcVersion",
    "nvrtcCreateProgram",
    "nvrtcCompileProgram",
    "nvrtcGetProgramLogSize",
    "nvrtcGetProgramLog",
    "nvrtcGetCUBINSize",
    "nvrtcGetCUBIN",
    "nvrtcDestroyProgram",
];

/// Checks that NVRTC is loadable and has every function [`compile`] needs; returns its version.
pub fn nvrtc_available() -> Result<(i32, i32)> {
    let probe = super::probe();
    let unavailable = |why: String| Error::Cuda { call: "nvrtc", message: why };
    if !probe.nvrtc_loaded {
        return Err(unavailable(
            "the NVRTC library (libnvrtc) could not be loaded; install it (e.g. pip install nvidia-cuda-nvrtc) and put it on the library path"
                .into(),
        ));
    }
    let version = probe.nvrtc_version.ok_or_else(|| unavailable("nvrtcVersion failed".into()))?;
    // SAFETY: the probe loaded the library successfully, so `culib` returns it instead of
    // panicking; looking a symbol up calls nothing.
    let lib = unsafe { nsys::culib() };
    for name in REQUIRED_SYMBOLS {
        // SAFETY: the symbol is only looked up, never called through this pointer type.
        if unsafe { lib.get::<unsafe extern "C" fn()>(*name) }.is_err() {
            return Err(unavailable(format!(
                "libnvrtc {}.{} lacks {name}; a newer NVRTC is needed",
                version.0, version.1
            )));
        }
    }
    Ok(version)
}

fn nvrtc_call(call: &'static str, r: nsys::nvrtcResult) -> Result<()> {
    if r == nsys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::Cuda { call, message: format!("{r:?} (code {})", r as i32) })
    }
}

/// Destroys the NVRTC program when dropped.
struct Program(nsys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: `self.0` was created by nvrtcCreateProgram and is destroyed exactly once.
        unsafe {
            let _ = nsys::nvrtcDestroyProgram(&mut self.0);
        }
    }
}

fn cstring(what: &'static str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::config("NVRTC input", what, "must not contain NUL bytes"))
}

fn program_log(prog: &Program) -> Result<String> {
    let mut size = 0usize;
    // SAFETY: `prog` is a live program; the out-pointer is a valid usize.
    nvrtc_call("nvrtcGetProgramLogSize", unsafe { nsys::nvrtcGetProgramLogSize(prog.0, &mut size) })?;
    let mut buf = vec![0u8; size.max(1)];
    // SAFETY: `buf` has the `size` bytes NVRTC asked for (log including its NUL terminator).
    nvrtc_call("nvrtcGetProgramLog", unsafe { nsys::nvrtcGetProgramLog(prog.0, buf.as_mut_ptr() as *mut c_char) })?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Compiles `source` for `arch` into a CUBIN, with [`BASE_OPTIONS`] and `extra`; the headers of
/// [`HEADERS`] are provided by name.
///
/// Errors: [`Error::Cuda`] when NVRTC is missing or a call fails, [`Error::KernelCompile`] with
/// the compiler log when the source does not compile (e.g. an architecture NVRTC does not know).
pub fn compile(source: KernelSource, arch: Arch, extra: &[&str]) -> Result<CompiledKernel> {
    let k = compile_once(source, arch, extra)?;
    if !k.resources.is_empty() || source.variants().next().is_none() {
        return Ok(k);
    }
    // Seen on a GPU machine (NVRTC 13.0.88 of the CUDA toolkit, driver 580): some compiles return
    // an empty program log, without the ptxas report (not reproducible at will; the pip NVRTC
    // has not shown it). The CUBIN is fine; for the report, compile once more with a define
    // nothing reads (it changes the options, in case a cache is involved).
    let salt = format!(
        "-DQCONV_REPORT_SALT={}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    );
    let mut with_salt: Vec<&str> = extra.to_vec();
    with_salt.push(&salt);
    let mut again = compile_once(source, arch, &with_salt)?;
    if again.resources.is_empty() {
        // No report either way (seen too: the log stays empty): keep the first CUBIN and its
        // log; the caller sees no resources.
        return Ok(k);
    }
    again.cubin = k.cubin;
    again.options = k.options;
    again.compile_time += k.compile_time;
    Ok(again)
}

/// A compiled NVRTC program, before its CUBIN or PTX is read.
struct Built {
    /// Declared first, so dropped (destroyed) before the strings NVRTC was given.
    prog: Program,
    /// Source, name, headers and options: they outlive the program.
    _inputs: (CString, CString, Vec<CString>, Vec<CString>, Vec<CString>),
    version: (i32, i32),
    options: Vec<String>,
    log: String,
    compile_time: Duration,
}

/// Runs NVRTC on `source` for `arch`; errors carry the compiler log.
fn build(source: KernelSource, arch: Arch, extra: &[&str]) -> Result<Built> {
    let version = nvrtc_available()?;
    let options = full_options(source, arch, extra);
    let src = cstring("source", source.source())?;
    let name = cstring("program name", source.file_name())?;
    let header_src = HEADERS.iter().map(|(_, text)| cstring("header", text)).collect::<Result<Vec<_>>>()?;
    let header_names = HEADERS.iter().map(|(n, _)| cstring("header name", n)).collect::<Result<Vec<_>>>()?;
    let header_src_ptrs: Vec<*const c_char> = header_src.iter().map(|s| s.as_ptr()).collect();
    let header_name_ptrs: Vec<*const c_char> = header_names.iter().map(|s| s.as_ptr()).collect();
    let option_strings = options.iter().map(|o| cstring("option", o)).collect::<Result<Vec<_>>>()?;
    let option_ptrs: Vec<*const c_char> = option_strings.iter().map(|s| s.as_ptr()).collect();

    let start = Instant::now();
    let mut raw: nsys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer refers to a NUL-terminated string that outlives the program (they
    // move into `Built` beside it and are dropped after it); the header arrays have
    // `HEADERS.len()` entries each.
    nvrtc_call("nvrtcCreateProgram", unsafe {
        nsys::nvrtcCreateProgram(
            &mut raw,
            src.as_ptr(),
            name.as_ptr(),
            HEADERS.len() as i32,
            header_src_ptrs.as_ptr(),
            header_name_ptrs.as_ptr(),
        )
    })?;
    let prog = Program(raw);
    // SAFETY: `prog` is live; `option_ptrs` holds `options.len()` valid C strings.
    let compiled = unsafe { nsys::nvrtcCompileProgram(prog.0, option_ptrs.len() as i32, option_ptrs.as_ptr()) };
    let compile_time = start.elapsed();
    let log = program_log(&prog)?;
    if compiled != nsys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::KernelCompile {
            kernel: source.file_name().to_string(),
            arch: arch.to_string(),
            log: format!("{compiled:?}; options {options:?}\n{log}"),
        });
    }
    let _inputs = (src, name, header_src, header_names, option_strings);
    Ok(Built { prog, _inputs, version, options, log, compile_time })
}

fn compile_once(source: KernelSource, arch: Arch, extra: &[&str]) -> Result<CompiledKernel> {
    let Built { prog, _inputs, version, options, log, compile_time } = build(source, arch, extra)?;
    let mut size = 0usize;
    // SAFETY: `prog` compiled successfully; the out-pointer is a valid usize.
    nvrtc_call("nvrtcGetCUBINSize", unsafe { nsys::nvrtcGetCUBINSize(prog.0, &mut size) })?;
    if size == 0 {
        return Err(Error::Cuda { call: "nvrtcGetCUBIN", message: "NVRTC produced an empty CUBIN".into() });
    }
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` has exactly the `size` bytes NVRTC reported.
    nvrtc_call("nvrtcGetCUBIN", unsafe { nsys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr() as *mut c_char) })?;
    drop(prog);
    let resources = parse_ptxas_log(&log);
    Ok(CompiledKernel {
        source,
        arch,
        options,
        nvrtc_version: version,
        cubin,
        log,
        resources,
        compile_time,
        from_disk_cache: false,
    })
}

/// The PTX NVRTC generates for `source` on `arch` (the same options as [`compile`]): the text
/// `examples/ptx_dump.rs` writes, so that a refactor of the kernel sources can be checked to leave
/// every entry point's code unchanged.
pub fn compile_ptx(source: KernelSource, arch: Arch, extra: &[&str]) -> Result<String> {
    nvrtc_available()?;
    // SAFETY: nvrtc_available succeeded, so the library is loaded and `culib` returns it.
    let lib = unsafe { nsys::culib() };
    for name in ["nvrtcGetPTXSize", "nvrtcGetPTX"] {
        // SAFETY: the symbol is only looked up, never called through this pointer type.
        if unsafe { lib.get::<unsafe extern "C" fn()>(name) }.is_err() {
            return Err(Error::Cuda { call: "nvrtc", message: format!("this libnvrtc lacks {name}") });
        }
    }
    let built = build(source, arch, extra)?;
    let mut size = 0usize;
    // SAFETY: the program compiled successfully; the out-pointer is a valid usize.
    nvrtc_call("nvrtcGetPTXSize", unsafe { nsys::nvrtcGetPTXSize(built.prog.0, &mut size) })?;
    let mut buf = vec![0u8; size.max(1)];
    // SAFETY: `buf` has the `size` bytes NVRTC reported (the PTX and its NUL terminator).
    nvrtc_call("nvrtcGetPTX", unsafe { nsys::nvrtcGetPTX(built.prog.0, buf.as_mut_ptr() as *mut c_char) })?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The number just before `unit` in `line` (`"16640 bytes smem"` → 16640 for `" bytes smem"`).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let end = line.find(unit)?;
    let head = line[..end].trim_end();
    let start = head.rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    head[start..].parse().ok()
}

/// The number just after `prefix` in `line` (`"Used 40 registers"` → 40 for `"Used "`).
fn number_after(line: &str, prefix: &str) -> Option<u32> {
    let start = line.find(prefix)? + prefix.len();
    let tail = &line[start..];
    let end = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len());
    tail[..end].parse().ok()
}

fn quoted(line: &str) -> Option<&str> {
    let start = line.find('\'')? + 1;
    let len = line[start..].find('\'')?;
    Some(&line[start..start + len])
}

/// Parses ptxas' `-v` report into one [`KernelResources`] per entry function, in report order.
///
/// The report has, per entry: `Compiling entry function 'NAME' for 'sm_XY'`, then
/// `Function properties for NAME` followed by `N bytes stack frame, N bytes spill stores, N bytes
/// spill loads`, then `Used N registers, used N barriers, N bytes smem, ...`. Non-entry functions
/// (`Function properties` without `Compiling entry function`) are ignored.
pub fn parse_ptxas_log(log: &str) -> Vec<KernelResources> {
    let mut order: Vec<String> = Vec::new();
    let mut map: BTreeMap<String, KernelResources> = BTreeMap::new();
    let mut entry: Option<String> = None; // last "Compiling entry function"
    let mut props: Option<String> = None; // last "Function properties for"
    for line in log.lines() {
        if line.contains("Compiling entry function") {
            if let Some(name) = quoted(line) {
                entry = Some(name.to_string());
                if !map.contains_key(name) {
                    order.push(name.to_string());
                    map.insert(name.to_string(), KernelResources { name: name.to_string(), ..Default::default() });
                }
            }
        } else if let Some(pos) = line.find("Function properties for ") {
            props = Some(line[pos + "Function properties for ".len()..].trim().to_string());
        } else if line.contains("bytes stack frame") {
            if let Some(r) = props.as_ref().and_then(|n| map.get_mut(n)) {
                r.stack_frame = number_before(line, " bytes stack frame").unwrap_or(0);
                r.spill_stores = number_before(line, " bytes spill stores").unwrap_or(0);
                r.spill_loads = number_before(line, " bytes spill loads").unwrap_or(0);
            }
        } else if line.contains("Used ") && line.contains(" registers") {
            if let Some(r) = entry.as_ref().and_then(|n| map.get_mut(n)) {
                r.registers = number_after(line, "Used ").unwrap_or(0);
                r.barriers = number_after(line, "used ").unwrap_or(0);
                r.shared_bytes = number_before(line, " bytes smem").unwrap_or(0);
            }
        }
    }
    order.into_iter().filter_map(|n| map.remove(&n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'qc_conv_fwd_f32_t64' for 'sm_80'
ptxas info    : Function properties for qc_conv_fwd_f32_t64
ptxas         .     8 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 8 bytes cumulative stack size, 16640 bytes smem, 592 bytes cmem[0], 8 bytes cmem[2]
ptxas info    : Compile time = 40.123 ms
ptxas info    : Function properties for helper
ptxas         .     16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function 'qc_quantize' for 'sm_80'
ptxas info    : Function properties for qc_quantize
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers, 464 bytes cmem[0], 24 bytes cmem[2]
";

    #[test]
    fn parses_the_ptxas_report() {
        let r = parse_ptxas_log(LOG);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            KernelResources {
                name: "qc_conv_fwd_f32_t64".into(),
                registers: 64,
                spill_stores: 8,
                spill_loads: 4,
                stack_frame: 8,
                shared_bytes: 16640,
                barriers: 1,
            }
        );
        assert!(r[0].spills());
        assert_eq!(r[1].name, "qc_quantize");
        assert_eq!((r[1].registers, r[1].shared_bytes, r[1].stack_frame), (32, 0, 0));
        assert!(!r[1].spills());
        assert!(parse_ptxas_log("").is_empty());
    }

    #[test]
    fn arch_parsing_and_display() {
        for s in ["sm_80", "80", "8.0", "compute_80"] {
            assert_eq!(s.parse::<Arch>().unwrap(), Arch::new(8, 0), "{s}");
        }
        assert_eq!("sm_120".parse::<Arch>().unwrap(), Arch::new(12, 0));
        assert_eq!(Arch::new(9, 0).to_string(), "sm_90");
        assert_eq!(Arch::new(9, 0).nvrtc_option(), "-arch=sm_90");
        for s in ["", "sm_", "sm_8", "sm_x0", "0.5", "9.10", "sm_05"] {
            assert!(s.parse::<Arch>().is_err(), "{s}");
        }
        assert!(Arch::from_compute_capability((8, 6)).is_ok());
        assert_eq!(Arch::from((9, 0)), Arch::new(9, 0));
        assert!(Arch::from_compute_capability((0, 0)).is_err());
        // The architecture-specific Hopper target.
        for s in ["sm_90a", "90a", "compute_90a"] {
            assert_eq!(s.parse::<Arch>().unwrap(), Arch::SM90A, "{s}");
        }
        assert_eq!(Arch::SM90A.to_string(), "sm_90a");
        assert_eq!(Arch::SM90A.nvrtc_option(), "-arch=sm_90a");
        assert_eq!(Arch::SM90A.base(), Arch::new(9, 0));
        assert_ne!(Arch::SM90A, Arch::new(9, 0));
        for s in ["sm_80a", "sm_100a", "9.0a", "a", "sm_a", "sm_90aa"] {
            assert!(s.parse::<Arch>().is_err(), "{s}");
        }
    }

    #[test]
    fn options_end_with_the_arch() {
        let o = full_options(KernelSource::ConvF32T128M32, Arch::new(9, 0), &["-lineinfo"]);
        assert_eq!(o.first().map(String::as_str), Some("--std=c++17"));
        assert!(o.iter().any(|s| s == "--fmad=false"));
        assert_eq!(o[o.len() - 2], "-lineinfo");
        assert_eq!(o.last().map(String::as_str), Some("-arch=sm_90"));
    }

    #[test]
    fn compile_without_nvrtc_is_an_error_not_a_panic() {
        if crate::cuda::probe().nvrtc_loaded {
            return; // covered by tests/nvrtc.rs
        }
        match compile(KernelSource::FakeQuant, Arch::new(8, 0), &[]) {
            Err(Error::Cuda { call: "nvrtc", message }) => assert!(message.contains("libnvrtc")),
            other => panic!("expected Error::Cuda, got {other:?}"),
        }
    }
}
