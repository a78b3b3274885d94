#!/usr/bin/env bash
# run_local.sh - run the grid of an experiment on this machine, results in runs/TAG/.
#
# Usage: bash bash_files/run_local.sh TAG [--dry-run] [-j K] [extra main.py arguments...]
#   e.g. bash bash_files/run_local.sh try1                   # every grid point, one after another
#        bash bash_files/run_local.sh try1 -j 4              # 4 grid points at a time, one log each
#        bash bash_files/run_local.sh try1 --num_config 2    # only grid point 2
#        bash bash_files/run_local.sh try1 --wandb disabled
#        bash bash_files/run_local.sh try1 -j 2 --dry-run    # print the commands; run nothing
#   --dry-run    print the commands it would run (and their log files); run nothing
#   -j K         run the grid as tasks (one main.py each), K at a time (also --jobs K); each
#                task's output goes to runs/TAG/logs/config<i>.log (appended); a failing task
#                does not stop the others
#   --           everything after it goes to main.py as it is
# Runs: PYTHON main.py --experiment EXPERIMENT --experimentbatch_name TAG
#         [--config_trainer TRAINER_ARGS...] [--wandb WANDB] [--vectorize] [extra arguments...]
# with EXPERIMENT, TRAINER_ARGS, WANDB and VECTORIZE from the settings file ($MTL_SETTINGS,
# else bash_files/settings.sh; optional here: without it no trainer arguments are added; when
# it sets TRAINER_ARGS one line says so) and $MTL_EXPERIMENT overriding EXPERIMENT.
# PYTHON: $MTL_PYTHON, else .venv/bin/python, else python3.
# Tasks: without -j and with POINTS_PER_TASK=1 one main.py runs the whole grid. With -j K or
# POINTS_PER_TASK=P > 1 (settings) the grid (its size from pre_main.py) is split into tasks of
# P consecutive points, --num_config i (P=1) or a-b, log config<i>.log or config<a>-<b>.log,
# run K at a time (default 1: then the output is also shown here). --num_config, --list,
# --status, --missing or --collect among the extra arguments: the one main.py call (not with -j).
# Rerunning a TAG skips finished points and resumes unfinished ones from their checkpoint.
# Ctrl-C / SIGTERM: passed on to the running tasks (each checkpoints its point), no new task starts.
# Exit code: main.py's (0 ok, 1 a grid point failed, 2 bad input, 3 a point stopped unfinished);
# with tasks the highest of the tasks' codes, the failed tasks named; 2 for a bad TAG/settings/-j.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$REPO/bash_files/lib.sh"

case ${1-} in
  -h | --help) mtl_usage; exit 0 ;;
esac
# ------------------------------------------------------------------------ command line
# run_local.sh's own options anywhere (before --); the first other word is TAG, the rest
# goes to main.py.
DRY_RUN=0 JOBS='' TAG='' HAVE_TAG=0 EXTRA=()
while (($#)); do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    -j | --jobs)
      (($# >= 2)) || mtl_die 2 "$1 needs a value: $1 K (the number of tasks to run at a time)"
      JOBS=$2; shift ;;
    --jobs=*) JOBS=${1#*=} ;;
    -j?*) JOBS=${1#-j} ;;
    --) shift; EXTRA+=("$@"); break ;;
    *) if ((HAVE_TAG)); then EXTRA+=("$1"); else TAG=$1 HAVE_TAG=1; fi ;;
  esac
  shift
done
mtl_validate_tag "$TAG"
[[ -z $JOBS || $JOBS =~ ^[1-9][0-9]*$ ]] \
  || mtl_die 2 "-j ${JOBS@Q}: give the number of tasks to run at a time, a whole number >= 1"

SETTINGS=$(mtl_settings_path "$REPO" '')
# A settings file named explicitly (MTL_SETTINGS) must exist; the default one is optional.
required=0
[[ -n ${MTL_SETTINGS-} ]] && required=1
mtl_load_settings "$SETTINGS" "$required"
mtl_validate_common_settings
mtl_main_extra_args
if [[ -f $SETTINGS ]] && ((${#TRAINER_ARGS[@]})); then
  mtl_info "[run_local] TRAINER_ARGS from $SETTINGS: --config_trainer ${TRAINER_ARGS[*]}"
fi

PY=$(mtl_local_python "$REPO")
BASE=("$PY" main.py --experiment "$EXPERIMENT" --experimentbatch_name "$TAG" "${MTL_MAIN_EXTRA[@]}")
cd "$REPO"

# Extra arguments that choose what main.py does (a point, --list, ...): one main.py call.
SELECTS='' RUNS_DIR=runs prev=''
for a in "${EXTRA[@]}"; do
  [[ $a =~ ^(--num_config|--list|--status|--missing|--collect|-h|--help)(=.*)?$ ]] && SELECTS=${a%%=*}
  [[ $a == --runs_dir=* ]] && RUNS_DIR=${a#*=}
  [[ $prev == --runs_dir ]] && RUNS_DIR=$a
  prev=$a
done
if [[ -n $SELECTS && -n $JOBS ]]; then
  mtl_die 2 "-j runs the whole grid as tasks: leave out $SELECTS (or -j)"
fi

# ------------------------------------------------------------------- one main.py call
if [[ -n $SELECTS ]] || [[ -z $JOBS && $POINTS_PER_TASK == 1 ]]; then
  CMD=("${BASE[@]}" "${EXTRA[@]}")
  if ((DRY_RUN)); then
    echo "# run_local.sh --dry-run: nothing was run. The command:"
    mtl_quote cd "$REPO"; echo
    mtl_quote "${CMD[@]}"; echo
    exit 0
  fi
  mtl_info "[run_local] $(mtl_quote "${CMD[@]}")"
  exec "${CMD[@]}"
fi

# ------------------------------------------------------------------------------ tasks
JOBS=${JOBS:-1}
mtl_pre_main_args
out=$("$PY" pre_main.py "${MTL_PRE_MAIN_ARGS[@]}") && rc=0 || rc=$?
case $rc in
  0) ;;
  2) exit 2 ;;   # pre_main.py printed why (bad experiment, grid or TRAINER_ARGS)
  *) mtl_die 1 "pre_main.py failed with $PY (exit $rc; message above): set MTL_PYTHON to a python that can run the project" ;;
esac
N=$(mtl_grid_size "$out")
[[ $N =~ ^[0-9]+$ ]] || mtl_die 1 "pre_main.py did not report a number of grid points (got ${N@Q})"
((N > 0)) || mtl_die 2 "experiment $EXPERIMENT has 0 grid points (pre_main.py): nothing to run"
mapfile -t SPECS < <(mtl_pack_range "$N" "$POINTS_PER_TASK")
LOG_DIR=$RUNS_DIR/$TAG/logs
task_cmd() { TASK_CMD=("${BASE[@]}" --num_config "$1" "${EXTRA[@]}"); }  # task_cmd SPEC -> TASK_CMD
task_log() { printf '%s/config%s.log' "$LOG_DIR" "$1"; }
DESCRIPTION="experiment $EXPERIMENT: $N grid point(s) in ${#SPECS[@]} task(s) of up to $POINTS_PER_TASK point(s), $JOBS at a time"

if ((DRY_RUN)); then
  echo "# run_local.sh --dry-run: nothing was run. The commands, $DESCRIPTION (each appends to its log):"
  mtl_quote cd "$REPO"; echo
  mtl_quote mkdir -p "$LOG_DIR"; echo
  for spec in "${SPECS[@]}"; do
    task_cmd "$spec"
    printf '%s >>%s 2>&1\n' "$(mtl_quote "${TASK_CMD[@]}")" "$(mtl_quote "$(task_log "$spec")")"
  done
  exit 0
fi

mkdir -p "$LOG_DIR"
RC_DIR=$(mktemp -d)
trap 'rm -rf "$RC_DIR"' EXIT
mtl_info "[run_local] $DESCRIPTION; logs in $LOG_DIR/"

# run_task I: task I in the background, its own process group (set -m), so that Ctrl-C
# reaches it only through on_signal; writes its exit code to RC_DIR/I.
run_task() {
  local i=$1 spec=${SPECS[$1]} log
  log=$(task_log "$spec")
  task_cmd "$spec"
  mtl_info "[run_local] config$spec: started (log $log)"
  (
    set +e
    trap : INT TERM   # this shell outlives main.py to record its exit code (main.py gets the signals)
    printf '[%s] %s\n' "$(date '+%F %T')" "$(mtl_quote "${TASK_CMD[@]}")" >>"$log"
    if ((JOBS == 1)); then   # also shown here; tee ignores the signals meant for main.py
      "${TASK_CMD[@]}" </dev/null 2>&1 | (trap '' INT TERM; exec tee -a "$log")
      rc=${PIPESTATUS[0]}
    else
      "${TASK_CMD[@]}" </dev/null >>"$log" 2>&1
      rc=$?
    fi
    printf '[%s] main.py exited with status %s\n' "$(date '+%F %T')" "$rc" >>"$log"
    printf '%s\n' "$rc" >"$RC_DIR/$i"
  ) &
  PIDS[i]=$!
}

declare -A REPORTED=()
CODES=() FAILED=()
# report: one line for each task that ended since the last call
report() {
  local i rc
  for i in "${!PIDS[@]}"; do
    [[ -n ${REPORTED[$i]-} || ! -f $RC_DIR/$i ]] && continue
    rc=$(<"$RC_DIR/$i")
    REPORTED[$i]=1 CODES[i]=$rc
    if ((rc == 0)); then
      mtl_info "[run_local] config${SPECS[$i]}: ok"
    else
      FAILED+=("config${SPECS[$i]} (exit $rc)")
      mtl_info "[run_local] config${SPECS[$i]}: FAILED (exit $rc; log $(task_log "${SPECS[$i]}"))"
    fi
  done
}
running() { local f; f=$(find "$RC_DIR" -type f | wc -l); echo $((${#PIDS[@]} - f)); }

# Ctrl-C / SIGTERM: pass the signal on to every task's process group, wait for them, exit.
on_signal() {
  local sig=$1 code=$2 pid
  trap '' INT TERM
  mtl_info "[run_local] SIG$sig: passing it on to the running tasks (each checkpoints its point); no new task starts"
  for pid in "${PIDS[@]}"; do kill -s "$sig" -- "-$pid" 2>/dev/null || true; done
  wait || true
  report
  mtl_info "[run_local] stopped by SIG$sig; rerun the same command to resume (finished points are skipped)"
  exit "$code"
}
PIDS=()
set -m
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
# wait_any: until a task ends (or none is left: wait -n says 127)
wait_any() { local r; wait -n && r=0 || r=$?; report; return $((r == 127)); }
for i in "${!SPECS[@]}"; do
  while (($(running) >= JOBS)); do wait_any || break; done
  run_task "$i"
done
while (($(running) > 0)); do wait_any || break; done
wait || true
report
set +m
for i in "${!PIDS[@]}"; do   # a task whose shell was killed left no exit code
  [[ -n ${REPORTED[$i]-} ]] && continue
  FAILED+=("config${SPECS[$i]} (killed)") CODES[i]=1
done

max=0
for c in "${CODES[@]}"; do ((c > max)) && max=$c; done
if ((${#FAILED[@]})); then
  mtl_err "$TAG: ${#FAILED[@]} of ${#SPECS[@]} task(s) failed: $(printf '%s\n' "${FAILED[@]}" | paste -sd, - | sed 's/,/, /g'); their logs are in $LOG_DIR/"
  exit "$max"
fi
mtl_info "[run_local] $TAG: all ${#SPECS[@]} task(s) ok; results in $RUNS_DIR/$TAG/"
