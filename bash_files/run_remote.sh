#!/usr/bin/env bash
# run_remote.sh - run the grid of an experiment on a cluster as ONE job array (one element
# per grid point, or per POINTS_PER_TASK points), over ssh: Slurm (sbatch --array) or LSF
# (bsub -J "TAG[...]").
#
# Usage: bash bash_files/run_remote.sh TAG [--missing] [--dry-run] [--settings FILE] [--experiment NAME]
#   TAG              name of this batch of runs: results go to runs/TAG/ (letters, digits, . _ -)
#   --missing        submit only the grid points of TAG that are not done (main.py --missing TAG)
#   --dry-run        print the job script and the exact commands; run nothing (no ssh): the
#                    grid size comes from the local pre_main.py, --missing from the local runs/TAG
#                    (without a local python: N and the missing indices stay unknown)
#   --settings FILE  settings file (default: $MTL_SETTINGS, else bash_files/settings.sh)
#   --experiment N   experiment to run (default: $MTL_EXPERIMENT, else EXPERIMENT of the settings)
#
# Needs: bash >= 4.4, ssh and rsync (here and rsync on the cluster); nothing else until the
# remote venv exists.
# Steps: 0. here: check the settings, the tools and, with a local python that can run the
#           project ($MTL_PYTHON, else .venv/bin/python), pre_main.py --experiment E
#           --config_trainer TRAINER_ARGS (the grid and the trainer arguments); without one
#           that check is only done remotely, in step 3
#        1. ssh HOST mkdir -p REMOTE_DIR (fails fast if HOST is unreachable; refuses a
#           REMOTE_DIR that is / or the remote home)
#        2. rsync the code to HOST:REMOTE_DIR (no venvs, runs/, wandb/, caches, .git;
#           files deleted locally are not deleted there)
#        3. on HOST: refuse while jobs of TAG are queued/running; create/update the venv
#           (REMOTE_DIR/.venv, from requirements.txt, redone when its sha256 changes) unless
#           REMOTE_VENV names one; pre_main.py (as in step 0) -> grid size N;
#           if runs/TAG exists: main.py --missing TAG (refuses a TAG used with another grid)
#        4. write runs/TAG/cluster/job-<time>.sh on HOST and submit it as an array 1-N[%K]
#           (or the missing indices); scheduler logs go next to it. With POINTS_PER_TASK=K
#           > 1 the array is 1-E, E = ceil(N/K) (or ceil(missing/K)): element e runs K
#           points in one main.py call, --num_config a-b (with --missing: a,b,c).
# Exit codes: 0 ok (also: --missing with nothing missing), 1 a remote step or the submission
# failed, 2 bad input (usage, TAG, settings, TRAINER_ARGS, experiment, zero grid points, TAG
# used with another grid, jobs of TAG still queued, a missing tool), 3 HOST unreachable. On any error nothing is submitted.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$REPO/bash_files/lib.sh"

declare -A MTL_FLAGS=([--dry-run]=DRY_RUN [--missing]=MISSING)
declare -A MTL_OPTIONS=(['--settings FILE']=SETTINGS_ARG ['--experiment NAME']=EXPERIMENT_ARG)
mtl_parse_args "$@"
mtl_load_settings "$(mtl_settings_path "$REPO" "$SETTINGS_ARG")" 1
[[ -n $EXPERIMENT_ARG ]] && EXPERIMENT=$EXPERIMENT_ARG
mtl_validate_remote_settings "$TAG"
if ((DRY_RUN)); then mtl_require_tools warn ssh rsync; else mtl_require_tools die ssh rsync; fi

mtl_ssh_setup
SUBMIT_NAME=$(date +%Y%m%d-%H%M%S)
JOB_REL=runs/$TAG/cluster/job-$SUBMIT_NAME.sh               # relative to REMOTE_DIR
LOG_DIR=runs/$TAG/cluster
mtl_pre_main_args
TRAINER_SEP=()                                              # remote_prepare's -- TRAINER_ARG...
((${#TRAINER_ARGS[@]})) && TRAINER_SEP=(-- "${TRAINER_ARGS[@]}")

remote_cmd() { printf 'cd %s && %s' "$MTL_DIR_EXPR" "$*"; } # a command string run in REMOTE_DIR
# mkdir, then refuse a REMOTE_DIR that resolves to / or the remote home (exit 42)
CMD_MKDIR=("${MTL_SSH[@]}" "$SSH_HOST" "mkdir -p -- $MTL_DIR_EXPR && cd -- $MTL_DIR_EXPR && d=\$(pwd -P) && if [ \"\$d\" = / ] || [ \"\$d\" = \"\$(cd && pwd -P)\" ]; then exit 42; fi")
CMD_RSYNC=(rsync -az "${MTL_RSYNC_EXCLUDES[@]/#/--exclude=}" -e "$MTL_RSYNC_RSH" "$REPO/" "$SSH_HOST:$MTL_DIR_RSYNC/")
CMD_PREPARE=("${MTL_SSH[@]}" "$SSH_HOST" "$(remote_cmd "$(mtl_quote bash bash_files/lib.sh remote_prepare "$SCHEDULER" "${REMOTE_VENV:--}" "$PYTHON" "$EXPERIMENT" "$TAG" "${MODULE_LOADS[@]}" "${TRAINER_SEP[@]}")")")

check_grid_size() {  # check_grid_size N: what pre_main.py printed is a number > 0
  [[ $1 =~ ^[0-9]+$ ]] || mtl_die 1 "pre_main.py did not report a number of grid points (got ${1@Q})"
  if (($1 == 0)); then
    mtl_die 2 "experiment $EXPERIMENT has 0 grid points (pre_main.py): nothing to submit. Check experiments/$EXPERIMENT/configs.py (an empty list makes an empty grid)."
  fi
}

# --------------------------------------------------------------- local checks (no ssh)
# With a local python that can run the project, pre_main.py validates the grid and
# TRAINER_ARGS here, before anything is synced or submitted (and gives a dry run its grid size).
LOCAL_PY=$(mtl_project_python "$REPO")
LOCAL_GRID_SIZE=''
if [[ -n $LOCAL_PY ]]; then
  out=$(cd "$REPO" && "$LOCAL_PY" pre_main.py "${MTL_PRE_MAIN_ARGS[@]}") && rc=0 || rc=$?
  case $rc in
    0) ;;
    2) exit 2 ;;   # pre_main.py printed why (bad experiment, grid or TRAINER_ARGS)
    *) mtl_die 1 "pre_main.py failed locally with $LOCAL_PY (exit $rc; message above): repair that venv, or set MTL_PYTHON to a python that can run the project" ;;
  esac
  LOCAL_GRID_SIZE=$(mtl_grid_size "$out")
  check_grid_size "$LOCAL_GRID_SIZE"
else
  mtl_info "[run_remote] no local python (.venv/bin/python or MTL_PYTHON): the grid and TRAINER_ARGS will be validated remotely by pre_main.py before submission"
fi

# ------------------------------------------------------------ grid size and indices
# grid size N and the indices to submit, from the remote side (or locally in a dry run)
if ((DRY_RUN)); then
  GRID_SIZE=$LOCAL_GRID_SIZE TAG_STATE=new MISSING_LIST=''
  if [[ -n $LOCAL_PY ]] && ((MISSING)) && (cd "$REPO" && remote_tag_has_state "$TAG"); then
    TAG_STATE=existing
    out=$(cd "$REPO" && "$LOCAL_PY" main.py --missing "$TAG" --experiment "$EXPERIMENT") && rc=0 || rc=$?
    ((rc == 0)) || mtl_die 2 "main.py --missing $TAG failed locally (exit $rc; message above)"
    MISSING_LIST=$(printf '%s\n' "$out" | tail -n 1 | tr -d '[:space:]')
  fi
else
  err=$("${CMD_MKDIR[@]}" 2>&1) && rc=0 || rc=$?
  if ((rc == 255)); then
    [[ -n $err ]] && printf '%s\n' "$err" >&2
    mtl_die 3 "cannot reach SSH_HOST '$SSH_HOST' over ssh (the ssh error is above; nothing was submitted). Check that 'ssh $SSH_HOST' works without a password prompt (ssh keys, ~/.ssh/config)."
  elif ((rc == 42)); then
    mtl_die 2 "REMOTE_DIR=${REMOTE_DIR@Q} is / or the home folder on $SSH_HOST: use a folder of its own (nothing was synced or submitted)"
  elif ((rc != 0)); then
    [[ -n $err ]] && printf '%s\n' "$err" >&2
    mtl_die 1 "could not create REMOTE_DIR '$REMOTE_DIR' on $SSH_HOST"
  fi
  mtl_info "[run_remote] syncing the code to $SSH_HOST:$REMOTE_DIR"
  "${CMD_RSYNC[@]}" || mtl_die 1 "rsync to $SSH_HOST:$REMOTE_DIR failed (message above; rsync must be installed on the cluster too)"
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
# A dry run without a local python cannot know the grid: N stands for it.
[[ -n $GRID_SIZE || $DRY_RUN == 0 ]] || GRID_SIZE=N
[[ $GRID_SIZE == N ]] || check_grid_size "$GRID_SIZE"
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
elif [[ $GRID_SIZE == N ]]; then
  INDICES=1-N N_ELEMENTS=N
  ((MISSING)) && INDICES='<missing indices>' N_ELEMENTS='<missing>'
else
  ((MISSING)) && mtl_info "[run_remote] --missing: $TAG has no runs yet, submitting all $GRID_SIZE grid points"
  INDICES=1-$GRID_SIZE
  ((GRID_SIZE == 1)) && INDICES=1
  N_ELEMENTS=$GRID_SIZE
fi
# POINTS_PER_TASK=K > 1: packed elements, each running K of those points in one main.py
# call; element e runs CHUNKS[e-1] (written into the job script), the array is 1-E.
CHUNKS=() PACKED=''
if ((POINTS_PER_TASK > 1)); then
  PACKED=", up to $POINTS_PER_TASK grid points each (POINTS_PER_TASK=$POINTS_PER_TASK)"
  if ((MISSING)) && [[ $TAG_STATE == existing ]]; then
    mapfile -t CHUNKS < <(mtl_pack_list "$MISSING_LIST" "$POINTS_PER_TASK")
  elif [[ $GRID_SIZE != N ]]; then
    mapfile -t CHUNKS < <(mtl_pack_range "$GRID_SIZE" "$POINTS_PER_TASK")
  fi
  if ((${#CHUNKS[@]})); then
    N_ELEMENTS=${#CHUNKS[@]} INDICES=1-${#CHUNKS[@]}
    ((N_ELEMENTS == 1)) && INDICES=1
  else   # a dry run that cannot count the grid (or the missing points)
    N_ELEMENTS=E INDICES=1-E
    CHUNKS=("<E entries: the grid points, $POINTS_PER_TASK per element, known at submission>")
    PACKED+="; E: the number of elements, known at submission"
  fi
fi
THROTTLE=${ARRAY_THROTTLE:+%$ARRAY_THROTTLE}

# --------------------------------------------------------------------- job script + submit
JOB_SCRIPT=$(mtl_job_script "$REPO" "$TAG" "$LOG_DIR" "${CHUNKS[@]}")
if [[ $SCHEDULER == slurm ]]; then
  SUBMIT=(sbatch --parsable "--array=$INDICES$THROTTLE" "$JOB_REL")
  SUBMIT_STR=$(mtl_quote "${SUBMIT[@]}")
else
  SUBMIT=(bsub -J "${TAG}[${INDICES}]${THROTTLE}")
  SUBMIT_STR="$(mtl_quote "${SUBMIT[@]}") < $(mtl_quote "$JOB_REL")"
fi
CMD_SUBMIT=("${MTL_SSH[@]}" "$SSH_HOST" "$(remote_cmd "mkdir -p $(mtl_quote "$LOG_DIR") && cat > $(mtl_quote "$JOB_REL") && $SUBMIT_STR")")

if ((DRY_RUN)); then
  echo "# run_remote.sh --dry-run: nothing was run. Scheduler $SCHEDULER, host $SSH_HOST, remote dir $REMOTE_DIR,"
  echo "# experiment $EXPERIMENT: $GRID_SIZE grid point(s); submitting $N_ELEMENTS array element(s) ($INDICES$THROTTLE)$PACKED."
  [[ $GRID_SIZE == N ]] && echo "# (N: no local python to count the grid; the remote pre_main.py gives it)"
  echo "# ---- commands"
  echo "# 1. create the remote folder (fails fast when the host is unreachable; refuses / and the home folder)"
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

mtl_info "[run_remote] submitting $N_ELEMENTS array element(s) ($INDICES$THROTTLE)of $TAG to $SCHEDULER on $SSH_HOST$PACKED"
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
Submitted $TAG: $SCHEDULER job array $JOB_ID on $SSH_HOST, $N_ELEMENTS element(s) ($INDICES$THROTTLE) of experiment $EXPERIMENT$PACKED.
job id: $JOB_ID
watch:  $WATCH
status: $STATUS_CMD
logs:   $LOGS
fetch:  bash bash_files/fetch_results.sh $TAG
resubmit what is not done: bash bash_files/run_remote.sh $TAG --missing
EOF
