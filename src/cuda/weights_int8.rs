//! A lowered int8 convolution's weight on a CUDA device ([`DeviceInt8Weights`]): the int8 codes
//! uploaded once, in the form the kernel family that runs the convolution reads — the tensor-core
//! tiles' `[K][taps][cg_pad]` codes with their per-phase column sums and per-channel zero points,
//! or the depthwise kernel's centred `[taps][K]` int16 weight — and the requant table of the
//! current input scale ([`DeviceInt8Weights::requant_table`]), uploaded again only when the table
//! changes.
//!
//! The backend sees the weight's shape as a [`ConvProblem`] (never a module type); which form
//! exists follows the families' rules ([`conv_imma::can_run`], [`int8_simt::dw_can_run`]).

use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaSlice, CudaStream};

use super::ops::conv_imma::{self, requant_words, ImmaWeights};
use super::ops::int8_simt;
use super::pack_int8::{col_sums, expand_zero_points, pack_depthwise_centred, pack_imma};
use super::runtime::Runtime;
use crate::error::{Error, Result};
use crate::problem::ConvProblem;
use crate::quant::requant::{channel_lengths_rule, check_weight_zero_point, RequantTable};

/// The tile form of the weight (`cuda/conv_imma.cu`).
pub(crate) struct ImmaDevice {
    codes: CudaSlice<i8>,
    col_sums: CudaSlice<i32>,
    zero_points: CudaSlice<i32>,
    asymmetric: bool,
}

/// A lowered int8 convolution's weight on a CUDA device: the int8 codes uploaded once in the form
/// of the kernel family that runs the convolution (the int8 tensor-core tiles' `[K][taps][cg_pad]`
/// codes with per-phase column sums and per-channel zero points, or the depthwise kernel's centred
/// `[taps][K]` int16 weight), and the device copy of the last requant table
/// ([`requant_table`](DeviceInt8Weights::requant_table)). [`forward_int8`](crate::cuda::forward_int8)
/// runs it.
pub struct DeviceInt8Weights {
    pub(crate) runtime: Arc<Runtime>,
    /// The problem the weight was uploaded for; calls must match it in every weight-related field
    /// (direction, channels, groups, kernel, stride, padding, dilation, padding mode).
    geometry: ConvProblem,
    pub(crate) imma: Option<ImmaDevice>,
    /// The depthwise kernel's centred `[taps][K]` weight.
    pub(crate) dw: Option<CudaSlice<i16>>,
    /// The last requant table and its device copy (`[K][4]` floats).
    table: Mutex<Option<(RequantTable, Arc<CudaSlice<f32>>)>>,
}

impl std::fmt::Debug for DeviceInt8Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceInt8Weights")
            .field("device", &self.runtime.ordinal())
            .field("geometry", &self.geometry)
            .field("tiles", &self.imma.is_some())
            .field("depthwise", &self.dw.is_some())
            .finish()
    }
}

/// Whether two problems describe the same weight and convolution geometry (batch and sizes aside).
pub(crate) fn same_weight_geometry(a: &ConvProblem, b: &ConvProblem) -> bool {
    a.transposed == b.transposed
        && a.in_channels == b.in_channels
        && a.out_channels == b.out_channels
        && a.groups == b.groups
        && a.kernel == b.kernel
        && a.stride == b.stride
        && a.pad == b.pad
        && a.dilation == b.dilation
        && a.pad_mode == b.pad_mode
}

impl DeviceInt8Weights {
    /// Uploads the int8 weight codes `weight` (PyTorch layout: forward `[K, C/groups, *kernel]`,
    /// transposed `[C, K/groups, *kernel]`) with their zero points (1, `out_channels` or, transposed,
    /// `out_channels / groups` entries, each in `-128..=127`) for convolutions of `problem`'s
    /// geometry (its batch and sizes do not matter) to device `ordinal`, enqueued on the device's
    /// default stream: the depthwise form when [`int8_simt::dw_can_run`], else the tiles' form.
    ///
    /// Errors: [`Error::CudaUnavailable`]; [`Error::Shape`] for a weight of another length;
    /// [`Error::QParamShape`] / [`Error::ZeroPointOutOfRange`] for the zero points;
    /// [`Error::Unsupported`] when neither family runs the problem (a reduction of more than
    /// 33,025 terms: [`conv_imma::MAX_EXACT_TERMS`]).
    pub fn upload(ordinal: usize, problem: &ConvProblem, weight: &[i8], zero_points: &[i32]) -> Result<Self> {
        let runtime = Runtime::get(ordinal)?;
        if weight.len() != problem.weight_len() {
            return Err(Error::shape(
                "int8 weight",
                &[weight.len()],
                format!("expected {} codes for {problem:?}", problem.weight_len()),
            ));
        }
        for &z in zero_points {
            check_weight_zero_point(z as i64)?;
        }
        let zero = expand_zero_points(problem, zero_points).ok_or_else(|| Error::QParamShape {
            param: "weight_zero_point",
            shape: vec![zero_points.len()],
            rule: channel_lengths_rule(problem.out_channels, problem.groups, problem.transposed),
        })?;
        let mut w =
            DeviceInt8Weights { runtime, geometry: problem.clone(), imma: None, dw: None, table: Mutex::new(None) };
        let rt = &w.runtime;
        if int8_simt::dw_can_run(problem) {
            w.dw = Some(rt.htod(&pack_depthwise_centred(problem, weight, &zero), None)?);
        } else if conv_imma::can_run(problem) {
            w.imma = Some(ImmaDevice {
                codes: rt.htod(&pack_imma(problem, weight), None)?,
                col_sums: rt.htod(&col_sums(problem, weight), None)?,
                zero_points: rt.htod(&zero, None)?,
                asymmetric: zero.iter().any(|&z| z != 0),
            });
        } else {
            return Err(conv_imma::refusal(problem));
        }
        Ok(w)
    }

    /// The device this weight lives on.
    pub fn ordinal(&self) -> usize {
        self.runtime.ordinal()
    }

    /// The problem geometry the weight was uploaded for.
    pub fn geometry(&self) -> &ConvProblem {
        &self.geometry
    }

    /// Whether the depthwise kernel runs this weight (else the tensor-core tiles).
    pub fn is_depthwise(&self) -> bool {
        self.dw.is_some()
    }

    /// The tiles' operand, when this weight runs on them.
    pub(crate) fn imma_weights(&self) -> Option<ImmaWeights<'_>> {
        self.imma.as_ref().map(|d| ImmaWeights {
            codes: &d.codes,
            col_sums: &d.col_sums,
            zero_points: &d.zero_points,
            asymmetric: d.asymmetric,
        })
    }

    /// The device copy of `table` (`[K][4]` floats, [`requant_words`]): the cached one when `table`
    /// equals the last table used (the module's qparams and the same input scale), else uploaded on
    /// `stream` and cached. Errors when the table has another number of output channels.
    pub fn requant_table(&self, table: &RequantTable, stream: Option<&Arc<CudaStream>>) -> Result<Arc<CudaSlice<f32>>> {
        if table.out_channels() != self.geometry.out_channels {
            return Err(Error::shape(
                "requant table",
                &[table.out_channels()],
                format!("expected out_channels = {}", self.geometry.out_channels),
            ));
        }
        let mut cached = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, d)) = cached.as_ref() {
            if t == table {
                return Ok(Arc::clone(d));
            }
        }
        let d = Arc::new(self.runtime.htod(&requant_words(table), stream)?);
        *cached = Some((table.clone(), Arc::clone(&d)));
        Ok(d)
    }
}
