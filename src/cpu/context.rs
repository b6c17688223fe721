//! The call context: everything the tasks of one convolution call read, and the dispatch to a
//! path with the call's kernels.
//!
//! **Parallelism and determinism.** Rayon runs independent tasks (on the calling thread when no
//! thread pool can be started, see [`crate::parallel`]), each owning a disjoint set of
//! output-row sub-slices (safe `split_at_mut` partitioning, no shared mutable state): GEMM tasks
//! are (batch × group × `mr`-aligned block of output channels × range of output positions), direct
//! tasks (batch × channel × range of output rows). Scratch buffers are thread-local and reused
//! across tasks and calls (`workspace.rs`). The task grid adapts to the thread count, but the
//! arithmetic of an output element does not: its reduction always runs in the same order,
//! partial sums are stored in `f32` between chunks (exactly as if kept in registers), and the
//! bias is added last. Results are therefore bit-identical for any number of threads (on a given
//! machine: the FMA and the portable kernels round differently).

use super::geometry::Geometry;
use super::kernels::{Isa, Kernel, WithKernel};
use super::packed::PackedWeight;
use super::padded::Padded;
use super::workspace::with_workspace;
use crate::error::Result;
use crate::parallel;
use crate::problem::ConvProblem;

/// Where the GEMM path's micro-kernel reads its input rows (`B`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BSource {
    /// Gathered into packed `[kc][NR]` micro-panels per task (any stride and padding).
    Packed,
    /// 1×1 stride-1 unpadded forward: the input rows themselves (flat positions).
    Input,
    /// The padded copy of the input: one row run per panel, no gather.
    Padded,
}

/// Everything a task reads.
pub(super) struct Ctx<'a> {
    pub(super) p: &'a ConvProblem,
    pub(super) geo: Geometry,
    pub(super) w: &'a PackedWeight,
    pub(super) bias: Option<&'a [f32]>,
    pub(super) x: &'a [f32],
    pub(super) bsrc: BSource,
    pub(super) xp: Padded,
    /// Unique per `conv` call (keys the reuse of zero borders in `Workspace::xpad`).
    pub(super) call_id: u64,
}

/// Source of [`Ctx::call_id`].
static CALL_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh [`Ctx::call_id`].
pub(super) fn next_call_id() -> u64 {
    CALL_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// [`Ctx::run`] as a job for [`Isa::dispatch`].
struct Run<'c, 'a, 'y> {
    ctx: &'c Ctx<'a>,
    y: &'y mut [f32],
}

impl WithKernel for Run<'_, '_, '_> {
    type Output = Result<()>;
    fn run<K: Kernel>(self, kern: K) -> Result<()> {
        self.ctx.run(kern, self.y)
    }
}

impl Ctx<'_> {
    /// Runs with the best micro-kernels of at most `isa` (one dispatch per call).
    pub(super) fn run_best(&self, isa: Isa, y: &mut [f32]) -> Result<()> {
        isa.dispatch(Run { ctx: self, y })
    }

    /// Runs the call's tasks in parallel with the kernels `kern`: the direct path's when the
    /// weight has one output channel per group, else the GEMM path's. The task bodies
    /// (`direct_task`, `gemm_task`) are `#[inline]` so that each loop's closure holds its body,
    /// as it did when the engine was one module (small tasks, e.g. depthwise ones, measurably pay
    /// for an extra call across codegen units).
    ///
    /// A task whose scratch buffers cannot grow fails with [`Error::OutOfMemory`]; the call then
    /// returns that error (the output is incomplete).
    fn run<K: Kernel>(&self, kern: K, y: &mut [f32]) -> Result<()> {
        if self.w.mr == 1 {
            let tasks = self.direct_tasks(y)?;
            parallel::try_for_each(tasks, |task| with_workspace(|ws| self.direct_task(kern, ws, task)))
        } else {
            let tasks = self.gemm_tasks(y)?;
            parallel::try_for_each(tasks, |task| with_workspace(|ws| self.gemm_task(kern, ws, task)))
        }
    }
}

/// Splits `n` items into `parts` near-equal consecutive ranges; returns the `parts + 1` bounds.
/// (`i · n` is computed in 128 bits: both may be large.)
pub(super) fn split_bounds(n: usize, parts: usize) -> Vec<usize> {
    (0..=parts).map(|i| (i as u128 * n as u128 / parts as u128) as usize).collect()
}
