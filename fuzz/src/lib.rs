//! The qconv fuzz targets' logic ([`model_file`], [`module_config`]) and the helpers they share:
//! error-message checks, a work cap, and the properties every built module must satisfy.
//!
//! The targets in `fuzz_targets/` only call [`model_file::run`] and [`module_config::run`]; the
//! main crate's `tests/fuzz_corpus.rs` includes this file as a module and replays every file of
//! `fuzz/corpus/` and `fuzz/regressions/` through the same functions.

pub mod model_file;
pub mod module_config;

use qconv::io::StateDict;
use qconv::problem::ConvProblem;
use qconv::{AnyConv, Tensor};

/// Largest output (elements) a fuzz input may make `forward` produce.
pub const MAX_OUT: u128 = 200_000;
/// Largest multiply-add count a fuzz input may make `forward` run.
pub const MAX_MACS: u128 = 4_000_000;
/// Largest tensor (elements) a harness allocates.
pub const MAX_ELEMS: usize = 100_000;

/// Property: every error carries a non-empty message of one line and at most
/// `qconv::error::MESSAGE_MAX` bytes.
pub fn check_err(ctx: &str, e: &qconv::Error) {
    let s = e.to_string();
    assert!(!s.trim().is_empty(), "{ctx}: error with an empty message: {e:?}");
    assert!(s.len() <= qconv::error::MESSAGE_MAX && !s.contains('\n'), "{ctx}: not one short line: {s:?}");
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
        // The padded input the engines walk (rows of a huge replicate/reflect padding are
        // materialised, e.g. 1000 rows of padding around 7): its volume counts as work too.
        let padded = (0..3).try_fold(prod(&[p.batch, p.in_channels])?, |a, d| {
            a.checked_mul((p.in_size[d] as u128).checked_add(2 * p.pad[d] as u128)?)
        })?;
        Some(out <= MAX_OUT && inp <= MAX_OUT && macs <= MAX_MACS && padded <= MAX_MACS)
    };
    f().unwrap_or(false)
}

/// Runs `forward` when affordable and checks: errors have messages, `conv_problem` and `forward`
/// agree on success/failure, and the output has the predicted shape and the input's dtype.
pub fn exercise_forward(m: &AnyConv, x: &Tensor, os: Option<&[usize]>) {
    let p = match conv_problem(m, x.shape(), os) {
        Ok(p) => p,
        Err(e) => {
            check_err("conv_problem", &e);
            match match os {
                Some(o) => m.forward_with_output_size(x, o),
                None => m.forward(x),
            } {
                Ok(y) => panic!("conv_problem failed ({e}) but forward succeeded with shape {:?}", y.shape()),
                Err(e2) => check_err("forward", &e2),
            }
            return;
        }
    };
    if !affordable(&p) {
        return;
    }
    match match os {
        Some(o) => m.forward_with_output_size(x, o),
        None => m.forward(x),
    } {
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
            // The channels-last entry point computes the same bits on the permuted tensors.
            let batched = x.ndim() == d + 2;
            let xl = move_channels(x, batched, true);
            // Compared bit for bit (NaN outputs compare unequal as numbers).
            let bits = |t: &Tensor| t.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            match match os {
                Some(o) => m.forward_channels_last_with_output_size(&xl, o),
                None => m.forward_channels_last(&xl),
            } {
                Ok(yl) => {
                    let back = move_channels(&yl, batched, false);
                    assert_eq!(back.shape(), y.shape(), "forward_channels_last: shape");
                    assert!(
                        bits(&back) == bits(&y),
                        "forward_channels_last differs from forward (input {:?}): {:?} vs {:?}",
                        x.shape(),
                        &back.to_vec_f32().unwrap()[..back.numel().min(8)],
                        &y.to_vec_f32().unwrap()[..y.numel().min(8)]
                    );
                }
                Err(e) => panic!("forward succeeded but forward_channels_last failed: {e}"),
            }
        }
        Err(e) => check_err("forward", &e),
    }
}

/// Moves the channel dimension: `to_last` `[N, C, *s]` → `[N, *s, C]` (unbatched `[C, *s]` →
/// `[*s, C]`), else back.
fn move_channels(x: &Tensor, batched: bool, to_last: bool) -> Tensor {
    let shape = x.shape().to_vec();
    let lead = usize::from(batched);
    let n = if batched { shape[0] } else { 1 };
    let (c, new_shape) = if to_last {
        let mut v = shape[..lead].to_vec();
        v.extend_from_slice(&shape[lead + 1..]);
        v.push(shape[lead]);
        (shape[lead], v)
    } else {
        let mut v = shape[..lead].to_vec();
        v.push(shape[shape.len() - 1]);
        v.extend_from_slice(&shape[lead..shape.len() - 1]);
        (shape[shape.len() - 1], v)
    };
    let v = x.to_vec_f32().unwrap();
    let per = v.len().checked_div(n * c).unwrap_or(0);
    let mut out = vec![0f32; v.len()];
    for b in 0..n {
        for ch in 0..c {
            for s in 0..per {
                let (from, to) = if to_last { (ch * per + s, s * c + ch) } else { (s * c + ch, ch * per + s) };
                out[b * c * per + to] = v[b * c * per + from];
            }
        }
    }
    Tensor::from_vec(out, &new_shape).unwrap().to_dtype(x.dtype()).unwrap()
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
    let a = m.get_weight().to_vec_f32().unwrap();
    let b = m2.get_weight().to_vec_f32().unwrap();
    assert!(
        a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "round trip changed get_weight()"
    );
}
