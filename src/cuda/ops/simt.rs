//! The SIMT convolutions (`cuda/conv.cu`, `cuda/conv_transpose.cu`, templates in
//! `cuda/conv_igemm.cuh`): every problem, every dtype, exact f32 arithmetic — the tiled implicit
//! GEMM with three tile sizes and the direct kernel for small `C/groups`. [`choose_conv_algo`]
//! picks the kernel, [`super::conv_launch`] gives its grid, and
//! [`Runtime::conv_device`] launches it. CPU transcription: `src/cuda/emulate/conv_igemm.rs`.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use super::params::{check_conv_params, conv_params, with_conv_ptrs, ConvIo, QcConvParams};
use super::{
    ceil_div, check_len, conv_launch, conv_variant_or_err, mul, tile_grid, LaunchDims, MAX_GRID_STRIDE_BLOCKS,
};
use crate::cuda::kernels::{ConvAlgo, ConvTile};
use crate::cuda::runtime::Runtime;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::problem::ConvProblem;

/// Threads per block of the direct convolution kernels (`QC_DIRECT_THREADS`).
pub const DIRECT_THREADS: u32 = 256;

/// Outputs along W per thread of the direct kernels (`QC_DIRECT_QW`).
pub const DIRECT_OUTPUTS_PER_THREAD: u64 = 4;

/// Picks the kernel for a convolution: the direct kernel when each output reads at most two input
/// channels (depthwise and similar: the GEMM's reduction would be too short to fill a BK-deep
/// tile), else the implicit GEMM with the largest tile that still gives at least two blocks per
/// multiprocessor (`sm_count` from the device; a tile with 32 rows when a group has at most 32
/// output channels).
pub fn choose_conv_algo(p: &QcConvParams, sm_count: u32) -> ConvAlgo {
    if p.cg <= 2 {
        return ConvAlgo::Direct;
    }
    if p.kg <= 32 {
        return ConvAlgo::Tiled(ConvTile::M32);
    }
    let blocks = |t: ConvTile| {
        ceil_div(p.n_cols.max(0) as u64, t.bn() as u64)
            * p.num_phases.max(1) as u64
            * ceil_div(p.kg.max(0) as u64, t.bm() as u64)
            * p.groups.max(1) as u64
    };
    if blocks(ConvTile::T128) >= 2 * sm_count.max(1) as u64 {
        ConvAlgo::Tiled(ConvTile::T128)
    } else {
        ConvAlgo::Tiled(ConvTile::T64)
    }
}

/// Grid of the tiled kernels: `(num_phases * ceil(n_cols / BN), ceil(Kg / BM), groups)`, 256
/// threads — the decomposition the kernel reads back from `blockIdx`.
pub(super) fn tiled_launch_dims(p: &QcConvParams, tile: ConvTile) -> Result<Option<LaunchDims>> {
    let n_tiles = ceil_div(p.n_cols as u64, tile.bn() as u64);
    let gx = n_tiles.checked_mul(p.num_phases as u64).ok_or_else(|| Error::Overflow("grid size".into()))?;
    tile_grid(p, "gridDim.x (column tiles x phases)", gx, tile.bm(), tile.threads())
}

/// Grid of the direct kernel: a grid-stride loop over `batch * K * out0 * out1 * ceil(out2 / 4)`
/// work items.
pub(super) fn direct_launch_dims(p: &QcConvParams) -> Result<Option<LaunchDims>> {
    let items = [
        p.batch as u64,
        p.out_channels as u64,
        p.out_size[0] as u64,
        p.out_size[1] as u64,
        ceil_div(p.out_size[2] as u64, DIRECT_OUTPUTS_PER_THREAD),
    ];
    let total = mul("direct-kernel work items", &items)? as u64;
    let blocks = ceil_div(total, DIRECT_THREADS as u64).clamp(1, MAX_GRID_STRIDE_BLOCKS);
    Ok(Some(LaunchDims { grid: (blocks as u32, 1, 1), block: (DIRECT_THREADS, 1, 1), dynamic_shared_bytes: 0 }))
}

impl Runtime {
    /// Enqueues a convolution: `io.x` (activations of `dtype`, `[N, C, *in_size]`, raw bytes),
    /// `weight` (the fake-quantized float32 weight in the module's layout), optional float32
    /// `io.bias` (`[K]`) into `io.y` (`[N, K, *out_size]`, `dtype`, raw bytes).
    ///
    /// The kernel is chosen by [`choose_conv_algo`] for this device; its arguments come from
    /// [`conv_params`] and are re-checked with [`check_conv_params`], and every buffer length is
    /// checked against what the kernel indexes before the launch. Returns without waiting.
    pub fn conv_device(
        &self,
        problem: &ConvProblem,
        dtype: DType,
        weight: &CudaSlice<f32>,
        mut io: ConvIo<'_>,
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<()> {
        let s = self.pick(stream)?;
        let mut p = conv_params(problem, io.bias.is_some())?;
        check_conv_params(&p)?;
        let es = dtype.size_in_bytes() as u64;
        check_len("input", io.x.len(), &[p.batch as u64, p.in_channels as u64, p.in_spatial as u64, es])?;
        check_len("output", io.y.len(), &[p.batch as u64, p.out_channels as u64, p.out_spatial as u64, es])?;
        check_len("weight", weight.len(), &[p.out_channels as u64, p.cg as u64, p.taps as u64])?;
        if let Some(b) = io.bias {
            check_len("bias", b.len(), &[p.out_channels as u64])?;
        }
        let algo = choose_conv_algo(&p, self.sm_count());
        let Some(dims) = conv_launch(&p, algo)? else { return Ok(()) };
        let f = self.function(conv_variant_or_err(problem.transposed, dtype, algo)?)?;
        with_conv_ptrs(self.ordinal(), s, weight, &mut io, &mut p, false, |p| self.launch(&f, dims, p, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::ops::conv_launch;
    use crate::cuda::ops::params::problem_2d;

    #[test]
    fn conv_launch_geometry_and_limits() {
        let p = conv_params(&problem_2d(false, 64, 256, 1, 58, 3, 1), true).unwrap();
        // n_cols = 2 * 56 * 56 = 6272.
        let l = conv_launch(&p, ConvAlgo::Tiled(ConvTile::T128)).unwrap().unwrap();
        assert_eq!(l.grid, (49, 2, 1));
        assert_eq!(l.block, (256, 1, 1));
        let l = conv_launch(&p, ConvAlgo::Tiled(ConvTile::T64)).unwrap().unwrap();
        assert_eq!(l.grid, (98, 4, 1));
        let l = conv_launch(&p, ConvAlgo::Direct).unwrap().unwrap();
        assert_eq!(l.grid, (2 * 256 * 56 * 14 / 256, 1, 1));
        let t = conv_params(&problem_2d(true, 64, 32, 1, 7, 4, 2), false).unwrap();
        let l = conv_launch(&t, ConvAlgo::Tiled(ConvTile::M32)).unwrap().unwrap();
        // out 16x16, 4 phases of 8x8, n_cols = 2 * 64 = 128 -> 1 tile per phase.
        assert_eq!(l.grid, (4, 1, 1));

        // Groups beyond gridDim.z are refused, not silently truncated.
        let mut g = problem_2d(false, 70_000 * 4, 70_000, 70_000, 4, 1, 1);
        g.batch = 1;
        let gp = conv_params(&g, false).unwrap();
        assert!(matches!(conv_launch(&gp, ConvAlgo::Tiled(ConvTile::T64)), Err(Error::Unsupported { .. })));
        assert!(conv_launch(&gp, ConvAlgo::Direct).unwrap().is_some());
        // Empty outputs launch nothing.
        let mut e = problem_2d(false, 4, 4, 1, 5, 3, 1);
        e.batch = 0;
        assert_eq!(conv_launch(&conv_params(&e, false).unwrap(), ConvAlgo::Direct).unwrap(), None);
    }

    #[test]
    fn algorithm_choice() {
        let dw = conv_params(&problem_2d(false, 64, 64, 64, 56, 3, 1), false).unwrap();
        assert_eq!(choose_conv_algo(&dw, 132), ConvAlgo::Direct);
        let narrow = conv_params(&problem_2d(false, 64, 32, 1, 56, 3, 1), false).unwrap();
        assert_eq!(choose_conv_algo(&narrow, 132), ConvAlgo::Tiled(ConvTile::M32));
        let big = conv_params(&problem_2d(false, 256, 256, 1, 114, 3, 1), false).unwrap();
        assert_eq!(choose_conv_algo(&big, 132), ConvAlgo::Tiled(ConvTile::T128));
        let small = conv_params(&problem_2d(false, 256, 256, 1, 9, 3, 1), false).unwrap();
        assert_eq!(choose_conv_algo(&small, 132), ConvAlgo::Tiled(ConvTile::T64));
    }
}
