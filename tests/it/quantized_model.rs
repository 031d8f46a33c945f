//! The quantized kernels at model level, on every quantization a public Gemma 3 / MedGemma GGUF
//! holds: a random Gemma 3 written by this test as a GGUF wide enough for the K-quants (hidden
//! 256), its matrices quantized the way llama.cpp's Q4_K_M mix does (Q4_K, with Q6_K for the
//! embedding, the tied output head and half the `attn_v` / `ffn_down`), with Q5_K (Q5_K_M files)
//! for half the feed-forward inputs, and Q8_0 and Q5_0 for the others, as in narrow files. The
//! model, loaded quantized on the test device (`MEDSCRIBE_TEST_DEVICE`: our CPU kernels, or
//! candle's CUDA kernels in a `--features cuda` build), must compute what the same weights unpacked to f32 compute on the CPU, within the
//! noise of rounding activations to 8 bits, at every prompt position, across the sliding window,
//! and in pieces as at once.

use crate::common::*;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use medscribe_llm::{Gemma3Text, GgufWeights};

const HIDDEN: usize = 256;
const LAYERS: usize = 6;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 64;
const INTERMEDIATE: usize = 512;
const VOCAB: usize = 512;
const SLIDING_WINDOW: u32 = 8;

/// `count` values spread evenly over [-scale, scale] by a fixed xorshift sequence, so every run
/// writes the same model.
fn uniform(count: usize, scale: f32, state: &std::cell::Cell<u64>) -> Vec<f32> {
    (0..count)
        .map(|_| {
            let mut x = state.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            state.set(x);
            let unit = (x >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * unit - 1.0) * scale
        })
        .collect()
}

/// Writes the random model to `path`.
fn write_random_gguf(path: &std::path::Path) {
    use gguf_file::Value;
    let state = std::cell::Cell::new(0x5eed_0f6e_33a3_u64);
    let values = |count: usize, scale: f32| uniform(count, scale, &state);
    // Standard deviation 0.05, as a trained model's projections have about.
    let matrix = |rows: usize, cols: usize, dtype: GgmlDType| -> QTensor {
        let weights = Tensor::from_vec(values(rows * cols, 0.0866), (rows, cols), &Device::Cpu);
        QTensor::quantize(&weights.unwrap(), dtype).unwrap()
    };
    // llama.cpp stores Gemma's gains as 1 + w.
    let gain = |size: usize| -> QTensor {
        let w = values(size, 0.17).into_iter().map(|w| 1.0 + w).collect();
        QTensor::quantize(
            &Tensor::from_vec(w, size, &Device::Cpu).unwrap(),
            GgmlDType::F32,
        )
        .unwrap()
    };
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let mut tensors: Vec<(String, QTensor)> = vec![(
        "token_embd.weight".into(),
        matrix(VOCAB, HIDDEN, GgmlDType::Q6K),
    )];
    for layer in 0..LAYERS {
        let b = |name: &str| format!("blk.{layer}.{name}.weight");
        let (value, down, gate_up) = if layer % 2 == 0 {
            (GgmlDType::Q6K, GgmlDType::Q6K, GgmlDType::Q4K)
        } else {
            (GgmlDType::Q8_0, GgmlDType::Q5_0, GgmlDType::Q5K)
        };
        tensors.extend([
            (b("attn_norm"), gain(HIDDEN)),
            (b("attn_q"), matrix(q, HIDDEN, GgmlDType::Q4K)),
            (b("attn_k"), matrix(kv, HIDDEN, GgmlDType::Q4K)),
            (b("attn_v"), matrix(kv, HIDDEN, value)),
            (b("attn_q_norm"), gain(HEAD_DIM)),
            (b("attn_k_norm"), gain(HEAD_DIM)),
            (b("attn_output"), matrix(HIDDEN, q, GgmlDType::Q4K)),
            (b("post_attention_norm"), gain(HIDDEN)),
            (b("ffn_norm"), gain(HIDDEN)),
            (b("ffn_gate"), matrix(INTERMEDIATE, HIDDEN, gate_up)),
            (b("ffn_up"), matrix(INTERMEDIATE, HIDDEN, gate_up)),
            (b("ffn_down"), matrix(HIDDEN, INTERMEDIATE, down)),
            (b("post_ffw_norm"), gain(HIDDEN)),
        ]);
    }
    tensors.push(("output_norm.weight".into(), gain(HIDDEN)));
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("gemma3".into())),
        ("gemma3.context_length", Value::U32(2048)),
        ("gemma3.embedding_length", Value::U32(HIDDEN as u32)),
        ("gemma3.block_count", Value::U32(LAYERS as u32)),
        (
            "gemma3.feed_forward_length",
            Value::U32(INTERMEDIATE as u32),
        ),
        ("gemma3.attention.head_count", Value::U32(HEADS as u32)),
        (
            "gemma3.attention.head_count_kv",
            Value::U32(KV_HEADS as u32),
        ),
        ("gemma3.attention.key_length", Value::U32(HEAD_DIM as u32)),
        ("gemma3.attention.value_length", Value::U32(HEAD_DIM as u32)),
        (
            "gemma3.attention.sliding_window",
            Value::U32(SLIDING_WINDOW),
        ),
        ("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
        ("gemma3.rope.freq_base", Value::F32(1_000_000.0)),
        ("gemma3.rope.scaling.type", Value::String("linear".into())),
        ("gemma3.rope.scaling.factor", Value::F32(8.0)),
    ];
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
}

/// Every position's logits for `ids`, from a new conversation.
fn all_logits(model: &mut Gemma3Text, ids: &[u32]) -> Vec<f32> {
    model.reset();
    model
        .forward(ids, true)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn k_quant_mix_computes_like_its_float_unpacking_on_the_test_device() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random-gemma3-q4_k_m.gguf");
    write_random_gguf(&path);
    let device = test_device();
    let mut quantized = Gemma3Text::load_gguf(&path, &device).unwrap();
    let mut float =
        Gemma3Text::load_gguf_with(&path, &Device::Cpu, GgufWeights::Dequantized).unwrap();
    // Longer than the sliding window, and long enough for the prompt (matrix-matrix) kernels.
    let prompt: Vec<u32> = (0..40u32)
        .map(|i| 2 + (i * 37) % (VOCAB as u32 - 2))
        .collect();
    let reference = all_logits(&mut float, &prompt);
    let ours = all_logits(&mut quantized, &prompt);
    let spread = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&ours, &reference);
    eprintln!(
        "{device:?}: quantized against float: max logit diff {diff:.3e} (largest logit {spread:.3e})"
    );
    assert!(
        spread > 0.1,
        "the random model's logits are too flat to compare: {spread}"
    );
    assert!(
        diff <= 0.05 * spread,
        "quantized logits {diff} from float (largest {spread})"
    );
    // One token at a time (the matrix-vector kernels and the cache) gives what the prompt at once
    // gives, within the same noise.
    quantized.reset();
    let mut stepped = Vec::new();
    for id in &prompt {
        let logits = quantized.forward(&[*id], true).unwrap();
        stepped.extend(logits.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    let step_diff = max_abs_diff(&stepped, &reference);
    eprintln!("one token at a time against float: {step_diff:.3e}");
    assert!(
        step_diff <= 0.05 * spread,
        "token-by-token logits {step_diff} from float (largest {spread})"
    );
}
