//! The entry point: [`conv_int8`] validates a call, builds the path's input copy, and dispatches
//! once to the kernels of the level the weight was packed for; [`OutSink`], the output the
//! parallel tasks write.

use super::depthwise::DwCall;
use super::gemm::GemmCall;
use super::kernels::{Int8Kernel, WithInt8Kernel};
use super::packed::PackedInt8Weight;
use super::plan::{pad_layout, sub_convs};
use super::{padded, ActivationLayout};
use crate::alloc::try_filled;
use crate::cpu::geometry::{checked_product, Geometry};
use crate::error::{Error, Result};
use crate::problem::ConvProblem;
use crate::quant::requant::check_activation_zero_point;
use crate::quant::RequantTable;

/// Runs the lowered int8 convolution `p`: `y = requant(Σ (x − x_zp)(w − w_zp))` with the packed
/// weight `w` and the requantization `table` (docs/numerics.md §14.5), bit-exact with PyTorch's
/// FBGEMM wherever FBGEMM is exact, and exact everywhere.
///
/// `x` holds `p.input_len()` u8 codes with zero point `input_zero_point`, in `layout`
/// (channels-first `[N, C, D, H, W]` or channels-last `[N, D, H, W, C]`); `y` receives
/// `p.output_len()` u8 codes in the same layout (fully overwritten).
///
/// Errors: [`Error::Shape`] if a length does not match `p` or `w`/`table` do not fit `p`;
/// [`Error::ZeroPointOutOfRange`] for an input zero point outside `0..=255`;
/// [`Error::InvalidConfig`] for a zero stride or dilation, a non-zeros padding mode on a
/// transposed convolution, or a reflect/circular padding larger than the input allows;
/// [`Error::Overflow`] if a size does not fit the index arithmetic.
#[allow(clippy::too_many_arguments)]
pub fn conv_int8(
    p: &ConvProblem,
    w: &PackedInt8Weight,
    table: &RequantTable,
    input_zero_point: i32,
    x: &[u8],
    layout: ActivationLayout,
    y: &mut [u8],
) -> Result<()> {
    if !w.matches(p) {
        return Err(Error::shape(
            "weight",
            &[w.in_channels, w.out_channels, w.groups, w.kernel[0], w.kernel[1], w.kernel[2]],
            format!(
                "the packed int8 weight (in_channels, out_channels, groups, kernel{}) does not fit the problem \
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
    if table.out_channels() != p.out_channels {
        return Err(Error::shape(
            "requant table",
            &[table.out_channels()],
            format!("the problem has {} output channels", p.out_channels),
        ));
    }
    check_activation_zero_point(input_zero_point as i64)?;
    let in_len =
        checked_product(&[p.batch, p.in_channels, p.in_size[0], p.in_size[1], p.in_size[2]], "input elements")?;
    let out_len =
        checked_product(&[p.batch, p.out_channels, p.out_size[0], p.out_size[1], p.out_size[2]], "output elements")?;
    if x.len() != in_len {
        return Err(Error::shape(
            "input",
            &[x.len()],
            format!("the problem needs {in_len} input codes ([{}, {}] × {:?})", p.batch, p.in_channels, p.in_size),
        ));
    }
    if y.len() != out_len {
        return Err(Error::shape(
            "output",
            &[y.len()],
            format!("the problem needs {out_len} output codes ([{}, {}] × {:?})", p.batch, p.out_channels, p.out_size),
        ));
    }
    let geo = Geometry::new(p)?;
    if out_len == 0 {
        return Ok(());
    }
    if w.cg() == 1 {
        // The depthwise path works channels-first; channels-last codes are transposed on the way
        // in and out (16 × 16 byte blocks).
        let call = DwCall::new(p, &geo, w, table, input_zero_point, x, layout)?;
        if layout == ActivationLayout::ChannelsFirst {
            w.level.dispatch(RunDw { call: &call, out: &OutSink::new(y, layout, p.out_channels, geo.out_plane) })?;
        } else {
            let mut tmp = try_filled(out_len, 0u8, || "the int8 depthwise output (channels first)".to_string())?;
            let out = OutSink::new(&mut tmp, ActivationLayout::ChannelsFirst, p.out_channels, geo.out_plane);
            w.level.dispatch(RunDw { call: &call, out: &out })?;
            y.copy_from_slice(&padded::relayout(&tmp, p.out_channels, geo.out_plane, true)?);
        }
        call.finish();
        return Ok(());
    }
    let out = OutSink::new(y, layout, p.out_channels, geo.out_plane);
    let lay = pad_layout(p, &geo)?;
    let xp = padded::build(p, &lay, x, input_zero_point as u8, layout)?;
    let subs = sub_convs(p, &geo, &lay, w);
    let call = GemmCall { p, w, table, lay, subs, xp: xp.bytes(), xzp: input_zero_point, out_step: geo.out_step };
    let done = w.level.dispatch(RunGemm { call: &call, out: &out });
    padded::recycle(xp);
    done
}

struct RunGemm<'c, 'a, 'o> {
    call: &'c GemmCall<'a>,
    out: &'c OutSink<'o>,
}

impl WithInt8Kernel for RunGemm<'_, '_, '_> {
    type Output = Result<()>;
    fn run<K: Int8Kernel>(self, kern: K) -> Result<()> {
        self.call.run(kern, self.out)
    }
}

struct RunDw<'c, 'a, 'o> {
    call: &'c DwCall<'a>,
    out: &'c OutSink<'o>,
}

impl WithInt8Kernel for RunDw<'_, '_, '_> {
    type Output = Result<()>;
    fn run<K: Int8Kernel>(self, kern: K) -> Result<()> {
        self.call.run(kern, self.out)
    }
}

/// The output codes of a call, written by parallel tasks that each own a disjoint set of
/// `(position, channel)` elements: the output's positions are partitioned by the
/// sub-convolutions' positions (every output element belongs to exactly one phase position, see
/// `cpu/geometry.rs`; virtual columns are never written), those by the tasks' blocks or rows,
/// and the channels by the tasks' channel ranges.
pub(super) struct OutSink<'y> {
    ptr: *mut u8,
    len: usize,
    layout: ActivationLayout,
    channels: usize,
    plane: usize,
    _y: std::marker::PhantomData<&'y mut [u8]>,
}

// SAFETY: the sink only writes through `ptr`, which borrows `y` mutably for `'y`; tasks on
// different threads write disjoint elements (see the type's documentation), so no two threads
// ever access the same byte.
unsafe impl Send for OutSink<'_> {}
// SAFETY: as above.
unsafe impl Sync for OutSink<'_> {}

impl<'y> OutSink<'y> {
    fn new(y: &'y mut [u8], layout: ActivationLayout, channels: usize, plane: usize) -> OutSink<'y> {
        OutSink { ptr: y.as_mut_ptr(), len: y.len(), layout, channels, plane, _y: std::marker::PhantomData }
    }

    /// Whether the output is channels-first.
    pub(super) fn channels_first(&self) -> bool {
        self.layout == ActivationLayout::ChannelsFirst
    }

    /// Channels `ch0..ch0 + n` (`n <= 32`) of output pixel `px` of image `img`: `fill` writes
    /// them into the slice it is given, which lands in the output (directly for channels-last
    /// output, through a 32-byte row for channels-first).
    ///
    /// The caller's task must own these elements (see [`OutSink`]).
    #[inline]
    pub(super) fn write_row(&self, img: usize, px: usize, ch0: usize, n: usize, fill: impl FnOnce(&mut [u8])) {
        assert!(n <= 32 && ch0 + n <= self.channels && px < self.plane, "output row out of range");
        match self.layout {
            ActivationLayout::ChannelsLast => {
                let at = (img * self.plane + px) * self.channels + ch0;
                assert!(at + n <= self.len, "output row out of bounds");
                // SAFETY: in bounds (checked); no other thread accesses these bytes while this
                // task owns them (see the type's documentation).
                let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), n) };
                fill(dst);
            }
            ActivationLayout::ChannelsFirst => {
                let mut row = [0u8; 32];
                fill(&mut row[..n]);
                let at = (img * self.channels + ch0) * self.plane + px;
                assert!(at + (n - 1) * self.plane < self.len, "output column out of bounds");
                for (j, &v) in row[..n].iter().enumerate() {
                    // SAFETY: in bounds (checked); owned by this task (see above).
                    unsafe { self.ptr.add(at + j * self.plane).write(v) };
                }
            }
        }
    }

    /// [`OutSink::write_line`] for at most 16 codes, with fixed-size stores (two overlapping ones
    /// for a ragged length) where the codes are contiguous in the output.
    #[inline]
    pub(super) fn write_run(&self, img: usize, ch: usize, px0: usize, step: usize, vals: &[u8]) {
        let n = vals.len();
        if step != 1 || self.layout != ActivationLayout::ChannelsFirst || n > 16 {
            return self.write_line(img, ch, px0, step, vals);
        }
        let at = (img * self.channels + ch) * self.plane + px0;
        assert!(ch < self.channels && px0 + n <= self.plane && at + n <= self.len, "output run out of range");
        // SAFETY: `at..at + n` is in bounds (checked) and owned by this task (see the type's
        // documentation).
        unsafe { copy_codes(self.ptr.add(at), vals) };
    }

    /// Rows `r < rows` of `count` codes of channel `ch` of image `img`: row `r`'s codes
    /// `codes[r·codes_pitch..][..count]` go to the positions `first + r·px_pitch + i·step`.
    ///
    /// The caller's task must own these elements (see [`OutSink`]).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) fn write_rows(
        &self,
        img: usize,
        ch: usize,
        (first, px_pitch, step): (usize, usize, usize),
        rows: usize,
        count: usize,
        codes: &[u8],
        codes_pitch: usize,
    ) {
        if rows == 0 || count == 0 {
            return;
        }
        if step != 1 || self.layout != ActivationLayout::ChannelsFirst {
            for r in 0..rows {
                self.write_line(img, ch, first + r * px_pitch, step, &codes[r * codes_pitch..r * codes_pitch + count]);
            }
            return;
        }
        let at = (img * self.channels + ch) * self.plane + first;
        let last = (rows - 1) * px_pitch;
        assert!(
            ch < self.channels && first + last + count <= self.plane && at + last + count <= self.len,
            "output rows out of range"
        );
        assert!((rows - 1) * codes_pitch + count <= codes.len(), "codes out of range");
        for r in 0..rows {
            // SAFETY: row `r`'s `count` codes are in bounds (checked for the last row) and owned
            // by this task (see the type's documentation).
            unsafe { copy_codes(self.ptr.add(at + r * px_pitch), &codes[r * codes_pitch..r * codes_pitch + count]) };
        }
    }

    /// Channels `ch0..ch0 + codes.len()` (at most 32) of pixel `px` of image `img`, with
    /// fixed-size stores where they are contiguous (channels-last output).
    ///
    /// The caller's task must own these elements (see [`OutSink`]).
    #[inline]
    pub(super) fn write_codes(&self, img: usize, px: usize, ch0: usize, codes: &[u8]) {
        let n = codes.len();
        if self.layout != ActivationLayout::ChannelsLast {
            return self.write_row(img, px, ch0, n, |dst| dst.copy_from_slice(codes));
        }
        let at = (img * self.plane + px) * self.channels + ch0;
        assert!(px < self.plane && ch0 + n <= self.channels && at + n <= self.len, "output row out of range");
        // SAFETY: `at..at + n` is in bounds (checked) and owned by this task (see the type's
        // documentation).
        unsafe { copy_codes(self.ptr.add(at), codes) };
    }

    /// A 16 × 16 block of codes `t` (row `k` = channel `ch0 + k`, `k < rows`): positions
    /// `px0 + i·step`, `i < take`, of image `img` (`at_px = (px0, step, take)`).
    ///
    /// The caller's task must own these elements (see [`OutSink`]).
    #[inline]
    pub(super) fn write_block16(
        &self,
        img: usize,
        ch0: usize,
        rows: usize,
        at_px: (usize, usize, usize),
        t: &[u8; 256],
    ) {
        let (px0, step, take) = at_px;
        assert!(rows <= 16 && take <= 16, "block shape");
        if step != 1 || self.layout != ActivationLayout::ChannelsFirst || take < 16 {
            for k in 0..rows {
                self.write_run(img, ch0 + k, px0, step, &t[16 * k..16 * k + take]);
            }
            return;
        }
        let at = (img * self.channels + ch0) * self.plane + px0;
        let last = at + rows.saturating_sub(1) * self.plane;
        assert!(
            ch0 + rows <= self.channels && px0 + 16 <= self.plane && last + 16 <= self.len,
            "output block out of range"
        );
        for k in 0..rows {
            let row: [u8; 16] = t[16 * k..16 * k + 16].try_into().expect("16 codes");
            // SAFETY: `at + k·plane .. + 16` is in bounds (checked for the last row) and owned by
            // this task (see the type's documentation).
            unsafe { (self.ptr.add(at + k * self.plane) as *mut [u8; 16]).write_unaligned(row) };
        }
    }

    /// Positions `m·step + first` (`m < out.len()`) of channel `ch` of image `img` along a line of
    /// the output plane starting at pixel `px0`: channels-first positions are `step` apart,
    /// channels-last ones `step · channels`.
    ///
    /// The caller's task must own these elements (see [`OutSink`]).
    #[inline]
    pub(super) fn write_line(&self, img: usize, ch: usize, px0: usize, step: usize, vals: &[u8]) {
        let Some(last) = vals.len().checked_sub(1) else { return };
        assert!(ch < self.channels && px0 + last * step < self.plane, "output line out of range");
        let (at, stride) = match self.layout {
            ActivationLayout::ChannelsFirst => ((img * self.channels + ch) * self.plane + px0, step),
            ActivationLayout::ChannelsLast => ((img * self.plane + px0) * self.channels + ch, step * self.channels),
        };
        assert!(at + last * stride < self.len, "output line out of bounds");
        if stride == 1 {
            // SAFETY: in bounds (checked); owned by this task (see above).
            let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), vals.len()) };
            dst.copy_from_slice(vals);
        } else {
            for (m, &v) in vals.iter().enumerate() {
                // SAFETY: in bounds (checked); owned by this task (see above).
                unsafe { self.ptr.add(at + m * stride).write(v) };
            }
        }
    }
}

/// Copies `v` to `p` with fixed-size stores (16-byte chunks, and two overlapping stores for a
/// ragged length), no `memcpy` call.
///
/// # Safety
/// `p` must be valid for writes of `v.len()` bytes.
#[inline(always)]
unsafe fn copy_codes(p: *mut u8, v: &[u8]) {
    /// # Safety
    /// `p` must be valid for writes of `v.len() >= N` bytes.
    #[inline(always)]
    unsafe fn two<const N: usize>(p: *mut u8, v: &[u8]) {
        let n = v.len();
        let head: [u8; N] = v[..N].try_into().expect("N codes");
        let tail: [u8; N] = v[n - N..].try_into().expect("N codes");
        // SAFETY: `p` is valid for `n >= N` bytes (the caller's contract).
        unsafe {
            (p as *mut [u8; N]).write_unaligned(head);
            (p.add(n - N) as *mut [u8; N]).write_unaligned(tail);
        }
    }
    let n = v.len();
    // SAFETY (every arm): `p` is valid for `n` bytes (the caller's contract).
    unsafe {
        match n {
            0 => {}
            1 => p.write(v[0]),
            2..=3 => two::<2>(p, v),
            4..=7 => two::<4>(p, v),
            8..=15 => two::<8>(p, v),
            16..=32 => two::<16>(p, v),
            _ => {
                let mut i = 0;
                while i + 16 <= n {
                    (p.add(i) as *mut [u8; 16]).write_unaligned(v[i..i + 16].try_into().expect("16 codes"));
                    i += 16;
                }
                if i < n {
                    two::<16>(p.add(n - 16), &v[n - 16..]);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "entry_tests.rs"]
mod tests;
