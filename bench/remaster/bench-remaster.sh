#!/usr/bin/env bash
# bench/remaster/bench-remaster.sh — the issue-10 targets of ehat-remaster
# on CPU workers:
#   (i)   two workers on two cores vs one worker (one core; and one worker
#         with both cores through libehat's thread pool), same clip, same
#         segments — target >= 1.8x over one worker on one core;
#   (ii)  segmenting + joining cost vs a single-process gst-launch of the
#         same decode ! ehatsr ! encode ! mux — target <= 2 %; reported per
#         segment so that it can be scaled to real segment lengths;
#   (iii) kill -9 of the whole run at 50 % and --resume — target: at most
#         one segment per worker redone.
#
# Usage: bash bench/remaster/bench-remaster.sh [BUILD_DIR] [OUT_DIR]
# Env:   FRAMES (default 96), SIZE (160x96), MODEL (models/ehat-fast-x2),
#        SEGMENT_SECONDS (1), REPEAT (2: the minimum of REPEAT runs is kept)
# Prints a summary (markdown) and writes OUT_DIR/results.json.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
out=${2:-$(mktemp -d /tmp/ehat-remaster-bench-XXXXXX)}
mkdir -p "$out"
frames=${FRAMES:-96}
size=${SIZE:-160x96}
w=${size%x*}
h=${size#*x}
model=${MODEL:-$root/models/ehat-fast-x2.safetensors}
seg=${SEGMENT_SECONDS:-1}
repeat=${REPEAT:-2}
fps=24
R=$build/gst/remaster/ehat-remaster
export GST_PLUGIN_PATH=$build/gst
export EHATSR_MODEL=$model
export GST_REGISTRY=$out/registry.bin
ncpu=$(nproc)
[ "$ncpu" -ge 2 ] || { echo "needs 2 cores" >&2; exit 1; }

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

clip=$out/clip.mkv
gst-launch-1.0 -q videotestsrc pattern=ball num-buffers="$frames" ! \
  "video/x-raw,width=$w,height=$h,framerate=$fps/1" ! videoconvert ! \
  vp8enc keyframe-max-dist=12 deadline=1 ! mux.video_0 \
  audiotestsrc num-buffers=$((frames * 2000 / fps)) samplesperbuffer=24 ! \
  audio/x-raw,rate=48000 ! vorbisenc ! mux.audio_0 \
  matroskamux name=mux ! filesink location="$clip"

# one timed run: NAME CMD...  -> seconds (minimum over $repeat runs)
best() {
  local name=$1; shift
  local best_s=""
  for _ in $(seq "$repeat"); do
    rm -rf "$out/$name.mkv" "$out/$name.mkv.ehat-work"
    local t0; t0=$(now)
    "$@" >"$out/$name.log" 2>&1 || { echo "$name failed:" >&2; tail "$out/$name.log" >&2; exit 1; }
    local t1; t1=$(now)
    local s; s=$(elapsed "$t0" "$t1")
    best_s=$(python3 -c "a='$best_s'; print(min(float(a), $s) if a else $s)")
  done
  echo "$best_s"
}

remaster() { # NAME extra-args...
  local name=$1; shift
  "$R" "$clip" "$out/$name.mkv" --encoder ffv1 --model "$model" --json "$@"
}

plain() {
  gst-launch-1.0 -q filesrc location="$clip" ! matroskademux ! vp8dec ! \
    videoconvert ! ehatsr model="$model" qos=false ! videoconvert ! \
    avenc_ffv1 ! matroskamux ! filesink location="$out/plain.mkv"
}

echo "clip: $frames frames ${w}x${h} @ $fps fps, segments of ~$seg s, model $(basename "$model"), $ncpu cores" >&2
uptime >&2

# (ii) overhead, everything on one core (one thread) so that the other
# core's load from whoever else shares the machine matters less
t_plain=$(best plain taskset -c 0 bash -c "$(declare -f plain); clip=$clip out=$out model=$model plain")
t_one=$(best one taskset -c 0 "$R" "$clip" "$out/one.mkv" --encoder ffv1 --model "$model" --json --segment-seconds 100000)
t_seg1=$(best seg1 taskset -c 0 "$R" "$clip" "$out/seg1.mkv" --encoder ffv1 --model "$model" --json --segment-seconds "$seg" --keep-workdir)
nseg=$(python3 -c "import json; print(len(json.load(open('$out/seg1.mkv.ehat-work/manifest.json'))['segments']))")

# (i) scaling, same segments
t_w1=$t_seg1
t_w1t2=$(best w1t2 "$R" "$clip" "$out/w1t2.mkv" --encoder ffv1 --model "$model" --json --segment-seconds "$seg" --jobs 1)
t_w2=$(best w2 "$R" "$clip" "$out/w2.mkv" --encoder ffv1 --model "$model" --json --segment-seconds "$seg" --jobs 2)

# (iii) kill -9 at 50 %, resume
rm -rf "$out/kill.mkv" "$out/kill.mkv.ehat-work"
setsid "$R" "$clip" "$out/kill.mkv" --encoder ffv1 --model "$model" --json \
  --segment-seconds "$seg" --jobs 2 --keep-workdir >"$out/kill.log" 2>&1 &
pid=$!
killed_at=""
while kill -0 $pid 2>/dev/null; do
  st=$("$R" --status "$out/kill.mkv.ehat-work" --json 2>/dev/null || true)
  f=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(d['frames']*100//d['total'])" "$st" 2>/dev/null || echo 0)
  if [ "$f" -ge 50 ]; then
    kill -9 -- -$pid
    killed_at=$f
    break
  fi
  sleep 0.1
done
wait $pid 2>/dev/null || true
running=$(python3 -c "import json; m=json.load(open('$out/kill.mkv.ehat-work/manifest.json')); print(sum(s['state']=='running' for s in m['segments']))")
done_before=$(python3 -c "import json; m=json.load(open('$out/kill.mkv.ehat-work/manifest.json')); print(sum(s['state']=='done' for s in m['segments']))")
"$R" "$clip" "$out/kill.mkv" --encoder ffv1 --model "$model" --json --jobs 2 \
  --resume --keep-workdir >"$out/resume.log" 2>&1
redone=$(python3 -c "import json; m=json.load(open('$out/kill.mkv.ehat-work/manifest.json')); print(sum(s['attempts']>1 for s in m['segments']))")
"$R" --check "$clip" "$out/kill.mkv" >"$out/check.log"
cmp_frames=$("$R" --check "$clip" "$out/w2.mkv" | head -1)

python3 - "$out" <<PY
import json, sys
out = sys.argv[1]
r = dict(frames=$frames, size="$size", segment_seconds=$seg, segments=$nseg,
         model="$(basename "$model")", cores=$ncpu, repeat=$repeat,
         plain_s=$t_plain, one_segment_s=$t_one, segmented_1core_s=$t_seg1,
         one_worker_1core_s=$t_w1, one_worker_2threads_s=$t_w1t2,
         two_workers_s=$t_w2, killed_at_percent=${killed_at:-0},
         running_at_kill=$running, done_at_kill=$done_before, redone=$redone)
r["speedup_2w_vs_1w1core"] = r["one_worker_1core_s"] / r["two_workers_s"]
r["speedup_2w_vs_1w2threads"] = r["one_worker_2threads_s"] / r["two_workers_s"]
r["overhead_one_segment_pct"] = 100 * (r["one_segment_s"] / r["plain_s"] - 1)
r["overhead_segmented_pct"] = 100 * (r["segmented_1core_s"] / r["plain_s"] - 1)
r["overhead_per_segment_s"] = (r["segmented_1core_s"] - r["one_segment_s"]) / max(1, r["segments"] - 1)
r["fixed_overhead_s"] = r["one_segment_s"] - r["plain_s"]
r["s_per_frame_1core"] = r["plain_s"] / r["frames"]
json.dump(r, open(out + "/results.json", "w"), indent=1)
print(f"""| measurement | value |
|---|---|
| clip | {r['frames']} frames {r['size']}, {r['segments']} segments of ~{r['segment_seconds']} s, {r['model']} |
| plain gst-launch, 1 core | {r['plain_s']:.2f} s ({r['s_per_frame_1core']*1000:.0f} ms/frame) |
| ehat-remaster, 1 segment, 1 core | {r['one_segment_s']:.2f} s ({r['overhead_one_segment_pct']:+.1f} %, fixed cost {r['fixed_overhead_s']:.2f} s: probe, worker start, join) |
| ehat-remaster, {r['segments']} segments, 1 worker, 1 core | {r['segmented_1core_s']:.2f} s ({r['overhead_segmented_pct']:+.1f} %, {r['overhead_per_segment_s']:.2f} s per extra segment) |
| 1 worker, 2 threads (libehat pool) | {r['one_worker_2threads_s']:.2f} s |
| 2 workers, 1 core each | {r['two_workers_s']:.2f} s |
| speed-up 2 workers vs 1 worker on 1 core | {r['speedup_2w_vs_1w1core']:.2f}x |
| speed-up 2 workers vs 1 worker with 2 threads | {r['speedup_2w_vs_1w2threads']:.2f}x |
| kill -9 at {r['killed_at_percent']} %: segments running / done | {r['running_at_kill']} / {r['done_at_kill']} |
| segments redone by --resume (2 workers) | {r['redone']} |""")
PY
echo "check of the resumed output: $(cat "$out/check.log")" >&2
echo "check of the 2-worker output: $cmp_frames" >&2
uptime >&2
echo "results: $out/results.json" >&2
