//! Geometry: a validated problem rewritten as sub-convolutions.
//!
//! Every problem is a set of *sub-convolutions*, each a dense correlation over a grid of columns
//! `m = (m0, m1, m2)`: output `o_d = m_d·out_step_d + φ_d` reads input `i_d = m_d·in_step_d +
//! off_d(tap)` for the taps of that sub-convolution. A forward convolution is one
//! sub-convolution (`out_step = 1`, `in_step = stride`, `off = j·dilation − pad`, every tap). A
//! transposed convolution (gather form) is split per dimension into its `stride` *phases*
//! (sub-pixel decomposition): the outputs `o = m·stride + φ` only receive the taps `j` with
//! `j·dilation ≡ (φ + pad) (mod stride)`, each reading `i = m + ((φ + pad) − j·dilation)/stride`
//! — a stride-1 correlation with a subset of the taps. Nothing is ever multiplied by the zeros of
//! a dilated input, and every output element is produced by exactly one task (no scatter, no
//! atomics). Input indices outside `[0, L)` are remapped by the padding mode
//! (zeros/reflect/replicate/circular) wherever the input is read, so asymmetric (e.g. `'same'`)
//! padding needs no special case.
//!
//! Sizes are validated here with checked arithmetic (errors instead of panics), after which every
//! index the paths compute stays in bounds by construction (and is still bounds-checked).

use crate::error::{Error, Result};
use crate::problem::{ConvProblem, PaddingMode};

/// One kernel tap of a dimension's phase.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tap {
    /// Kernel index along this dimension.
    pub(super) j: usize,
    /// Input index offset: `i = m·in_step + off`.
    pub(super) off: isize,
    /// Columns `m` in `[lo, hi)` read inside the input (the rest read padding).
    pub(super) lo: usize,
    pub(super) hi: usize,
}

/// A phase of one dimension: the outputs `o = m·out_step + out_off`, `m < count`.
#[derive(Clone, Debug)]
pub(super) struct Phase {
    pub(super) count: usize,
    pub(super) in_step: usize,
    pub(super) taps: Vec<Tap>,
}

/// Per-dimension phases and the derived sizes of a validated problem.
#[derive(Debug)]
pub(super) struct Geometry {
    /// Input and output channels per group, kernel taps.
    pub(super) cg: usize,
    pub(super) kg: usize,
    pub(super) kk: usize,
    /// `out_step` per dimension (1 forward, the stride transposed); phase index of `o` is
    /// `o % out_step`, its column `o / out_step`.
    pub(super) out_step: [usize; 3],
    pub(super) phases: [Vec<Phase>; 3],
    /// Input and output spatial sizes (elements per channel plane).
    pub(super) in_plane: usize,
    pub(super) out_plane: usize,
}

fn to_isize(v: u128, what: &str) -> Result<isize> {
    // Keep a wide margin so that sums of a few such values cannot overflow either.
    if v > (isize::MAX as u128) / 8 {
        return Err(Error::Overflow(format!("{what} = {v} is too large for index arithmetic")));
    }
    Ok(v as isize)
}

fn make_tap(j: usize, off: isize, in_step: usize, count: usize, len: usize) -> Tap {
    // m·in_step + off >= 0  <=>  m >= ceil(-off / in_step)
    let step = in_step as isize;
    let lo = if off < 0 { ((-off) + step - 1) / step } else { 0 } as usize;
    // m·in_step + off <= len - 1  <=>  m <= (len - 1 - off) / in_step
    let last = len as isize - 1 - off;
    let hi = if last < 0 { 0 } else { (last / step) as usize + 1 };
    let hi = hi.min(count);
    let lo = lo.min(hi);
    Tap { j, off, lo, hi }
}

impl Geometry {
    /// Validates `p` (strides, dilations, padding modes and sizes) and builds its phases.
    pub(super) fn new(p: &ConvProblem) -> Result<Geometry> {
        let cg = p.in_channels / p.groups;
        let kg = p.out_channels / p.groups;
        let kk = checked_product(&p.kernel, "kernel size")?;
        let mut out_step = [1usize; 3];
        let mut phases: [Vec<Phase>; 3] = Default::default();
        for d in 0..3 {
            let (len, out, k, s, dil, pad) =
                (p.in_size[d], p.out_size[d], p.kernel[d], p.stride[d], p.dilation[d], p.pad[d]);
            if s == 0 {
                return Err(Error::config("stride", format!("{:?}", p.stride), "every stride must be at least 1"));
            }
            if dil == 0 {
                return Err(Error::config(
                    "dilation",
                    format!("{:?}", p.dilation),
                    "every dilation must be at least 1",
                ));
            }
            to_isize(s as u128, "stride")?;
            let span = to_isize((k as u128 - 1) * dil as u128, "kernel span")?;
            let padi = to_isize(pad as u128, "padding")?;
            to_isize(len as u128, "input size")?;
            if !p.transposed {
                if out > 0 {
                    let reach = to_isize((out as u128 - 1) * s as u128, "output reach")?;
                    let hi = reach + span - padi; // largest input index read
                    let lo = -padi; // smallest input index read
                    let l = len as isize;
                    let ok = match p.pad_mode {
                        PaddingMode::Zeros => true,
                        PaddingMode::Replicate => l >= 1,
                        PaddingMode::Reflect => l >= 1 && -lo < l && hi <= 2 * (l - 1),
                        PaddingMode::Circular => l >= 1 && -lo <= l && hi < 2 * l,
                    };
                    if !ok {
                        return Err(Error::config(
                            "padding",
                            format!("{:?}", p.pad),
                            format!(
                                "{} padding of dimension {d} reads input indices {lo}..={hi} of an input of size {len}; \
                                 reflect needs padding < size, circular padding <= size on both sides",
                                p.pad_mode.as_str()
                            ),
                        ));
                    }
                }
                let taps = (0..k).map(|j| make_tap(j, (j * dil) as isize - padi, s, out, len)).collect();
                phases[d] = vec![Phase { count: out, in_step: s, taps }];
            } else {
                if p.pad_mode != PaddingMode::Zeros {
                    return Err(Error::config(
                        "padding_mode",
                        p.pad_mode.as_str(),
                        "transposed convolutions only support zeros padding",
                    ));
                }
                to_isize(out as u128 + pad as u128, "output size + padding")?;
                out_step[d] = s;
                // Phase φ = o mod s (φ < min(out, s)): o = m·s + φ, and with r = (φ + pad) mod s,
                // m_lo = (φ + pad) / s, tap j contributes iff j·dil ≡ r (mod s), reading
                // i = m + m_lo − (j·dil − r)/s.
                // One phase per output column when the stride exceeds the output: sized by the
                // user's stride and output size, so allocated fallibly.
                let nph = out.min(s);
                let mut list = crate::alloc::try_with_capacity(nph, || {
                    format!("the {nph} stride phases of dimension {d} of a transposed convolution")
                })?;
                for phi in 0..nph {
                    let count = (out - phi).div_ceil(s);
                    let r = (phi + pad) % s;
                    let m_lo = ((phi + pad) / s) as isize;
                    let taps = (0..k)
                        .filter(|&j| (j * dil) % s == r)
                        .map(|j| {
                            let t = ((j * dil - r) / s) as isize;
                            make_tap(j, m_lo - t, 1, count, len)
                        })
                        .collect();
                    list.push(Phase { count, in_step: 1, taps });
                }
                phases[d] = list;
            }
        }
        Ok(Geometry {
            cg,
            kg,
            kk,
            out_step,
            phases,
            in_plane: checked_product(&p.in_size, "input spatial size")?,
            out_plane: checked_product(&p.out_size, "output spatial size")?,
        })
    }
}

/// The product of `values`, or [`Error::Overflow`] naming `what`.
pub(super) fn checked_product(values: &[usize], what: &str) -> Result<usize> {
    values
        .iter()
        .try_fold(1usize, |acc, &v| acc.checked_mul(v))
        .ok_or_else(|| Error::Overflow(format!("{what}: product of {values:?} overflows usize")))
}
