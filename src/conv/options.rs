//! [`ConvOptions<D>`]: one options type for every dimension count, and the shape rules.

use crate::error::{Error, Result};
use crate::problem::ConvProblem;
pub use crate::problem::PaddingMode;

/// Padding of a convolution: explicit per-dimension amounts, or PyTorch's `"same"` / `"valid"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding<const D: usize> {
    /// The same amount on both sides of each spatial dimension.
    Explicit([usize; D]),
    /// Output as large as the input (stride 1 only); an odd total puts the extra element at the end.
    Same,
    /// No padding.
    Valid,
}

impl<const D: usize> Default for Padding<D> {
    fn default() -> Self {
        Padding::Explicit([0; D])
    }
}

impl<const D: usize> From<usize> for Padding<D> {
    /// The same amount in every dimension (`.padding(1)`).
    fn from(v: usize) -> Self {
        Padding::Explicit([v; D])
    }
}

impl<const D: usize> From<[usize; D]> for Padding<D> {
    /// Per-dimension amounts (`.padding([1, 0])`).
    fn from(v: [usize; D]) -> Self {
        Padding::Explicit(v)
    }
}

/// A per-dimension size given as one number for every dimension (`2`) or as an array (`[2, 1]`):
/// what the [`ConvOptions`] builder methods take, PyTorch's `int or tuple`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dims<const D: usize>(pub [usize; D]);

impl<const D: usize> From<usize> for Dims<D> {
    fn from(v: usize) -> Self {
        Dims([v; D])
    }
}

impl<const D: usize> From<[usize; D]> for Dims<D> {
    fn from(v: [usize; D]) -> Self {
        Dims(v)
    }
}

/// Hyper-parameters of a convolution with `D` spatial dimensions (1, 2 or 3).
///
/// Built with [`ConvOptions::new`] (PyTorch's defaults) and the builder methods, which take one
/// number for every dimension or an array (`.stride(2)`, `.stride([2, 1])`, `.padding(1)`,
/// `.padding(Padding::Same)`); validated when a module is built. The kernel size is taken from
/// the weight's shape; stating it with [`kernel_size`](Self::kernel_size) makes the module check
/// that the weight agrees. Whether a module has a bias is decided by the bias tensor it is given.
///
/// ```
/// use qconv::{ConvOptions, Padding, PaddingMode};
/// let opts = ConvOptions::<2>::new().stride(2).padding(1).groups(4);
/// assert_eq!(opts.stride, [2, 2]);
/// assert_eq!(opts.padding, Padding::Explicit([1, 1]));
/// assert_eq!(opts.padding_mode, PaddingMode::Zeros);
/// assert_eq!(opts.kernel_size, None); // from the weight
/// let same = ConvOptions::<2>::new().kernel_size([3, 5]).padding(Padding::Same).dilation([1, 2]);
/// assert_eq!(same.kernel_size, Some([3, 5]));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvOptions<const D: usize> {
    /// Kernel size per spatial dimension; `None` (the default): the weight's. A module's
    /// [`options`](crate::ConvModule::options) always hold the size in use.
    pub kernel_size: Option<[usize; D]>,
    /// Stride per spatial dimension (default 1).
    pub stride: [usize; D],
    /// Padding (default 0).
    pub padding: Padding<D>,
    /// Dilation per spatial dimension (default 1).
    pub dilation: [usize; D],
    /// Extra size added to one side of a transposed convolution's output (default 0; must be 0
    /// for forward convolutions).
    pub output_padding: [usize; D],
    /// Number of groups (default 1).
    pub groups: usize,
    /// Padding mode (default zeros).
    pub padding_mode: PaddingMode,
}

impl<const D: usize> Default for ConvOptions<D> {
    fn default() -> Self {
        ConvOptions {
            kernel_size: None,
            stride: [1; D],
            padding: Padding::default(),
            dilation: [1; D],
            output_padding: [0; D],
            groups: 1,
            padding_mode: PaddingMode::Zeros,
        }
    }
}

/// A `D`-dimensional size as the 3-d size of a [`ConvProblem`]: leading dimensions `fill`.
pub(crate) fn pad3<const D: usize>(v: &[usize; D], fill: usize) -> [usize; 3] {
    let mut out = [fill; 3];
    out[3 - D..].copy_from_slice(v);
    out
}

impl<const D: usize> ConvOptions<D> {
    /// The normalised 3-d backend problem of a module with these options: `channels` = (in, out),
    /// the module's `kernel`, and the spatial sizes of its input and output (already checked by
    /// the caller). A transposed convolution always pads with zeros.
    pub(crate) fn problem(
        &self,
        transposed: bool,
        batch: usize,
        channels: (usize, usize),
        kernel: &[usize; D],
        in_spatial: &[usize; D],
        out_spatial: &[usize; D],
    ) -> Result<ConvProblem> {
        let (lo, _) = self.padding_amounts()?;
        Ok(ConvProblem {
            transposed,
            batch,
            in_channels: channels.0,
            out_channels: channels.1,
            groups: self.groups,
            in_size: pad3(in_spatial, 1),
            out_size: pad3(out_spatial, 1),
            kernel: pad3(kernel, 1),
            stride: pad3(&self.stride, 1),
            pad: pad3(&lo, 0),
            dilation: pad3(&self.dilation, 1),
            pad_mode: if transposed { PaddingMode::Zeros } else { self.padding_mode },
        })
    }

    /// PyTorch's defaults: stride 1, padding 0, dilation 1, groups 1, zeros padding, and the
    /// kernel size of the weight.
    pub fn new() -> Self {
        Self::default()
    }

    /// States the kernel size (`3` or `[3, 5]`); a module built with a weight of another kernel
    /// size fails with [`Error::Shape`] on the weight.
    pub fn kernel_size(mut self, kernel_size: impl Into<Dims<D>>) -> Self {
        self.kernel_size = Some(kernel_size.into().0);
        self
    }

    /// Sets the stride (`2` or `[2, 1]`).
    pub fn stride(mut self, stride: impl Into<Dims<D>>) -> Self {
        self.stride = stride.into().0;
        self
    }

    /// Sets the padding: `1`, `[1, 0]`, [`Padding::Same`] or [`Padding::Valid`].
    pub fn padding(mut self, padding: impl Into<Padding<D>>) -> Self {
        self.padding = padding.into();
        self
    }

    /// Sets the dilation (`2` or `[2, 1]`).
    pub fn dilation(mut self, dilation: impl Into<Dims<D>>) -> Self {
        self.dilation = dilation.into().0;
        self
    }

    /// Sets the output padding (transposed convolutions only; `1` or `[1, 0]`).
    pub fn output_padding(mut self, output_padding: impl Into<Dims<D>>) -> Self {
        self.output_padding = output_padding.into().0;
        self
    }

    /// Sets the number of groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets the padding mode.
    pub fn padding_mode(mut self, padding_mode: PaddingMode) -> Self {
        self.padding_mode = padding_mode;
        self
    }

    /// The kernel size, or an [`Error::InvalidConfig`] when it is unset (options not yet joined
    /// with a weight).
    pub fn kernel(&self) -> Result<[usize; D]> {
        self.kernel_size.ok_or_else(|| {
            Error::config(
                "kernel_size",
                "unset",
                "the kernel size comes from the weight; state it with .kernel_size(..) to compute shapes without a module",
            )
        })
    }

    /// Checks every rule PyTorch's `nn.ConvNd` / `nn.ConvTransposeNd` constructors check (the
    /// kernel-size rules only when the kernel size is set).
    pub fn validate(&self, in_channels: usize, out_channels: usize, transposed: bool) -> Result<()> {
        if !(1..=3).contains(&D) {
            return Err(Error::config("spatial dimensions", D, "must be 1, 2 or 3"));
        }
        if in_channels == 0 {
            return Err(Error::config("in_channels", in_channels, "must be positive"));
        }
        if out_channels == 0 {
            return Err(Error::config("out_channels", out_channels, "must be positive"));
        }
        if self.groups == 0 {
            return Err(Error::config("groups", self.groups, "groups must be a positive integer"));
        }
        if !in_channels.is_multiple_of(self.groups) {
            return Err(Error::config(
                "groups",
                self.groups,
                format!("in_channels ({in_channels}) must be divisible by groups"),
            ));
        }
        if !out_channels.is_multiple_of(self.groups) {
            return Err(Error::config(
                "groups",
                self.groups,
                format!("out_channels ({out_channels}) must be divisible by groups"),
            ));
        }
        let kernel = self.kernel_size.unwrap_or([1; D]);
        for (name, v) in [("kernel_size", &kernel), ("stride", &self.stride), ("dilation", &self.dilation)] {
            if v.contains(&0) {
                return Err(Error::config(name, format!("{v:?}"), "every element must be positive"));
            }
        }
        for (d, (&dil, &k)) in self.dilation.iter().zip(&kernel).enumerate() {
            if dil.checked_mul(k - 1).and_then(|v| v.checked_add(1)).is_none() {
                return Err(Error::config(
                    "dilation",
                    format!("{:?}", self.dilation),
                    format!("the dilated kernel size dilation·(kernel−1)+1 overflows in dimension {d}"),
                ));
            }
        }
        match self.padding {
            Padding::Same if transposed => {
                return Err(Error::config(
                    "padding",
                    "'same'",
                    "string padding is not supported for transposed convolutions",
                ));
            }
            Padding::Valid if transposed => {
                return Err(Error::config(
                    "padding",
                    "'valid'",
                    "string padding is not supported for transposed convolutions",
                ));
            }
            Padding::Same if self.stride.iter().any(|&s| s != 1) => {
                return Err(Error::config(
                    "padding",
                    "'same'",
                    format!("padding='same' is not supported for strided convolutions (stride {:?})", self.stride),
                ));
            }
            _ => {}
        }
        if transposed {
            if self.padding_mode != PaddingMode::Zeros {
                return Err(Error::config(
                    "padding_mode",
                    self.padding_mode,
                    "only \"zeros\" padding mode is supported for transposed convolutions",
                ));
            }
            for d in 0..D {
                let op = self.output_padding[d];
                if op >= self.stride[d] && op >= self.dilation[d] {
                    return Err(Error::config(
                        "output_padding",
                        format!("{:?}", self.output_padding),
                        format!(
                            "output padding must be smaller than either stride or dilation, but got output_padding {op}, stride {}, dilation {} in dimension {d}",
                            self.stride[d], self.dilation[d]
                        ),
                    ));
                }
            }
        } else if self.output_padding.iter().any(|&x| x != 0) {
            return Err(Error::config(
                "output_padding",
                format!("{:?}", self.output_padding),
                "output_padding is only valid for transposed convolutions",
            ));
        }
        Ok(())
    }

    /// Leading and trailing padding per dimension for a forward convolution (`Same` needs the
    /// kernel size: see [`kernel`](Self::kernel)).
    pub fn padding_amounts(&self) -> Result<([usize; D], [usize; D])> {
        Ok(match self.padding {
            Padding::Explicit(p) => (p, p),
            Padding::Valid => ([0; D], [0; D]),
            Padding::Same => {
                let kernel = self.kernel()?;
                let mut lo = [0; D];
                let mut hi = [0; D];
                for d in 0..D {
                    // `validate` rejects an overflowing span; saturate for unvalidated options.
                    let total = self.dilation[d].saturating_mul(kernel[d].saturating_sub(1));
                    lo[d] = total / 2;
                    hi[d] = total - lo[d];
                }
                (lo, hi)
            }
        })
    }

    /// Output spatial size of a forward convolution over an input of spatial size `input`.
    ///
    /// `floor((L + pad_lo + pad_hi − dilation·(k−1) − 1) / stride) + 1`, an error when the dilated
    /// kernel does not fit the padded input, and the padding-mode limits of `torch.nn.functional.pad`.
    pub fn conv_output_size(&self, input: &[usize; D]) -> Result<[usize; D]> {
        let kernel = self.kernel()?;
        let (lo, hi) = self.padding_amounts()?;
        let mut out = [0; D];
        for d in 0..D {
            let l = input[d];
            match self.padding_mode {
                PaddingMode::Reflect if lo[d].max(hi[d]) >= l => {
                    return Err(Error::shape(
                        "input",
                        input,
                        format!(
                            "reflect padding of {} in dimension {d} must be smaller than the input size {l}",
                            lo[d].max(hi[d])
                        ),
                    ));
                }
                PaddingMode::Circular if lo[d].max(hi[d]) > l => {
                    return Err(Error::shape(
                        "input",
                        input,
                        format!(
                            "circular padding of {} in dimension {d} must not exceed the input size {l}",
                            lo[d].max(hi[d])
                        ),
                    ));
                }
                PaddingMode::Replicate if l == 0 && lo[d].max(hi[d]) > 0 => {
                    return Err(Error::shape(
                        "input",
                        input,
                        format!("replicate padding needs a non-empty dimension {d}"),
                    ));
                }
                _ => {}
            }
            let padded = l
                .checked_add(lo[d])
                .and_then(|v| v.checked_add(hi[d]))
                .ok_or_else(|| Error::Overflow(format!("padded input size in dimension {d}")))?;
            let eff = self.dilation[d]
                .checked_mul(kernel[d].saturating_sub(1))
                .and_then(|v| v.checked_add(1))
                .ok_or_else(|| Error::Overflow(format!("dilated kernel size in dimension {d}")))?;
            if padded < eff {
                return Err(Error::shape(
                    "input",
                    input,
                    format!(
                        "the padded input size {padded} in dimension {d} is smaller than the dilated kernel size {eff} (kernel {}, dilation {})",
                        kernel[d], self.dilation[d]
                    ),
                ));
            }
            out[d] = (padded - eff) / self.stride[d] + 1;
        }
        Ok(out)
    }

    /// Smallest output size of a transposed convolution (output padding 0) per dimension:
    /// `(L−1)·stride − 2·padding + dilation·(k−1) + 1`. Errors when it is not positive.
    pub fn transposed_min_output_size(&self, input: &[usize; D]) -> Result<[usize; D]> {
        let kernel = self.kernel()?;
        let (p, _) = self.padding_amounts()?;
        let mut out = [0; D];
        for d in 0..D {
            if input[d] == 0 {
                return Err(Error::shape(
                    "input",
                    input,
                    format!("spatial dimension {d} must be positive for a transposed convolution"),
                ));
            }
            let grow = (input[d] as u128 - 1) * self.stride[d] as u128
                + self.dilation[d] as u128 * (kernel[d] as u128).saturating_sub(1)
                + 1;
            let shrink = 2 * p[d] as u128;
            if grow <= shrink {
                return Err(Error::shape(
                    "input",
                    input,
                    format!(
                        "the transposed convolution output in dimension {d} would be {grow} - {shrink} <= 0 (padding {} is too large)",
                        p[d]
                    ),
                ));
            }
            out[d] =
                usize::try_from(grow - shrink).map_err(|_| Error::Overflow(format!("output size in dimension {d}")))?;
        }
        Ok(out)
    }

    /// Output size of a transposed convolution, either from the module's `output_padding` or from
    /// an explicit `output_size` (PyTorch's rule: `len == D`, or `D + 2` / `D + 1` with leading
    /// batch/channel entries, which are ignored like PyTorch does), each within
    /// `[min, min + stride − 1]`.
    ///
    /// Returns the output size and the output padding actually used.
    pub fn transposed_output_size(
        &self,
        input: &[usize; D],
        batched: bool,
        output_size: Option<&[usize]>,
    ) -> Result<([usize; D], [usize; D])> {
        let min = self.transposed_min_output_size(input)?;
        let Some(req) = output_size else {
            let mut out = [0; D];
            for d in 0..D {
                out[d] = min[d]
                    .checked_add(self.output_padding[d])
                    .ok_or_else(|| Error::Overflow(format!("output size in dimension {d}")))?;
            }
            return Ok((out, self.output_padding));
        };
        let lead = if batched { 2 } else { 1 };
        let req = if req.len() == lead + D { &req[lead..] } else { req };
        if req.len() != D {
            return Err(Error::config(
                "output_size",
                format!("{:?}", output_size.unwrap_or(&[])),
                format!(
                    "ConvTranspose{D}D: for {}D input, output_size must have {D} or {} elements",
                    D + lead,
                    D + lead
                ),
            ));
        }
        let mut max = [0; D];
        let mut out = [0; D];
        let mut op = [0; D];
        let mut ok = true;
        for d in 0..D {
            max[d] = min[d].saturating_add(self.stride[d] - 1);
            if req[d] < min[d] || req[d] > max[d] {
                ok = false;
            }
            out[d] = req[d];
            op[d] = req[d].saturating_sub(min[d]);
        }
        if !ok {
            return Err(Error::OutputSize {
                requested: req.to_vec(),
                min: min.to_vec(),
                max: max.to_vec(),
                input: input.to_vec(),
            });
        }
        Ok((out, op))
    }
}
