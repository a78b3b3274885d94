#!/usr/bin/env bash
# run_remote.sh - run the grid of an experiment on a cluster as ONE job array (one element
# per grid point), over ssh: Slurm (sbatch --array) or LSF (bsub -J "TAG[...]").
#
# Usage: bash bash_files/run_remote.sh TAG [--missing] [--dry-run] [--settings FILE] [--experiment NAME]
#   TAG              name of this batch of runs: results go to runs/TAG/ (letters, digits, . _ -)
#   --missing        submit only the grid points of TAG that are not done (main.py --missing TAG)
#   --dry-run        print the job script and the exact commands; run nothing (no ssh): the
#                    grid size comes from the local pre_main.py, --missing from the local runs/TAG
#   --settings FILE  settings file (default: $MTL_SETTINGS, else bash_files/settings.sh)
#   --experiment N   experiment to run (default: $MTL_EXPERIMENT, else EXPERIMENT of the settings)
#
# Steps: 1. ssh HOST mkdir -p REMOTE_DIR (fails fast if HOST is unreachable)
#        2. rsync the code to HOST:REMOTE_DIR (no venvs, runs/, wandb/, caches, .git;
#           files deleted locally are not deleted there)
#        3. on HOST: refuse while jobs of TAG are queued/running; create/update the venv (REMOTE_DIR/.venv, from requirements.txt, redone
#           when its sha256 changes) unless REMOTE_VENV names one; pre_main.py -> grid size N;
#           if runs/TAG exists: main.py --missing TAG (refuses a TAG used with another grid)
#        4. write runs/TAG/cluster/job-<time>.sh on HOST and submit it as an array 1-N[%K]
#           (or the missing indices); scheduler logs go next to it.
# Exit codes: 0 ok (also: --missing with nothing missing), 1 a remote step or the submission
# failed, 2 bad input (usage, TAG, settings, experiment, zero grid points, TAG used with
# another grid, jobs of TAG still queued), 3 HOST unreachable. On any error nothing is submitted.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$REPO/bash_files/lib.sh"

usage() { sed -n '2,/^[^#]/{/^#/!d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }   # the header above

TAG='' DRY_RUN=0 MISSING=0 SETTINGS_ARG='' EXPERIMENT_ARG=''
while (($#)); do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --missing) MISSING=1 ;;
    --settings) (($# >= 2)) || mtl_die 2 "--settings needs a FILE"; SETTINGS_ARG=$2; shift ;;
    --settings=*) SETTINGS_ARG=${1#*=} ;;
    --experiment) (($# >= 2)) || mtl_die 2 "--experiment needs a NAME"; EXPERIMENT_ARG=$2; shift ;;
    --experiment=*) EXPERIMENT_ARG=${1#*=} ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; mtl_die 2 "unknown option ${1@Q}" ;;
    *)
      [[ -z $TAG ]] || { usage >&2; mtl_die 2 "one TAG only (got ${TAG@Q} and ${1@Q}); quote a TAG with spaces? spaces are not allowed"; }
      TAG=$1
      [[ -n $TAG ]] || mtl_validate_tag ''
      ;;
  esac
  shift
done
mtl_validate_tag "$TAG"

mtl_load_settings "$(mtl_settings_path "$REPO" "$SETTINGS_ARG")" 1
[[ -n $EXPERIMENT_ARG ]] && EXPERIMENT=$EXPERIMENT_ARG
mtl_validate_remote_settings "$TAG"

SSH=(ssh -o ConnectTimeout=10 -o BatchMode=yes "${SSH_OPTS[@]}")
RSYNC_RSH=$(for w in "${SSH[@]}"; do [[ $w == *[[:space:]]* ]] && printf "'%s' " "$w" || printf '%s ' "$w"; done)
RSYNC_RSH=${RSYNC_RSH% }
DIR_EXPR=$(mtl_remote_path_expr "${REMOTE_DIR%/}")         # for the remote shell
DIR_RSYNC=$(mtl_rsync_remote_path "$REMOTE_DIR")            # for rsync's HOST:PATH
SUBMIT_NAME=$(date +%Y%m%d-%H%M%S)
JOB_REL=runs/$TAG/cluster/job-$SUBMIT_NAME.sh               # relative to REMOTE_DIR
LOG_DIR=runs/$TAG/cluster

remote_cmd() { printf 'cd %s && %s' "$DIR_EXPR" "$*"; }    # a command string run in REMOTE_DIR
CMD_MKDIR=("${SSH[@]}" "$SSH_HOST" "mkdir -p -- $DIR_EXPR")
CMD_RSYNC=(rsync -az "${MTL_RSYNC_EXCLUDES[@]/#/--exclude=}" -e "$RSYNC_RSH" "$REPO/" "$SSH_HOST:$DIR_RSYNC/")
CMD_PREPARE=("${SSH[@]}" "$SSH_HOST" "$(remote_cmd "$(mtl_quote bash bash_files/lib.sh remote_prepare "$SCHEDULER" "${REMOTE_VENV:--}" "$PYTHON" "$EXPERIMENT" "$TAG" "${MODULE_LOADS[@]}")")")

# ------------------------------------------------------------ grid size and indices
# grid size N and the indices to submit, from the remote side (or locally in a dry run)
if ((DRY_RUN)); then
  LOCAL_PY=$(mtl_local_python "$REPO")
  cd "$REPO"
  out=$("$LOCAL_PY" pre_main.py --experiment "$EXPERIMENT") && rc=0 || rc=$?
  ((rc == 0)) || mtl_die 2 "pre_main.py --experiment $EXPERIMENT failed locally (exit $rc; message above)"
  GRID_SIZE=$(printf '%s\n' "$out" | sed '/^[[:space:]]*$/d' | tail -n 1 | tr -d '[:space:]')
  TAG_STATE=new MISSING_LIST=''
  if ((MISSING)) && remote_tag_has_state "$TAG"; then
    TAG_STATE=existing
    out=$("$LOCAL_PY" main.py --missing "$TAG" --experiment "$EXPERIMENT") && rc=0 || rc=$?
    ((rc == 0)) || mtl_die 2 "main.py --missing $TAG failed locally (exit $rc; message above)"
    MISSING_LIST=$(printf '%s\n' "$out" | tail -n 1 | tr -d '[:space:]')
  fi
else
  err=$("${CMD_MKDIR[@]}" 2>&1) && rc=0 || rc=$?
  if ((rc == 255)); then
    [[ -n $err ]] && printf '%s\n' "$err" >&2
    mtl_die 3 "cannot reach SSH_HOST '$SSH_HOST' over ssh (the ssh error is above; nothing was submitted). Check that 'ssh $SSH_HOST' works without a password prompt (ssh keys, ~/.ssh/config)."
  elif ((rc != 0)); then
    [[ -n $err ]] && printf '%s\n' "$err" >&2
    mtl_die 1 "could not create REMOTE_DIR '$REMOTE_DIR' on $SSH_HOST"
  fi
  mtl_info "[run_remote] syncing the code to $SSH_HOST:$REMOTE_DIR"
  "${CMD_RSYNC[@]}" || mtl_die 1 "rsync to $SSH_HOST:$REMOTE_DIR failed"
  mtl_info "[run_remote] checking the remote environment and the grid of experiment $EXPERIMENT"
  out=$("${CMD_PREPARE[@]}") && rc=0 || rc=$?
  case $rc in
    0) ;;
    2) exit 2 ;;   # the remote side printed why
    255) mtl_die 3 "lost the ssh connection to $SSH_HOST (nothing was submitted)" ;;
    *) mtl_die 1 "preparing $SSH_HOST:$REMOTE_DIR failed (exit $rc; message above; nothing was submitted)" ;;
  esac
  GRID_SIZE=$(sed -n 's/^grid_size=//p' <<<"$out")
  TAG_STATE=$(sed -n 's/^tag_state=//p' <<<"$out")
  MISSING_LIST=$(sed -n 's/^missing=//p' <<<"$out")
fi
[[ $GRID_SIZE =~ ^[0-9]+$ ]] || mtl_die 1 "pre_main.py did not report a number of grid points (got ${GRID_SIZE@Q})"
if ((GRID_SIZE == 0)); then
  mtl_die 2 "experiment $EXPERIMENT has 0 grid points (pre_main.py): nothing to submit. Check experiments/$EXPERIMENT/configs.py (an empty list makes an empty grid)."
fi
[[ $MISSING_LIST =~ ^([0-9]+(,[0-9]+)*)?$ ]] || mtl_die 1 "main.py --missing $TAG printed ${MISSING_LIST@Q}, not a list like 2,3"

if ((MISSING)) && [[ $TAG_STATE == existing ]]; then
  if [[ -z $MISSING_LIST ]]; then
    mtl_info "[run_remote] all $GRID_SIZE grid points of $TAG are done: nothing to submit"
    exit 0
  fi
  for i in ${MISSING_LIST//,/ }; do
    ((i >= 1 && i <= GRID_SIZE)) || mtl_die 1 "main.py --missing $TAG reported index $i, outside the grid 1..$GRID_SIZE"
  done
  INDICES=$(mtl_index_ranges "$MISSING_LIST")
  N_ELEMENTS=$(mtl_count_indices "$MISSING_LIST")
else
  ((MISSING)) && mtl_info "[run_remote] --missing: $TAG has no runs yet, submitting all $GRID_SIZE grid points"
  INDICES=1-$GRID_SIZE
  ((GRID_SIZE == 1)) && INDICES=1
  N_ELEMENTS=$GRID_SIZE
fi
THROTTLE=${ARRAY_THROTTLE:+%$ARRAY_THROTTLE}

# --------------------------------------------------------------------- job script + submit
JOB_SCRIPT=$(mtl_job_script "$REPO" "$TAG" "$LOG_DIR")
if [[ $SCHEDULER == slurm ]]; then
  SUBMIT=(sbatch --parsable "--array=$INDICES$THROTTLE" "$JOB_REL")
  SUBMIT_STR=$(mtl_quote "${SUBMIT[@]}")
else
  SUBMIT=(bsub -J "${TAG}[${INDICES}]${THROTTLE}")
  SUBMIT_STR="$(mtl_quote "${SUBMIT[@]}") < $(mtl_quote "$JOB_REL")"
fi
CMD_SUBMIT=("${SSH[@]}" "$SSH_HOST" "$(remote_cmd "mkdir -p $(mtl_quote "$LOG_DIR") && cat > $(mtl_quote "$JOB_REL") && $SUBMIT_STR")")

if ((DRY_RUN)); then
  echo "# run_remote.sh --dry-run: nothing was run. Scheduler $SCHEDULER, host $SSH_HOST, remote dir $REMOTE_DIR,"
  echo "# experiment $EXPERIMENT: $GRID_SIZE grid point(s); submitting $N_ELEMENTS array element(s) ($INDICES$THROTTLE)."
  echo "# ---- commands"
  echo "# 1. create the remote folder (fails fast when the host is unreachable)"
  mtl_quote "${CMD_MKDIR[@]}"; echo
  echo "# 2. sync the code"
  mtl_quote "${CMD_RSYNC[@]}"; echo
  echo "# 3. remote venv (${REMOTE_VENV:-REMOTE_DIR/.venv, created/updated from requirements.txt}), grid size, TAG check"
  mtl_quote "${CMD_PREPARE[@]}"; echo
  echo "# 4. write the job script (stdin) and submit it"
  printf '%s < job-script\n' "$(mtl_quote "${CMD_SUBMIT[@]}")"
  echo "# ---- job script: $REMOTE_DIR/$JOB_REL"
  printf '%s\n' "$JOB_SCRIPT"
  echo "# ---- end of job script"
  exit 0
fi

mtl_info "[run_remote] submitting $N_ELEMENTS array element(s) ($INDICES$THROTTLE) of $TAG to $SCHEDULER on $SSH_HOST"
out=$(printf '%s\n' "$JOB_SCRIPT" | "${CMD_SUBMIT[@]}") && rc=0 || rc=$?
if ((rc != 0)); then
  [[ -n $out ]] && printf '%s\n' "$out" >&2
  mtl_die 1 "${MTL_SCHEDULER_MAP[$SCHEDULER.submit]} failed on $SSH_HOST (exit $rc; message above)"
fi
if [[ $SCHEDULER == slurm ]]; then
  JOB_ID=$(printf '%s\n' "$out" | tail -n 1 | cut -d';' -f1 | tr -d '[:space:]')
else
  JOB_ID=$(sed -n 's/^Job <\([0-9]*\)> is submitted.*/\1/p' <<<"$out" | tail -n 1)
fi
[[ $JOB_ID =~ ^[0-9]+$ ]] || mtl_die 1 "could not read the job id from ${MTL_SCHEDULER_MAP[$SCHEDULER.submit]}'s output: ${out@Q}"

STATUS_CMD=$(mtl_quote ssh "${SSH_OPTS[@]}" "$SSH_HOST" "$(remote_cmd "$(mtl_remote_python_expr) $(mtl_quote main.py --status "$TAG")")")
WATCH=$(mtl_quote ssh "${SSH_OPTS[@]}" "$SSH_HOST" "${MTL_SCHEDULER_MAP[$SCHEDULER.watch]}")
if [[ $SCHEDULER == slurm ]]; then
  WATCH+=" -j $JOB_ID"
  LOGS="$REMOTE_DIR/$LOG_DIR/slurm-${JOB_ID}_<index>.out"
else
  WATCH+=" -A $JOB_ID"
  LOGS="$REMOTE_DIR/$LOG_DIR/lsf-${JOB_ID}_<index>.out"
fi
cat <<EOF
Submitted $TAG: $SCHEDULER job array $JOB_ID on $SSH_HOST, $N_ELEMENTS element(s) ($INDICES$THROTTLE) of experiment $EXPERIMENT.
job id: $JOB_ID
watch:  $WATCH
status: $STATUS_CMD
logs:   $LOGS
fetch:  bash bash_files/fetch_results.sh $TAG
resubmit what is not done: bash bash_files/run_remote.sh $TAG --missing
EOF
