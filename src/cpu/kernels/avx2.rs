//! The AVX2 + FMA kernel: the generic bodies compiled with 256-bit vectors and fused
//! multiply-adds (an [`MR_WIDE`](super::MR_WIDE)-row panel runs as two 4-row halves).

use super::generic::{direct_body, direct_v_body, gemm_generic, gemm_ind_generic, pack_panel_generic};
use super::{target_kernels, ASeg, CTile, CpuFeatures, DirectWin, Kernel, Piece, RowOffsets};
use crate::cpu::rows::write_run_strided;

/// The AVX2 + FMA kernel's token: only [`Avx2Fma::new`] constructs it, from detected features.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Fma(());

impl Avx2Fma {
    /// The token, where the CPU has AVX2 and FMA.
    pub(crate) fn new(f: CpuFeatures) -> Option<Avx2Fma> {
        f.avx2_fma().then_some(Avx2Fma(()))
    }
}

target_kernels! {
    impl Kernel for Avx2Fma where features = "avx2,fma" {
        const NAME: &'static str = "avx2+fma";
        const WIDE_TILES: bool = false;

        fn gemm(self, mr: usize, a: &[f32], segs: &[ASeg], b: &[f32], ldb: usize, out: CTile<'_>) {
            gemm_generic::<true>(mr, a, segs, b, ldb, out)
        }
        fn gemm_ind(self, mr: usize, a: &[f32], b: &[f32], offs: &RowOffsets, out: CTile<'_>) {
            gemm_ind_generic::<true>(mr, a, b, offs, out)
        }
        fn direct(self, x: &[f32], taps: &[(usize, f32)], win: DirectWin, out: &mut [f32]) {
            direct_body::<true>(x, taps, win, out)
        }
        fn direct_v3(self, x: &[f32], taps: &[(usize, [f32; 3])], win: DirectWin, out: &mut [f32]) {
            direct_v_body::<true, 3>(x, taps, win, out)
        }
        fn pack_panel(self, dst: &mut [f32], src: &[f32], rows: &RowOffsets, pieces: &[Piece]) {
            pack_panel_generic(dst, src, rows, pieces)
        }
        fn run_s2(self, col: &mut [f32], kc: usize, r: usize, c0: usize, src: &[f32], n: usize) {
            write_run_strided(col, kc, r, c0, src, 2, n)
        }
    }
}
