//! Crafted GGUF files that crashed or exhausted the loader before (issue 15): shape products that
//! wrap to zero in release builds (then the packed kernel read past its buffer), offsets that
//! wrap, alignment 0, a tensor without dimensions, absurd layer counts. Each must now be a clear
//! error naming the file, and the untouched file must still load.

use std::path::{Path, PathBuf};

use medscribe_llm::{Device, Gemma3Text};

/// One tensor of a crafted file: name, ggml dims (innermost first, as GGUF stores them), type.
struct TensorSpec {
    name: String,
    dims: Vec<u64>,
    ggml_type: u32,
}

const F32: u32 = 0;
const Q8_0: u32 = 8;

/// Metadata values used here.
enum Value {
    U32(u32),
    U64(u64),
    F32(f32),
    Str(&'static str),
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn bytes_of(spec: &TensorSpec) -> u64 {
    let elements: u64 = spec.dims.iter().fold(1u64, |a, &d| a.wrapping_mul(d));
    match spec.ggml_type {
        F32 => elements.wrapping_mul(4),
        _ => elements / 32 * 34,
    }
}

/// A GGUF v3 file: metadata, tensor infos with `offsets` (or consecutive ones), zero data.
fn gguf(metadata: &[(&str, Value)], tensors: &[TensorSpec], offsets: Option<&[u64]>) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        string(&mut out, key);
        match value {
            Value::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::U64(v) => {
                out.extend(10u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::Str(v) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, v);
            }
        }
    }
    let mut next = 0u64;
    let mut data_len = 0u64;
    for (i, spec) in tensors.iter().enumerate() {
        string(&mut out, &spec.name);
        out.extend((spec.dims.len() as u32).to_le_bytes());
        for d in &spec.dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(spec.ggml_type.to_le_bytes());
        let offset = offsets.map_or(next, |o| o[i]);
        out.extend(offset.to_le_bytes());
        let size = bytes_of(spec).min(1 << 20);
        next += size.div_ceil(32) * 32;
        data_len = data_len.max(next);
    }
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    out.resize(out.len() + data_len as usize, 0);
    out
}

/// The tensors of a one-layer Gemma 3 text model: hidden 64, 2 heads of 32, 1 key/value head,
/// MLP 128, vocabulary 32.
fn tiny_tensors() -> Vec<TensorSpec> {
    let matrix = |name: &str, rows: u64, cols: u64| TensorSpec {
        name: name.into(),
        dims: vec![cols, rows],
        ggml_type: Q8_0,
    };
    let norm = |name: &str, size: u64| TensorSpec {
        name: name.into(),
        dims: vec![size],
        ggml_type: F32,
    };
    vec![
        matrix("token_embd.weight", 32, 64),
        norm("output_norm.weight", 64),
        norm("blk.0.attn_norm.weight", 64),
        norm("blk.0.post_attention_norm.weight", 64),
        norm("blk.0.ffn_norm.weight", 64),
        norm("blk.0.post_ffw_norm.weight", 64),
        norm("blk.0.attn_q_norm.weight", 32),
        norm("blk.0.attn_k_norm.weight", 32),
        matrix("blk.0.attn_q.weight", 64, 64),
        matrix("blk.0.attn_k.weight", 32, 64),
        matrix("blk.0.attn_v.weight", 32, 64),
        matrix("blk.0.attn_output.weight", 64, 64),
        matrix("blk.0.ffn_gate.weight", 128, 64),
        matrix("blk.0.ffn_up.weight", 128, 64),
        matrix("blk.0.ffn_down.weight", 64, 128),
    ]
}

fn tiny_metadata(block_count: u64, alignment: Option<u32>) -> Vec<(&'static str, Value)> {
    let mut metadata = vec![
        ("general.architecture", Value::Str("gemma3")),
        ("gemma3.embedding_length", Value::U32(64)),
        ("gemma3.attention.head_count", Value::U32(2)),
        ("gemma3.attention.head_count_kv", Value::U32(1)),
        ("gemma3.attention.key_length", Value::U32(32)),
        ("gemma3.block_count", Value::U64(block_count)),
        ("gemma3.feed_forward_length", Value::U32(128)),
        ("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
    ];
    if let Some(alignment) = alignment {
        metadata.push(("general.alignment", Value::U32(alignment)));
    }
    metadata
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn load_error(path: &Path) -> String {
    match Gemma3Text::load_gguf(path, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_gguf_files_are_errors_naming_the_file_not_crashes() {
    let dir = std::env::temp_dir().join(format!("medscribe-hostile-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // The honest file loads: the crafting is right, so each case below fails for its own reason.
    let honest = gguf(&tiny_metadata(1, None), &tiny_tensors(), None);
    let good = write(&dir, "good.gguf", &honest);
    Gemma3Text::load_gguf(&good, &Device::Cpu).expect("the untouched tiny file loads");
    // It is also the GGUF fuzz target's text-model seed (scripts/fuzz.sh); kept equal here.
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/gguf/tiny-text.gguf");
    if std::env::var_os("MEDSCRIBE_WRITE_SEEDS").is_some() {
        std::fs::write(&seed, &honest).unwrap();
    }
    assert_eq!(
        std::fs::read(&seed).ok().as_deref(),
        Some(honest.as_slice()),
        "fuzz seed out of date: rerun with MEDSCRIBE_WRITE_SEEDS=1"
    );

    let with_dims = |name: &str, dims: Vec<u64>| {
        let mut tensors = tiny_tensors();
        let spec = tensors.iter_mut().find(|t| t.name == name).unwrap();
        spec.dims = dims;
        gguf(&tiny_metadata(1, None), &tensors, None)
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // [64, 2^63] Q8_0: elements wrap to 0, and so did every size check after it.
        (
            "wrapping-q.gguf",
            with_dims("blk.0.attn_q.weight", vec![64, 1 << 63]),
            "attn_q",
        ),
        (
            "wrapping-k.gguf",
            with_dims("blk.0.attn_k.weight", vec![1 << 63, 64]),
            "attn_k",
        ),
        (
            "huge-embedding.gguf",
            with_dims("token_embd.weight", vec![64, 1 << 58]),
            "token_embd",
        ),
        (
            "no-dims-embedding.gguf",
            with_dims("token_embd.weight", vec![]),
            "token_embd",
        ),
        (
            "alignment-zero.gguf",
            gguf(&tiny_metadata(1, Some(0)), &tiny_tensors(), None),
            "alignment",
        ),
        (
            "terabyte-layers.gguf",
            gguf(&tiny_metadata(1 << 40, None), &tiny_tensors(), None),
            "block_count",
        ),
        (
            "wrapping-offset.gguf",
            {
                let tensors = tiny_tensors();
                let mut offsets: Vec<u64> = vec![0; tensors.len()];
                offsets[8] = u64::MAX - 15;
                gguf(&tiny_metadata(1, None), &tensors, Some(&offsets))
            },
            "offset",
        ),
        (
            "cut-short.gguf",
            {
                let mut bytes = gguf(&tiny_metadata(1, None), &tiny_tensors(), None);
                bytes.truncate(bytes.len() - 100);
                bytes
            },
            "cut short",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = write(&dir, name, &bytes);
        let err = load_error(&path);
        assert!(
            err.contains(name) && err.contains(expected) && !err.contains('\n'),
            "{name}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[cfg(unix)]
fn a_fifo_or_device_named_as_a_model_is_refused_at_once() {
    let dir = std::env::temp_dir().join(format!("medscribe-fifo-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("model.gguf");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let err = load_error(&fifo);
    assert!(err.contains("regular file"), "{err}");
    let link = dir.join("zero.gguf");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let err = load_error(&link);
    assert!(err.contains("regular file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
