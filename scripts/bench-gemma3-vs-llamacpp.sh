#!/usr/bin/env bash
# Our Gemma 3 engine (candle + our CPU kernels) against llama.cpp on the same GGUF file, same
# thread count, engines interleaved round by round: prompt 128 and 512 tokens, decode of 64
# tokens, load time and peak memory, each the median of the rounds for both engines.
#
#   scripts/bench-gemma3-vs-llamacpp.sh [--model 270m|4b|27b] [--threads N] [--rounds N]
#   scripts/bench-gemma3-vs-llamacpp.sh --vision [--threads N] [--rounds N]
#
# --vision measures image encoding instead: MedGemma 4B's SigLIP tower (896 px, 4096 patches, a
# random-weight f16 mmproj made once by models/scripts/make_gemma3_bench_mmproj.py) on the same
# image, ours (`generate -v`, "image(s) encoded in") against llama.cpp's `llama-mtmd-cli` ("mtmd
# batch encoding done in"), both beside the 4b text model, with each run's peak memory. The
# random text model has 262144 rows, not MedGemma's 262208, so it has no row for the image soft
# token: our run stops with an error after the image is encoded, which is all that is timed.
#
# 270m is the default letter model (installed by setup). 4b and 27b are random-weight files with
# the exact Gemma 3 4B / 27B text architecture (models/scripts/make_gemma3_bench_gguf.py, then
# llama.cpp's own llama-quantize to Q4_K_M), made once into .bench/ (git-ignored; 4b: about 8 GB
# of f16 on the way, 2.5 GB at the end, 10 minutes on 2 cores; 27b: random blocks written straight
# in the Q4_K_M mix, 16.5 GB, 5 minutes). MedGemma's weights are gated, so this measures the shape
# doctors run, not its output. A 27b round takes about 15 minutes on 2 cores.
#
# llama.cpp is only a yardstick: built from the sources vendored in the PyPI sdist of
# llama-cpp-python (about 5 minutes on 2 cores, once), never shipped. It is built for the native
# CPU but without AMX (-mno-amx-*): on CPUs that report AMX, its AMX kernel dies with SIGILL in
# `tilezero` on these machines. candle does use AMX where the kernel grants it, which favours our
# prompt figures on such CPUs; the output says which CPU features were present.
#
# Fair by construction: both engines get exactly 128 / 512 prompt tokens, both report the mean of
# a run's tokens per second and the median over rounds. Differences that remain: llama-bench's
# decode starts from an empty context, ours after the 128-token prompt (slightly more attention
# work for us); our load time includes the tokenizer and llama's is the whole short run's wall
# time (load plus one token), so it is an upper bound for llama.cpp.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model=270m threads=2 rounds=3 vision=
while [ $# -gt 0 ]; do
    case $1 in
        --vision) vision=1 model=4b; shift ;;
        --model) model=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        [0-9]*) threads=$1; shift ;;  # the old positional form
        *) echo "usage: $0 [--model 270m|4b|27b | --vision] [--threads N] [--rounds N]" >&2; exit 2 ;;
    esac
done
scripts/setup.sh >/dev/null 2>&1 || scripts/setup.sh
command -v cmake >/dev/null || { echo "installing cmake (Debian)"; apt-get install -y -qq cmake >/dev/null; }
cargo build -q --release --locked
data=${MEDSCRIBE_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/medscribe}
small=$data/models/gemma3-270m

bench=.bench/llama.cpp
if [ ! -x "$bench/build/bin/llama-bench" ] || [ ! -x "$bench/build/bin/llama-quantize" ]; then
    echo "building llama.cpp's llama-bench and llama-quantize (once, into $bench)"
    mkdir -p .bench
    if [ ! -d "$bench" ]; then
        python3 -m pip download -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==0.3.36" -d .bench
        tar -xzf .bench/llama_cpp_python-0.3.36.tar.gz -C .bench
        mv .bench/llama_cpp_python-0.3.36/vendor/llama.cpp "$bench"
    fi
    no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    cmake -S "$bench" -B "$bench/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx" >/dev/null
    cmake --build "$bench/build" --target llama-bench llama-quantize -j "$(nproc)" >/dev/null
fi

case $model in
    270m) gguf=$small/gemma-3-270m-q4_k_m.gguf ;;
    4b|27b)
        dir=.bench/gemma3-$model
        gguf=$dir/gemma3-$model-q4_k_m.gguf
        if [ ! -f "$gguf" ]; then
            echo "making the $model-shaped Q4_K_M bench file (once, into $dir)"
            [ -x .bench/venv/bin/python ] || { python3 -m venv .bench/venv && .bench/venv/bin/pip install -q numpy pyyaml tqdm requests; }
            mkdir -p "$dir"
            if [ "$model" = 27b ]; then
                # Its f16 file would be 54 GB: the random blocks go straight into llama.cpp's
                # Q4_K_M mix instead (the same types per tensor, 16.5 GB).
                .bench/venv/bin/python models/scripts/make_gemma3_bench_gguf.py --shape "$model" \
                    --random-q4-k-m --tokenizer-from "$small/gemma-3-270m-q4_k_m.gguf" --out "$gguf"
            else
                .bench/venv/bin/python models/scripts/make_gemma3_bench_gguf.py --shape "$model" \
                    --tokenizer-from "$small/gemma-3-270m-q4_k_m.gguf" --out "$dir/f16.gguf"
                "$bench/build/bin/llama-quantize" "$dir/f16.gguf" "$gguf" Q4_K_M "$threads" >/dev/null 2>&1
                rm -f "$dir/f16.gguf"
            fi
        fi
        # The same Gemma 3 vocabulary; our loader reads tokenizer.json beside a GGUF.
        cp -n "$small/tokenizer.json" "$dir/" ;;
    *) echo "unknown model $model (270m, 4b or 27b)" >&2; exit 2 ;;
esac

if [ -n "$vision" ]; then
    # A folder of its own, so the text model's folder stays as llama-bench reads it. (Beside the
    # GGUF it would cost the text-only modes nothing: the tower is read at the first image.)
    mmproj=.bench/gemma3-4b-vision/mmproj-4b-f16.gguf
    mkdir -p "$(dirname "$mmproj")"
    [ -f "$mmproj" ] || .bench/venv/bin/python models/scripts/make_gemma3_bench_mmproj.py --out "$mmproj"
    if [ ! -x "$bench/build/bin/llama-mtmd-cli" ]; then
        echo "building llama.cpp's llama-mtmd-cli (once)"
        cmake --build "$bench/build" --target llama-mtmd-cli -j "$(nproc)" >/dev/null
    fi
    image=models/fixtures/gemma3-expected/scan.png
    echo "== image encoding, $(basename "$mmproj") ($(du -m "$mmproj" | cut -f1) MB), $threads threads, $rounds rounds"
    export RAYON_NUM_THREADS=$threads
    results=$(mktemp)
    trap 'rm -f "$results" "$results.log"' EXIT
    for round in $(seq "$rounds"); do
        /usr/bin/time -f "rss %M" "$bench/build/bin/llama-mtmd-cli" -m "$gguf" --mmproj "$mmproj" \
            --image "$image" -p "Describe the image." -n 1 -t "$threads" --chat-template gemma \
            >"$results.log" 2>&1 || { tail -n 5 "$results.log"; exit 1; }
        ms=$(sed -n 's/.*mtmd batch encoding done in \([0-9]*\) ms.*/\1/p' "$results.log")
        echo "llama encode_s $(python3 -c "print($ms / 1000)")" >>"$results"
        echo "llama rss_mb $(($(sed -n 's/^rss //p' "$results.log") / 1024))" >>"$results"
        /usr/bin/time -f "rss %M" target/release/medscribe generate -v --max-new-tokens 1 --model "$gguf" \
            --mmproj "$mmproj" --image "$image" --prompt "Describe the image." >"$results.log" 2>&1 || true
        seconds=$(sed -n 's/.*image(s) encoded in \([0-9.]*\) s.*/\1/p' "$results.log")
        [ -n "$seconds" ] || { tail -n 5 "$results.log"; exit 1; }
        echo "ours encode_s $seconds" >>"$results"
        echo "ours rss_mb $(($(sed -n 's/^rss //p' "$results.log") / 1024))" >>"$results"
        echo "round $round: $(grep encode_s "$results" | tail -n 2 | tr '\n' ' ')"
    done
    python3 - "$results" <<'EOF'
import statistics, sys
values = {}
for line in open(sys.argv[1]):
    engine, metric, value = line.split()
    values.setdefault((engine, metric), []).append(float(value))
ours, theirs = (statistics.median(values[(e, "encode_s")]) for e in ("ours", "llama"))
print(f"{'':12} {'medscribe':>10} {'llama.cpp':>10} {'ratio':>8}")
print(f"{'encode_s':12} {ours:10.2f} {theirs:10.2f} {theirs / ours:7.2f}x  (speed, higher is better)")
peaks = [max(values[(e, "rss_mb")]) for e in ("ours", "llama")]
print(f"{'peak_mb':12} {peaks[0]:10.0f} {peaks[1]:10.0f} {peaks[0] / peaks[1]:7.2f}x  (whole process, text model included)")
EOF
    exit 0
fi

features=$(grep -o -w 'avx2\|avx512f\|avx512_vnni\|avx_vnni\|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')
echo "== $(basename "$gguf") ($(du -m "$gguf" | cut -f1) MB), $threads threads, $rounds rounds; CPU: $features"
prompt() { printf '<bos>'; python3 -c "print(' the' * ($1 - 1), end='')"; }
prompt128=$(prompt 128) prompt512=$(prompt 512)
export RAYON_NUM_THREADS=$threads
results=$(mktemp)
trap 'rm -f "$results" "$results.rss" "$results.llama" "$results.wall"' EXIT
for round in $(seq "$rounds"); do
    # llama.cpp: prompt 128 and 512, decode 64, one repetition per round; peak RSS of the run.
    /usr/bin/time -f "%M" -o "$results.rss" "$bench/build/bin/llama-bench" -m "$gguf" -p 128,512 -n 64 \
        -t "$threads" -r 1 -o jsonl 2>/dev/null >"$results.llama"
    python3 - "$results.llama" "$(cat "$results.rss")" >>"$results" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    test = f"prompt{row['n_prompt']}" if row["n_gen"] == 0 else f"decode{row['n_gen']}"
    print("llama", test, row["avg_ts"])
print("llama rss_mb", int(sys.argv[2]) / 1024)
EOF
    /usr/bin/time -f "%e" -o "$results.wall" "$bench/build/bin/llama-bench" -m "$gguf" -p 0 -n 1 \
        -t "$threads" -r 1 >/dev/null 2>&1
    echo "llama load_s $(tail -n1 "$results.wall")" >>"$results"
    # Ours: prompt 128 then 64 generated tokens; prompt 512 then one token.
    for spec in "128 64" "512 1"; do
        set -- $spec
        text=$prompt128; [ "$1" = 512 ] && text=$prompt512
        line=$(/usr/bin/time -f "rss %M" target/release/medscribe generate -v --raw --max-new-tokens "$2" \
            --model "$gguf" --prompt "$text" 2>&1 >/dev/null | tr '\n' ' ')
        if [ -z "${kernels_shown:-}" ]; then
            kernels_shown=1
            # The whole kernel line, up to /usr/bin/time's figure after it.
            echo "our kernels: $(sed -n 's/.*CPU kernels: \(.*\) rss [0-9]*.*/\1/p' <<<"$line")"
        fi
        python3 - "$line" "$1" >>"$results" <<'EOF'
import re, sys
line, prompt = sys.argv[1], sys.argv[2]
get = lambda pattern: float(re.search(pattern, line).group(1))
print("ours", f"prompt{prompt}", get(r"prompt \d+ tokens in [0-9.]+ s \(([0-9.]+) tok/s\)"))
print("ours rss_mb", get(r"rss (\d+)") / 1024)
if prompt == "128":
    print("ours decode64", get(r"generated \(([0-9.]+) tok/s\)"))
    print("ours load_s", get(r"loaded in ([0-9.]+) s"))
EOF
    done
done
python3 - "$results" "$(du -m "$gguf" | cut -f1)" <<'EOF'
import statistics, sys
values = {}
for line in open(sys.argv[1]):
    engine, metric, value = line.split()
    values.setdefault((engine, metric), []).append(float(value))
file_mb = float(sys.argv[2])
median = lambda engine, metric: statistics.median(values[(engine, metric)])
peak = lambda engine: max(values[(engine, "rss_mb")])
print(f"{'':12} {'medscribe':>10} {'llama.cpp':>10} {'ratio':>8}")
for metric, unit, better in [("prompt128", "tok/s", "higher"), ("prompt512", "tok/s", "higher"),
                             ("decode64", "tok/s", "higher"), ("load_s", "s", "lower")]:
    ours, theirs = median("ours", metric), median("llama", metric)
    print(f"{metric:12} {ours:10.2f} {theirs:10.2f} {ours / theirs:7.2f}x  ({unit}, {better} is better)")
print(f"{'peak_mb':12} {peak('ours'):10.0f} {peak('llama'):10.0f} {peak('ours') / peak('llama'):7.2f}x"
      f"  (file {file_mb:.0f} MB: ours {peak('ours') / file_mb:.2f}x the file)")
EOF
rm -f "$results" "$results.rss" "$results.llama" "$results.wall"
