#!/usr/bin/env bash
# Load figures for `medscribe serve` (issue 13): N concurrent clients, each sending the sample
# dictation (samples/referral-dictation.wav, 19 s) to POST /v1/audio/transcriptions as fast as
# answers come back, for N = 1, 2, 4, 8. Reports throughput in audio seconds per second, p50/p95
# latency, the server's peak RSS, and rejections (429). Then 1,000 requests more, with the
# server's RSS sampled every 100, to show that memory stays flat.
#
#   scripts/bench-serve-load.sh [--max-concurrent N] [--queue N] [--requests-per-client N]
#
# Setup must have run (the default models, and the venv whose httpx drives the clients).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
slots=2 queue=16 per_client=8
while [ $# -gt 0 ]; do
    case $1 in
        --max-concurrent) slots=$2; shift 2 ;;
        --queue) queue=$2; shift 2 ;;
        --requests-per-client) per_client=$2; shift 2 ;;
        *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
cargo build -q --release --locked
log=$(mktemp)
target/release/medscribe serve --bind 127.0.0.1:0 --max-concurrent "$slots" --queue "$queue" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
url=""
for _ in $(seq 600); do
    url=$(sed -n 's/^medscribe: serving on //p' "$log")
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { cat "$log"; exit 1; }
echo "server: $(nproc) cores, --max-concurrent $slots --queue $queue, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
.venv/bin/python - "$url" "$server" "$per_client" samples/referral-dictation.wav <<'PY'
import statistics, sys, threading, time
import httpx2 as httpx  # what the openai client in setup's venv uses

url, pid, per_client, wav = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
audio = open(wav, "rb").read()
audio_s = httpx.post(f"{url}/v1/audio/transcriptions", timeout=600,
                     files={"file": ("dictation.wav", audio, "audio/wav")},
                     data={"response_format": "verbose_json"}).json()["duration"]


def rss_mb(field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def run(clients, requests_each):
    latencies, statuses, lock = [], [], threading.Lock()

    def client():
        with httpx.Client(timeout=600) as http:
            for _ in range(requests_each):
                start = time.perf_counter()
                r = http.post(f"{url}/v1/audio/transcriptions",
                              files={"file": ("dictation.wav", audio, "audio/wav")},
                              data={"model": "whisper-1"})
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, statuses


print("| clients | requests | audio s per s | p50 latency | p95 latency | peak RSS | 429 | other errors |")
print("|---|---|---|---|---|---|---|---|")
for clients in (1, 2, 4, 8):
    wall, latencies, statuses = run(clients, per_client)
    ok = statuses.count(200)
    p95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) >= 2 else latencies[0]
    print(f"| {clients} | {len(statuses)} | {ok * audio_s / wall:.1f} | "
          f"{statistics.median(latencies):.2f} s | {p95:.2f} s | {rss_mb('VmHWM'):.0f} MB | "
          f"{statuses.count(429)} | {len(statuses) - ok - statuses.count(429)} |", flush=True)

print()
print("1,000 more requests from 4 clients; the server's RSS every 100:")
samples = [rss_mb("VmRSS")]
errors = 0
for _ in range(10):
    _, _, statuses = run(4, 25)
    errors += sum(1 for s in statuses if s != 200)
    samples.append(rss_mb("VmRSS"))
print(" ".join(f"{s:.0f}" for s in samples), f"MB; not 200: {errors}")
PY
kill -TERM $server
wait $server || true
tail -2 "$log"
