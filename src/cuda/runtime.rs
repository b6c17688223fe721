//! The runtime core, one per CUDA device: context, streams, device memory, module loading and the
//! generic launch. It knows no kernel family: the families (`crate::cuda::ops`) add their
//! launches as `Runtime` methods in their own files, on top of [`Runtime::function`] and the
//! crate-internal `launch`.
//!
//! A [`Runtime`] is created lazily per device by [`Runtime::get`] and shared by the whole process
//! (it is `Send + Sync`; docs/design.md principle 5). It owns
//!
//! * the cudarc context (the device's primary context) and a default stream (a non-blocking
//!   stream of its own, not the legacy NULL stream);
//! * the loaded CUDA modules and functions of every kernel variant it has launched, compiled by
//!   NVRTC for the device's exact `sm_XY` through the process-wide [`KernelCache`] (memory and
//!   disk; see [`configure_kernel_cache`]).
//!
//! Every launch takes an optional caller stream (`None`: the runtime's default stream). Work is
//! only *enqueued*: uploads, kernels and device-to-device work return without waiting, and only
//! the copies to the host ([`Runtime::dtoh`]) synchronise. cudarc's event tracking orders uses of
//! one buffer across streams, so a buffer written on one stream and read on another is safe.
//!
//! No cudarc safe API is touched before [`crate::cuda::require`] succeeded: on a machine without a
//! driver every entry point returns [`Error::CudaUnavailable`] with the probe's reason. Driver
//! failures are [`Error::Cuda`] with the raw `CUresult` name and code.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys as dsys;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use super::cache::KernelCache;
use super::kernels::{all_variants, ConvAlgo, Int8Algo, KernelKind, KernelSource, KernelVariant};
use super::nvrtc::Arch;
use super::ops::LaunchDims;
use super::CudaDeviceInfo;
use crate::error::{Error, Result};

/// Converts a cudarc driver error into [`Error::Cuda`] without calling the driver (the raw
/// `CUresult` name and code, docs/design.md principle 4).
pub(crate) fn driver_err(call: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    move |e| Error::Cuda { call, message: format!("{:?} (code {})", e.0, e.0 as i32) }
}

/// Where compiled kernels are cached on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskCache {
    /// `$QCONV_KERNEL_CACHE_DIR`, else `$XDG_CACHE_HOME/qconv`, else `~/.cache/qconv`
    /// ([`KernelCache::default_dir`]).
    Default,
    /// This directory.
    Dir(PathBuf),
    /// No disk cache (memory only).
    Off,
}

static KERNEL_CACHE_CONFIG: OnceLock<DiskCache> = OnceLock::new();
static KERNEL_CACHE: OnceLock<KernelCache> = OnceLock::new();

/// Chooses the disk location of the process-wide kernel cache. Call it before the first CUDA
/// computation (or [`kernel_cache`]); afterwards it fails with [`Error::Unsupported`] unless the
/// same choice was already made. Without a call, [`DiskCache::Default`] is used.
pub fn configure_kernel_cache(disk: DiskCache) -> Result<()> {
    let chosen = KERNEL_CACHE_CONFIG.get_or_init(|| disk.clone());
    if *chosen != disk {
        return Err(Error::Unsupported {
            op: format!("configuring the kernel cache as {disk:?}"),
            device: "CUDA".into(),
            reason: format!("the kernel cache was already configured as {chosen:?}"),
        });
    }
    Ok(())
}

/// The process-wide compiled-kernel cache shared by every [`Runtime`] (devices of the same
/// architecture share entries).
pub fn kernel_cache() -> &'static KernelCache {
    KERNEL_CACHE.get_or_init(|| match KERNEL_CACHE_CONFIG.get_or_init(|| DiskCache::Default) {
        DiskCache::Default => KernelCache::new(KernelCache::default_dir()),
        DiskCache::Dir(d) => KernelCache::new(Some(d.clone())),
        DiskCache::Off => KernelCache::memory_only(),
    })
}

/// One CUDA device's runtime. Obtain it with [`Runtime::get`].
pub struct Runtime {
    ordinal: usize,
    info: &'static CudaDeviceInfo,
    arch: Arch,
    sm_count: u32,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<KernelSource, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("ordinal", &self.ordinal).field("device", &self.info.name).finish()
    }
}

impl Runtime {
    /// The runtime of device `ordinal`, created on first use and shared afterwards.
    ///
    /// Fails with [`Error::CudaUnavailable`] (and the probe's reason) when CUDA is not usable
    /// here or the ordinal does not exist, and with [`Error::Cuda`] when creating the context
    /// fails.
    pub fn get(ordinal: usize) -> Result<Arc<Runtime>> {
        static RUNTIMES: OnceLock<Mutex<HashMap<usize, Arc<Runtime>>>> = OnceLock::new();
        let info = super::require(ordinal)?;
        let mut map = RUNTIMES.get_or_init(|| Mutex::new(HashMap::new())).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rt) = map.get(&ordinal) {
            return Ok(Arc::clone(rt));
        }
        let rt = Arc::new(Runtime::create(ordinal, info)?);
        map.insert(ordinal, Arc::clone(&rt));
        Ok(rt)
    }

    fn create(ordinal: usize, info: &'static CudaDeviceInfo) -> Result<Runtime> {
        let arch = Arch::from_compute_capability(info.compute_capability)?;
        let ctx = CudaContext::new(ordinal).map_err(driver_err("cuDevicePrimaryCtxRetain"))?;
        let sm_count = ctx
            .attribute(dsys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver_err("cuDeviceGetAttribute"))?;
        // A non-blocking stream of our own rather than the legacy NULL stream: it does not
        // serialise with callers' streams, and creating it switches cudarc to multi-stream mode,
        // in which every buffer records read/write events that order its uses across streams.
        let stream = ctx.new_stream().map_err(driver_err("cuStreamCreate"))?;
        Ok(Runtime {
            ordinal,
            info,
            arch,
            sm_count: sm_count.max(1) as u32,
            ctx,
            stream,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        })
    }

    /// Device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// What the probe found about this device.
    pub fn info(&self) -> &'static CudaDeviceInfo {
        self.info
    }

    /// The architecture kernels are compiled for (the device's exact `sm_XY`).
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Number of multiprocessors (used to choose tile sizes).
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }

    /// The cudarc context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The runtime's default stream (a non-blocking stream it owns), used when a call is given
    /// no stream.
    pub fn default_stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// A new stream on this device (for callers that run work concurrently).
    pub fn new_stream(&self) -> Result<Arc<CudaStream>> {
        self.ctx.new_stream().map_err(driver_err("cuStreamCreate"))
    }

    pub(crate) fn pick<'a>(&'a self, stream: Option<&'a Arc<CudaStream>>) -> Result<&'a Arc<CudaStream>> {
        let s = stream.unwrap_or(&self.stream);
        if s.context().ordinal() != self.ordinal {
            return Err(Error::Unsupported {
                op: "a launch on a stream of another device".into(),
                device: format!("cuda:{}", self.ordinal),
                reason: format!("the stream belongs to cuda:{}", s.context().ordinal()),
            });
        }
        Ok(s)
    }

    /// Copies `data` to a new device buffer; enqueued on `stream` (default stream if `None`),
    /// does not wait for the copy to finish (cudarc keeps the ordering for later users). CUDA has
    /// no zero-size allocations: an empty `data` gives a one-element (uninitialised) buffer.
    pub fn htod<T: DeviceRepr>(&self, data: &[T], stream: Option<&Arc<CudaStream>>) -> Result<CudaSlice<T>> {
        let s = self.pick(stream)?;
        self.ctx.bind_to_thread().map_err(driver_err("cuCtxSetCurrent"))?;
        // SAFETY: the buffer is fully overwritten by the copy enqueued right after, on the same
        // stream, before anything else can read it (except the placeholder element of an empty
        // upload, which nothing reads: callers track the logical length).
        let mut dst = unsafe { s.alloc::<T>(data.len().max(1)) }.map_err(driver_err("cuMemAlloc"))?;
        if !data.is_empty() {
            s.memcpy_htod(data, &mut dst).map_err(driver_err("cuMemcpyHtoDAsync"))?;
        }
        Ok(dst)
    }

    /// A zero-filled device buffer of `len` elements (at least one: CUDA has no zero-size
    /// allocations), enqueued on `stream`.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<CudaSlice<T>> {
        let s = self.pick(stream)?;
        self.ctx.bind_to_thread().map_err(driver_err("cuCtxSetCurrent"))?;
        s.alloc_zeros::<T>(len.max(1)).map_err(driver_err("cuMemAlloc"))
    }

    /// An uninitialised device buffer of `len` elements (at least one), enqueued on `stream`: for
    /// outputs a kernel overwrites entirely.
    pub fn alloc_uninit<T: DeviceRepr>(&self, len: usize, stream: Option<&Arc<CudaStream>>) -> Result<CudaSlice<T>> {
        let s = self.pick(stream)?;
        self.ctx.bind_to_thread().map_err(driver_err("cuCtxSetCurrent"))?;
        // SAFETY: callers only hand the buffer to kernels that write every element before
        // anything reads it (conv / transpose outputs), or treat it as scratch.
        unsafe { s.alloc::<T>(len.max(1)) }.map_err(driver_err("cuMemAlloc"))
    }

    /// Copies a device buffer to the host. Waits for all work on `stream` (and, through cudarc's
    /// events, for pending writes of `src` on other streams): this is the synchronising call.
    pub fn dtoh<T: DeviceRepr + Default + Clone>(
        &self,
        src: &CudaSlice<T>,
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<Vec<T>> {
        let s = self.pick(stream)?;
        self.ctx.bind_to_thread().map_err(driver_err("cuCtxSetCurrent"))?;
        let mut out = vec![T::default(); src.len()];
        if !out.is_empty() {
            s.memcpy_dtoh(src, &mut out).map_err(driver_err("cuMemcpyDtoHAsync"))?;
        }
        s.synchronize().map_err(driver_err("cuStreamSynchronize"))?;
        Ok(out)
    }

    /// The loaded function of `variant`: compiled (or taken from the kernel cache) and loaded on
    /// first use, then kept.
    pub fn function(&self, variant: &'static KernelVariant) -> Result<CudaFunction> {
        if let Some(f) = self.functions.lock().unwrap_or_else(|e| e.into_inner()).get(variant.name) {
            return Ok(f.clone());
        }
        let module = self.module(variant.source)?;
        let f = module.load_function(variant.name).map_err(driver_err("cuModuleGetFunction"))?;
        if matches!(variant.kind, KernelKind::Conv(ConvAlgo::TensorCore(_)) | KernelKind::Int8Conv(Int8Algo::Imma(_))) {
            // Prefer the largest shared-memory carveout: these kernels use 32-48 KiB per block and
            // are register-capped for 2-4 blocks per multiprocessor (a hint; the driver may ignore
            // it, which costs speed, not correctness).
            f.set_attribute(dsys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 100)
                .map_err(driver_err("cuFuncSetAttribute"))?;
        }
        if let KernelKind::Conv(ConvAlgo::Wgmma(bn)) = variant.kind {
            // The Hopper tiles' pipeline lives in dynamic shared memory beyond the 48 KiB that
            // needs no opt-in (ops::conv_wg::wg_smem_bytes, checked there against the device).
            let bytes = i32::try_from(super::ops::conv_wg::wg_smem_bytes(bn)).unwrap_or(i32::MAX);
            f.set_attribute(dsys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes)
                .map_err(driver_err("cuFuncSetAttribute"))?;
        }
        self.functions.lock().unwrap_or_else(|e| e.into_inner()).insert(variant.name, f.clone());
        Ok(f)
    }

    fn module(&self, source: KernelSource) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = modules.get(&source) {
            return Ok(Arc::clone(m));
        }
        // The program's target on this device: its own sm_XY, or sm_90a for the Hopper program.
        let target = source.target_on(self.arch).ok_or_else(|| Error::Unsupported {
            op: format!("the kernels of {}", source.file_name()),
            device: format!("cuda:{} ({})", self.ordinal, self.arch),
            reason: "they are compiled for sm_90a and run on compute capability 9.0 only".into(),
        })?;
        let compiled = kernel_cache().get(source, target, &[])?;
        let module =
            self.ctx.load_module(Ptx::from_binary(compiled.cubin.clone())).map_err(driver_err("cuModuleLoadData"))?;
        modules.insert(source, Arc::clone(&module));
        Ok(module)
    }

    /// Compiles (or loads from the cache) and loads every kernel variant for this device, so the
    /// first forward call does not pay for NVRTC: every program for the device's `sm_XY`, and on
    /// compute capability 9.0 also the opt-in Hopper program for `sm_90a`.
    pub fn load_all(&self) -> Result<()> {
        // Compile (or read from the disk cache) every program in parallel first; loading is then
        // quick.
        let mut targets = vec![self.arch];
        targets.extend(KernelSource::ALL.iter().filter_map(|s| s.target_on(self.arch)).filter(|&a| a != self.arch));
        targets.dedup();
        for (_, _, r) in kernel_cache().warm_all(&targets) {
            r?;
        }
        for v in all_variants().filter(|v| v.source.target_on(self.arch).is_some()) {
            self.function(v)?;
        }
        Ok(())
    }

    pub(crate) fn launch<P: DeviceRepr>(
        &self,
        f: &CudaFunction,
        dims: LaunchDims,
        params: &P,
        s: &CudaStream,
    ) -> Result<()> {
        let cfg =
            LaunchConfig { grid_dim: dims.grid, block_dim: dims.block, shared_mem_bytes: dims.dynamic_shared_bytes };
        let mut b = s.launch_builder(f);
        b.arg(params);
        // SAFETY: every kernel of cuda/*.cu takes exactly one argument, its params struct, by value
        // (`P` is that struct, `#[repr(C)]` from params.h); the callers have checked the struct
        // (check_conv_params / fakequant_launch) and that every pointer in it refers to a live
        // device buffer at least as large as the kernel indexes, and they hold the buffers'
        // cudarc read/write guards until after this call.
        unsafe { b.launch(cfg) }.map_err(driver_err("cuLaunchKernel"))?;
        Ok(())
    }
}

// Former paths of items that moved to their kernel family or to the host packings (hidden).
#[doc(hidden)]
pub use super::ops::conv_tc::{DeviceCodes, TcWeight};
#[doc(hidden)]
pub use super::ops::fakequant::FakeQuantJob;
#[doc(hidden)]
pub use super::pack::tf32_round;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_without_cuda_is_a_typed_error() {
        match (super::super::probe().unusable_reason(), Runtime::get(0)) {
            (Some(reason), Err(Error::CudaUnavailable { ordinal: 0, reason: r })) => assert_eq!(r, reason),
            (Some(_), other) => panic!("expected CudaUnavailable, got {other:?}"),
            (None, r) => {
                let rt = r.unwrap();
                assert!(Arc::ptr_eq(&rt, &Runtime::get(0).unwrap()), "one runtime per device");
                assert!(matches!(Runtime::get(usize::MAX), Err(Error::CudaUnavailable { .. })));
            }
        }
    }

    #[test]
    fn kernel_cache_configuration_is_fixed_once_chosen() {
        // Whatever this process chose first (or the default) stays; a different choice is refused.
        let cache = kernel_cache();
        let current = KERNEL_CACHE_CONFIG.get().cloned().unwrap();
        assert!(configure_kernel_cache(current.clone()).is_ok());
        let other = if current == DiskCache::Off { DiskCache::Default } else { DiskCache::Off };
        assert!(matches!(configure_kernel_cache(other), Err(Error::Unsupported { .. })));
        match current {
            DiskCache::Off => assert!(cache.dir().is_none()),
            DiskCache::Dir(d) => assert_eq!(cache.dir(), Some(d.as_path())),
            DiskCache::Default => assert_eq!(cache.dir().map(|p| p.to_path_buf()), KernelCache::default_dir()),
        }
    }
}
