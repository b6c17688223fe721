//! `cuda/layout.cu`, transcribed: `qc_pad_channels` one pixel per iteration; the test checks it
//! (with the host's arguments and grid) against the rule the kernel implements.

use crate::cuda::ops::conv_tc::padded_cg;
use crate::cuda::ops::layout::{pad_channels_launch, pad_channels_params};
use crate::cuda::ops::params::QcPadChannelsParams;

/// `qc_pad_channels` of cuda/conv_tc.cu, transcribed (one pixel per iteration).
pub fn emulate_pad_channels(p: &QcPadChannelsParams, src: &[u32]) -> Vec<u32> {
    let (groups, cg, cgp) = (p.groups as i64, p.cg as i64, p.cg_pad as i64);
    let (cin, cout) = (groups * cg, groups * cgp);
    let mut dst = vec![u32::MAX; (p.batch * p.pixels * cout) as usize];
    for px in 0..p.batch * p.pixels {
        let b = px / p.pixels;
        let base = if p.src_nhwc != 0 { px * cin } else { b * cin * p.pixels + (px - b * p.pixels) };
        let step = if p.src_nhwc != 0 { 1 } else { p.pixels };
        let mut d = px * cout;
        let mut ch = 0;
        for _g in 0..groups {
            for c in 0..cgp {
                let mut v = 0;
                if c < cg {
                    v = src[(base + ch * step) as usize];
                    ch += 1;
                }
                dst[d as usize] = v;
                d += 1;
            }
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_channels_params_and_kernel_transcription() {
        assert_eq!(padded_cg(false, 3, 64), Some(8));
        assert_eq!(padded_cg(false, 12, 16), Some(16));
        assert_eq!(padded_cg(false, 16, 64), None); // already a multiple of 8
        assert_eq!(padded_cg(false, 1, 64), None); // 8x the work: element-wise loader
        assert_eq!(padded_cg(false, 3, 8), None); // few output channels: CUDA cores
        assert_eq!(padded_cg(true, 3, 64), None); // transposed
                                                  // (batch, pixels, groups, cg, cg_pad) with NCHW and channels-last sources.
        for (n, px, groups, cg, cgp) in [(2usize, 5usize, 1usize, 3usize, 8usize), (1, 7, 2, 12, 16), (3, 1, 3, 5, 8)] {
            for nhwc in [false, true] {
                let p = pad_channels_params(n, px, groups, cg, cgp, nhwc).unwrap();
                let d = pad_channels_launch(&p).unwrap().unwrap();
                assert!(d.grid.0 as u64 * 256 >= (n * px) as u64);
                // x(b, channel, s) = b*1000 + channel*10 + s, laid out as the source says.
                let cin = groups * cg;
                let mut src = vec![0u32; n * px * cin];
                for b in 0..n {
                    for ch in 0..cin {
                        for s in 0..px {
                            let i = if nhwc { (b * px + s) * cin + ch } else { (b * cin + ch) * px + s };
                            src[i] = (b * 1000 + ch * 10 + s) as u32 + 1;
                        }
                    }
                }
                let dst = emulate_pad_channels(&p, &src);
                for b in 0..n {
                    for s in 0..px {
                        for g in 0..groups {
                            for c in 0..cgp {
                                let got = dst[((b * px + s) * groups + g) * cgp + c];
                                let want = if c < cg { (b * 1000 + (g * cg + c) * 10 + s) as u32 + 1 } else { 0 };
                                assert_eq!(got, want, "b {b} s {s} g {g} c {c} nhwc {nhwc}");
                            }
                        }
                    }
                }
            }
        }
        assert!(pad_channels_params(1, 1, 1, 9, 8, false).is_err());
        assert!(pad_channels_params(1, 1, 0, 3, 8, false).is_err());
        assert!(pad_channels_launch(&pad_channels_params(0, 5, 1, 3, 8, true).unwrap()).unwrap().is_none());
    }
}
