//! Our quantized kernels (llm/src/cpu/kquant, llm/src/cpu/packed.rs) against candle's quantized
//! matmul on the same weights: Q4_K, Q5_K and Q6_K at MedGemma 4B's widths (hidden 2560, intermediate
//! 10240), Q8_0 at Gemma 3 270M's (hidden 640, intermediate 2048); one token (decode) and a
//! 128-token prompt; one token through matrices too large for the cache (`decode_from_memory`,
//! in bytes per second). Also MedGemma 4B's SigLIP vision tower, ours against candle-transformers'
//! (`siglip_896_2_layers`). Both run in this process, so compare the lines of one group.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medscribe_llm::kernels::{QuantizedProducts, WeightType};

fn quantized(c: &mut Criterion) {
    for (name, rows, cols, weights) in [
        // ffn_up/gate (Q4_K) and ffn_down (Q6_K in half of a Q4_K_M file's layers).
        ("q4k_10240x2560", 10240, 2560, WeightType::Q4K),
        // The same in a Q5_K_M file.
        ("q5k_10240x2560", 10240, 2560, WeightType::Q5K),
        ("q6k_2560x10240", 2560, 10240, WeightType::Q6K),
        // The 270M's ffn_down and the first 8192 rows of its output head.
        ("q8_0_640x2048", 640, 2048, WeightType::Q8_0),
        ("q8_0_8192x640", 8192, 640, WeightType::Q8_0),
    ] {
        let products = QuantizedProducts::random(rows, cols, weights).expect("quantize");
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        for m in [1usize, 128] {
            let x: Vec<f32> = (0..m * cols)
                .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let input = medscribe_llm::kernels::tensor(&x, m, cols).expect("input");
            group.throughput(Throughput::Elements((rows * cols * m) as u64));
            if products.ours(&x, m).is_some() {
                group.bench_function(format!("ours_m{m}"), |b| {
                    b.iter(|| products.ours(&x, m).expect("shapes"))
                });
            }
            // Each lesser instruction set this CPU also has (the scalar kernel is too slow to
            // be worth the wait).
            for isa in products.instruction_sets().iter().skip(1) {
                if isa != "scalar" {
                    group.bench_function(format!("ours_{isa}_m{m}"), |b| {
                        b.iter(|| products.ours_on(isa, &x, m).expect("shapes"))
                    });
                }
            }
            group.bench_function(format!("candle_m{m}"), |b| {
                b.iter(|| products.candle(&input).expect("shapes"))
            });
        }
        group.finish();
    }
}

/// One token through matrices that do not fit the cache, as in a 4B model's decode (2.4 GB of
/// weights per token): four distinct matrices of each type, 59-86 MB together, taken in turn.
/// The throughput is in bytes of weights, so types compare by what memory must deliver. On the
/// 2-core EPYC (Zen 3) these were first taken on: ours about 25 GB/s on Q4_K, 15-20 GB/s on Q6_K,
/// candle's Q6_K (ggml's kernel) about the same as ours; Q6_K's 6-bit unpacking costs more
/// instructions per byte than Q4_K's, so it falls short of what memory gives Q4_K.
fn decode_from_memory(c: &mut Criterion) {
    for (name, rows, cols, weights, block_bytes) in [
        (
            "decode_from_memory_q4k_4x10240x2560",
            10240,
            2560,
            WeightType::Q4K,
            144,
        ),
        (
            "decode_from_memory_q6k_4x2560x10240",
            2560,
            10240,
            WeightType::Q6K,
            210,
        ),
        // Eighths of the 4B's output head (Q6_K, 262144 rows of 2560): rows of 10 super-blocks,
        // where ffn_down's have 40.
        (
            "decode_from_memory_q6k_4x32768x2560",
            32768,
            2560,
            WeightType::Q6K,
            210,
        ),
    ] {
        let matrices: Vec<QuantizedProducts> = (0..4)
            .map(|_| QuantizedProducts::random(rows, cols, weights).expect("quantize"))
            .collect();
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let input = medscribe_llm::kernels::tensor(&x, 1, cols).expect("input");
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.throughput(Throughput::Bytes(
            (4 * rows * cols / 256 * block_bytes) as u64,
        ));
        if matrices[0].ours(&x, 1).is_some() {
            group.bench_function("ours", |b| {
                b.iter(|| {
                    for matrix in &matrices {
                        matrix.ours(&x, 1).expect("shapes");
                    }
                })
            });
        }
        group.bench_function("candle", |b| {
            b.iter(|| {
                for matrix in &matrices {
                    matrix.candle(&input).expect("shapes");
                }
            })
        });
        group.finish();
    }
}

/// MedGemma 4B's vision tower on one 896-pixel image (4096 patches), two of its 27 layers: ours
/// (f16 weights, our attention and products) against candle-transformers' siglip (f32).
fn vision(c: &mut Criterion) {
    let towers = medscribe_llm::kernels::VisionTowers::random(2, 896).expect("towers");
    let pixels = towers.pixels().expect("pixels");
    let mut group = c.benchmark_group("siglip_896_2_layers");
    group.sample_size(10);
    group.bench_function("ours", |b| b.iter(|| towers.ours(&pixels).expect("ours")));
    group.bench_function("candle", |b| {
        b.iter(|| towers.candle(&pixels).expect("candle"))
    });
    group.finish();
}

criterion_group!(benches, quantized, decode_from_memory, vision);
criterion_main!(benches);
