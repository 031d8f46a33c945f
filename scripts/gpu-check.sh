#!/usr/bin/env bash
# The letter model on an NVIDIA GPU (`--features cuda`), checked and measured in one run:
#   0. the GPU machine's CPU: which x86 extensions it has, and the letter engine's unit tests and
#      CPU parity tests there, so that kernels this project's usual CPU lacks (AVX-512, VNNI) run
#      and are checked against candle's;
#   1. the Gemma 3 parity tests on the GPU (MEDSCRIBE_TEST_DEVICE=cuda): the tiny random model's
#      logits, greedy tokens, vision tower and f16 mmproj against transformers' references, and a
#      random Q4_K_M-mix model against its own float unpacking;
#   2. `medscribe generate --device cuda` on the tiny model, which must write what the CPU writes;
#   3. a MedGemma-4B-shaped random Q4_K_M GGUF (models/scripts/make_gemma3_bench_gguf.py
#      --random-q4-k-m): load, prompt 128 and 512, decode 64 and peak GPU memory, on the GPU, with
#      transformers (PyTorch eager, bf16, same shape) on the same GPU as the reference where it is
#      installed;
#   4. image encoding at MedGemma 4B's size on the GPU: a random f16 mmproj of the 4B vision part
#      (models/scripts/make_gemma3_bench_mmproj.py) beside that file, against transformers'
#      SiglipVisionModel of the same shape on the same GPU;
#   5. the GPU machine's CPU again: the K-quant products at MedGemma 4B's widths on each
#      instruction set it has (VNNI, AVX2) and candle's (AMX where the CPU has it), one token and
#      a 128-token prompt, 2 threads (benches/kernels.rs, prebuilt: MEDSCRIBE_KERNELS_BENCH_BIN).
#
#   STEPS="1 4" scripts/gpu-check.sh     # only some of the steps
#
#   scripts/gpu-check.sh                  # builds with cargo --features cuda (CUDA toolkit needed)
#   MEDSCRIBE_BIN=... MEDSCRIBE_IT_BIN=... [MEDSCRIBE_LLM_TEST_BIN=...] scripts/gpu-check.sh
#                                         # prebuilt binaries (the last: medscribe-llm's unit tests)
#   MEDSCRIBE_KERNELS_BENCH_BIN=...       # step 5's bench (cargo bench --bench kernels --no-run)
#
# The report goes to stdout; the 4B file to ${WORK:-/tmp/medscribe-gpu-check}. Needs python3 with
# numpy and gguf (or llama.cpp's gguf-py under .bench/) for step 3.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${WORK:-/tmp/medscribe-gpu-check}
mkdir -p "$work"

if [ -z "${MEDSCRIBE_BIN:-}" ] || [ -z "${MEDSCRIBE_IT_BIN:-}" ]; then
    cargo build --features cuda --bin medscribe
    MEDSCRIBE_BIN=target/debug/medscribe
    MEDSCRIBE_IT_BIN=$(cargo test --no-run --features cuda --test it --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "it" and m.get("executable"):
        print(m["executable"])')
fi

# STEPS="0 3" runs only those steps (the 4B file is made for step 3 or 4).
tiny=models/fixtures/gemma3-tiny
wants() { [[ " ${STEPS:-0 1 2 3 4 5} " == *" $1 "* ]]; }

echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

if wants 0; then
echo "== 0. the CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) threads"
printf 'has:'
for flag in avx2 fma f16c avx512f avx512bw avx512_vnni avx_vnni amx_tile amx_int8; do
    grep -qw "$flag" /proc/cpuinfo && printf ' %s' "$flag"
done
echo
# The unit tests run every kernel this CPU has ("checking Avx512Vnni", ...) against candle's
# (those of the letter writer need setup's data directory, which a GPU machine lacks).
if [ -n "${MEDSCRIBE_LLM_TEST_BIN:-}" ]; then
    "$MEDSCRIBE_LLM_TEST_BIN" cpu:: gemma3:: vision:: kernels:: --test-threads 8 --nocapture 2>&1 \
        | grep -E '^checking|test result|panicked|FAILED' | sort | uniq -c || true
fi
"$MEDSCRIBE_IT_BIN" parity_gemma3:: quantized_model:: --skip mmproj_files_of_the_wrong_kind \
    --test-threads 4 2>&1 | grep -E 'test result|panicked|FAILED' || true

fi

if wants 5; then
echo "== 5. the K-quant products on this CPU, 2 threads (criterion, medians in the middle)"
if [ -n "${MEDSCRIBE_KERNELS_BENCH_BIN:-}" ]; then
    RAYON_NUM_THREADS=2 "$MEDSCRIBE_KERNELS_BENCH_BIN" --bench 'q[456]k_' --warm-up-time 1 \
        --measurement-time 2 --noplot 2>&1 | grep -E '^q[456]k|time:' || true
else
    RAYON_NUM_THREADS=2 cargo bench --bench kernels -- 'q[456]k_' --warm-up-time 1 \
        --measurement-time 2 --noplot
fi

fi

if wants 1; then
echo "== 1. parity tests on the GPU"
# (The refusal of wrong mmproj files is a CPU test that needs setup's default model.)
MEDSCRIBE_TEST_DEVICE=cuda "$MEDSCRIBE_IT_BIN" parity_gemma3:: quantized_model:: \
    --skip mmproj_files_of_the_wrong_kind --test-threads 1 --nocapture 2>&1 | grep -E 'diff|against|test result|panicked|FAILED|^test ' || true

fi

if wants 2; then
echo "== 2. generate on the tiny model: CPU and GPU"
for device in cpu cuda; do
    "$MEDSCRIBE_BIN" generate --model "$tiny" --raw --max-new-tokens 24 --device "$device" \
        --prompt "The patient was reviewed on the ward round today" >"$work/tiny-$device.txt" \
        2>"$work/tiny-$device.err" || { echo "$device failed:"; cat "$work/tiny-$device.err"; }
done
if cmp -s "$work/tiny-cpu.txt" "$work/tiny-cuda.txt"; then
    echo "same text on cpu and cuda: $(head -c 120 "$work/tiny-cuda.txt")"
else
    echo "DIFFERENT: cpu: $(head -c 120 "$work/tiny-cpu.txt") / cuda: $(head -c 120 "$work/tiny-cuda.txt")"
fi

fi

if wants 3 || wants 4; then
echo "== 3. 4B-shaped random Q4_K_M"
gguf=$work/gemma3-4b-random-q4_k_m.gguf
if [ ! -s "$gguf" ]; then
    python3 models/scripts/make_gemma3_bench_gguf.py --shape 4b --random-q4-k-m \
        --tokenizer-from "$tiny/tokenizer.json" --out "$gguf" 2>/dev/null
fi
cp "$tiny/tokenizer.json" "$work/tokenizer.json"
# Exactly 128 and 512 tokens with the tiny model's 480-piece tokenizer (with <bos>).
line="the patient was seen on the ward today and is well "
prompt128="$(printf "$line%.0s" $(seq 8))the patient was seen today"
prompt512="$(printf "$line%.0s" $(seq 34))the"
peak_gpu_mb() { # samples the GPU's used memory while "$@" runs; prints the peak
    local peak=0 used
    "$@" &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)
        [ "${used:-0}" -gt "$peak" ] && peak=$used
        sleep 0.2
    done
    wait "$pid"
    echo "peak GPU memory used: $peak MiB" >&2
}
fi
if wants 3; then
idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)
echo "GPU memory used before: $idle MiB"
for round in 1 2; do
    for spec in "128 64" "512 1"; do
        set -- $spec
        text=$prompt128; [ "$1" = 512 ] && text=$prompt512
        echo "-- ours, round $round, prompt $1, generate $2"
        peak_gpu_mb "$MEDSCRIBE_BIN" generate -v --raw --device cuda --max-new-tokens "$2" \
            --model "$gguf" --prompt "$text" 2>&1 >/dev/null | grep -E 'loaded|prompt|peak' || true
    done
done
if python3 -c 'import torch, transformers' 2>/dev/null; then
    echo "-- transformers (PyTorch eager, bf16, random weights of the same shape)"
    python3 - <<'EOF'
import time, torch, transformers
from transformers import Gemma3TextConfig, Gemma3ForCausalLM
config = Gemma3TextConfig(vocab_size=262144, hidden_size=2560, intermediate_size=10240,
    num_hidden_layers=34, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
    sliding_window=1024, query_pre_attn_scalar=256, max_position_embeddings=131072)
# RoPE settings are left at their defaults: they do not change the cost.
torch.manual_seed(0)
start = time.perf_counter()
with torch.device("cuda"):
    model = Gemma3ForCausalLM(config).to(torch.bfloat16).eval()
torch.cuda.synchronize()
print(f"transformers {transformers.__version__}: built in {time.perf_counter() - start:.1f} s")
def timed(fn):
    torch.cuda.synchronize(); t = time.perf_counter(); out = fn(); torch.cuda.synchronize()
    return time.perf_counter() - t, out
with torch.no_grad():
    for rnd in (1, 2):
        for n in (128, 512):
            ids = torch.randint(10, 400, (1, n), device="cuda")
            s, _ = timed(lambda: model(ids))
            print(f"round {rnd}: prompt {n} tokens in {s:.3f} s ({n / s:.0f} tok/s)")
        ids = torch.randint(10, 400, (1, 128), device="cuda")
        s_prefill, _ = timed(lambda: model(ids))
        s, out = timed(lambda: model.generate(ids, max_new_tokens=64, min_new_tokens=64,
                                               do_sample=False))
        n = out.shape[1] - 128
        print(f"round {rnd}: {n} tokens generated after 128 in {s - s_prefill:.3f} s "
              f"({n / (s - s_prefill):.1f} tok/s)")
    print(f"peak GPU memory allocated by torch: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
EOF
fi

fi

if wants 4; then
echo "== 4. image encoding at MedGemma 4B's size (SigLIP, 896 px, 4096 patches)"
# A random f16 mmproj in llama.cpp's layout beside the 4B-shaped text model; the tiny model's
# tokenizer (beside it) has the image tokens within the file's vocabulary.
mmproj=$work/mmproj-4b-random-f16.gguf
[ -s "$mmproj" ] || python3 models/scripts/make_gemma3_bench_mmproj.py --out "$mmproj" 2>/dev/null
image=models/fixtures/gemma3-expected/scan.png
for round in 1 2; do
    echo "-- ours, round $round (a fresh process: the tower is read, then the image encoded)"
    peak_gpu_mb "$MEDSCRIBE_BIN" generate -v --device cuda --max-new-tokens 1 --model "$gguf" \
        --mmproj "$mmproj" --image "$image" --prompt "Describe the image." 2>&1 >/dev/null \
        | grep -E 'vision tower read|encoded in|loaded|peak|rror' || true
done
if python3 -c 'import torch, transformers' 2>/dev/null; then
    echo "-- transformers' SiglipVisionModel, same shape, random weights, warm (median of 5)"
    python3 - <<'PYEOF'
import statistics, time, torch, transformers
from transformers import SiglipVisionConfig, SiglipVisionModel
config = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
    num_attention_heads=16, patch_size=14, image_size=896)
pixels = torch.randn(1, 3, 896, 896, device="cuda")
for dtype in (torch.float32, torch.bfloat16):
    with torch.device("cuda"):
        model = SiglipVisionModel(config).to(dtype).eval()
    times = []
    with torch.no_grad():
        for _ in range(6):
            torch.cuda.synchronize(); start = time.perf_counter()
            model(pixel_values=pixels.to(dtype))
            torch.cuda.synchronize(); times.append(time.perf_counter() - start)
    print(f"transformers {transformers.__version__} {dtype}: first {times[0]:.3f} s, "
          f"then median {statistics.median(times[1:]):.3f} s")
    del model
PYEOF
fi
fi
