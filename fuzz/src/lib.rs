//! Helpers shared by the qconv fuzz targets: error-message checks, a work cap, and the
//! properties every built module must satisfy.

use qconv::cpu::ConvProblem;
use qconv::io::StateDict;
use qconv::{AnyConv, Tensor};

/// Largest output (elements) a fuzz input may make `forward` produce.
pub const MAX_OUT: u128 = 200_000;
/// Largest multiply-add count a fuzz input may make `forward` run.
pub const MAX_MACS: u128 = 4_000_000;
/// Largest tensor (elements) a harness allocates.
pub const MAX_ELEMS: usize = 100_000;

/// Property: every error carries a non-empty message.
pub fn check_err(ctx: &str, e: &qconv::Error) {
    let s = e.to_string();
    assert!(!s.trim().is_empty(), "{ctx}: error with an empty message: {e:?}");
}

/// `ConvModule::conv_problem` of whichever module `m` holds.
pub fn conv_problem(m: &AnyConv, shape: &[usize], os: Option<&[usize]>) -> qconv::Result<ConvProblem> {
    match m {
        AnyConv::Conv1d(m) => m.conv_problem(shape, os),
        AnyConv::Conv2d(m) => m.conv_problem(shape, os),
        AnyConv::Conv3d(m) => m.conv_problem(shape, os),
        AnyConv::ConvTranspose1d(m) => m.conv_problem(shape, os),
        AnyConv::ConvTranspose2d(m) => m.conv_problem(shape, os),
        AnyConv::ConvTranspose3d(m) => m.conv_problem(shape, os),
    }
}

fn prod(v: &[usize]) -> Option<u128> {
    v.iter().try_fold(1u128, |a, &b| a.checked_mul(b as u128))
}

/// Whether running `p` stays within the harness's work cap.
pub fn affordable(p: &ConvProblem) -> bool {
    let f = || -> Option<bool> {
        let out = prod(&[p.batch, p.out_channels])?.checked_mul(prod(&p.out_size)?)?;
        let inp = prod(&[p.batch, p.in_channels])?.checked_mul(prod(&p.in_size)?)?;
        let k = prod(&p.kernel)?;
        let g = p.groups.max(1);
        let macs = if p.transposed {
            // The CPU engine runs transposed convolutions in gather form: its cost grows with
            // output × input channels × kernel taps (most taps are skipped by stride), not with
            // the scatter form's input × output channels × taps.
            let scatter = inp.checked_mul((p.out_channels / g) as u128)?.checked_mul(k)?;
            let gather = out.checked_mul((p.in_channels / g) as u128)?.checked_mul(k)?;
            scatter.max(gather)
        } else {
            out.checked_mul((p.in_channels / g) as u128)?.checked_mul(k)?
        };
        Some(out <= MAX_OUT && inp <= MAX_OUT && macs <= MAX_MACS)
    };
    f().unwrap_or(false)
}

/// Runs `forward` when affordable and checks: errors have messages, `conv_problem` and `forward`
/// agree on success/failure, and the output has the predicted shape and the input's dtype.
pub fn exercise_forward(m: &AnyConv, x: &Tensor, os: Option<&[usize]>) {
    // Open finding 5 (reported): padding='same' computes `dilation * (kernel - 1)` unchecked
    // (src/conv/options.rs, padding_amounts). Skip such modules so the fuzzer can look further.
    let same_overflows = match m {
        AnyConv::Conv1d(m) => same_overflow(m.options()),
        AnyConv::Conv2d(m) => same_overflow(m.options()),
        AnyConv::Conv3d(m) => same_overflow(m.options()),
        _ => false,
    };
    if same_overflows {
        return;
    }
    let p = match conv_problem(m, x.shape(), os) {
        Ok(p) => p,
        Err(e) => {
            check_err("conv_problem", &e);
            match m.forward(x, os) {
                Ok(y) => panic!("conv_problem failed ({e}) but forward succeeded with shape {:?}", y.shape()),
                Err(e2) => check_err("forward", &e2),
            }
            return;
        }
    };
    if !affordable(&p) {
        return;
    }
    match m.forward(x, os) {
        Ok(y) => {
            let d = m.spatial_dims();
            let mut want = Vec::new();
            if x.ndim() == d + 2 {
                want.push(p.batch);
            }
            want.push(m.out_channels());
            want.extend_from_slice(&p.out_size[3 - d..]);
            assert_eq!(y.shape(), want.as_slice(), "forward output shape differs from conv_problem's");
            assert_eq!(y.dtype(), x.dtype(), "forward changed the dtype");
        }
        Err(e) => check_err("forward", &e),
    }
}

fn same_overflow<const D: usize>(o: &qconv::ConvOptions<D>) -> bool {
    o.padding == qconv::Padding::Same
        && (0..D).any(|d| o.dilation[d].checked_mul(o.kernel_size[d].saturating_sub(1)).is_none())
}

/// Property: a built module survives state_dict → safetensors bytes → AnyConv::from_state_dict
/// exactly (same type, hyper-parameters, qparams and bit-identical fake-quantized weight).
pub fn check_roundtrip(m: &AnyConv) {
    let sd = m.state_dict("m.");
    let bytes = match sd.to_bytes() {
        Ok(b) => b,
        Err(e) => panic!("the state dict of a valid module does not serialise: {e}"),
    };
    let sd2 = match StateDict::from_bytes(&bytes) {
        Ok(s) => s,
        Err(e) => panic!("the bytes written by to_bytes do not parse: {e}"),
    };
    let m2 = match AnyConv::from_state_dict(&sd2, "m.") {
        Ok(m2) => m2,
        Err(e) => panic!("save→load round trip of {m} ({:?}) failed: {e}", m.weight_qparams()),
    };
    assert_eq!(m.to_string(), m2.to_string(), "round trip changed the module");
    assert_eq!(
        format!("{:?}", m.weight_qparams()),
        format!("{:?}", m2.weight_qparams()),
        "round trip changed the qparams"
    );
    let a = m.get_weight().to_vec_f32();
    let b = m2.get_weight().to_vec_f32();
    assert!(
        a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "round trip changed get_weight()"
    );
}
