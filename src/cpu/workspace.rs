//! Per-thread scratch buffers of the tasks.
//!
//! Every buffer a task needs lives in one [`Workspace`] per thread, kept across tasks and calls
//! (like a oneDNN scratchpad), so a task allocates nothing once the buffers have grown to their
//! largest size. Buffers are taken with `std::mem::take` where a kernel call needs one while
//! another is borrowed, and put back afterwards.

use super::direct::WindowKey;
use super::gemm::Seg;
use super::kernels::{ASeg, Piece, RowOffsets};

/// Per-task scratch buffers, reused across the tasks a rayon worker runs.
#[derive(Default)]
pub(super) struct Workspace {
    // GEMM path (`gemm.rs`).
    /// Gathered `Col` tile (`[cols/NR][kc][NR]`), or a packed or copied panel.
    pub(super) col: Vec<f32>,
    /// The task's output tile `Ct` (`[Kg block][cols]`) between reduction chunks.
    pub(super) ct: Vec<f32>,
    pub(super) segs: Vec<Seg>,
    pub(super) asegs: Vec<ASeg>,
    /// Reduction rows of a packed panel (`[kc][NR]` layout), see `gemm_subconv`.
    pub(super) psegs: Vec<ASeg>,
    pub(super) boffs: RowOffsets,
    /// Pieces of the packed padded-source panels, and where each panel's start.
    pub(super) pieces: Vec<Piece>,
    pub(super) piece_at: Vec<usize>,
    pub(super) panel_base: Vec<usize>,
    pub(super) tap_off: Vec<usize>,
    // Direct path (`direct.rs`).
    /// The window of padded input rows.
    pub(super) xpad: Vec<f32>,
    pub(super) dtaps: Vec<(usize, f32)>,
    pub(super) dvtaps: Vec<(usize, [f32; 3])>,
    /// Dense output rows of interleaved transposed phases, before the scatter.
    pub(super) dout: Vec<f32>,
    /// Zero pattern of `xpad` as the last `fill_window` left it (zero padding, padded layout).
    pub(super) xpad_key: Option<WindowKey>,
}

thread_local! {
    /// The scratch buffers of this thread, kept across tasks and calls.
    static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::default());
}

/// Runs `f` with this thread's workspace (a fresh one in the unexpected case that it is in use).
#[inline]
pub(super) fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut ws) => f(&mut ws),
        Err(_) => f(&mut Workspace::default()),
    })
}
