//! Weight fake-quantization on the device (`cuda/fakequant.cu`), bit-identical to the CPU path,
//! and the expansion of 8-bit weight codes into a float32 weight. [`fakequant_args`] resolves
//! qparams into kernel arguments (the CPU path's plan, so both devices accept the same),
//! [`fakequant_fast_ok`] is the rule of the fast entry; [`Runtime::fake_quant_job`] /
//! [`FakeQuantJob`] launch it, [`Runtime::dequant_codes_device`] expands codes. CPU transcription:
//! `src/cuda/emulate/fakequant.rs`.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::conv_tc::DeviceCodes;
use super::params::{
    QcDequantLayout, QcDequantParams, QcFakeQuantParams, QC_DQ_DEPTHWISE, QC_FQ_DECOMPOSED_F32, QC_FQ_DECOMPOSED_F64,
    QC_FQ_FLOAT_ZP, QC_FQ_HALF, QC_FQ_IDENTITY, QC_FQ_INT_PER_CHANNEL, QC_FQ_INT_PER_TENSOR,
};
use super::{ceil_div, check_len, mul, same_device, to_i32, LaunchDims, MAX_GRID_STRIDE_BLOCKS};
use crate::cuda::kernels::{dequant_codes_variant, KernelKind, VARIANTS};
use crate::cuda::pack::WeightGeometry;
use crate::cuda::runtime::{driver_err, Runtime};
use crate::error::{Error, Result};
use crate::quant::{Plan, QParamData, WeightQParams};

/// Threads per block of the fake-quant kernels (`QC_FQ_THREADS`).
pub const FAKEQUANT_THREADS: u32 = 256;

/// Items per thread in one block chunk of the fake-quant kernels (`QC_FQ_CHUNK`).
pub const FAKEQUANT_CHUNK: u64 = 16;

/// Everything the fake-quant kernels need besides device pointers.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeQuantArgs {
    /// The kernel arguments; the runtime sets `src`, `dst`, `codes`, `scales`,
    /// `zero_points_i64`, `zero_points_f32` and `first_nonfinite` (0 where unused).
    pub params: QcFakeQuantParams,
    /// Upload to `params.scales` (f64; empty for the identity and float16 modes).
    pub scales: Vec<f64>,
    /// Upload to `params.zero_points_i64` (empty when the mode reads float zero points).
    pub zero_points_i64: Vec<i64>,
    /// Upload to `params.zero_points_f32` (empty when the mode reads integer zero points).
    pub zero_points_f32: Vec<f32>,
}

/// Resolves `qparams` for a float32 weight of shape `shape` into fake-quant kernel arguments.
///
/// Validation is [`WeightQParams::validate`]'s (the CPU path's plan), so both devices accept and
/// reject the same parameters; the arrays hold exactly the values the CPU formulas use
/// (docs/numerics.md §4 and `src/quant/fakequant.rs`).
pub fn fakequant_args(qparams: &WeightQParams, shape: &[usize]) -> Result<FakeQuantArgs> {
    let plan = qparams.plan(shape)?;
    let numel = mul("weight elements", &shape.iter().map(|&v| v as u64).collect::<Vec<_>>())? as u64;
    let axis_dims = |axis: Option<usize>| -> (u64, u64) {
        match axis {
            Some(a) => (shape[a] as u64, shape[a + 1..].iter().map(|&v| v as u64).product()),
            None => (1, numel),
        }
    };
    let mut params = QcFakeQuantParams { numel, channels: 1, inner: numel, ..Default::default() };
    let mut args = FakeQuantArgs { params, scales: vec![], zero_points_i64: vec![], zero_points_f32: vec![] };
    let mode = match &plan {
        Plan::Identity => QC_FQ_IDENTITY,
        Plan::Half => QC_FQ_HALF,
        Plan::Int { axis, scales, zero_points, qmin, qmax } => {
            (params.channels, params.inner) = axis_dims(*axis);
            (params.qmin, params.qmax) = (*qmin, *qmax);
            args.scales = scales.clone();
            args.zero_points_i64 = zero_points.clone();
            if axis.is_some() {
                QC_FQ_INT_PER_CHANNEL
            } else {
                // The per-tensor formula reads only element 0.
                args.scales.truncate(1);
                args.zero_points_i64.truncate(1);
                QC_FQ_INT_PER_TENSOR
            }
        }
        Plan::FloatZp { axis, scales, zero_points, qmin, qmax } => {
            (params.channels, params.inner) = axis_dims(Some(*axis));
            (params.qmin, params.qmax) = (*qmin, *qmax);
            args.scales = scales.iter().map(|&s| s as f64).collect(); // exact widening
            args.zero_points_f32 = zero_points.clone();
            QC_FQ_FLOAT_ZP
        }
        Plan::Decomposed { axis, qmin, qmax, .. } => {
            // Same resolution as WeightQParams::plan: float64 arithmetic only for float64
            // per-channel scales; float zero points when the zero-point tensor is floating.
            (params.channels, params.inner) = axis_dims(*axis);
            (params.qmin, params.qmax) = (*qmin, *qmax);
            params.per_channel = axis.is_some() as i32;
            let channels = params.channels as usize;
            args.scales = qparams.scale.to_f64();
            args.scales.truncate(channels);
            if qparams.zero_point.is_float() {
                params.zp_is_float = 1;
                args.zero_points_f32 = qparams.zero_point.to_f32();
                args.zero_points_f32.truncate(channels);
            } else {
                args.zero_points_i64 = qparams.zero_point.to_i64_trunc();
                args.zero_points_i64.truncate(channels);
            }
            if axis.is_some() && matches!(qparams.scale.data, QParamData::F64(_)) {
                QC_FQ_DECOMPOSED_F64
            } else {
                QC_FQ_DECOMPOSED_F32
            }
        }
    };
    params.mode = mode as i32;
    args.params = params;
    Ok(args)
}

/// Whether `qc_fakequant_fast` computes `args` (the runtime also needs 16-byte aligned buffers):
/// an integer mode (per tensor or per channel) where every channel takes the f32 fast path — codes
/// and zero points within ±2²³ and every scale exactly a float32, the conditions `qc_channel` of
/// `cuda/fakequant.cu` checks per channel — with `numel` and `inner` multiples of 4 and `numel`
/// below 2³² (32-bit indices).
pub fn fakequant_fast_ok(args: &FakeQuantArgs) -> bool {
    let p = &args.params;
    let mode_ok = p.mode == QC_FQ_INT_PER_TENSOR as i32 || p.mode == QC_FQ_INT_PER_CHANNEL as i32;
    let lim = 1i64 << 23;
    mode_ok
        && p.numel > 0
        && p.numel.is_multiple_of(4)
        && p.inner.is_multiple_of(4)
        && p.numel < 1u64 << 32
        && p.channels >= 1
        && p.qmin >= -lim
        && p.qmax <= lim
        && args.scales.len() as u64 >= p.channels
        && args.zero_points_i64.len() as u64 >= p.channels
        && args.scales.iter().take(p.channels as usize).all(|&s| (s as f32) as f64 == s)
        && args.zero_points_i64.iter().take(p.channels as usize).all(|&z| (-lim..=lim).contains(&z))
}

/// Grid and block of `qc_fakequant` / `qc_quantize`, or `None` for an empty weight. Errors when
/// the struct is inconsistent (unknown mode, channels/inner not dividing numel, an empty range,
/// codes outside int32).
pub fn fakequant_launch(p: &QcFakeQuantParams) -> Result<Option<LaunchDims>> {
    let bad = |rule: String| Err(Error::config("QcFakeQuantParams", "(kernel arguments)", rule));
    if !(QC_FQ_IDENTITY as i32..=QC_FQ_DECOMPOSED_F64 as i32).contains(&p.mode) {
        return bad(format!("unknown mode {}", p.mode));
    }
    if p.numel == 0 {
        return Ok(None);
    }
    let float_mode = p.mode == QC_FQ_IDENTITY as i32 || p.mode == QC_FQ_HALF as i32;
    if !float_mode {
        let run = p.channels.checked_mul(p.inner);
        if p.channels == 0 || p.inner == 0 || run.is_none_or(|r| !p.numel.is_multiple_of(r)) {
            return bad(format!("channels ({}) * inner ({}) must divide numel ({})", p.channels, p.inner, p.numel));
        }
        if p.qmin > p.qmax || p.qmin < i32::MIN as i64 || p.qmax > i32::MAX as i64 {
            return bad(format!("[{}, {}] is not a valid int32 code range", p.qmin, p.qmax));
        }
    }
    // The integer modes handle 4 elements per item where they can (16-byte accesses), and each
    // block takes chunks of FAKEQUANT_CHUNK items per thread; the grid-stride loop covers the rest.
    let blocks = ceil_div(ceil_div(p.numel, 4), FAKEQUANT_THREADS as u64 * FAKEQUANT_CHUNK).min(MAX_GRID_STRIDE_BLOCKS);
    Ok(Some(LaunchDims { grid: (blocks as u32, 1, 1), block: (FAKEQUANT_THREADS, 1, 1), dynamic_shared_bytes: 0 }))
}

/// Arguments of `qc_dequant_codes` for codes packed as `g` says: the float32 weight is written in
/// `layout` (the module's own layout for `QC_DQ_FORWARD` / `QC_DQ_TRANSPOSED`, `[taps][K]` for
/// `QC_DQ_DEPTHWISE`). The runtime sets the pointers.
pub fn dequant_params(g: WeightGeometry, layout: QcDequantLayout, signed: bool) -> Result<QcDequantParams> {
    let WeightGeometry { out_channels, cg, cg_pad, taps, groups } = g;
    if cg_pad < cg {
        return Err(Error::config("cg_pad", cg_pad, format!("must be at least C/groups ({cg})")));
    }
    if groups == 0 || !out_channels.is_multiple_of(groups) {
        return Err(Error::config(
            "groups",
            groups,
            format!("must be positive and divide out_channels ({out_channels})"),
        ));
    }
    if layout == QC_DQ_DEPTHWISE && (cg != 1 || groups != out_channels) {
        return Err(Error::config(
            "QcDequantParams",
            "(kernel arguments)",
            format!("the depthwise layout needs one channel per group (cg {cg}, groups {groups}, K {out_channels})"),
        ));
    }
    if layout > QC_DQ_DEPTHWISE {
        return Err(Error::config("QcDequantParams", "(kernel arguments)", format!("unknown layout {layout}")));
    }
    let numel = mul("weight elements", &[out_channels as u64, cg as u64, taps as u64])?;
    let row =
        cg_pad.checked_mul(taps).map(|n| n.div_ceil(8) * 8).ok_or_else(|| Error::Overflow("weight row".into()))?;
    Ok(QcDequantParams {
        codes: 0,
        scale: 0,
        zero: 0,
        dst: 0,
        numel,
        row: i64::try_from(row).map_err(|_| Error::Overflow("weight row".into()))?,
        out_channels: to_i32("out_channels", out_channels)?,
        cg: to_i32("in_channels / groups", cg)?,
        kg: to_i32("out_channels / groups", out_channels / groups)?,
        taps: to_i32("kernel taps", taps)?,
        layout: layout as i32,
        codes_signed: signed as i32,
        cg_pad: to_i32("padded C/groups", cg_pad)?,
        reserved: 0,
    })
}

/// Grid and block of `qc_dequant_codes` (grid-stride, 256 threads), or `None` for an empty
/// weight.
pub fn dequant_launch(p: &QcDequantParams) -> Result<Option<LaunchDims>> {
    if p.numel < 0 {
        return Err(Error::config("QcDequantParams", "(kernel arguments)", format!("numel {} < 0", p.numel)));
    }
    if p.numel == 0 {
        return Ok(None);
    }
    let blocks = ceil_div(p.numel as u64, 256).min(MAX_GRID_STRIDE_BLOCKS);
    Ok(Some(LaunchDims { grid: (blocks as u32, 1, 1), block: (256, 1, 1), dynamic_shared_bytes: 0 }))
}

/// The kernels never read an array the mode does not use, but a zero-length allocation has no
/// address; upload one dummy element instead.
fn pad_nonempty<T: Copy + Default>(v: &[T]) -> Vec<T> {
    if v.is_empty() {
        vec![T::default()]
    } else {
        v.to_vec()
    }
}

impl Runtime {
    /// Fake-quantizes a float32 weight of `shape` on the device with the kernels of
    /// `cuda/fakequant.cu`: `dst` receives the fake-quantized weight (`get_weight()`,
    /// bit-identical to the CPU path), `codes` the integer codes (`get_quantized_weight()`; for
    /// the float16 dtype the kernel writes `numel` binary16 bit patterns (`u16`) into the first
    /// `2 * numel` bytes instead, see `cuda/params.h`). Either output may be `None`; with only
    /// `codes`, the quantize-only kernel runs.
    ///
    /// Synchronises `stream` at the end to read the kernel's non-finite flag: a NaN or infinite
    /// weight element is an [`Error::NonFiniteWeight`], as on the CPU. [`Runtime::fake_quant_job`]
    /// splits this into an asynchronous launch and a separate check.
    pub fn fake_quantize_device(
        self: &Arc<Self>,
        qparams: &WeightQParams,
        shape: &[usize],
        src: &CudaSlice<f32>,
        dst: Option<&mut CudaSlice<f32>>,
        codes: Option<&mut CudaSlice<i32>>,
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<()> {
        let mut job = self.fake_quant_job(qparams, shape, stream)?;
        job.enqueue(src, dst, codes, stream)?;
        job.check(src, stream)
    }

    /// Prepares repeated fake-quantization of weights of `shape` under `qparams`: validates the
    /// arguments, uploads the per-channel scales and zero points once (on `stream`) and owns the
    /// kernel's non-finite flag. [`FakeQuantJob::enqueue`] then only launches (no
    /// synchronisation); [`FakeQuantJob::check`] reads the flag.
    pub fn fake_quant_job(
        self: &Arc<Self>,
        qparams: &WeightQParams,
        shape: &[usize],
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<FakeQuantJob> {
        let s = self.pick(stream)?;
        let args = fakequant_args(qparams, shape)?;
        let p = args.params;
        let numel = usize::try_from(p.numel).map_err(|_| Error::Overflow("weight elements".into()))?;
        let dims = fakequant_launch(&p)?;
        // The small per-channel arrays must cover every channel the mode reads.
        let channels = usize::try_from(p.channels).map_err(|_| Error::Overflow("channels".into()))?;
        let float_mode = p.mode == QC_FQ_IDENTITY as i32 || p.mode == QC_FQ_HALF as i32;
        let zp_float = p.mode == QC_FQ_FLOAT_ZP as i32 || (p.zp_is_float == 1 && p.mode >= QC_FQ_DECOMPOSED_F32 as i32);
        if !float_mode && dims.is_some() {
            let short = |what: &'static str, len: usize| -> Result<()> {
                if len < channels {
                    return Err(Error::shape(what, &[len], format!("the kernel reads {channels} entries")));
                }
                Ok(())
            };
            short("weight_scale", args.scales.len())?;
            if zp_float {
                short("weight_zero_point", args.zero_points_f32.len())?;
            } else {
                short("weight_zero_point", args.zero_points_i64.len())?;
            }
        }
        let fast = fakequant_fast_ok(&args);
        Ok(FakeQuantJob {
            rt: Arc::clone(self),
            fast,
            params: p,
            numel,
            dims,
            has_scales: !args.scales.is_empty(),
            has_zp_i64: !args.zero_points_i64.is_empty(),
            has_zp_f32: !args.zero_points_f32.is_empty(),
            scales: self.htod(&pad_nonempty(&args.scales), Some(s))?,
            zp_i64: self.htod(&pad_nonempty(&args.zero_points_i64), Some(s))?,
            zp_f32: self.htod(&pad_nonempty(&args.zero_points_f32), Some(s))?,
            flag: self.htod(&[u64::MAX], Some(s))?,
        })
    }

    /// Enqueues `qc_dequant_codes`: the float32 weight of a module stored as [`DeviceCodes`]
    /// (packed as `geometry` says) into `dst`, in `layout`
    /// (`QC_DQ_FORWARD` / `QC_DQ_TRANSPOSED`: the module's weight layout; `QC_DQ_DEPTHWISE`:
    /// `[taps][K]`). Bit-identical to `get_weight()` (the host checked the codes when it built
    /// them). Errors before the launch when a buffer is too short. Returns without waiting.
    pub fn dequant_codes_device(
        &self,
        codes: &DeviceCodes,
        geometry: WeightGeometry,
        layout: QcDequantLayout,
        dst: &mut CudaSlice<f32>,
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<()> {
        let s = self.pick(stream)?;
        let out_channels = geometry.out_channels;
        let mut p = dequant_params(geometry, layout, codes.signed)?;
        check_len("weight codes", codes.codes.len(), &[out_channels as u64, p.row as u64])?;
        check_len("weight scales", codes.scale.len(), &[out_channels as u64])?;
        check_len("weight zero points", codes.zero.len(), &[out_channels as u64])?;
        check_len("dequantized weight", dst.len(), &[p.numel as u64])?;
        for (what, ctx) in [
            ("weight codes", codes.codes.context()),
            ("weight scales", codes.scale.context()),
            ("weight zero points", codes.zero.context()),
            ("dequantized weight", dst.context()),
        ] {
            same_device(self.ordinal(), what, ctx)?;
        }
        let Some(dims) = dequant_launch(&p)? else { return Ok(()) };
        let variant = dequant_codes_variant().ok_or_else(|| Error::Unsupported {
            op: "dequantizing weight codes".into(),
            device: "CUDA".into(),
            reason: "qc_dequant_codes is not in the kernel list (internal error)".into(),
        })?;
        let f = self.function(variant)?;
        let (cp, _gc) = codes.codes.device_ptr(s);
        let (sp, _gs) = codes.scale.device_ptr(s);
        let (zp, _gz) = codes.zero.device_ptr(s);
        let (dp, _gd) = dst.device_ptr_mut(s);
        (p.codes, p.scale, p.zero, p.dst) = (cp, sp, zp, dp);
        self.launch(&f, dims, &p, s)
    }
}

/// A prepared weight fake-quantization (see [`Runtime::fake_quant_job`]): validated kernel
/// arguments, the per-channel scales and zero points resident on the device, and the kernel's
/// non-finite flag. Inference servers that re-quantize weights use it to keep the launch
/// asynchronous and check once.
pub struct FakeQuantJob {
    rt: Arc<Runtime>,
    params: QcFakeQuantParams,
    numel: usize,
    dims: Option<LaunchDims>,
    has_scales: bool,
    has_zp_i64: bool,
    has_zp_f32: bool,
    scales: CudaSlice<f64>,
    zp_i64: CudaSlice<i64>,
    zp_f32: CudaSlice<f32>,
    flag: CudaSlice<u64>,
    /// `qc_fakequant_fast` computes these qparams (`fakequant_fast_ok`); used when the buffers
    /// are 16-byte aligned.
    fast: bool,
}

impl FakeQuantJob {
    /// Number of weight elements each call reads and writes.
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Enqueues the kernel on `stream` (the runtime's default stream if `None`): `src` (float32,
    /// `numel` elements) into `dst` (the fake-quantized weight) and/or `codes` (see
    /// [`Runtime::fake_quantize_device`]). Resets the non-finite flag first; does not wait.
    /// Errors: a buffer shorter than `numel`, a launch failure.
    pub fn enqueue(
        &mut self,
        src: &CudaSlice<f32>,
        dst: Option<&mut CudaSlice<f32>>,
        codes: Option<&mut CudaSlice<i32>>,
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<()> {
        let rt = Arc::clone(&self.rt);
        let s = rt.pick(stream)?;
        let numel = self.numel;
        let need = |what: &'static str, len: usize| -> Result<()> {
            if len < numel {
                return Err(Error::shape(what, &[len], format!("the device buffer must hold {numel} elements")));
            }
            Ok(())
        };
        need("fake-quant source", src.len())?;
        if let Some(d) = &dst {
            need("fake-quant destination", d.len())?;
        }
        if let Some(c) = &codes {
            need("quantized codes", c.len())?;
        }
        let Some(dims) = self.dims else { return Ok(()) };
        if dst.is_none() && codes.is_none() {
            return Ok(());
        }
        rt.context().bind_to_thread().map_err(driver_err("cuCtxSetCurrent"))?;
        s.memcpy_htod(&[u64::MAX], &mut self.flag).map_err(driver_err("cuMemcpyHtoDAsync"))?;
        let mut p = self.params;
        let (src_ptr, _g1) = src.device_ptr(s);
        let (sc_ptr, _g2) = self.scales.device_ptr(s);
        let (zi_ptr, _g3) = self.zp_i64.device_ptr(s);
        let (zf_ptr, _g4) = self.zp_f32.device_ptr(s);
        let (flag_ptr, _g5) = self.flag.device_ptr_mut(s);
        let (dst_ptr, _g6) = match dst {
            Some(d) => {
                let (ptr, g) = d.device_ptr_mut(s);
                (ptr, Some(g))
            }
            None => (0, None),
        };
        let (codes_ptr, _g7) = match codes {
            Some(c) => {
                let (ptr, g) = c.device_ptr_mut(s);
                (ptr, Some(g))
            }
            None => (0, None),
        };
        p.src = src_ptr;
        p.dst = dst_ptr;
        p.codes = codes_ptr;
        p.scales = if self.has_scales { sc_ptr } else { 0 };
        p.zero_points_i64 = if self.has_zp_i64 { zi_ptr } else { 0 };
        p.zero_points_f32 = if self.has_zp_f32 { zf_ptr } else { 0 };
        p.first_nonfinite = flag_ptr;
        // The fast entry reads and writes 16-byte vectors: every buffer must be aligned (whole
        // allocations are; a view into one may not be).
        let aligned = [p.src, p.dst, p.codes].iter().all(|&a| a % 16 == 0);
        let kind = match (p.dst != 0, self.fast && aligned) {
            (true, true) => KernelKind::FakeQuantFast,
            (true, false) => KernelKind::FakeQuant,
            (false, _) => KernelKind::Quantize,
        };
        let variant = VARIANTS.iter().find(|v| v.kind == kind).ok_or_else(|| Error::Unsupported {
            op: "fake-quant".into(),
            device: "CUDA".into(),
            reason: "no kernel variant".into(),
        })?;
        let f = rt.function(variant)?;
        rt.launch(&f, dims, &p, s)
    }

    /// Waits for `stream` and reads the non-finite flag of the last [`FakeQuantJob::enqueue`]:
    /// a NaN or infinite element of `src` is an [`Error::NonFiniteWeight`] naming the first one.
    pub fn check(&mut self, src: &CudaSlice<f32>, stream: Option<&Arc<CudaStream>>) -> Result<()> {
        let first = self.rt.dtoh(&self.flag, stream)?;
        if let Some(&i) = first.first().filter(|&&i| i != u64::MAX) {
            let value = self.rt.dtoh(src, stream)?.get(i as usize).copied().unwrap_or(f32::NAN);
            return Err(Error::NonFiniteWeight { index: i as usize, value });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::ops::params::{QC_DQ_FORWARD, QC_DQ_TRANSPOSED};
    use crate::quant::{QScheme, QuantDType};

    #[test]
    fn fakequant_args_layout_and_launch() {
        let qp = WeightQParams::per_channel(vec![0.1, 0.2, 0.3], vec![0, 1, 2], 1, QuantDType::QInt8);
        let a = fakequant_args(&qp, &[2, 3, 4, 5]).unwrap();
        assert_eq!((a.params.numel, a.params.channels, a.params.inner), (120, 3, 20));
        assert_eq!(a.params.mode, QC_FQ_INT_PER_CHANNEL as i32);
        assert_eq!((a.params.qmin, a.params.qmax), (-128, 127));
        assert_eq!(a.zero_points_i64, [0, 1, 2]);
        assert!(a.zero_points_f32.is_empty());
        let l = fakequant_launch(&a.params).unwrap().unwrap();
        assert_eq!(l.grid, (1, 1, 1));
        assert_eq!(l.block, (256, 1, 1));
        let mut big = a.params;
        big.numel = 3 * 20 * (1 << 30);
        assert_eq!(fakequant_launch(&big).unwrap().unwrap().grid.0 as u64, MAX_GRID_STRIDE_BLOCKS);
        let mut broken = a.params;
        broken.inner = 7;
        assert!(fakequant_launch(&broken).is_err());
        broken = a.params;
        broken.mode = 99;
        assert!(fakequant_launch(&broken).is_err());
        broken = a.params;
        broken.numel = 0;
        assert_eq!(fakequant_launch(&broken).unwrap(), None);
        // Validation is the CPU path's.
        let bad = WeightQParams::per_channel(vec![0.1, 0.2], vec![0, 1], 1, QuantDType::QInt8);
        assert!(matches!(fakequant_args(&bad, &[2, 3]), Err(Error::ChannelMismatch { .. })));
        let mut none = WeightQParams::none();
        none.qscheme = QScheme::None;
        assert_eq!(fakequant_args(&none, &[3]).unwrap().params.mode, QC_FQ_IDENTITY as i32);
    }

    fn geo(out_channels: usize, cg: usize, cg_pad: usize, groups: usize, taps: usize) -> WeightGeometry {
        WeightGeometry { out_channels, cg, cg_pad, taps, groups }
    }

    #[test]
    fn dequant_params_fields_launch_and_errors() {
        let p = dequant_params(geo(12, 3, 3, 2, 9), QC_DQ_TRANSPOSED, true).unwrap();
        assert_eq!((p.numel, p.row, p.out_channels, p.cg, p.kg, p.taps), (12 * 27, 32, 12, 3, 6, 9));
        assert_eq!((p.layout, p.codes_signed, p.codes, p.dst), (QC_DQ_TRANSPOSED as i32, 1, 0, 0));
        let d = dequant_launch(&p).unwrap().unwrap();
        assert_eq!((d.grid, d.block), ((2, 1, 1), (256, 1, 1)));
        assert!(dequant_launch(&dequant_params(geo(0, 3, 3, 1, 9), QC_DQ_FORWARD, false).unwrap()).unwrap().is_none());
        let dw = dequant_params(geo(16, 1, 1, 16, 9), QC_DQ_DEPTHWISE, false).unwrap();
        assert_eq!((dw.row, dw.kg, dw.codes_signed), (16, 1, 0));
        assert!(dequant_params(geo(16, 2, 2, 8, 9), QC_DQ_DEPTHWISE, false).is_err());
        assert!(dequant_params(geo(12, 3, 3, 5, 9), QC_DQ_FORWARD, false).is_err());
        assert!(dequant_params(geo(12, 3, 3, 0, 9), QC_DQ_FORWARD, false).is_err());
        assert!(dequant_params(geo(12, 3, 3, 1, 9), 7, false).is_err());
        // Padded channel slots: rows of taps * cg_pad codes.
        let padded = dequant_params(geo(16, 3, 8, 1, 49), QC_DQ_FORWARD, true).unwrap();
        assert_eq!((padded.row, padded.cg, padded.cg_pad), (392, 3, 8));
        assert!(dequant_params(geo(16, 3, 2, 1, 49), QC_DQ_FORWARD, true).is_err());
        assert!(dequant_params(geo(1 << 40, 1 << 20, 1 << 20, 1, 1 << 10), QC_DQ_FORWARD, false).is_err());
    }

    #[test]
    fn pad_nonempty_never_returns_an_empty_vector() {
        assert_eq!(pad_nonempty::<f64>(&[]), vec![0.0]);
        assert_eq!(pad_nonempty(&[1i64, 2]), vec![1, 2]);
    }
}
