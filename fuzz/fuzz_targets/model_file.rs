//! Arbitrary bytes as a safetensors model file: parse, build every module it declares, and run
//! each on small inputs. Property: no panic, every error has a message, parse→serialise→parse is
//! stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qconv::io::StateDict;
use qconv::{AnyConv, Tensor};
use qconv_fuzz::{check_err, exercise_forward};

fuzz_target!(|data: &[u8]| {
    let sd = match StateDict::from_bytes(data) {
        Ok(sd) => sd,
        Err(e) => return check_err("from_bytes", &e),
    };
    // A parsed state dict serialises, and re-parses to the same content.
    match sd.to_bytes() {
        Ok(bytes) => {
            let sd2 = StateDict::from_bytes(&bytes).expect("to_bytes output must parse");
            assert_eq!(format!("{sd:?}"), format!("{sd2:?}"), "state dict round trip changed the content");
        }
        Err(e) => check_err("to_bytes", &e),
    }
    for prefix in sd.module_prefixes().iter().take(8) {
        if let Err(e) = AnyConv::from_state_dict(&sd, prefix) {
            check_err("from_state_dict", &e);
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
            shape.extend(std::iter::repeat(size).take(d));
            let n: usize = match shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b)) {
                Some(n) if n <= 4096 => n,
                _ => continue,
            };
            let v: Vec<f32> = (0..n).map(|j| ((j * 7919 % 23) as f32 - 11.0) / 8.0).collect();
            let x = Tensor::from_vec(v, &shape).expect("valid input tensor");
            exercise_forward(&m, &x, None);
        }
    }
});
