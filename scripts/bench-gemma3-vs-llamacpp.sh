#!/usr/bin/env bash
# The default letter model (Gemma 3 270M Q4_K_M GGUF) on our candle implementation against
# llama.cpp on the same file, same thread count, in one run: prefill and decode tokens per
# second, load time and peak memory. llama.cpp is only a yardstick: it is built from the sources
# vendored in the PyPI sdist of llama-cpp-python (about 5 minutes on 2 cores, once, into .bench/,
# git-ignored) and never shipped.
#   scripts/bench-gemma3-vs-llamacpp.sh [THREADS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
threads=${1:-2}
scripts/setup.sh >/dev/null 2>&1 || scripts/setup.sh
command -v cmake >/dev/null || { echo "installing cmake (Debian)"; apt-get install -y -qq cmake >/dev/null; }
cargo build -q --release --locked
data=${MEDSCRIBE_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/medscribe}
gguf=$data/models/gemma3-270m/gemma-3-270m-q4_k_m.gguf
bench=.bench/llama.cpp
if [ ! -x "$bench/build/bin/llama-bench" ]; then
    mkdir -p .bench
    .venv/bin/python -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==0.3.36" -d .bench
    tar -xzf .bench/llama_cpp_python-0.3.36.tar.gz -C .bench
    rm -rf "$bench" && mv .bench/llama_cpp_python-0.3.36/vendor/llama.cpp "$bench"
    cmake -S "$bench" -B "$bench/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
    cmake --build "$bench/build" --target llama-bench -j 2 >/dev/null
fi
echo "== llama.cpp (llama-bench, $threads threads; prompt 128 tokens, 64 generated; GGML_NATIVE)"
/usr/bin/time -f "%M" "$bench/build/bin/llama-bench" -m "$gguf" -p 128 -n 64 -t "$threads" -r 3 -o csv \
    >"$bench.csv" 2>"$bench.time"
llama_rss_kb=$(tail -n1 "$bench.time")
# The last two fields of llama-bench's CSV rows are the mean and spread of tokens per second.
read -r llama_prefill llama_decode <<<"$(grep -o '"[0-9.]*","[0-9.]*"$' "$bench.csv" | cut -d'"' -f2 | tr '\n' ' ')"
printf 'prefill %.0f tok/s, decode %.1f tok/s, peak RSS %d MB\n' "$llama_prefill" "$llama_decode" $((llama_rss_kb / 1024))
echo "== medscribe (candle, quantized kernels, $threads threads; prompt 157 tokens, 64 generated; best of 3)"
prompt="<bos>$(python3 -c "print(' '.join(['The patient was reviewed on the ward round today and remains stable.'] * 12))")"
export RAYON_NUM_THREADS=$threads
best_prefill=0 best_decode=0 best_load=99 rss_kb=0
for run in 1 2 3; do
    line=$(/usr/bin/time -f "rss %M" target/release/medscribe generate -v --raw --max-new-tokens 64 --prompt "$prompt" 2>&1 >/dev/null | tr '\n' ' ')
    load=$(sed -E 's/.*loaded in ([0-9.]+) s.*/\1/' <<<"$line")
    prefill=$(sed -E 's/.*tokens in [0-9.]+ s \(([0-9.]+) tok\/s\).*/\1/' <<<"$line")
    decode=$(sed -E 's/.*generated \(([0-9.]+) tok\/s\).*/\1/' <<<"$line")
    rss=$(sed -E 's/.*rss ([0-9]+).*/\1/' <<<"$line")
    best_prefill=$(awk -v a="$best_prefill" -v b="$prefill" 'BEGIN { print (b > a) ? b : a }')
    best_decode=$(awk -v a="$best_decode" -v b="$decode" 'BEGIN { print (b > a) ? b : a }')
    best_load=$(awk -v a="$best_load" -v b="$load" 'BEGIN { print (b < a) ? b : a }')
    rss_kb=$rss
done
printf 'prefill %.0f tok/s, decode %.1f tok/s, load %.2f s, peak RSS %d MB\n' "$best_prefill" "$best_decode" "$best_load" $((rss_kb / 1024))
awk -v p="$best_prefill" -v lp="$llama_prefill" -v d="$best_decode" -v ld="$llama_decode" 'BEGIN {
    printf "ratios ours / llama.cpp: prefill %.2fx (goal >= 0.8x), decode %.2fx (goal >= 1.0x)\n", p / lp, d / ld }'
