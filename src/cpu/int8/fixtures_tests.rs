//! The PyTorch fixtures (`tests/fixtures/int8.safetensors`, written by
//! `scripts/gen_int8_fixtures.py` from real PyTorch runs, read by
//! [`crate::testing::load_int8_fixtures`]): every case's `output` codes, bit for bit, through the
//! engine and the case's requantization table, on every kernel level and both layouts; and the
//! exact oracle on the same cases.

use super::{run_case, to_layout, Case};
use crate::cpu::int8::{ActivationLayout, Int8Isa};
use crate::oracle::conv_int8_naive;
use crate::testing::load_int8_fixtures;

#[test]
fn pytorch_fixtures_bit_exact() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/int8.safetensors");
    let fixtures = load_int8_fixtures(std::path::Path::new(path)).expect("fixture file");
    assert_eq!(fixtures.len(), 74);
    let mut checked = 0;
    for f in fixtures {
        let (name, want) = (f.name, f.want);
        let case = Case { p: f.problem, x: f.x, xzp: f.x_zero, w: f.w, wzp: f.w_zero, table: f.table };
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
