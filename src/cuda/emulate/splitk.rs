//! `cuda/splitk.cu`, transcribed: the split-K reduction of the tensor-core tiles, used by the
//! transcription of the tiles (`emulate/conv_tc.rs`), whose tests run it with 1 to 3 splits.

/// `qc_splitk_reduce` without bias and rounding (the transcription keeps exact f64 sums): the
/// output channels-last, `y[m][g*kg + n]` = the sum over the `splits` ranges of
/// `part[split][g][m][n]`, `out_total` rows of `out_channels` channels.
pub fn reduce(part: &[f64], splits: usize, groups: usize, out_total: i64, kg: i64, out_channels: i64) -> Vec<f64> {
    let kk = out_channels;
    let mut y = vec![0f64; (out_total * kk) as usize];
    for (i, v) in y.iter_mut().enumerate() {
        let (m, k) = (i as i64 / kk, i as i64 % kk);
        let (g, n) = (k / kg, k % kg);
        *v = (0..splits as i64).map(|s| part[(((s * groups as i64 + g) * out_total + m) * kg + n) as usize]).sum();
    }
    y
}
