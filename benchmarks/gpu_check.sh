#!/usr/bin/env bash
# benchmarks/gpu_check.sh: floq's trainer on an NVIDIA GPU, in one script of < 10 minutes.
#
#   bash benchmarks/gpu_check.sh              on a machine with an NVIDIA GPU
#   bash benchmarks/gpu_check.sh --dry-run    print every command it would run; run nothing
#   bash benchmarks/gpu_check.sh --cpu        the same steps at tiny sizes on the CPU (a few
#                                             minutes; output in a temp dir unless --out)
#   options: --out DIR (default benchmarks/results; --cpu: a new temp dir)
#            --venv DIR (default .venv-gpu; --cpu: .venv)
#            --real-critic monolithic|floq (the real run; default floq)
#            --python PY  use this interpreter as it is, no venv: its jax (with its CUDA plugin)
#                         is used; floq's other needs come from --wheels, installed with --no-deps
#                         into a folder on PYTHONPATH (a machine with no network, e.g. the lent H200)
#            --wheels DIR wheels to install (no index); with --python: `pip install --no-deps
#                         --target`; else into the venv
#            --released DIR   the released floq repository (github:CMU-AIRe/floq, fetched outside
#                         this repository): adds step 3b, benchmarks/side_by_side.py for floq and its
#                         FQL agent (rows benchmark=side_by_side, impl=released|floq); its extra
#                         packages (ml_collections; distrax optional) from --wheels or the environment
#            --released-fql DIR  github:seohongpark/fql for the FQL side by side (default: the
#                         released floq repository's FQL agent)
#   env:     FLOQ_WHEELS=DIR  the same as --wheels
#
# Steps (each time-boxed; about 9 minutes on an H200, under the device tool's 10-minute command limit;
# measured 2026-12-04: bench 5.5 min with FLOP counting, profile 40 s, data 27 s, real run 76 s):
#   1. venv + `pip install -e '.[cuda]'` (skipped when the venv already imports floq and sees a GPU),
#      or with --python: the wheels into a target folder, the repository on PYTHONPATH
#   2. floq bench: f32 and bf16 matmul peaks (8192^3), updates/s of FQL (monolithic) and floq at
#      the paper configuration (f32, bf16, the per-step loop), 1, 2, 4, 8, 16 vmapped seeds, a
#      5-task program, time and memory per update vs K in {1, 2, 4, 8, 16, 32} (paper config)
#   3. benchmarks/profile_update.py: a jax.profiler trace of paper floq (f32, bf16), summarised
#   4. floq data generate cube-double-play-v0 (100 episodes, one worker per core)
#   5. a 20k-step real run on it (paper config, async evaluation every 5k steps, 50 episodes,
#      one worker per core but one); stopped with SIGTERM at its time box ('preempted', kept)
# Output: <out>/gpu_<device>_<date>.csv and .md (the bench table + targets, then the real run).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

DRY=0
CPU=0
OUT=""
VENV=""
REAL_CRITIC="floq"
SYSPY=""
WHEELS="${FLOQ_WHEELS:-}"
RELEASED=""
RELEASED_FQL=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --cpu) CPU=1 ;;
    --out) OUT="$2"; shift ;;
    --venv) VENV="$2"; shift ;;
    --real-critic) REAL_CRITIC="$2"; shift ;;
    --python) SYSPY="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    --released) RELEASED="$2"; shift ;;
    --released-fql) RELEASED_FQL="$2"; shift ;;
    -h|--help) sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
case "$REAL_CRITIC" in monolithic|floq) ;; *) echo "gpu_check.sh: --real-critic monolithic|floq" >&2; exit 2 ;; esac

T0=$(date +%s)
DATE=$(date +%Y%m%d)
if [[ $CPU == 1 ]]; then
  DEVICE="cpu$(nproc)"
  VENV="${VENV:-.venv}"
  if [[ -z "$OUT" ]]; then
    if [[ $DRY == 1 ]]; then OUT=/tmp/floq-gpu-check-cpu-XXXXXX; else OUT=$(mktemp -d /tmp/floq-gpu-check-cpu-XXXXXX); fi
  fi
  export JAX_PLATFORMS=cpu
else
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr '[:upper:]' '[:lower:]' \
             | sed 's/[^a-z0-9]\+/-/g; s/^-//; s/-$//')
  elif [[ $DRY == 1 ]]; then
    DEVICE="nvidia-gpu"
  else
    echo "gpu_check.sh: no NVIDIA GPU (nvidia-smi -L failed); use --cpu to test the script" >&2
    exit 1
  fi
  VENV="${VENV:-.venv-gpu}"
  OUT="${OUT:-$REPO/benchmarks/results}"
fi
NAME="gpu_${DEVICE}_${DATE}"
WORK="${FLOQ_GPU_CHECK_WORK:-/tmp/floq-gpu-check-work-$$}"
PY="$VENV/bin/python"
[[ -n "$SYSPY" ]] && PY="$SYSPY"
export FLOQ_DATA_DIR="$WORK/data"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$REPO/.floq_cache/jax}"
export TF_CPP_MIN_LOG_LEVEL=2

# Sizes: the GPU check, and its tiny twin for --cpu.
if [[ $CPU == 1 ]]; then
  BENCH_SIZE=(--tiny --configs tiny --seed-configs tiny --seed-counts 1,2,4 --matmul-n 256
              --k-config tiny --k-values 1,2,4 --task-configs tiny --task-counts 1,5)
  PROFILE=(--config tiny --steps 16 --rows 1000)
  GEN=(--episodes 2 --val-episodes 1 --episode-length 101 --workers 2)
  REAL_STEPS=300; REAL_EVAL=100; REAL_EPISODES=4; REAL_CONFIG=smoke
  REAL_SIZE=(--bind BATCH_SIZE=32 --bind ACTOR_WIDTH=32 --bind ACTOR_DEPTH=2 --bind CRITIC_WIDTH=32
             --bind CRITIC_DEPTH=2 --bind FLOW_FIELD_DEPTH=2 --bind DISTILL_WIDTH=32 --bind DISTILL_DEPTH=2
             --bind CRITIC_FLOW_STEPS=2 --bind NOISE_SAMPLES=4 --bind CHUNK_SIZE=50 --bind Trainer.eval_workers=2)
  BOX_INSTALL=300; BOX_BENCH=420; BOX_PROFILE=120; BOX_DATA=120; BOX_REAL=180; BOX_SBS=300
  SBS_SIZE=(--config tiny --steps 5 --rounds 3 --rows 2000)
else
  BENCH_SIZE=(--configs paper --seed-configs paper --seed-counts 1,2,4,8,16 --matmul-n 8192 --repeats 3 --scaling-critics floq
              --k-config paper --k-values 1,2,4,8,16,32 --task-configs paper --task-counts 1,5)
  PROFILE=(--config paper --steps 64)
  GEN=(--episodes 100 --workers "$(nproc)")
  REAL_STEPS=20000; REAL_EVAL=5000; REAL_EPISODES=50; REAL_CONFIG=paper
  REAL_SIZE=(--bind CHUNK_SIZE=1000 --bind Trainer.eval_workers=$(( $(nproc) - 1 )))
  BOX_INSTALL=60; BOX_BENCH=${FLOQ_BOX_BENCH:-380}; BOX_PROFILE=40; BOX_DATA=50; BOX_REAL=${FLOQ_BOX_REAL:-90}
  BOX_SBS=${FLOQ_BOX_SBS:-150}
  SBS_SIZE=(--config paper --steps 500 --rounds 3)
fi

LOG=()
say() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*" >&2; }
# run BOX_SECONDS CMD...: print the command; run it (unless --dry-run) under a time box.
run() {
  local box="$1"; shift
  printf '+ timeout %s' "$box"; printf ' %q' "$@"; printf '\n'
  [[ $DRY == 1 ]] && return 0
  local t=$(date +%s) rc=0
  timeout --signal=TERM --kill-after=60 "$box" "$@" || rc=$?
  LOG+=("$(printf '%s' "$*" | tr '\n' ' ' | cut -c1-110) -> exit $rc, $(( $(date +%s) - t )) s")
  return $rc
}

say "device $DEVICE; venv $VENV; out $OUT/$NAME.{csv,md}; work $WORK$([[ $DRY == 1 ]] && echo '; DRY RUN')"
[[ $DRY == 1 ]] || mkdir -p "$OUT" "$WORK"

# 1. venv + floq --------------------------------------------------------------------------
EXTRA=".[cuda]"; [[ $CPU == 1 ]] && EXTRA="."
CHECK="import jax, floq; import sys; sys.exit(0 if $([[ $CPU == 1 ]] && echo True || echo "jax.devices()[0].platform == 'gpu'") else 1)"
if [[ -n "$SYSPY" ]]; then
  say "1. $SYSPY as it is (its jax), wheels from ${WHEELS:-nowhere} into $WORK/site, the repository on PYTHONPATH"
  if [[ -n "$WHEELS" ]]; then
    run "$BOX_INSTALL" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$WORK/site" $([[ $DRY == 1 ]] && echo "$WHEELS/*.whl" || ls "$WHEELS"/*.whl)
  fi
  export PYTHONPATH="$WORK/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
  [[ $DRY == 1 ]] || "$PY" -c "$CHECK" || { say "$PY cannot import floq or sees no device"; "$PY" -c "import jax, floq; print(jax.devices())"; exit 1; }
elif [[ $DRY == 0 && -x "$PY" ]] && "$PY" -c "$CHECK" >/dev/null 2>&1; then
  say "1. $VENV already has floq and sees the device: no install"
else
  say "1. venv + floq$EXTRA$([[ $DRY == 1 ]] && echo " (at run time: skipped when $VENV already imports floq and sees the device)")"
  [[ -x "$PY" ]] || run 120 python3 -m venv "$VENV"
  if [[ -n "${FLOQ_WHEELS:-}" ]]; then
    run "$BOX_INSTALL" "$PY" -m pip install -q --no-index --find-links "$FLOQ_WHEELS" setuptools wheel
    run "$BOX_INSTALL" "$PY" -m pip install -q --no-index --find-links "$FLOQ_WHEELS" --no-build-isolation -e "$EXTRA"
  else
    run "$BOX_INSTALL" "$PY" -m pip install -q -e "$EXTRA"
  fi
  run 120 "$PY" -c "$CHECK"
fi
run 60 "$PY" -c "import jax, mujoco, ogbench, flax, optax; print('jax', jax.__version__, jax.devices(), 'mujoco', mujoco.__version__, 'flax', flax.__version__, 'optax', optax.__version__)"
[[ $DRY == 1 || $CPU == 1 ]] || nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv || true

# 2. floq bench: peak, throughput x seeds, bf16, per-step, eval overhead ---------------------
say "2. floq bench"
[[ $DRY == 1 ]] || rm -f "$OUT/$NAME.csv" "$OUT/$NAME.md"  # no stale table from an earlier run today
run "$BOX_BENCH" "$PY" -m floq bench "${BENCH_SIZE[@]}" --critics monolithic,floq \
  --only throughput,per_step,bf16,seeds,tasks,flow_steps --out "$OUT" --name "$NAME.csv" || say "bench failed (rc $?)"

# 3. profile ---------------------------------------------------------------------------------
say "3. profile of one chunk (jax.profiler trace, summarised)"
for prec in float32 bfloat16; do
  run "$BOX_PROFILE" "$PY" -m benchmarks.profile_update "${PROFILE[@]}" --critic floq --precision "$prec" --out "$WORK/profile" \
    || say "profile ($prec) failed (rc $?)"
done

# 3b. side by side with the released code (only with --released) -----------------------------
if [[ -n "$RELEASED" ]]; then
  say "3b. side by side: the released agents' jitted updates vs floq's program"
  run "$BOX_SBS" "$PY" -m benchmarks.side_by_side --released "$RELEASED" --agent floq "${SBS_SIZE[@]}" \
    --out "$OUT" --name "$NAME.csv" || say "side by side (floq) failed (rc $?)"
  run "$BOX_SBS" "$PY" -m benchmarks.side_by_side --released "${RELEASED_FQL:-$RELEASED}" --agent fql "${SBS_SIZE[@]}" \
    --out "$OUT" --name "$NAME.csv" || say "side by side (fql) failed (rc $?)"
fi

# 4. data ------------------------------------------------------------------------------------
say "4. floq data generate cube-double-play-v0"
run "$BOX_DATA" "$PY" -m floq data generate cube-double-play-v0 "${GEN[@]}" --out "$WORK/data" --no-progress \
  || say "data generation failed (rc $?)"
TRAIN_FILE="$WORK/data/cube-double-play-v0.npz"
if [[ $DRY == 0 ]]; then
  TRAIN_FILE=$(ls "$WORK"/data/cube-double-play-v0*.npz 2>/dev/null | grep -v -- '-val' | head -1 || true)
fi

# 5. the real run ----------------------------------------------------------------------------
say "5. ${REAL_STEPS}-step run ($REAL_CRITIC) on $TRAIN_FILE"
RUN_DIR="$WORK/runs/real_$REAL_CRITIC"
run "$BOX_REAL" "$PY" -m floq run gin/algorithms/fql.gin "gin/critics/$REAL_CRITIC.gin" gin/tasks/cube-double-play.gin \
  --bind "DATASET_PATH='$TRAIN_FILE'" --bind "TRAIN_STEPS=$REAL_STEPS" --bind "EVAL_INTERVAL=$REAL_EVAL" \
  --bind "EVAL_EPISODES=$REAL_EPISODES" --bind "LOG_INTERVAL=$(( REAL_EVAL / 2 ))" \
  --bind "CHECKPOINT_INTERVAL=$(( REAL_STEPS / 2 ))" --bind Trainer.async_eval=True --bind Trainer.progress=False \
  --bind "EXPERIMENT='gpu_check'" "${REAL_SIZE[@]}" --run-dir "$RUN_DIR" \
  || say "the real run ended with rc $? (143/124: time box reached, partial figures kept)"

# 6. one CSV + Markdown ------------------------------------------------------------------------
say "6. results -> $OUT/$NAME.{csv,md}"
[[ $DRY == 1 ]] || printf '%s\n' "${LOG[@]:-}" > "$WORK/steps.log"
run 60 env FLOQ_STEPS_LOG="$WORK/steps.log" FLOQ_PROFILE_DIR="$WORK/profile" FLOQ_TOTAL_S="$(( $(date +%s) - T0 ))" "$PY" - "$OUT/$NAME.csv" "$RUN_DIR" \
  "$REAL_CRITIC" "$REAL_CONFIG" <<'EOF'
import csv, json, os, sys
from benchmarks.bench import markdown, write_csv
path, run_dir, critic, config = sys.argv[1:5]
rows = list(csv.DictReader(open(path))) if os.path.exists(path) else []
man = json.load(open(os.path.join(run_dir, "run.json"))) if os.path.exists(os.path.join(run_dir, "run.json")) else {}
ev = list(csv.DictReader(open(os.path.join(run_dir, "eval.csv")))) if os.path.exists(os.path.join(run_dir, "eval.csv")) else []
if man:
    t = {k: man.get(k) for k in ("setup_s", "compile_s", "train_s", "eval_wait_s", "eval_busy_s", "checkpoint_s")}
    rows.append({"benchmark": "real_run", "critic": critic, "config": config, "seeds": 1, "workers": man.get("eval", {}).get("workers"),
                 "precision": "float32", "updates_per_s": man.get("updates_per_s"), "device": man.get("device"),
                 "jax_version": man.get("packages", {}).get("jax"),
                 "notes": f"cube-double-play (generated), status {man.get('status')} at step {man.get('step')} of "
                          f"{man.get('protocol', {}).get('train_steps')}; wall {man.get('wall_time_s')} s; "
                          + ", ".join(f"{k} {v}" for k, v in t.items())
                          + "; success " + " ".join(f"{r['step']}:{float(r['success']):.2f}" for r in ev)})
write_csv(rows, path)
md_path = os.path.splitext(path)[0] + ".md"
bench_rows = rows[:-1] if man else rows
md = (open(md_path).read() if os.path.exists(md_path)  # the bench's table + targets; else rebuilt from the CSV
      else f"# {os.path.basename(path)} (floq bench stopped early: partial rows)\n\n" + markdown(bench_rows) + "\n")
sbs = [r for r in bench_rows if r.get("benchmark") == "side_by_side"]
if sbs:
    md += "\n## Side by side with the released code\n\n" + markdown(sbs, ("benchmark", "impl", "critic", "config", "updates_per_s", "ms_per_update", "ratio", "device", "notes")) + "\n"
md += "\n## Real run\n\n" + (markdown([rows[-1]]) if man else "(no run.json)") + "\n"
if man and man.get("wall_time_s"):
    wall = float(man["wall_time_s"])
    parts = {k: float(man.get(k) or 0) for k in ("setup_s", "compile_s", "train_s", "eval_wait_s", "checkpoint_s")}
    md += ("\nWall time split: " + ", ".join(f"{k[:-2]} {v:.1f} s ({v / wall:.0%})" for k, v in parts.items())
           + f", other {wall - sum(parts.values()):.1f} s of {wall:.1f} s. Target: evaluation wait <= 10% of the wall "
           + f"time -> {'met' if parts['eval_wait_s'] <= 0.1 * wall else 'missed'} "
           + f"({parts['eval_wait_s'] / wall:.1%}).\n")
import glob
for prof in sorted(glob.glob(os.path.join(os.environ.get("FLOQ_PROFILE_DIR", ""), "profile_*.md"))):
    md += "\n" + open(prof).read()
md += "\n## Steps\n\n" + "\n".join(f"- `{s}`" for s in open(os.environ["FLOQ_STEPS_LOG"]).read().splitlines() if s.strip())
md += f"\n\ntotal {int(os.environ['FLOQ_TOTAL_S']) / 60:.1f} min\n"
open(md_path, "w").write(md)
print(f"wrote {path} and {md_path}")
EOF
say "done in $(( $(date +%s) - T0 )) s"
printf '  %s\n' "${LOG[@]:-}" >&2
[[ $DRY == 1 || -n "${FLOQ_GPU_CHECK_WORK:-}" ]] || rm -rf "$WORK"
