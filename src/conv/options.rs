//! [`ConvOptions<D>`]: one options type for every dimension count, and the shape rules.

use crate::error::{Error, Result};
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

/// Hyper-parameters of a convolution with `D` spatial dimensions (1, 2 or 3).
///
/// Built with [`ConvOptions::new`] and the builder methods; validated when a module is built.
///
/// ```
/// use qconv::{ConvOptions, Padding, PaddingMode};
/// let opts = ConvOptions::<2>::new([3, 3]).stride([2, 2]).padding(Padding::Explicit([1, 1])).groups(4);
/// assert_eq!(opts.stride, [2, 2]);
/// assert_eq!(opts.padding_mode, PaddingMode::Zeros);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvOptions<const D: usize> {
    /// Kernel size per spatial dimension.
    pub kernel_size: [usize; D],
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
    /// Whether the module has a bias (default true).
    pub bias: bool,
    /// Padding mode (default zeros).
    pub padding_mode: PaddingMode,
}

impl<const D: usize> ConvOptions<D> {
    /// Options with the given kernel size and PyTorch's defaults for everything else.
    pub fn new(kernel_size: [usize; D]) -> Self {
        ConvOptions {
            kernel_size,
            stride: [1; D],
            padding: Padding::default(),
            dilation: [1; D],
            output_padding: [0; D],
            groups: 1,
            bias: true,
            padding_mode: PaddingMode::Zeros,
        }
    }

    /// Sets the stride.
    pub fn stride(mut self, stride: [usize; D]) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the padding.
    pub fn padding(mut self, padding: Padding<D>) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the dilation.
    pub fn dilation(mut self, dilation: [usize; D]) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the output padding (transposed convolutions only).
    pub fn output_padding(mut self, output_padding: [usize; D]) -> Self {
        self.output_padding = output_padding;
        self
    }

    /// Sets the number of groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets whether the module has a bias.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets the padding mode.
    pub fn padding_mode(mut self, padding_mode: PaddingMode) -> Self {
        self.padding_mode = padding_mode;
        self
    }

    /// Checks every rule PyTorch's `nn.ConvNd` / `nn.ConvTransposeNd` constructors check.
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
        for (name, v) in [("kernel_size", &self.kernel_size), ("stride", &self.stride), ("dilation", &self.dilation)] {
            if v.contains(&0) {
                return Err(Error::config(name, format!("{v:?}"), "every element must be positive"));
            }
        }
        for d in 0..D {
            if self.dilation[d].checked_mul(self.kernel_size[d] - 1).and_then(|v| v.checked_add(1)).is_none() {
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

    /// Leading and trailing padding per dimension for a forward convolution.
    pub fn padding_amounts(&self) -> ([usize; D], [usize; D]) {
        match self.padding {
            Padding::Explicit(p) => (p, p),
            Padding::Valid => ([0; D], [0; D]),
            Padding::Same => {
                let mut lo = [0; D];
                let mut hi = [0; D];
                for d in 0..D {
                    // `validate` rejects an overflowing span; saturate for unvalidated options.
                    let total = self.dilation[d].saturating_mul(self.kernel_size[d].saturating_sub(1));
                    lo[d] = total / 2;
                    hi[d] = total - lo[d];
                }
                (lo, hi)
            }
        }
    }

    /// Output spatial size of a forward convolution over an input of spatial size `input`.
    ///
    /// `floor((L + pad_lo + pad_hi − dilation·(k−1) − 1) / stride) + 1`, an error when the dilated
    /// kernel does not fit the padded input, and the padding-mode limits of `torch.nn.functional.pad`.
    pub fn conv_output_size(&self, input: &[usize; D]) -> Result<[usize; D]> {
        let (lo, hi) = self.padding_amounts();
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
                .checked_mul(self.kernel_size[d] - 1)
                .and_then(|v| v.checked_add(1))
                .ok_or_else(|| Error::Overflow(format!("dilated kernel size in dimension {d}")))?;
            if padded < eff {
                return Err(Error::shape(
                    "input",
                    input,
                    format!(
                        "the padded input size {padded} in dimension {d} is smaller than the dilated kernel size {eff} (kernel {}, dilation {})",
                        self.kernel_size[d], self.dilation[d]
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
        let (p, _) = self.padding_amounts();
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
                + self.dilation[d] as u128 * (self.kernel_size[d] as u128 - 1)
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
                format!("{output_size:?}"),
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
