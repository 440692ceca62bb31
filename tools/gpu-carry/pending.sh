#!/bin/bash
# Every GPU check issues 6 and 10 still owe, in one device call, most important first.
# Made for sessions with little device time: each step has its own time limit, the whole run
# ends before EHAT_PENDING_SECONDS (default 570, inside a 600 s call), a step that would not
# fit is reported as not run, and every step's full log lands in $OUT.
#
#   here:        ninja -C build && tools/gpu-carry/make.sh
#   device tool: run(carry=[".gpu"], timeout_s=600, command="bash tools/gpu-carry/pending.sh")
#                (or name steps: ... pending.sh remaster bench)
#
# Steps (default: all, in this order: correctness, then the measurements that decide defaults,
# then issue 10's device checks; `bench` needs ≥ 7 minutes and usually a call of its own):
#   cuda       meson's cuda suite, backend-module and emulator-semantics tests (every golden
#              case per precision, the kernels against the CPU, the fused GEMM, CUDA graphs, OOM
#              retry, shipped models; device-memory figures)
#   memory     ehat bench of a HAT-L ×4 at 480×270 in fp16: weights and device peak (and the
#              model the next two steps use)
#   gemm       EHAT_CUDA_GEMM=cublas/conv/fused interleaved on the shipped ×2 at 960×540 and
#              the HAT-L ×4, then one profiled pass of cublas and fused on HAT-L: decides the
#              fused GEMM's default (and a profiled pass with the attention's dense bias; the
#              direct kernel of the last convolution on and off, EHAT_CUDA_CONV_DIRECT)
#   frames     the shipped ×2 at 960×540 in fp16, I420 frames in and out: the colour conversion on
#              the GPU (the default) against the host's (EHAT_FRAME_CONVERSION=host), interleaved,
#              in `ehat bench --frame I420` (beside float planes) and in ehatsr on the clip
#   graphs     CUDA graphs off and on, interleaved (EHAT_CUDA_GRAPHS=0/1), on the same two
#   sanitize   compute-sanitizer memcheck on a golden case and the frame kernels, racecheck on the
#              attention (SIMT and tensor-core) and fused GEMM kernels, initcheck on the out-of-memory fallback
#   remaster   ehat-remaster on a 960×540 clip: --backend cuda with nvh264 and nvh265, and
#              --devices 0,0 --jobs 2 (two workers sharing the GPU), each checked with --check;
#              the JSON reports give frames/s for docs/remastering.md
#   installed  `meson install` layout unpacked into / (root only): `ehat` finds the CUDA module
#              under $libdir/ehat-1 without EHAT_BACKEND_PATH, and gst-launch-1.0 runs the
#              installed ehatsr with its default model on the GPU
#   bench      bench/gpu-vs-torch, EHAT-L-sized ×2 at 960×540 (issue 6's case b): ehat in every
#              precision, torch fp16 eager, half eager and torch.compile
#   profile    (not in the default list) Nsight Compute on HAT-L's tensor-core attention and
#              fused GEMM kernels, when the device has ncu: what bounds them (memory, L2, issue,
#              the exp unit), before tuning them further
# Without a GPU (a dry run on the machine that made .gpu) the CUDA steps skip or fail fast.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
t_start=$(date +%s)
deadline=$((t_start + ${EHAT_PENDING_SECONDS:-570}))
out=${OUT:-/tmp/ehat-pending}
work=${TMPDIR:-/tmp}/ehat-pending-work
mkdir -p "$out" "$work"
[ -f .gpu/setup.sh ] || { echo "pending.sh: no .gpu (run tools/gpu-carry/make.sh first)" >&2; exit 2; }
# shellcheck source=/dev/null
source .gpu/setup.sh || exit 2
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(cuda memory gemm frames graphs sanitize remaster installed bench)
summary=()

# step NAME LIMIT: run step_NAME (in a child: `timeout` runs programs, not functions) with at
# most LIMIT seconds (less when the deadline is near),
# its output in $out/NAME.log, the log's end echoed for the call's output tail
step() {
  local name=$1 limit=$2 left t0 rc
  left=$((deadline - $(date +%s) - 5))
  if [ "$left" -lt 20 ]; then
    summary+=("$name: not run (no time left)")
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "### $name (limit ${limit}s)"
  t0=$(date +%s)
  timeout -k 5 "$limit" bash "$0" --one "$name" >"$out/$name.log" 2>&1
  rc=$?
  tail -n "${EHAT_PENDING_TAIL:-25}" "$out/$name.log"
  summary+=("$name: rc=$rc in $(($(date +%s) - t0)) s$([ $rc -eq 124 ] && echo ' (time limit)')")
}

step_cuda() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "${PYTHON:-python3}" .gpu/run.py --timeout 300 cuda backend-module emulator-semantics
}

step_sanitize() {
  local cs=compute-sanitizer rc=0
  "${PYTHON:-python3}" .gpu/run.py --timeout 120 --wrap "$cs --tool memcheck --error-exitcode 3" cuda \
    -- -p /cuda/golden/ehat-tiny-x2 -p /cuda/input-output -p /cuda/frame/ops -p /cuda/conv \
    -p /cuda/gemm-fused -p /cuda/attention-narrow || rc=1
  "${PYTHON:-python3}" .gpu/run.py --timeout 120 --wrap "$cs --tool racecheck --error-exitcode 3" cuda \
    -- -p /cuda/attention -p /cuda/attention-narrow -p /cuda/channel-attention \
    -p /cuda/gemm-fused || rc=1
  # uninitialised device reads on the out-of-memory path (session 11 saw one
  # frame differ there once, on the emulator, never reproduced)
  "${PYTHON:-python3}" .gpu/run.py --timeout 150 --wrap "$cs --tool initcheck --error-exitcode 3" cuda \
    -- -p /cuda/oom -p /cuda/frame/upscale || rc=1
  return $rc
}

step_installed() {
  local lib model
  if [ "$root" = "$CHECKOUT" ]; then
    echo "installed: dry run on the machine that made .gpu; not unpacking into / here"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "installed: not root, cannot unpack into /"
    return 1
  fi
  tar xJf .gpu/install.tar.xz -C / && ldconfig
  lib=$(dirname "$(find /usr/local/lib* -name libehat.so.0 -print -quit)")
  model=$(find /usr/local/share -name ehat-fast-x2.safetensors -print -quit)
  echo "libehat in $lib, module: $(ls "$lib"/ehat-1/)"
  # no EHAT_BACKEND_PATH: libehat must find its module where meson installed it
  env -u EHAT_BACKEND_PATH /usr/local/bin/ehat bench --model "$model" --size 256x256 \
    --backend cuda --repeat 3 --json || return 1
  # the README's main job, on the installed plugin and its default model: GPU when present
  env -u EHAT_BACKEND_PATH GST_PLUGIN_PATH_1_0="$lib/gstreamer-1.0" GST_DEBUG=ehatsr:4 \
    GST_REGISTRY_1_0=/tmp/ehat-gst-registry-installed.bin \
    gst-launch-1.0 filesrc location=samples/cockatoo-320x180.webm ! decodebin ! videoconvert ! \
    ehatsr ! videoconvert ! fakesink 2>&1 | grep -E "engine:|fallback|ERROR|Execution ended"
}

step_remaster() {
  # EHAT_PENDING_BACKEND / _CLIP: a dry run here on the CPU, e.g. cpu and the sample clip
  local clip=${EHAT_PENDING_CLIP:-.gpu/clip-960x540.webm} be=${EHAT_PENDING_BACKEND:-cuda}
  local model=models/ehat-fast-x2.safetensors rc=0
  gst-inspect-1.0 nvh264enc >/dev/null 2>&1 || echo "remaster: no nvh264enc here (NVENC libraries missing?)"
  for run in "nvh264 --backend $be" "nvh265 --backend $be" \
      "x264 --backend $be --devices 0,0 --jobs 2 --segment-seconds 1"; do
    set -- $run
    local enc=$1
    shift
    echo "--- ehat-remaster --encoder $enc $*"
    build/gst/remaster/ehat-remaster "$clip" "$work/r-$enc.mkv" --model "$model" --encoder "$enc" --force --json "$@" \
      | grep -v '"event":"progress"' | tail -n 3 || rc=1
    build/gst/remaster/ehat-remaster "$clip" "$work/r-$enc.mkv" --check || rc=1
  done
  return $rc
}

step_memory() {
  "${PYTHON:-python3}" tools/make_model.py --preset hat-l-x4 -o "$work/hat-l-x4.safetensors" &&
    build/ehat-core/ehat bench --model "$work/hat-l-x4.safetensors" --size 480x270 \
      --backend cuda --precision fp16 --repeat 3 --json
}

step_graphs() {
  # --warmup 2: the first pass of a shape runs eagerly, the second records the graph; the
  # timed passes replay it.  The backend's debug line at exit says how many were recorded,
  # replayed or failed (and a failed recording says why).
  local fast=models/ehat-fast-x2.safetensors big=$work/hat-l-x4.safetensors
  for g in 0 1 0 1; do
    echo "--- EHAT_CUDA_GRAPHS=$g ehat-fast-x2 960x540 fp16"
    G_MESSAGES_DEBUG=ehat EHAT_CUDA_GRAPHS=$g build/ehat-core/ehat bench --model "$fast" --size 960x540 \
      --backend cuda --precision fp16 --warmup 2 --repeat 10 --json || return 1
  done
  [ -f "$big" ] || { echo "graphs: no $big (the memory step makes it)"; return 0; }
  for g in 0 1; do
    echo "--- EHAT_CUDA_GRAPHS=$g hat-l-x4 480x270 fp16"
    G_MESSAGES_DEBUG=ehat EHAT_CUDA_GRAPHS=$g build/ehat-core/ehat bench --model "$big" --size 480x270 \
      --backend cuda --precision fp16 --warmup 2 --repeat 3 --json || return 1
  done
}

step_gemm() {
  # The fused tensor-core GEMM (ehat-cuda-gemm-mma.cu: implicit-GEMM convolution, epilogue in
  # the kernel) against im2col/padding copies + cuBLAS + epilogue passes, interleaved: for
  # every layer (fused), for convolutions only (conv), for none (cublas); then one profiled
  # pass each of HAT-L (EHAT_CUDA_PROFILE: per-operation table on stderr, conv and linear
  # apart).  Make the winner the default in cuda_backend_new (cb->fused_conv/_linear).
  local fast=models/ehat-fast-x2.safetensors big=$work/hat-l-x4.safetensors
  for m in cublas conv fused cublas conv fused; do
    echo "--- EHAT_CUDA_GEMM=$m ehat-fast-x2 960x540 fp16"
    EHAT_CUDA_GEMM=$m build/ehat-core/ehat bench --model "$fast" --size 960x540 \
      --backend cuda --precision fp16 --warmup 2 --repeat 10 --json || return 1
  done
  # the direct kernel for convolutions with ≤ 8 outputs (the last one, at the output
  # resolution) against the GEMM path, interleaved
  for d in 0 1 0 1; do
    echo "--- EHAT_CUDA_CONV_DIRECT=$d ehat-fast-x2 960x540 fp16"
    EHAT_CUDA_CONV_DIRECT=$d build/ehat-core/ehat bench --model "$fast" --size 960x540 \
      --backend cuda --precision fp16 --warmup 2 --repeat 10 --json || return 1
  done
  [ -f "$big" ] || { echo "gemm: no $big (the memory step makes it)"; return 0; }
  for m in cublas conv fused cublas conv fused; do
    echo "--- EHAT_CUDA_GEMM=$m hat-l-x4 480x270 fp16"
    EHAT_CUDA_GEMM=$m build/ehat-core/ehat bench --model "$big" --size 480x270 \
      --backend cuda --precision fp16 --warmup 2 --repeat 3 --json || return 1
  done
  for m in cublas fused; do
    echo "--- EHAT_CUDA_GEMM=$m EHAT_CUDA_PROFILE=1 hat-l-x4 480x270 fp16"
    EHAT_CUDA_PROFILE=1 EHAT_CUDA_GEMM=$m build/ehat-core/ehat bench --model "$big" \
      --size 480x270 --backend cuda --precision fp16 --warmup 1 --repeat 1 --json || return 1
  done
  # the attention's bias from the dense expansion (the old path; kernels/README.md): its window
  # and overlap attention rows against the cublas pass above
  echo "--- EHAT_CUDA_ATTENTION=dense EHAT_CUDA_GEMM=cublas EHAT_CUDA_PROFILE=1 hat-l-x4 480x270 fp16"
  EHAT_CUDA_ATTENTION=dense EHAT_CUDA_PROFILE=1 EHAT_CUDA_GEMM=cublas build/ehat-core/ehat bench \
    --model "$big" --size 480x270 --backend cuda --precision fp16 --warmup 1 --repeat 1 --json \
    || return 1
}

step_frames() {
  # The element's own time per frame (its LOG line "frame WxH: N ms": conversion in, network,
  # conversion out), median after 5 warm-up frames.  A dry run here: EHAT_PENDING_BACKEND=cpu,
  # EHAT_PENDING_SIZE=64x48 and EHAT_PENDING_CLIP=samples/cockatoo-320x180.webm.
  local clip=${EHAT_PENDING_CLIP:-.gpu/clip-960x540.webm} be=${EHAT_PENDING_BACKEND:-cuda}
  local model=models/ehat-fast-x2.safetensors prec=fp16 size=${EHAT_PENDING_SIZE:-960x540} c
  [ "$be" = cpu ] && prec=fp32
  # libehat alone first: float planes in and out (ehat_engine_process), then I420 frames with
  # the conversion on the host and on the device (ehat_upscale_frame)
  for c in planes device host planes device host; do
    echo "--- ehat bench $c ehat-fast-x2 $size $prec ($be)"
    if [ $c = planes ]; then
      build/ehat-core/ehat bench --model "$model" --size "$size" --backend "$be" \
        --precision $prec --warmup 2 --repeat 10 --json | grep -E '"(median|min)_ms"' || return 1
    else
      EHAT_FRAME_CONVERSION=$c build/ehat-core/ehat bench --model "$model" --size "$size" \
        --frame I420 --backend "$be" --precision $prec --warmup 2 --repeat 10 --json \
        | grep -E '"(median|min)_ms"' || return 1
    fi
  done
  for c in device host device host; do
    echo "--- EHAT_FRAME_CONVERSION=$c ehatsr ehat-fast-x2 I420 $prec ($be)"
    EHAT_FRAME_CONVERSION=$c GST_DEBUG=ehatsr:6 GST_DEBUG_NO_COLOR=1 gst-launch-1.0 -q \
      filesrc location="$clip" ! decodebin ! videoconvert ! video/x-raw,format=I420 ! \
      ehatsr model="$model" backend="$be" precision=$prec ! fakesink 2>&1 \
      | grep -o 'frame [0-9]*x[0-9]*: [0-9.]* ms' | awk '{print $3}' | tail -n +6 | sort -n \
      | awk '{a[NR] = $1} END {if (!NR) {print "no frames"; exit 1}
          printf "%d frames: median %.2f ms, min %.2f ms\n", NR, a[int((NR + 1) / 2)], a[1]}' \
      || return 1
  done
}

step_profile() {
  local big=$work/hat-l-x4.safetensors ncu
  ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -n 1)
  [ -n "$ncu" ] || { echo "profile: no ncu on this machine"; return 1; }
  [ -f "$big" ] || "${PYTHON:-python3}" tools/make_model.py --preset hat-l-x4 -o "$big" || return 1
  # the first launches of each kind, eager (--warmup 0: the first pass records no graph); by
  # mangled name: <T, DP, OVERLAP, REL> tells HAB (Lb0E) from OCAB (Lb1E) with the table bias
  local k n
  for k in 'attention_mma_kernel.*Lb0ELb1E:2' 'attention_mma_kernel.*Lb1ELb1E:1' \
      'gemm_fused_kernel:3'; do
    n=${k##*:}
    k=${k%:*}
    echo "--- ncu $k, $n launches (HAT-L 480x270 fp16, EHAT_CUDA_GEMM=fused)"
    EHAT_CUDA_GEMM=fused "$ncu" --kernel-name-base mangled --kernel-name "regex:$k" \
      --launch-count "$n" --section SpeedOfLight --section MemoryWorkloadAnalysis \
      --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis \
      build/ehat-core/ehat bench --model "$big" --size 480x270 --backend cuda --precision fp16 \
      --warmup 0 --repeat 1 || return 1
  done
}

step_bench() {
  PYTHONUNBUFFERED=1 "${PYTHON:-python3}" bench/gpu-vs-torch --ehat build/ehat-core/ehat --preset ehat-x2 \
    --size 960x540 --torch-modes fp16-eager,half-eager,fp16-compile --repeat 3 --warmup 1 \
    --timeout 400 --json "$out/gpu-vs-torch-ehat-x2-960x540.json"
}

limit_of() {
  case $1 in
    cuda) echo 200 ;; sanitize) echo 300 ;; installed) echo 60 ;; remaster) echo 120 ;;
    memory) echo 60 ;; graphs) echo 60 ;; gemm) echo 120 ;; frames) echo 90 ;; bench) echo 450 ;;
    profile) echo 240 ;;
    *) echo 0 ;;
  esac
}

if [ "${1:-}" = --one ]; then
  "step_$2"
  exit
fi
for s in "${steps[@]}"; do
  if [ "$(limit_of "$s")" = 0 ]; then
    echo "pending.sh: no step '$s'" >&2
    exit 2
  fi
done
for s in "${steps[@]}"; do
  step "$s" "$(limit_of "$s")"
done
echo "### summary ($(($(date +%s) - t_start)) s; logs in \$OUT)"
printf '  %s\n' "${summary[@]}"
