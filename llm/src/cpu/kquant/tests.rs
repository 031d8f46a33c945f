use super::*;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

/// Values with a spread of magnitudes and signs, deterministic.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            // Some rows and blocks much larger than others, as real weights and activations are.
            unit * if i % 977 < 40 { 8.0 } else { 1.0 }
        })
        .collect()
}

/// A matrix quantized by candle (ggml's quantizer) and ours over the same bytes.
fn quantized(dtype: GgmlDType, rows: usize, cols: usize, seed: u64) -> (QTensor, KQuantMatrix) {
    let w = Tensor::from_vec(values(rows * cols, seed), (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
    let bytes = q.data().unwrap().to_vec();
    let ours =
        KQuantMatrix::from_file_bytes(KQuant::of(dtype).unwrap(), rows, cols, &bytes).unwrap();
    (q, ours)
}

#[test]
fn rows_dequantize_as_ggml_does() {
    for dtype in [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
        let (q, ours) = quantized(dtype, 5, 512, 3);
        let reference = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (row, expected) in reference.iter().enumerate() {
            let mut got = Vec::new();
            assert!(ours.dequantize_row_into(row, &mut got));
            assert_eq!(&got, expected, "{dtype:?} row {row}");
        }
        assert!(!ours.dequantize_row_into(5, &mut Vec::new()));
    }
}

#[test]
fn inputs_quantize_as_ggml_does() {
    // ggml maps the value of largest magnitude to -127 and rounds the rest to nearest even.
    let mut x = values(QK_K, 9);
    x[17] = 127.0; // the scale is exactly -1
    x[18] = 2.5; // ties go to even: -2, not -3
    x[19] = -3.5;
    let mut q = [0i8; QK_K];
    let d = quantize_q8k(&x, &mut q);
    assert_eq!((q[17], q[18], q[19]), (-127, -2, 4));
    assert_eq!(d, -1.0);
    let zeros = [0f32; QK_K];
    assert_eq!(quantize_q8k(&zeros, &mut q), 0.0);
    assert!(q.iter().all(|&v| v == 0));
}

#[test]
fn every_instruction_set_gives_the_scalar_result() {
    let isas = DetectedIsa::all();
    assert_eq!(isas.last().map(|i| i.isa()), Some(Isa::Scalar));
    for dtype in [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
        // 19 rows: a partial work item; 1 to 9 positions: every pass width and a second tile
        // when combined with the 37-position case.
        let (_, matrix) = quantized(dtype, 19, 768, 11);
        for m in [1, 2, 3, 4, 5, 9, 37] {
            let x = values(m * 768, 100 + m as u64);
            let reference = matrix.matmul_on(*isas.last().unwrap(), &x, m).unwrap();
            let scale = reference.iter().fold(0f32, |a, v| a.max(v.abs()));
            for &isa in &isas {
                let got = matrix.matmul_on(isa, &x, m).unwrap();
                // The integer sums are exact; only the order of the f32 additions may differ.
                let worst = got
                    .iter()
                    .zip(&reference)
                    .fold(0f32, |a, (g, r)| a.max((g - r).abs()));
                assert!(
                    worst <= 1e-6 * scale,
                    "{dtype:?} on {isa:?}, {m} positions: {worst}"
                );
            }
        }
    }
}

#[test]
fn products_match_ggml_through_candle() {
    // candle's quantized matmul is ggml's algorithm (Q8_K inputs, the same integer sums); only the
    // order of the f32 additions differs.
    for dtype in [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
        let (rows, cols) = (64, 1024);
        let (q, ours) = quantized(dtype, rows, cols, 21);
        let candle = QMatMul::from_qtensor(q).unwrap();
        for m in [1, 7] {
            let x = values(m * cols, 5 + m as u64);
            let input = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu).unwrap();
            let expected = candle.forward(&input).unwrap().flatten_all().unwrap();
            let expected = expected.to_vec1::<f32>().unwrap();
            let got = ours.matmul(&x, m).unwrap();
            let scale = expected.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "{dtype:?}, {m} positions, output {i}: {a} against ggml's {b}"
                );
            }
        }
    }
}

#[test]
fn products_are_close_to_the_float_product() {
    // The bound on what quantizing the inputs to 8 bits may cost, against the exact product of
    // the dequantised weights.
    for dtype in [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
        let (rows, cols, m) = (32, 512, 3);
        let (q, ours) = quantized(dtype, rows, cols, 31);
        let w = q.dequantize(&Device::Cpu).unwrap();
        let x = values(m * cols, 77);
        let input = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu).unwrap();
        let exact = input
            .matmul(&w.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap();
        let exact = exact.to_vec1::<f32>().unwrap();
        let got = ours.matmul(&x, m).unwrap();
        let scale = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
        let worst = got
            .iter()
            .zip(&exact)
            .fold(0f32, |a, (g, e)| a.max((g - e).abs()));
        assert!(worst <= 0.01 * scale, "{dtype:?}: {worst} of {scale}");
    }
}

#[test]
fn wrong_sizes_are_refused_not_read_past() {
    let bytes = vec![0u8; KQuant::Q4K.block_bytes() * 2];
    assert!(KQuantMatrix::from_file_bytes(KQuant::Q4K, 2, 256, &bytes).is_some());
    assert!(KQuantMatrix::from_file_bytes(KQuant::Q4K, 3, 256, &bytes).is_none());
    assert!(KQuantMatrix::from_file_bytes(KQuant::Q4K, 1, 300, &bytes).is_none());
    assert!(KQuantMatrix::file_size(KQuant::Q6K, usize::MAX, 256).is_none());
    let matrix = KQuantMatrix::from_file_bytes(KQuant::Q6K, 1, 256, &[0u8; 210]).unwrap();
    assert!(matrix.matmul(&[0.0; 255], 1).is_none());
    assert_eq!(matrix.matmul(&[1.0; 512], 2), Some(vec![0.0, 0.0]));
}

#[test]
fn joined_parts_multiply_as_the_separate_matrices() {
    for dtype in [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
        let kind = KQuant::of(dtype).unwrap();
        let (q1, first) = quantized(dtype, 16, 512, 41);
        let (q2, second) = quantized(dtype, 5, 512, 42);
        let (b1, b2) = (q1.data().unwrap().to_vec(), q2.data().unwrap().to_vec());
        let row_bytes = b1.len() / 16;
        let joined =
            KQuantMatrix::tile_parts(kind, &[16, 5], 512, |part, first, out: &mut [u8]| {
                let bytes = if part == 0 { &b1 } else { &b2 };
                out.copy_from_slice(&bytes[first * row_bytes..first * row_bytes + out.len()]);
                Ok::<(), ()>(())
            })
            .unwrap()
            .unwrap();
        let x = values(3 * 512, 43);
        let (a, b, both) = (
            first.matmul(&x, 3).unwrap(),
            second.matmul(&x, 3).unwrap(),
            joined.matmul(&x, 3).unwrap(),
        );
        for p in 0..3 {
            assert_eq!(
                &both[p * 21..p * 21 + 16],
                &a[p * 16..p * 16 + 16],
                "{dtype:?}"
            );
            assert_eq!(
                &both[p * 21 + 16..p * 21 + 21],
                &b[p * 5..p * 5 + 5],
                "{dtype:?}"
            );
        }
        // A part that ends inside a tile can only come last.
        let refused =
            KQuantMatrix::tile_parts(kind, &[5, 16], 512, |_, _, _: &mut [u8]| Ok::<(), ()>(()));
        assert!(refused.is_none());
    }
}

#[test]
fn a_failed_read_is_reported_not_tiled() {
    let result = KQuantMatrix::tile_parts(KQuant::Q4K, &[100], 256, |_, first, _: &mut [u8]| {
        if first >= 64 {
            Err("the file ends here")
        } else {
            Ok(())
        }
    });
    assert!(matches!(result, Some(Err("the file ends here"))));
}

/// One GGUF super-block with every weight at its largest (Q4_K 15, Q5_K 31, Q6_K 63 with scale
/// 127) and a scale of one.
fn largest_block(kind: KQuant) -> Vec<u8> {
    let one = half::f16::from_f32(1.0).to_le_bytes();
    let mut block = vec![0xFFu8; kind.block_bytes()];
    match kind {
        KQuant::Q6K => {
            block[192..208].fill(127);
            block[208..210].copy_from_slice(&one);
        }
        _ => {
            block[0..2].copy_from_slice(&one);
            block[2..4].fill(0);
        }
    }
    block
}

#[test]
fn the_largest_values_and_inputs_stay_exact() {
    // Every weight at its largest (Q4_K 15, Q5_K 31, Q6_K 63 with scale 127), every input at
    // its largest magnitude (127 once quantized): the kernels' i16 partial sums are at their
    // fullest here, and must not wrap.
    for kind in [KQuant::Q4K, KQuant::Q5K, KQuant::Q6K] {
        let bytes: Vec<u8> = std::iter::repeat_n(largest_block(kind), 8 * 2)
            .flatten()
            .collect();
        let matrix = KQuantMatrix::from_file_bytes(kind, 8, 2 * QK_K, &bytes).unwrap();
        let x = vec![1.0f32; 4 * 2 * QK_K];
        let isas = DetectedIsa::all();
        let reference = matrix.matmul_on(*isas.last().unwrap(), &x, 4).unwrap();
        let mut row = Vec::new();
        matrix.dequantize_row_into(0, &mut row);
        let exact: f32 = row.iter().sum();
        assert!(
            reference
                .iter()
                .all(|&v| (v - exact).abs() <= 1e-3 * exact.abs()),
            "{kind:?}: {} against {exact}",
            reference[0]
        );
        for isa in isas {
            assert_eq!(
                matrix.matmul_on(isa, &x, 4).unwrap(),
                reference,
                "{kind:?} on {isa:?}"
            );
        }
    }
}

/// The VNNI kernels' body, with `vpdpbusd` spelt in AVX2, against the AVX2 kernels: the same
/// integer sums and the same f32 steps, so the same bits. Where VNNI runs,
/// `every_instruction_set_gives_the_scalar_result` checks the real instructions too.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_vnni_body_gives_the_avx2_result_bit_for_bit() {
    if !DetectedIsa::all().iter().any(|isa| isa.isa() == Isa::Avx2) {
        eprintln!("skipped: this CPU has no AVX2 to spell vpdpbusd in");
        return;
    }
    for dtype in [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
        let kind = KQuant::of(dtype).unwrap();
        let (_, random) = quantized(dtype, 24, 768, 51);
        // Every weight and scale at its largest too, where the sums are fullest.
        let bytes: Vec<u8> = std::iter::repeat_n(largest_block(kind), 8 * 3)
            .flatten()
            .collect();
        let largest = KQuantMatrix::from_file_bytes(kind, 8, 3 * QK_K, &bytes).unwrap();
        for (matrix, x) in [
            (&random, values(4 * 768, 52)),
            (&largest, vec![1.0f32; 4 * 768]),
        ] {
            for m in 1..=4 {
                let quantized_inputs = Q8KInputs::new(&x[..m * 768], m, 768);
                let inputs = quantized_inputs.positions(0, m, 3);
                for t in 0..matrix.rows().div_ceil(TILE_ROWS) {
                    let tile = matrix.tile(t);
                    let mut expected = [[0f32; TILE_ROWS]; POSITIONS_PER_PASS];
                    let mut got = [[0f32; TILE_ROWS]; POSITIONS_PER_PASS];
                    // SAFETY: AVX2 (with FMA and F16C) was detected above.
                    unsafe {
                        match kind {
                            KQuant::Q4K => {
                                avx2::q45k::<false>(tile, &inputs, &mut expected);
                                vnni::emulated::q45k::<false>(tile, &inputs, &mut got);
                            }
                            KQuant::Q5K => {
                                avx2::q45k::<true>(tile, &inputs, &mut expected);
                                vnni::emulated::q45k::<true>(tile, &inputs, &mut got);
                            }
                            KQuant::Q6K => {
                                avx2::q6k(tile, &inputs, &mut expected);
                                vnni::emulated::q6k(tile, &inputs, &mut got);
                            }
                        }
                    }
                    assert_eq!(got, expected, "{dtype:?}, tile {t}, {m} positions");
                }
            }
        }
    }
}
