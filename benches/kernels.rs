//! Our K-quant kernels (llm/src/cpu/kquant) against candle's quantized matmul on the same Q4_K
//! and Q6_K weights, at MedGemma 4B's widths (hidden 2560, intermediate 10240): one token
//! (decode) and a 128-token prompt. Both run in this process, so compare the two lines of a pair.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medscribe_llm::kernels::KQuantProducts;

fn k_quant(c: &mut Criterion) {
    // ffn_up/gate (Q4_K) and ffn_down (Q6_K in half of a Q4_K_M file's layers).
    for (name, rows, cols, q6k) in [
        ("q4k_10240x2560", 10240, 2560, false),
        ("q6k_2560x10240", 2560, 10240, true),
    ] {
        let products = KQuantProducts::random(rows, cols, q6k).expect("quantize");
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        for m in [1usize, 128] {
            let x: Vec<f32> = (0..m * cols)
                .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let input = medscribe_llm::kernels::tensor(&x, m, cols).expect("input");
            group.throughput(Throughput::Elements((rows * cols * m) as u64));
            group.bench_function(format!("ours_m{m}"), |b| {
                b.iter(|| products.ours(&x, m).expect("shapes"))
            });
            // Each lesser instruction set this CPU also has (the scalar kernel is too slow to
            // be worth the wait).
            for isa in KQuantProducts::instruction_sets().iter().skip(1) {
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

criterion_group!(benches, k_quant);
criterion_main!(benches);
