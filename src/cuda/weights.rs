//! A module's weight on a CUDA device ([`DeviceWeights`]): uploaded once when the module moves
//! there (or its weight, qparams or bias change) in the forms the kernels read — the float32
//! `get_weight()`, its f16 / bf16 tensor-core copies and the depthwise `[taps][C]` copy, or, with
//! [`WeightStorage::Int8Codes`](super::WeightStorage::Int8Codes), only the 8-bit codes — plus the TF32 copy built on the first TF32
//! call, the float32 weight a kernel without a code loader needs, and the self-check that the
//! device's fake-quant agrees with the CPU's bit for bit.
//!
//! The backend sees the weight's shape as a [`WeightSpec`] (never the module type); which copies
//! exist follows the rules of the kernel families ([`conv_tc::can_run`], [`depthwise::can_run`]).

use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaSlice, CudaStream};

use super::codes::PackedCodes;
use super::ops::conv_tc::{self, DeviceCodes};
use super::ops::depthwise;
use super::ops::params::{QcDequantLayout, QC_DQ_DEPTHWISE, QC_DQ_FORWARD, QC_DQ_TRANSPOSED};
use super::pack::{pack_depthwise, tf32_round};
use super::runtime::Runtime;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::quant::WeightQParams;
use crate::tensor::{Device, Tensor};

pub use super::pack::WeightSpec;

impl WeightSpec {
    /// Whether the tensor-core tiles of `dtype` run convolutions of this weight (on the input's
    /// channels as the tiles see them, padded where [`conv_tc::padded_cg`] says).
    pub fn tensor_cores(&self, dtype: DType) -> bool {
        let g = self.geometry();
        conv_tc::can_run(self.transposed, g.cg_pad, g.out_channels / g.groups, dtype)
    }

    /// Whether the channels-last depthwise kernel runs convolutions of this weight.
    pub fn depthwise(&self) -> bool {
        depthwise::can_run(self.transposed, self.in_channels, self.out_channels, self.groups)
    }

    /// The float32 layout `qc_dequant_codes` writes for the SIMT kernels: the module's own.
    pub fn dequant_layout(&self) -> QcDequantLayout {
        if self.transposed {
            QC_DQ_TRANSPOSED
        } else {
            QC_DQ_FORWARD
        }
    }
}

/// A module's weight and bias in device memory (see the [module documentation](self)).
pub(crate) struct DeviceWeights {
    pub(crate) runtime: Arc<Runtime>,
    /// The weight's shape.
    pub(crate) spec: WeightSpec,
    /// `get_weight()` on the host (shared with the module), for the TF32 copy.
    fq: Tensor,
    /// The bias on the host (shared with the module), for outputs with nothing to convolve.
    host_bias: Option<Tensor>,
    /// `get_weight()` in the module's weight layout, float32 (`WeightStorage::Float` only).
    weight: Option<CudaSlice<f32>>,
    pub(crate) bias: Option<CudaSlice<f32>>,
    /// For the tensor-core kernel: `get_weight()` packed `[K][row]` (tap-major, then channel, rows
    /// zero-padded to a multiple of 8) and rounded to binary16 / bfloat16 (bit patterns).
    pub(crate) tc_f16: Option<CudaSlice<u16>>,
    pub(crate) tc_bf16: Option<CudaSlice<u16>>,
    /// For the channels-last depthwise kernel: `get_weight()` packed `[taps][C]`, float32
    /// (unrounded: that kernel is exact).
    dw: Option<CudaSlice<f32>>,
    /// `WeightStorage::Int8Codes`: the codes, scales and zero points (then every other weight
    /// field is `None`).
    pub(crate) codes: Option<DeviceCodes>,
    /// `Precision::Tf32`: `get_weight()` packed like `tc_f16` as float32 rounded to TF32, built on
    /// the first TF32 call.
    tc_tf32: Mutex<Option<Arc<CudaSlice<f32>>>>,
}

/// A float32 weight a kernel reads: resident, or expanded from the codes for this call.
pub(crate) enum FloatWeight<'a> {
    Resident(&'a CudaSlice<f32>),
    Temporary(CudaSlice<f32>),
}

impl FloatWeight<'_> {
    pub(crate) fn get(&self) -> &CudaSlice<f32> {
        match self {
            FloatWeight::Resident(w) => w,
            FloatWeight::Temporary(w) => w,
        }
    }
}

impl DeviceWeights {
    /// Uploads `fq` (`get_weight()`, float32, the module's layout) and the bias to device
    /// `ordinal` (enqueued on the device's default stream), plus the tensor-core copies of the
    /// weight when those tiles apply and the depthwise copy when that kernel does; with `codes`
    /// (`WeightStorage::Int8Codes`) the codes, scales and zero points instead of every float copy.
    pub(crate) fn upload(
        ordinal: usize,
        spec: WeightSpec,
        fq: &Tensor,
        bias: Option<&Tensor>,
        codes: Option<&PackedCodes>,
    ) -> Result<DeviceWeights> {
        let runtime = Runtime::get(ordinal)?;
        let device_bias = match bias {
            Some(b) => Some(runtime.htod(b.as_slice::<f32>()?, None)?),
            None => None,
        };
        let mut w = DeviceWeights {
            runtime,
            spec,
            fq: fq.clone(),
            host_bias: bias.cloned(),
            weight: None,
            bias: device_bias,
            tc_f16: None,
            tc_bf16: None,
            dw: None,
            codes: None,
            tc_tf32: Mutex::new(None),
        };
        let rt = &w.runtime;
        if let Some(c) = codes {
            w.codes = Some(DeviceCodes {
                codes: rt.htod(&c.codes, None)?,
                scale: rt.htod(&c.scale, None)?,
                zero: rt.htod(&c.zero, None)?,
                signed: c.signed,
                cg_valid: c.cg,
            });
            return Ok(w);
        }
        let fq = fq.as_slice::<f32>()?;
        w.weight = Some(rt.htod(fq, None)?);
        if spec.tensor_cores(DType::F16) {
            // Rounded to nearest even.
            let g = spec.geometry();
            let h = g.pack(spec.transposed, fq, |v| half::f16::from_f32(v).to_bits());
            let b = g.pack(spec.transposed, fq, |v| half::bf16::from_f32(v).to_bits());
            w.tc_f16 = Some(rt.htod(&h, None)?);
            w.tc_bf16 = Some(rt.htod(&b, None)?);
        }
        if spec.depthwise() {
            // [C, 1, taps] -> [taps, C].
            w.dw = Some(rt.htod(&pack_depthwise(fq, spec.in_channels, spec.taps), None)?);
        }
        Ok(w)
    }

    /// The bias on the host (float32), if the module has one.
    pub(crate) fn host_bias(&self) -> Option<&[f32]> {
        self.host_bias.as_ref().and_then(|b| b.as_slice::<f32>().ok())
    }

    /// Bytes of device memory holding the weight (not the bias).
    pub(crate) fn weight_bytes(&self) -> usize {
        let n = |len: Option<usize>, size: usize| len.unwrap_or(0) * size;
        n(self.weight.as_ref().map(|w| w.len()), 4)
            + n(self.tc_f16.as_ref().map(|w| w.len()), 2)
            + n(self.tc_bf16.as_ref().map(|w| w.len()), 2)
            + n(self.dw.as_ref().map(|w| w.len()), 4)
            + self.codes.as_ref().map_or(0, |c| c.codes.len() + 4 * (c.scale.len() + c.zero.len()))
            + self.tc_tf32.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |w| 4 * w.len())
    }

    /// The TF32 weight, built and uploaded (on `stream`) on first use; `None` when the TF32 tiles
    /// do not run this weight (they have no element-wise loader).
    pub(crate) fn tf32_weight(&self, stream: Option<&Arc<CudaStream>>) -> Result<Option<Arc<CudaSlice<f32>>>> {
        if !self.spec.tensor_cores(DType::F32) {
            return Ok(None);
        }
        let mut slot = self.tc_tf32.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let fq = self.fq.as_slice::<f32>()?;
            let packed = self.spec.geometry().pack(self.spec.transposed, fq, tf32_round);
            *slot = Some(Arc::new(self.runtime.htod(&packed, stream)?));
        }
        Ok(slot.clone())
    }

    /// The float32 weight for a kernel without a code loader: the resident one, or (8-bit code
    /// storage) the codes expanded on `stream` into a temporary buffer in `layout`.
    pub(crate) fn float_weight(
        &self,
        layout: QcDequantLayout,
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<FloatWeight<'_>> {
        let resident = if layout == QC_DQ_DEPTHWISE { self.dw.as_ref() } else { self.weight.as_ref() };
        if let Some(w) = resident {
            return Ok(FloatWeight::Resident(w));
        }
        let c = self.codes.as_ref().ok_or_else(|| Error::Unsupported {
            op: "forward".into(),
            device: Device::Cuda(self.runtime.ordinal()).to_string(),
            reason: "the module has neither a float nor a code weight on the device (internal error)".into(),
        })?;
        let mut w = self.runtime.alloc_uninit::<f32>(self.fq.numel(), stream)?;
        self.runtime.dequant_codes_device(c, self.spec.geometry(), layout, &mut w, stream)?;
        Ok(FloatWeight::Temporary(w))
    }

    /// Runs the CUDA fake-quant kernel on the float `weight` under `qparams` and compares it with
    /// the CPU result (`get_weight()`); with 8-bit code storage, also expands the uploaded codes
    /// on the device and compares.
    pub(crate) fn self_check(&self, weight: &Tensor, qparams: &WeightQParams) -> Result<()> {
        let rt = &self.runtime;
        let src = rt.htod(weight.as_slice::<f32>()?, None)?;
        let mut dst = rt.zeros::<f32>(src.len(), None)?;
        rt.fake_quantize_device(qparams, weight.shape(), &src, Some(&mut dst), None, None)?;
        let cpu = self.fq.as_slice::<f32>()?;
        let compare = |what: &'static str, gpu: Vec<f32>| -> Result<()> {
            if let Some(i) = (0..cpu.len()).find(|&i| gpu[i].to_bits() != cpu[i].to_bits()) {
                return Err(Error::Cuda {
                    call: what,
                    message: format!(
                        "the CUDA kernel gave {} for weight element {i} where the CPU path gives {} (a qconv bug: please report it)",
                        gpu[i], cpu[i]
                    ),
                });
            }
            Ok(())
        };
        compare("fake-quant self-check", rt.dtoh(&dst, None)?)?;
        if let Some(c) = &self.codes {
            rt.dequant_codes_device(c, self.spec.geometry(), self.spec.dequant_layout(), &mut dst, None)?;
            compare("weight-code self-check", rt.dtoh(&dst, None)?)?;
        }
        Ok(())
    }
}
