//! The CUDA backend. It receives problems ([`crate::problem::ConvProblem`]), dtypes, qparams and
//! device buffers — never a module type — and is layered, each layer using only those below it:
//!
//! | layer | file | role |
//! |---|---|---|
//! | probe | this file | what the machine has: driver, devices, context, NVRTC — never panics |
//! | NVRTC | [`nvrtc`] | compiles one program for one exact `sm_XY` (CUBIN, ptxas report; PTX for `examples/ptx_dump.rs`) |
//! | programs | [`kernels`] | the one list of programs and entry points built from `cuda/` |
//! | cache | [`cache`] | compiled programs in memory and on disk |
//! | runtime core | [`runtime`] | per device: context, streams, memory, module loading, the generic launch |
//! | host packings | [`pack`], `codes.rs` | pure functions: the tensor-core weight geometry, TF32 rounding, the depthwise packing, the 8-bit codes |
//! | kernel families | [`ops`] | one file per family: its `can_run` rule, arguments, grid and launch ([`Runtime`](runtime::Runtime) methods) |
//! | device weights | `weights.rs` | a module's weight on a device: upload, TF32 copy, codes, self-check ([`WeightStorage`]) |
//! | forward | `forward.rs` | the one forward that picks the family and the weight form ([`Precision`]) |
//!
//! Hopper's own path is one more family along the same layers, opt-in
//! ([`Precision::TensorCoreSm90a`]) and compiled for the architecture-specific target `sm_90a`
//! only ([`nvrtc::Arch::SM90A`], [`kernels::KernelSource::targets`]): `cuda/conv_wg.cu` (wgmma +
//! TMA), [`ops::conv_wg`] (the tensor-map plan, its `can_run`, the launch), chosen by the forward
//! on compute capability 9.0.
//!
//! The lowered int8 convolutions (u8 × s8 codes, exact int32 sums, requantized u8 outputs) are one
//! more family along the same layers: host packings [`pack_int8`], kernel families
//! [`ops::conv_imma`] (tensor cores) and [`ops::int8_simt`] (depthwise, the u8 channel copy),
//! device weights [`DeviceInt8Weights`] and the forward [`forward_int8`].
//!
//! Beside them: `emulate/` (test-only CPU transcriptions of every `.cu`, run against the CPU path
//! and the oracle), `params_sys.rs` (bindgen output of `cuda/params.h`) and `launch` (the former
//! path of the argument helpers, kept hidden for compatibility). `conv/module.rs` reaches the
//! backend through `forward.rs` and the device-weights type only.
//!
//! The probe goes step by step (docs/design.md principle 4): is the driver library loadable
//! (`is_culib_present`), does `cuInit` succeed, how many devices are there, can a context be
//! created on device 0 — and, separately, is NVRTC loadable and which version is it. cudarc loads
//! `libcuda` and `libnvrtc` dynamically and panics when a symbol is missing, so each step runs
//! under `catch_unwind` as a second line of defence, raw CUDA error codes are stored as numbers
//! (formatting a cudarc error needs the driver), and the outcome is computed once per process
//! and cached. When the probe fails, every CUDA entry point returns [`Error::CudaUnavailable`]
//! with [`Probe::unusable_reason`], and computation stays on the CPU.

#[cfg(feature = "cuda")]
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

#[cfg(feature = "cuda")]
use cudarc::driver::sys as dsys;
#[cfg(feature = "cuda")]
use cudarc::nvrtc::sys as nsys;

use crate::error::{Error, Result};

// Compiled in every build: plain data and pure host functions.
pub(crate) mod codes;
mod modes;
#[doc(hidden)]
pub mod pack;

// The backend proper: only with the `cuda` feature (cudarc).
#[cfg(feature = "cuda")]
pub mod cache;
#[cfg(all(test, feature = "cuda"))]
mod emulate;
#[cfg(feature = "cuda")]
pub(crate) mod forward;
#[cfg(feature = "cuda")]
mod forward_int8;
#[cfg(feature = "cuda")]
#[doc(hidden)]
pub mod kernels;
#[cfg(feature = "cuda")]
#[doc(hidden)]
pub mod launch;
#[cfg(feature = "cuda")]
pub mod nvrtc;
#[cfg(feature = "cuda")]
#[doc(hidden)]
pub mod ops;
#[cfg(feature = "cuda")]
pub mod pack_int8;
#[cfg(feature = "cuda")]
mod params_sys;
#[cfg(feature = "cuda")]
pub mod runtime;
#[cfg(feature = "cuda")]
pub(crate) mod weights;
#[cfg(feature = "cuda")]
mod weights_int8;

// Without it: stand-ins that make every CUDA entry point fail with `Error::CudaUnavailable`.
#[cfg(not(feature = "cuda"))]
mod disabled;
#[cfg(not(feature = "cuda"))]
pub(crate) use disabled::{DeviceWeights, Stream};
#[cfg(feature = "cuda")]
pub(crate) use weights::DeviceWeights;
/// A caller's CUDA stream.
#[cfg(feature = "cuda")]
pub(crate) type Stream = cudarc::driver::CudaStream;

pub use modes::{Precision, WeightStorage};
#[doc(hidden)]
pub use pack::WeightSpec;

/// Why CUDA is unusable in a build without the `cuda` feature (the probe's reason and the
/// reason of every [`Error::CudaUnavailable`] such a build returns).
pub const NOT_BUILT: &str = "built without the cuda feature";

/// The oldest GPU generation qconv's kernels run on: compute capability 8.0 (`sm_80`, Ampere).
/// The probe reports CUDA unusable on older devices, and `Device::best()` picks the CPU there.
pub const MIN_COMPUTE_CAPABILITY: (i32, i32) = (8, 0);
#[cfg(feature = "cuda")]
pub use forward_int8::{forward_int8, int8_can_run, Int8Layout};
#[cfg(feature = "cuda")]
pub use weights_int8::DeviceInt8Weights;

/// One CUDA device seen by the probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaDeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Marketing name (e.g. "NVIDIA H100 80GB HBM3").
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Global memory in bytes.
    pub total_memory: usize,
}

/// What the CUDA probe found. Obtain it with [`probe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The driver library (`libcuda`) could be loaded.
    pub driver_loaded: bool,
    /// Driver API version (e.g. 13000 for CUDA 13.0), when the driver initialised.
    pub driver_version: Option<i32>,
    /// The CUDA version the driver bindings were built for (e.g. 13000).
    pub bindings_version: i32,
    /// Devices found (empty without a driver).
    pub devices: Vec<CudaDeviceInfo>,
    /// A context could be created on device 0.
    pub context_ok: bool,
    /// NVRTC could be loaded.
    pub nvrtc_loaded: bool,
    /// NVRTC version (major, minor), when loaded.
    pub nvrtc_version: Option<(i32, i32)>,
    /// The first failing step, in words; `None` when every step succeeded.
    pub failure: Option<String>,
}

impl Probe {
    /// `true` when the driver loads, a device exists, a context can be created and NVRTC loads.
    pub fn usable(&self) -> bool {
        self.failure.is_none()
    }

    /// Why CUDA cannot be used, or `None` when it can.
    pub fn unusable_reason(&self) -> Option<&str> {
        self.failure.as_deref()
    }
}

/// The CUDA version the driver bindings were compiled for (e.g. 13000); 0 in a build without the
/// `cuda` feature.
pub const BINDINGS_VERSION: i32 = if !cfg!(feature = "cuda") {
    0
} else if cfg!(feature = "cuda-12") {
    12090
} else {
    13000
};

/// Probes CUDA once per process and returns the cached outcome. Never panics.
pub fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(run_probe)
}

/// Succeeds when CUDA device `ordinal` is usable; otherwise an [`Error::CudaUnavailable`] with the
/// probe's reason.
pub fn require(ordinal: usize) -> Result<&'static CudaDeviceInfo> {
    let p = probe();
    if let Some(reason) = p.unusable_reason() {
        return Err(Error::CudaUnavailable { ordinal, reason: reason.to_string() });
    }
    let d = p.devices.get(ordinal).ok_or_else(|| Error::CudaUnavailable {
        ordinal,
        reason: format!("only {} CUDA device(s) present", p.devices.len()),
    })?;
    match too_old(d) {
        Some(reason) => Err(Error::CudaUnavailable { ordinal, reason }),
        None => Ok(d),
    }
}

/// Why device `d` is too old for qconv's kernels, or `None` when it is `sm_80` or newer.
fn too_old(d: &CudaDeviceInfo) -> Option<String> {
    let (major, minor) = d.compute_capability;
    (d.compute_capability < MIN_COMPUTE_CAPABILITY).then(|| {
        format!(
            "{} (cuda:{}) has compute capability {major}.{minor}; qconv's CUDA kernels need {}.{} (sm_80, Ampere) or newer",
            d.name, d.ordinal, MIN_COMPUTE_CAPABILITY.0, MIN_COMPUTE_CAPABILITY.1
        )
    })
}

#[cfg(not(feature = "cuda"))]
fn run_probe() -> Probe {
    Probe {
        driver_loaded: false,
        driver_version: None,
        bindings_version: BINDINGS_VERSION,
        devices: Vec::new(),
        context_ok: false,
        nvrtc_loaded: false,
        nvrtc_version: None,
        failure: Some(NOT_BUILT.into()),
    }
}

#[cfg(feature = "cuda")]
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    // A panic inside cudarc (a symbol missing from an old driver) must not escape the probe.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f)).ok();
    std::panic::set_hook(prev);
    r
}

#[cfg(feature = "cuda")]
fn driver_code(r: dsys::CUresult) -> std::result::Result<(), String> {
    if r == dsys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(format!("{r:?} (code {})", r as i32))
    }
}

#[cfg(feature = "cuda")]
fn run_probe() -> Probe {
    let mut p = Probe {
        driver_loaded: false,
        driver_version: None,
        bindings_version: BINDINGS_VERSION,
        devices: Vec::new(),
        context_ok: false,
        nvrtc_loaded: false,
        nvrtc_version: None,
        failure: None,
    };
    let driver = probe_driver(&mut p);
    probe_nvrtc(&mut p);
    let failure = match driver {
        Err(e) => Some(e),
        Ok(()) if !p.nvrtc_loaded => {
            Some("the NVRTC library (libnvrtc) could not be loaded; kernels cannot be compiled".to_string())
        }
        Ok(()) => None,
    };
    p.failure = failure;
    p
}

#[cfg(feature = "cuda")]
fn probe_driver(p: &mut Probe) -> std::result::Result<(), String> {
    // SAFETY: `is_culib_present` only tries to dlopen the library candidates; it calls no CUDA function.
    p.driver_loaded = guarded(|| unsafe { dsys::is_culib_present() }).unwrap_or(false);
    if !p.driver_loaded {
        return Err("the CUDA driver library (libcuda) was not found: no NVIDIA driver is installed".into());
    }
    // SAFETY: cuInit(0) is the documented first call of the driver API; the library is loaded.
    let init = guarded(|| unsafe { dsys::cuInit(0) }).ok_or("cuInit is missing from the driver library")?;
    driver_code(init).map_err(|e| format!("cuInit failed: {e}"))?;
    let mut version = 0i32;
    // SAFETY: the out-pointer is a valid, live i32.
    let r = guarded(|| unsafe { dsys::cuDriverGetVersion(&mut version) }).ok_or("cuDriverGetVersion is missing")?;
    driver_code(r).map_err(|e| format!("cuDriverGetVersion failed: {e}"))?;
    p.driver_version = Some(version);
    if version < BINDINGS_VERSION {
        return Err(format!(
            "the driver supports CUDA {}.{} but qconv was built for CUDA {}.{} (build with --no-default-features --features cuda-12 for 12.x drivers, or update the driver)",
            version / 1000,
            version % 1000 / 10,
            BINDINGS_VERSION / 1000,
            BINDINGS_VERSION % 1000 / 10
        ));
    }
    let mut count = 0i32;
    // SAFETY: the out-pointer is a valid, live i32; the driver is initialised.
    let r = guarded(|| unsafe { dsys::cuDeviceGetCount(&mut count) }).ok_or("cuDeviceGetCount is missing")?;
    driver_code(r).map_err(|e| format!("cuDeviceGetCount failed: {e}"))?;
    for ordinal in 0..count.max(0) {
        if let Some(info) = guarded(|| device_info(ordinal)).flatten() {
            p.devices.push(info);
        }
    }
    if p.devices.is_empty() {
        return Err("the CUDA driver is installed but reports no usable device".into());
    }
    if let Some(reason) = too_old(&p.devices[0]) {
        return Err(reason);
    }
    let ctx = guarded(|| cudarc::driver::CudaContext::new(0).map(|_| ()).map_err(|e| e.0 as i32))
        .ok_or("creating a CUDA context panicked")?;
    match ctx {
        Ok(()) => p.context_ok = true,
        Err(code) => return Err(format!("creating a CUDA context on device 0 failed (CUresult {code})")),
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn device_info(ordinal: i32) -> Option<CudaDeviceInfo> {
    use cudarc::driver::result::device;
    let dev = device::get(ordinal).ok()?;
    let name = device::get_name(dev).unwrap_or_else(|_| "unknown".into());
    // SAFETY: `dev` was returned by `device::get`.
    let major = unsafe {
        device::get_attribute(dev, dsys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).ok()?
    };
    // SAFETY: as above.
    let minor = unsafe {
        device::get_attribute(dev, dsys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).ok()?
    };
    // SAFETY: as above.
    let total_memory = unsafe { device::total_mem(dev).unwrap_or(0) };
    Some(CudaDeviceInfo { ordinal: ordinal as usize, name, compute_capability: (major, minor), total_memory })
}

#[cfg(feature = "cuda")]
fn probe_nvrtc(p: &mut Probe) {
    // SAFETY: only dlopens the NVRTC library candidates.
    p.nvrtc_loaded = guarded(|| unsafe { nsys::is_culib_present() }).unwrap_or(false);
    if !p.nvrtc_loaded {
        return;
    }
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: both out-pointers are valid, live i32s.
    let r = guarded(|| unsafe { nsys::nvrtcVersion(&mut major, &mut minor) });
    if r == Some(nsys::nvrtcResult::NVRTC_SUCCESS) {
        p.nvrtc_version = Some((major, minor));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_is_cached_and_consistent() {
        let a = probe();
        let b = probe();
        assert!(std::ptr::eq(a, b));
        assert_eq!(a.usable(), a.unusable_reason().is_none());
        if cfg!(not(feature = "cuda")) {
            assert_eq!(a.unusable_reason(), Some(NOT_BUILT));
            assert!(a.devices.is_empty() && !a.driver_loaded);
        } else if !a.driver_loaded {
            assert!(a.devices.is_empty());
            assert!(!a.usable());
            assert!(a.unusable_reason().unwrap().contains("libcuda"));
        }
    }

    #[test]
    fn devices_older_than_sm_80_are_unusable() {
        let d = |cc| CudaDeviceInfo { ordinal: 0, name: "Tesla T4".into(), compute_capability: cc, total_memory: 0 };
        let why = too_old(&d((7, 5))).unwrap();
        assert!(why.contains("7.5") && why.contains("sm_80") && why.contains("Tesla T4"), "{why}");
        assert!([(8, 0), (8, 6), (9, 0), (12, 0)].iter().all(|&cc| too_old(&d(cc)).is_none()));
    }

    #[test]
    fn require_reports_reason_without_cuda() {
        if probe().usable() {
            assert!(require(usize::MAX).is_err());
        } else {
            match require(0) {
                Err(Error::CudaUnavailable { ordinal: 0, reason }) => assert!(!reason.is_empty()),
                other => panic!("expected CudaUnavailable, got {other:?}"),
            }
        }
    }
}
