//! The entry point: [`conv`] validates a call (lengths, the weight against the problem, the
//! geometry), picks the GEMM path's input source, builds the call context and dispatches once to
//! the kernels of the CPU's instruction set.

use super::context::{next_call_id, BSource, Ctx};
use super::gemm::padded_pays_off;
use super::geometry::{checked_product, Geometry};
use super::kernels::Isa;
use super::packed::PackedWeight;
use super::padded::{build_padded, recycle_padded, Padded};
use crate::error::{Error, Result};
use crate::problem::ConvProblem;

/// Runs the convolution `p` with the packed weight `w`: `y = conv(x, w) + bias`.
///
/// `x` has `p.input_len()` elements, `y` `p.output_len()` (fully overwritten) and `bias`, if
/// any, `p.out_channels`. The algorithm is described in the documentation of [`crate::cpu`] and
/// its files.
///
/// Errors: [`Error::Shape`] if a length does not match `p` or `w` does not fit `p`;
/// [`Error::InvalidConfig`] for a zero stride or dilation, a non-zeros padding mode on a
/// transposed convolution, or a reflect/circular padding larger than the input allows;
/// [`Error::Overflow`] if a size does not fit the index arithmetic; [`Error::OutOfMemory`] if the
/// padded input copy or a task's scratch buffers cannot be allocated (the output is then
/// incomplete).
pub fn conv(p: &ConvProblem, w: &PackedWeight, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) -> Result<()> {
    conv_with(p, w, bias, x, y, Isa::best())
}

/// [`conv`] with the micro-kernels of at most `isa` (tests cap it to check the lower levels).
pub(super) fn conv_with(
    p: &ConvProblem,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
    isa: Isa,
) -> Result<()> {
    if !w.matches(p) {
        return Err(Error::shape(
            "weight",
            &[w.in_channels, w.out_channels, w.groups, w.kernel[0], w.kernel[1], w.kernel[2]],
            format!(
                "the packed weight (in_channels, out_channels, groups, kernel{}) does not fit the problem \
                 (in_channels {}, out_channels {}, groups {}, kernel {:?}, transposed {})",
                if w.transposed { ", transposed" } else { "" },
                p.in_channels,
                p.out_channels,
                p.groups,
                p.kernel,
                p.transposed
            ),
        ));
    }
    let in_len =
        checked_product(&[p.batch, p.in_channels, p.in_size[0], p.in_size[1], p.in_size[2]], "input elements")?;
    let out_len =
        checked_product(&[p.batch, p.out_channels, p.out_size[0], p.out_size[1], p.out_size[2]], "output elements")?;
    if x.len() != in_len {
        return Err(Error::shape(
            "input",
            &[x.len()],
            format!("the problem needs {in_len} input elements ([{}, {}] × {:?})", p.batch, p.in_channels, p.in_size),
        ));
    }
    if y.len() != out_len {
        return Err(Error::shape(
            "output",
            &[y.len()],
            format!(
                "the problem needs {out_len} output elements ([{}, {}] × {:?})",
                p.batch, p.out_channels, p.out_size
            ),
        ));
    }
    if let Some(b) = bias {
        if b.len() != p.out_channels {
            return Err(Error::shape("bias", &[b.len()], format!("expected {} elements", p.out_channels)));
        }
    }
    let geo = Geometry::new(p)?;
    if out_len == 0 {
        return Ok(());
    }
    let bsrc = if w.mr == 1 {
        BSource::Packed // unused by the direct path
    } else if !p.transposed
        && p.kernel == [1, 1, 1]
        && p.stride == [1, 1, 1]
        && p.pad == [0, 0, 0]
        && p.in_size == p.out_size
    {
        BSource::Input
    } else if padded_pays_off(p, &geo, in_len) {
        BSource::Padded
    } else {
        BSource::Packed
    };
    let xp = if bsrc == BSource::Padded { build_padded(p, &geo, x)? } else { Padded::default() };
    let ctx = Ctx { p, geo, w, bias, x, bsrc, xp, call_id: next_call_id() };
    let done = ctx.run_best(isa, y);
    recycle_padded(ctx.xp);
    done
}

#[cfg(test)]
#[path = "entry_tests.rs"]
mod tests;
