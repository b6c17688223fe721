//! Row copies into packed micro-panels: the index of a `[cols/NR][kc][NR]` panel tile, and the
//! short, strided and constant row writes the GEMM path's gather, the direct path's windows and
//! the kernels share.

use super::kernels::NR;

#[inline(always)]
fn panel_index(kc: usize, r: usize, c: usize) -> usize {
    ((c / NR) * kc + r) * NR + c % NR
}

#[inline(always)]
pub(super) fn put(col: &mut [f32], kc: usize, r: usize, c: usize, v: f32) {
    col[panel_index(kc, r, c)] = v;
}

/// `dst.copy_from_slice(src)` for short slices without a `memcpy` call: two overlapping
/// fixed-size moves cover every length from `n/2` to `n`.
#[inline(always)]
pub(super) fn copy_short(dst: &mut [f32], src: &[f32]) {
    #[inline(always)]
    fn two<const N: usize>(dst: &mut [f32], src: &[f32]) {
        let n = src.len();
        let head: &[f32; N] = src[..N].try_into().expect("N elements");
        let tail: &[f32; N] = src[n - N..].try_into().expect("N elements");
        <&mut [f32; N]>::try_from(&mut dst[..N]).expect("N elements").copy_from_slice(head);
        <&mut [f32; N]>::try_from(&mut dst[n - N..n]).expect("N elements").copy_from_slice(tail);
    }
    let n = src.len();
    match n {
        0 => {}
        1..=3 => {
            for (d, &v) in dst[..n].iter_mut().zip(src) {
                *d = v;
            }
        }
        4..=7 => two::<4>(dst, src),
        8..=15 => two::<8>(dst, src),
        16..=31 => two::<16>(dst, src),
        _ => dst[..n].copy_from_slice(src),
    }
}

/// Writes `src` to row `r`, columns `c0..`, of a panel tile.
#[inline]
pub(super) fn write_run(col: &mut [f32], kc: usize, r: usize, c0: usize, mut src: &[f32]) {
    let mut c = c0;
    while !src.is_empty() {
        let lane = c % NR;
        let take = (NR - lane).min(src.len());
        let d = panel_index(kc, r, c);
        copy_short(&mut col[d..d + take], &src[..take]);
        src = &src[take..];
        c += take;
    }
}

/// Writes `n` values `src[0], src[step], ...` to row `r`, columns `c0..c0 + n`, of a panel tile.
#[inline(always)]
pub(super) fn write_run_strided(col: &mut [f32], kc: usize, r: usize, c0: usize, src: &[f32], step: usize, n: usize) {
    let mut c = c0;
    let mut at = 0;
    while at < n {
        let lane = c % NR;
        let take = (NR - lane).min(n - at);
        let d = panel_index(kc, r, c);
        let dst = &mut col[d..d + take];
        if step == 2 && take == NR && src.len() >= at * 2 + 2 * NR {
            // A whole panel row with a readable pair past its end: fixed sizes and no odd tail,
            // so the even-element extraction vectorises (a two-register permute per panel row
            // where the kernel's instruction set has one).
            let s: &[f32; 2 * NR] = src[at * 2..at * 2 + 2 * NR].try_into().expect("2·NR elements");
            let d: &mut [f32; NR] = dst.try_into().expect("NR elements");
            for (v, pair) in d.iter_mut().zip(s.chunks_exact(2)) {
                *v = pair[0];
            }
            at += take;
            c += take;
            continue;
        }
        let src = &src[at * step..(at + take - 1) * step + 1];
        if step == 2 && take == NR {
            // A whole panel row: fixed sizes, so the even-element extraction vectorises.
            let s: &[f32; 2 * NR - 1] = src.try_into().expect("2·NR − 1 elements");
            let d: &mut [f32; NR] = dst.try_into().expect("NR elements");
            for (k, v) in d.iter_mut().enumerate() {
                *v = s[2 * k];
            }
        } else if step == 2 {
            for (dst, pair) in dst.iter_mut().zip(src.chunks(2)) {
                *dst = pair[0];
            }
        } else {
            for (k, dst) in dst.iter_mut().enumerate() {
                *dst = src[k * step];
            }
        }
        at += take;
        c += take;
    }
}

/// Fills row `r`, columns `c0..c0 + n`, of a panel tile with `v`.
#[inline]
pub(super) fn fill_run(col: &mut [f32], kc: usize, r: usize, c0: usize, n: usize, v: f32) {
    let mut c = c0;
    let end = c0 + n;
    while c < end {
        let lane = c % NR;
        let take = (NR - lane).min(end - c);
        let d = panel_index(kc, r, c);
        col[d..d + take].fill(v);
        c += take;
    }
}
