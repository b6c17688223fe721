//! Strict module metadata and short errors (issue 13 items 12 and 13): every field of the module
//! JSON is checked for presence and JSON type with a precise message, unknown fields are errors
//! naming the nearest known field, and every error is one line of a few hundred bytes however
//! long the values a file holds.

use qconv::error::MESSAGE_MAX;
use qconv::io::{ModelFile, StateDict};
use qconv::quant::{QParamData, QParamTensor};
use qconv::{AnyConv, Conv2d, ConvOptions, ConvTranspose2d, Error, QuantDType, Tensor, WeightQParams};

fn module() -> AnyConv {
    let w = Tensor::from_vec((0..4 * 3 * 9).map(|i| i as f32 * 0.01 - 0.5).collect(), &[4, 3, 3, 3]).unwrap();
    let qp = WeightQParams::per_channel_symmetric_from_weight(&w, 0, QuantDType::QInt8).unwrap();
    AnyConv::Conv2d(Conv2d::from_float(w, None, qp, ConvOptions::new().kernel_size([3, 3])).unwrap())
}

/// The module's state dict under `p.` with its JSON edited by `edit`.
fn with_json(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> StateDict {
    let mut sd = module().state_dict("p.");
    let mut v: serde_json::Value = serde_json::from_str(&sd.metadata["p.module"]).unwrap();
    edit(v.as_object_mut().unwrap());
    sd.metadata.insert("p.module".into(), v.to_string());
    sd
}

fn err(sd: &StateDict) -> String {
    let e = AnyConv::from_state_dict(sd, "p.").unwrap_err();
    assert!(matches!(e, Error::StateDictValue { .. } | Error::StateDictKeys { .. }), "{e}");
    let s = e.to_string();
    assert!(!s.contains('\n') && s.len() <= MESSAGE_MAX, "{s:?}");
    s
}

#[test]
fn a_misspelt_field_is_an_error_naming_the_nearest_known_one() {
    let sd = with_json(|m| {
        let p = m.remove("padding").unwrap();
        m.insert("paddding".into(), p);
    });
    let e = err(&sd);
    assert!(e.contains("unknown field \"paddding\"") && e.contains("nearest known field is \"padding\""), "{e}");
    for (typo, near) in
        [("strides", "stride"), ("kernelsize", "kernel_size"), ("bais", "bias"), ("in_chanels", "in_channels")]
    {
        let sd = with_json(|m| {
            m.insert(typo.into(), serde_json::json!(1));
        });
        let e = err(&sd);
        assert!(e.contains(&format!("\"{typo}\"")) && e.contains(&format!("\"{near}\"")), "{e}");
    }
    // output_padding is a transposed convolution's field only.
    let sd = with_json(|m| {
        m.insert("output_padding".into(), serde_json::json!([0, 0]));
    });
    assert!(err(&sd).contains("only valid for transposed convolutions"));
    // ... and accepted on one.
    let w = Tensor::from_vec(vec![0.5f32; 3 * 2 * 4], &[3, 2, 2, 2]).unwrap();
    let t = ConvTranspose2d::from_float(
        w,
        None,
        WeightQParams::none(),
        ConvOptions::new().kernel_size([2, 2]).stride([2, 2]),
    )
    .unwrap();
    assert!(AnyConv::from_state_dict(&t.state_dict("q."), "q.").is_ok());
}

#[test]
fn every_field_reports_its_real_fault() {
    use serde_json::json;
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("type", json!(2), "\"type\" must be a string, not the number 2"),
        ("type", json!(null), "\"type\" must be a string, not null"),
        ("in_channels", json!("3"), "\"in_channels\" must be a non-negative integer, not the string \"3\""),
        (
            "out_channels",
            json!(-4),
            "\"out_channels\" must be a non-negative integer that fits usize, not the number -4",
        ),
        ("out_channels", json!(4.5), "not the number 4.5"),
        (
            "kernel_size",
            json!(true),
            "\"kernel_size\" must be a non-negative integer or a list of 2 of them, not the boolean true",
        ),
        ("kernel_size", json!([3]), "\"kernel_size\" must list 2 values"),
        ("stride", json!([1, "1"]), "\"stride\" must be a non-negative integer, not the string \"1\""),
        ("padding", json!("full"), "\"padding\" \"full\" must be \"same\", \"valid\""),
        (
            "padding",
            json!({"a": 1}),
            "\"padding\" must be a non-negative integer or a list of 2 of them, not an object",
        ),
        ("dilation", json!(null), "\"dilation\" must be a non-negative integer or a list of 2 of them, not null"),
        ("groups", json!([1]), "\"groups\" must be a non-negative integer, not the list [1]"),
        ("bias", json!(1), "\"bias\" must be true or false, not the number 1"),
        ("padding_mode", json!(3), "\"padding_mode\" must be a string, not the number 3"),
    ];
    for (field, value, want) in cases {
        let sd = with_json(|m| {
            m.insert(field.into(), value.clone());
        });
        let e = err(&sd);
        assert!(e.contains(want), "{field} = {value}: {e}");
    }
    for field in ["type", "in_channels", "out_channels", "kernel_size"] {
        let sd = with_json(|m| {
            m.remove(field);
        });
        let e = err(&sd);
        assert!(e.contains(&format!("\"{field}\" is missing")), "{e}");
    }
    let mut sd = module().state_dict("p.");
    sd.metadata.insert("p.module".into(), "[1, 2]".into());
    assert!(err(&sd).contains("must be a JSON object, not the list [1,2]"));
    sd.metadata.insert("p.module".into(), "{\"type\": ".into());
    assert!(err(&sd).contains("invalid JSON"));
    // ConvModule::from_state_dict (a known type) checks the same way.
    let sd = with_json(|m| {
        m.insert("paddding".into(), serde_json::json!(1));
    });
    assert!(Conv2d::from_state_dict(&sd, "p.").unwrap_err().to_string().contains("\"paddding\""));
}

#[test]
fn a_missing_quant_bound_is_not_shown_as_a_sentinel() {
    let w = Tensor::from_vec(vec![0.25f32; 4 * 3 * 9], &[4, 3, 3, 3]).unwrap();
    let mut qp = WeightQParams::per_tensor(0.1, 0, QuantDType::QInt8).decomposed(true);
    qp.quant_min = Some(-100);
    let e = Conv2d::from_float(w.clone(), None, qp, ConvOptions::new().kernel_size([3, 3])).unwrap_err();
    let s = e.to_string();
    assert!(s.contains("[-100, unset]") && !s.contains("9223372036854775807"), "{s}");
    // From a file: a decomposed module whose stored quant_max was removed.
    let qp = WeightQParams::per_tensor(0.1, 0, QuantDType::QInt8).decomposed(true).with_quant_range(-100, 100);
    let m = Conv2d::from_float(w, None, qp, ConvOptions::new().kernel_size([3, 3])).unwrap();
    let mut sd = m.state_dict("p.");
    sd.metadata.remove("p.weight_quant_max");
    let s = AnyConv::from_state_dict(&sd, "p.").unwrap_err().to_string();
    assert!(s.contains("[-100, unset]") && !s.contains("9223372036854775807"), "{s}");
}

#[test]
fn a_huge_lying_qparam_shape_is_an_error_in_every_build() {
    let w = Tensor::from_vec(vec![0.25f32; 4 * 3 * 9], &[4, 3, 3, 3]).unwrap();
    let mut qp = WeightQParams::per_tensor(0.1, 0, QuantDType::QInt8);
    qp.scale = QParamTensor { shape: vec![1 << 32, 1 << 32], data: QParamData::F32(vec![]) };
    let e = qp.validate(w.shape()).unwrap_err();
    assert!(matches!(e, Error::QParamShape { .. }), "{e}");
    assert!(e.to_string().contains("overflows"), "{e}");
    assert!(Conv2d::from_float(w, None, qp, ConvOptions::new().kernel_size([3, 3])).is_err());
}

#[test]
fn long_prefixes_and_many_modules_give_short_messages() {
    // A 1 MiB prefix.
    let prefix = format!("{}.", "p".repeat(1 << 20));
    let sd = module().state_dict("p.");
    let e = AnyConv::from_state_dict(&sd, &prefix).unwrap_err().to_string();
    assert!(e.len() <= MESSAGE_MAX && e.contains("(1048577 bytes)"), "{} bytes: {}", e.len(), &e[..e.len().min(300)]);
    // 100,000 modules and no prefix: the choice error lists 5 of them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.safetensors");
    let mut many = StateDict::new();
    for i in 0..100_000 {
        many.metadata.insert(format!("m{i}.module"), "{}".into());
    }
    many.save(&path).unwrap();
    let e = AnyConv::from_file(&path, None).unwrap_err();
    assert!(matches!(&e, Error::ModuleChoice { prefixes, .. } if prefixes.len() == 100_000), "{e}");
    let s = e.to_string();
    assert!(s.len() <= MESSAGE_MAX && s.contains("holds 100000 modules") && s.contains("… and 99995 more"), "{s}");
    assert_eq!(ModelFile::open(&path).unwrap().module_prefixes().len(), 100_000);
    // A module key with 100,000 unexpected entries under it.
    let mut sd = module().state_dict("p.");
    for i in 0..100_000 {
        sd.metadata.insert(format!("p.extra{i}"), String::new());
    }
    let s = err(&sd);
    assert!(s.contains("… and 99995 more"), "{s}");
    // A long JSON value in a message is cut.
    let sd = with_json(|m| {
        m.insert("type".into(), serde_json::json!("x".repeat(1 << 20)));
    });
    let s = err(&sd);
    assert!(s.contains("(1048576 bytes)"), "{s}");
}

#[test]
fn from_file_reads_the_only_module_or_the_chosen_one() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.safetensors");
    module().state_dict("only.").save(&one).unwrap();
    assert_eq!(AnyConv::from_file(&one, None).unwrap().to_string(), module().to_string());
    let none = dir.path().join("none.safetensors");
    StateDict::new().save(&none).unwrap();
    let e = AnyConv::from_file(&none, None).unwrap_err();
    assert!(matches!(&e, Error::ModuleChoice { prefixes, .. } if prefixes.is_empty()), "{e}");
    assert!(e.to_string().contains("holds no module"), "{e}");
    let e = AnyConv::from_file(&one, Some("other.")).unwrap_err();
    assert!(matches!(e, Error::StateDictKeys { .. }), "{e}");
    let m = Conv2d::from_file(&one, "only.").unwrap();
    assert_eq!(AnyConv::Conv2d(m).to_string(), module().to_string());
}
