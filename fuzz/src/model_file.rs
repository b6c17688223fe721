//! The `model_file` fuzz target's logic (run by `fuzz_targets/model_file.rs` and replayed over
//! the corpus by the main crate's `tests/fuzz_corpus.rs`).
//!
//! Arbitrary bytes as a safetensors model file: parse (from memory and as a stream), build every
//! module it declares (from the whole state dict and from that module's entries alone), and run
//! each on small inputs. Properties: no panic, every error is one short line, parse → serialise →
//! parse is stable, a stream reads what memory reads, and loading one module alone gives the
//! module that the whole file gives.

use qconv::io::{ModelFile, StateDict};
use qconv::{AnyConv, AnyQuantizedConv, QuantizedTensor, Tensor};

use super::{check_err, exercise_forward};

/// Runs one input.
pub fn run(data: &[u8]) {
    // The same bytes as a stream (front to back, ranges skipped, trailing bytes checked).
    let streamed = ModelFile::from_stream(std::io::Cursor::new(data.to_vec()), "fuzz").and_then(|f| f.load_all());
    let sd = match StateDict::from_bytes(data) {
        Ok(sd) => sd,
        Err(e) => {
            if let Err(e2) = &streamed {
                check_err("from_stream", e2);
            } else {
                panic!("from_bytes failed ({e}) but the stream loaded");
            }
            return check_err("from_bytes", &e);
        }
    };
    match streamed {
        // (Compared as text: NaN elements are not equal to themselves.)
        Ok(s) => assert_eq!(format!("{s:?}"), format!("{sd:?}"), "a stream read differs from the bytes read"),
        Err(e) => panic!("from_bytes loaded but the stream failed: {e}"),
    }
    // A parsed state dict serialises, and re-parses to the same content.
    match sd.to_bytes() {
        Ok(bytes) => {
            let sd2 = StateDict::from_bytes(&bytes).expect("to_bytes output must parse");
            assert_eq!(format!("{sd:?}"), format!("{sd2:?}"), "state dict round trip changed the content");
        }
        Err(e) => check_err("to_bytes", &e),
    }
    for prefix in sd.module_prefixes().iter().take(8) {
        lowered(&sd, prefix);
        let whole = AnyConv::from_state_dict(&sd, prefix);
        if let Err(e) = &whole {
            check_err("from_state_dict", e);
        }
        // The module's entries alone (what `AnyConv::from_file` reads), moved into the module.
        let alone = ModelFile::from_bytes(data)
            .and_then(|mut f| f.load_module(prefix))
            .and_then(|part| AnyConv::from_state_dict_owned(part, prefix));
        match (&whole, &alone) {
            (Ok(a), Ok(b)) => assert_eq!(a.to_string(), b.to_string(), "loading {prefix:?} alone differs"),
            (Err(_), Err(e)) => check_err("from_state_dict_owned", e),
            (a, b) => panic!("whole file {:?} vs module alone {:?}", a.as_ref().err(), b.as_ref().err()),
        }
        let m = match AnyConv::from_state_dict_lenient(&sd, prefix) {
            Ok((m, _)) => m,
            Err(e) => {
                check_err("from_state_dict_lenient", &e);
                continue;
            }
        };
        if let Err(e) = m.get_quantized_weight() {
            check_err("get_quantized_weight", &e);
        }
        let d = m.spatial_dims();
        let c = m.in_channels();
        // A few small inputs: batched and unbatched, spatial sizes 0, 1, 3, 6.
        for (i, size) in [1usize, 3, 6, 0].into_iter().enumerate() {
            let batched = i % 2 == 0;
            let mut shape = if batched { vec![1, c] } else { vec![c] };
            shape.extend(std::iter::repeat_n(size, d));
            let n: usize = match shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b)) {
                Some(n) if n <= 4096 => n,
                _ => continue,
            };
            let v: Vec<f32> = (0..n).map(|j| ((j * 7919 % 23) as f32 - 11.0) / 8.0).collect();
            let x = Tensor::from_vec(v, &shape).expect("valid input tensor");
            exercise_forward(&m, &x, None);
        }
    }
}

/// A lowered int8 entry: loads or fails with a clean error; a loaded module survives a state-dict
/// round trip unchanged and runs small u8 inputs (the output has the predicted channel count and
/// the module's output qparams), or fails cleanly.
fn lowered(sd: &StateDict, prefix: &str) {
    let m = match AnyQuantizedConv::from_state_dict_lenient(sd, prefix) {
        Ok((m, _)) => m,
        Err(e) => return check_err("AnyQuantizedConv::from_state_dict_lenient", &e),
    };
    let back = AnyQuantizedConv::from_state_dict(&m.state_dict("q."), "q.").expect("a saved lowered module must load");
    assert_eq!(
        format!("{:?}", m.state_dict("")),
        format!("{:?}", back.state_dict("")),
        "lowered round trip changed it"
    );
    let d = m.spatial_dims();
    let c = m.in_channels();
    for (i, size) in [1usize, 3, 0].into_iter().enumerate() {
        let mut shape = vec![1, c];
        shape.extend(std::iter::repeat_n(size, d));
        let n: usize = match shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b)) {
            Some(n) if n <= 4096 => n,
            _ => continue,
        };
        let codes: Vec<u8> = (0..n).map(|j| (j * 37 % 256) as u8).collect();
        let zp = [0i64, 128, 255][i];
        let x = QuantizedTensor::from_codes(codes, &shape, 0.02, zp).expect("valid u8 input");
        match m.conv_problem(&shape) {
            Ok(p) if !super::affordable(&p) => continue,
            Ok(_) => {}
            Err(e) => {
                check_err("AnyQuantizedConv::conv_problem", &e);
                assert!(m.forward(&x).is_err(), "conv_problem failed ({e}) but forward succeeded");
                continue;
            }
        }
        match m.forward(&x) {
            Ok(y) => {
                assert_eq!(y.shape().get(1), Some(&m.out_channels()), "lowered output channels");
                assert_eq!(y.zero_point(), m.output_qparams().zero_point(), "lowered output zero point");
            }
            Err(e) => check_err("AnyQuantizedConv::forward", &e),
        }
    }
}
