//! The PyTorch fixtures (`tests/fixtures/int8.safetensors`, written by
//! `scripts/gen_int8_fixtures.py` from real PyTorch runs): every case's `output` codes, bit for
//! bit, through the engine and a requantization table built from the case's qparams, on every
//! kernel level and both layouts; and the exact oracle on the same cases.

use super::{run_case, to_layout, Case};
use crate::cpu::int8::{ActivationLayout, Int8Isa};
use crate::io::{StateDict, StoredData, StoredTensor};
use crate::oracle::conv_int8_naive;
use crate::problem::{ConvProblem, PaddingMode};
use crate::quant::{RequantParams, RequantTable, WeightScales};

fn f64s(t: &StoredTensor) -> Vec<f64> {
    match &t.data {
        StoredData::F64(v) => v.clone(),
        StoredData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        other => panic!("expected a float tensor, found {}", other.dtype_name()),
    }
}

fn ints(t: &StoredTensor) -> Vec<i64> {
    match &t.data {
        StoredData::I64(v) => v.clone(),
        StoredData::I32(v) => v.iter().map(|&x| x as i64).collect(),
        other => panic!("expected an integer tensor, found {}", other.dtype_name()),
    }
}

fn list(v: &serde_json::Value, key: &str) -> Vec<usize> {
    v[key].as_array().unwrap_or_else(|| panic!("{key}")).iter().map(|x| x.as_u64().expect("integer") as usize).collect()
}

/// The case `name` of the fixture file: its problem, data and table, and the expected codes.
fn load_case(sd: &StateDict, name: &str) -> (Case, Vec<u8>) {
    let t = |k: &str| sd.tensors.get(&format!("{name}.{k}")).unwrap_or_else(|| panic!("{name}.{k}"));
    let meta = |k: &str| sd.metadata.get(&format!("{name}.{k}")).unwrap_or_else(|| panic!("{name}.{k}")).clone();
    let m: serde_json::Value = serde_json::from_str(&meta("module")).expect("module JSON");
    let transposed = m["type"].as_str().expect("type").contains("Transpose");
    let ks = list(&m, "kernel_size");
    let nd = ks.len();
    let pad3 = |v: Vec<usize>, fill: usize| -> [usize; 3] {
        let mut a = [fill; 3];
        a[3 - nd..].copy_from_slice(&v);
        a
    };
    let (kernel, stride, pad, dil) =
        (pad3(ks, 1), pad3(list(&m, "stride"), 1), pad3(list(&m, "padding"), 0), pad3(list(&m, "dilation"), 1));
    let out_pad = if transposed { pad3(list(&m, "output_padding"), 0) } else { [0; 3] };
    let input = t("input");
    let x = match &input.data {
        StoredData::U8(v) => v.clone(),
        other => panic!("input is {}", other.dtype_name()),
    };
    let in_size = pad3(input.shape[2..].to_vec(), 1);
    let mut out_size = [1; 3];
    for d in 0..3 {
        out_size[d] = if transposed {
            (in_size[d] - 1) * stride[d] + dil[d] * (kernel[d] - 1) + out_pad[d] + 1 - 2 * pad[d]
        } else {
            (in_size[d] + 2 * pad[d] - dil[d] * (kernel[d] - 1) - 1) / stride[d] + 1
        };
    }
    let pad_mode: PaddingMode = m["padding_mode"].as_str().expect("padding_mode").parse().expect("mode");
    let p = ConvProblem {
        transposed,
        batch: input.shape[0],
        in_channels: m["in_channels"].as_u64().unwrap() as usize,
        out_channels: m["out_channels"].as_u64().unwrap() as usize,
        groups: m["groups"].as_u64().unwrap() as usize,
        in_size,
        out_size,
        kernel,
        stride,
        pad,
        dilation: dil,
        pad_mode,
    };
    let w = match &t("weight").data {
        StoredData::I8(v) => v.clone(),
        other => panic!("weight is {}", other.dtype_name()),
    };
    let wzp: Vec<i32> = ints(t("weight_zero_point")).iter().map(|&v| v as i32).collect();
    let ws = f64s(t("weight_scale"));
    let per_channel = meta("weight_qscheme") == "torch.per_channel_affine";
    let bias = sd.tensors.get(&format!("{name}.bias")).map(|b| match &b.data {
        StoredData::F32(v) => v.clone(),
        other => panic!("bias is {}", other.dtype_name()),
    });
    let params = RequantParams {
        input_scale: f64s(t("input_scale"))[0],
        weight_scales: if per_channel { WeightScales::PerChannel(&ws) } else { WeightScales::PerTensor(ws[0]) },
        output_scale: f64s(t("scale"))[0],
        output_zero_point: ints(t("zero_point"))[0] as i32,
        bias: bias.as_deref(),
        relu: m["relu"].as_bool().unwrap_or(false),
    };
    let table = RequantTable::new(transposed, p.out_channels, p.groups, &params).expect("table");
    let want = match &t("output").data {
        StoredData::U8(v) => v.clone(),
        other => panic!("output is {}", other.dtype_name()),
    };
    let xzp = ints(t("input_zero_point"))[0] as i32;
    (Case { p, x, xzp, w, wzp, table }, want)
}

#[test]
fn pytorch_fixtures_bit_exact() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/int8.safetensors");
    let sd = StateDict::load(path).expect("fixture file");
    let cases: Vec<String> = serde_json::from_str(&sd.metadata["__cases__"]).expect("case list");
    assert_eq!(cases.len(), 74);
    let mut checked = 0;
    for name in &cases {
        let (case, want) = load_case(&sd, name);
        let oracle = conv_int8_naive(&case.p, &case.w, &case.wzp, &case.x, case.xzp, &case.table);
        assert_eq!(oracle, want, "{name}: the integer oracle");
        for level in Int8Isa::available() {
            for layout in [ActivationLayout::ChannelsFirst, ActivationLayout::ChannelsLast] {
                let got = run_case(&case, level, layout);
                let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                assert_eq!(bad, 0, "{name}: {level:?} {layout:?}: {bad} of {} codes differ", want.len());
                checked += 1;
            }
        }
    }
    assert!(checked >= 74 * 2);
    // The layout helper round-trips.
    let x: Vec<u8> = (0..24).collect();
    assert_eq!(to_layout(&to_layout(&x, 2, 3, false), 2, 3, true), x);
}
