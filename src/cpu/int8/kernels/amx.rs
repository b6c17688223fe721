//! The AMX-INT8 kernel (`tdpbusd`): 16 × 16 × 64 u8 × s8 products per instruction into i32 tiles.
//! Ported from the AMX lab (`/work/amx-lab`, `src/amx.rs`: detection, permission, tile
//! configuration and the `amx_block` micro-kernel), adapted to this engine's operands.
//!
//! **Availability** ([`amx_status`], checked once per process): CPUID (AMX-TILE, AMX-INT8,
//! OSXSAVE, and AVX512-VNNI for the epilogues), XCR0 (the OS enabled the tile state), palette 1
//! (8 tiles × 16 rows × 64 bytes), and on Linux the per-process permission
//! `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` (a raw `syscall`; no libc). Any failure
//! leaves AMX unused and [`super::Int8Isa::best`] picks AVX512-VNNI.
//!
//! **Tile state** is per OS thread: a thread's first block loads the configuration
//! (`ldtilecfg`, two whole 16-row halves; a block reads and computes whole halves wherever the
//! activations have the rows, its rows past `m` being discarded, and reconfigures to exact row
//! counts only near the end of the buffer), and [`Int8Kernel::task_end`] releases it (`tilerelease`), so threads between
//! tasks hold no tile state and the kernel does not save 8 KiB per context switch for them.
//!
//! **The block**: up to 32 positions × 32 channels in `tmm0..3` (C), A tiles `tmm4/5` (16 rows of
//! 64 activation bytes, row stride `lda`, loaded straight from the padded copy), B tiles `tmm6/7`
//! (1 KiB units of a panel: 16 quad rows × 16 channels × 4). Plans have 64-byte units; the
//! weights past each run's real bytes are zero, so what the A tiles read there (the next pixel, or
//! the copy's slack) adds nothing. The epilogues and depthwise lines are the AVX512-VNNI ones.

use std::arch::asm;
use std::cell::Cell;
use std::sync::OnceLock;

use super::vnni::Vnni;
use super::{ARows, AccTile, Epi, EpiChannel, Int8Kernel, KPlan, ACC_PITCH};
use crate::cpu::kernels::CpuFeatures;

/// The AMX kernel's token: only [`Amx::new`] constructs it, where [`amx_status`] is `Ok`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Amx(Vnni);

impl Amx {
    /// The token, where AMX-INT8 is usable in this process.
    pub(crate) fn new(f: CpuFeatures) -> Option<Amx> {
        let v = Vnni::new(f)?;
        amx_status().is_ok().then_some(Amx(v))
    }
}

/// Whether AMX-INT8 is usable in this process, and why not (computed once).
pub(crate) fn amx_status() -> &'static Result<(), String> {
    static STATUS: OnceLock<Result<(), String>> = OnceLock::new();
    STATUS.get_or_init(detect)
}

/// XCR0 (the caller has checked CPUID.1:ECX.OSXSAVE).
fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `xgetbv` with ECX = 0 is valid whenever CPUID reports OSXSAVE (checked by the
    // caller); it only writes EAX/EDX and touches no memory.
    unsafe { asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    ((hi as u64) << 32) | lo as u64
}

const XFEATURE_XTILECFG: u32 = 17;
const XFEATURE_XTILEDATA: u32 = 18;

// `__cpuid*` are safe functions in recent Rust and `unsafe` in older toolchains.
#[allow(unused_unsafe)]
fn detect() -> Result<(), String> {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    if !CpuFeatures::get().avx512_vnni() {
        return Err("no AVX512-VNNI (the AMX level's epilogues use it)".into());
    }
    // SAFETY: CPUID exists on every x86_64 CPU.
    let l0 = unsafe { __cpuid(0) };
    if l0.eax < 0x1d {
        return Err(format!("max CPUID leaf {:#x} < 0x1d", l0.eax));
    }
    // SAFETY: as above.
    let l1 = unsafe { __cpuid(1) };
    if l1.ecx & (1 << 27) == 0 {
        return Err("OSXSAVE not set".into());
    }
    // SAFETY: as above (leaf 7 exists, the maximum leaf is at least 0x1d).
    let l7 = unsafe { __cpuid_count(7, 0) };
    let (tile, int8) = (l7.edx & (1 << 24) != 0, l7.edx & (1 << 25) != 0);
    if !(tile && int8) {
        return Err(format!("CPUID: amx-tile {tile}, amx-int8 {int8}"));
    }
    let x = xcr0();
    if (x >> XFEATURE_XTILECFG) & 1 == 0 || (x >> XFEATURE_XTILEDATA) & 1 == 0 {
        return Err(format!("XCR0 {x:#x}: the OS did not enable the tile state"));
    }
    // Palette 1: EBX = bytes_per_row | max_names << 16, ECX = max_rows.
    // SAFETY: leaf 0x1d exists (checked above).
    let p1 = unsafe { __cpuid_count(0x1d, 1) };
    let (bytes_per_row, names, rows) = (p1.ebx & 0xffff, p1.ebx >> 16, p1.ecx & 0xffff);
    if bytes_per_row < 64 || names < 8 || rows < 16 {
        return Err(format!("palette 1 is {names} tiles × {rows} rows × {bytes_per_row} bytes, need 8 × 16 × 64"));
    }
    request_permission()
}

/// Linux ≥ 5.16 keeps the tile data disabled per process until it asks (a tile instruction
/// before that is SIGILL); the permission is process-wide and permanent.
#[cfg(target_os = "linux")]
fn request_permission() -> Result<(), String> {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_GET_XCOMP_PERM: i64 = 0x1022;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    let ret: i64;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, feature) takes an integer and touches no user
    // memory; `syscall` clobbers rcx and r11 (declared) and returns in rax.
    unsafe {
        asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret, in("rdi") ARCH_REQ_XCOMP_PERM,
             in("rsi") XFEATURE_XTILEDATA as i64, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    if ret != 0 {
        return Err(format!("arch_prctl(ARCH_REQ_XCOMP_PERM, 18) failed: errno {}", -ret));
    }
    let mut perm: u64 = 0;
    let ret: i64;
    // SAFETY: ARCH_GET_XCOMP_PERM writes one u64 to the address in rsi, which is `perm`.
    unsafe {
        asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret, in("rdi") ARCH_GET_XCOMP_PERM,
             in("rsi") &mut perm as *mut u64, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    if ret != 0 || (perm >> XFEATURE_XTILEDATA) & 1 == 0 {
        return Err(format!("ARCH_GET_XCOMP_PERM: {ret}, permissions {perm:#x}"));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn request_permission() -> Result<(), String> {
    Err("AMX permission handling is implemented for Linux only".into())
}

/// The 64-byte `ldtilecfg` operand (palette 1).
#[repr(C, align(64))]
struct TileCfg {
    palette: u8,
    start_row: u8,
    _reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

thread_local! {
    /// This thread's configured row counts `(top, bottom)`; `(0, 0)`: not configured.
    static ROWS: Cell<(u8, u8)> = const { Cell::new((0, 0)) };
}

/// Configures this thread's tiles for a block with halves of `top` and `bot` rows (1..=16),
/// unless they already are.
fn configure(top: u8, bot: u8) {
    if ROWS.get() == (top, bot) {
        return;
    }
    let mut c = TileCfg { palette: 1, start_row: 0, _reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
    c.colsb[..8].fill(64);
    c.rows[..8].copy_from_slice(&[top, top, bot, bot, top, bot, 16, 16]);
    // SAFETY: AMX is usable in this process (an `Amx` token exists); `c` is a valid palette-1
    // configuration (8 tiles, rows ≤ 16, 64 bytes per row, reserved bytes zero).
    unsafe { asm!("ldtilecfg [{}]", in(reg) &c as *const TileCfg, options(nostack, readonly, preserves_flags)) };
    ROWS.set((top, bot));
}

/// One block: `MT` 16-row halves × `NT` panels (see the module documentation).
///
/// # Safety
/// This thread's tiles are configured for the block's rows; for every configured row `i` and
/// run `r`, `a + i·lda + r.a ..+ r.units·64` is readable, `b[p] + r.b ..+ r.units·1024` too, and
/// `c` holds 32 rows of `ACC_PITCH` i32.
#[inline]
unsafe fn block<const MT: usize, const NT: usize>(
    a: *const u8,
    lda: usize,
    plan: &KPlan,
    b: [*const i8; 2],
    c: *mut i32,
) {
    // SAFETY (whole body): the caller's contract; tile registers are invisible to the compiler,
    // so separate `asm!` statements keep them.
    unsafe {
        asm!("tilezero tmm0", options(nostack, nomem, preserves_flags));
        if NT == 2 {
            asm!("tilezero tmm1", options(nostack, nomem, preserves_flags));
        }
        if MT == 2 {
            asm!("tilezero tmm2", options(nostack, nomem, preserves_flags));
            if NT == 2 {
                asm!("tilezero tmm3", options(nostack, nomem, preserves_flags));
            }
        }
        let a_bot = a.add(16 * lda);
        for r in plan.runs() {
            let (mut pa, mut pab) = (a.add(r.a), a_bot.add(r.a));
            let (mut b0, mut b1) = (b[0].add(r.b), b[1].add(r.b));
            for _ in 0..r.units {
                asm!("tileloadd tmm4, [{p} + {s}*1]", p = in(reg) pa, s = in(reg) lda, options(nostack, readonly, preserves_flags));
                asm!("tileloadd tmm6, [{p} + {s}*1]", p = in(reg) b0, s = in(reg) 64usize, options(nostack, readonly, preserves_flags));
                asm!("tdpbusd tmm0, tmm4, tmm6", options(nostack, nomem, preserves_flags));
                if NT == 2 {
                    asm!("tileloadd tmm7, [{p} + {s}*1]", p = in(reg) b1, s = in(reg) 64usize, options(nostack, readonly, preserves_flags));
                    asm!("tdpbusd tmm1, tmm4, tmm7", options(nostack, nomem, preserves_flags));
                }
                if MT == 2 {
                    asm!("tileloadd tmm5, [{p} + {s}*1]", p = in(reg) pab, s = in(reg) lda, options(nostack, readonly, preserves_flags));
                    asm!("tdpbusd tmm2, tmm5, tmm6", options(nostack, nomem, preserves_flags));
                    if NT == 2 {
                        asm!("tdpbusd tmm3, tmm5, tmm7", options(nostack, nomem, preserves_flags));
                    }
                }
                pa = pa.add(64);
                pab = pab.add(64);
                b0 = b0.add(1024);
                b1 = b1.add(1024);
            }
        }
        let ldc = ACC_PITCH * 4;
        asm!("tilestored [{p} + {s}*1], tmm0", p = in(reg) c, s = in(reg) ldc, options(nostack, preserves_flags));
        if NT == 2 {
            asm!("tilestored [{p} + {s}*1], tmm1", p = in(reg) c.add(16), s = in(reg) ldc, options(nostack, preserves_flags));
        }
        if MT == 2 {
            let cb = c.add(16 * ACC_PITCH);
            asm!("tilestored [{p} + {s}*1], tmm2", p = in(reg) cb, s = in(reg) ldc, options(nostack, preserves_flags));
            if NT == 2 {
                asm!("tilestored [{p} + {s}*1], tmm3", p = in(reg) cb.add(16), s = in(reg) ldc, options(nostack, preserves_flags));
            }
        }
    }
}

impl Int8Kernel for Amx {
    const NAME: &'static str = "amx-int8";
    const MR: usize = 32;
    const UNIT: usize = 64;

    fn task_begin(self) {}

    fn task_end(self) {
        if ROWS.get() != (0, 0) {
            // SAFETY: AMX is usable (the token exists); `tilerelease` has no operands.
            unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
            ROWS.set((0, 0));
        }
    }

    fn gemm(self, m: usize, a: ARows<'_>, plan: &KPlan, b: &[i8], panels: &[usize], acc: &mut AccTile) {
        assert!((1..=32).contains(&m) && (1..=2).contains(&panels.len()) && plan.unit() == 64, "block shape");
        // Whole 16-row halves where the activations have the rows (the rows past `m` give sums
        // nobody reads), so that the configuration rarely changes; else exactly `m` rows.
        let whole = if m > 16 { 32 } else { 16 };
        if plan.fits(whole, &a, panels, b.len()) {
            configure(16, 16);
        } else {
            assert!(plan.fits(m, &a, panels, b.len()), "block reads out of bounds");
            let (top, bot) = if m > 16 { (16, (m - 16) as u8) } else { (m as u8, ROWS.get().1.max(1)) };
            configure(top, bot);
        }
        let pa = a.data[a.a0..].as_ptr();
        let pb = [b[panels[0]..].as_ptr(), b[panels[panels.len() - 1]..].as_ptr()];
        let c = acc.0.as_mut_ptr();
        // SAFETY: the tiles are configured for whole halves or for `m` rows, and `plan.fits`
        // (checked above for the configured rows) bounds every configured row's runs inside
        // `a.data` and every panel's units inside `b`; `acc` holds 32 rows of `ACC_PITCH` i32.
        unsafe {
            match (m > 16, panels.len() == 2) {
                (true, true) => block::<2, 2>(pa, a.lda, plan, pb, c),
                (true, false) => block::<2, 1>(pa, a.lda, plan, pb, c),
                (false, true) => block::<1, 2>(pa, a.lda, plan, pb, c),
                (false, false) => block::<1, 1>(pa, a.lda, plan, pb, c),
            }
        }
    }
    fn requant_tile(
        self,
        acc: &AccTile,
        m: usize,
        rowsums: &[i32],
        ep: &Epi<'_>,
        chans: std::ops::Range<usize>,
        dst: (&mut [u8], usize),
    ) {
        self.0.requant_tile(acc, m, rowsums, ep, chans, dst)
    }
    fn requant_line(self, acc: &[i32], ch: &EpiChannel, out: &mut [u8]) {
        self.0.requant_line(acc, ch, out)
    }
    fn dw_line(self, p: &[i32], taps: &[(usize, i32)], acc: &mut [i32]) {
        self.0.dw_line(p, taps, acc)
    }
    fn pair_row(self, src: &[u8], zp: i32, delta: usize, dst: &mut [i32]) {
        self.0.pair_row(src, zp, delta, dst)
    }
}
