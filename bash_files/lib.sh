#!/usr/bin/env bash
# lib.sh - shared functions of run_local.sh, run_remote.sh and fetch_results.sh.
#
# Sourced by those scripts (locally). On the cluster, run_remote.sh runs one function of
# it through ssh, in the synced copy of the repository:
#   bash bash_files/lib.sh remote_prepare SCHEDULER VENV PYTHON EXPERIMENT TAG [MODULE...] [-- TRAINER_ARG...]
#
# Exit codes used by all scripts:
#   0 ok   1 unexpected failure (a remote command, sbatch/bsub)   2 bad input (usage, TAG,
#   settings, experiment, zero grid points, TAG used with another grid, jobs of TAG still
#   queued, a missing tool)   3 host unreachable
#
# Why bash and not Python: everything up to the first submission (settings, job script,
# --dry-run) runs on the user's machine, which needs nothing but bash, ssh and rsync; and
# remote_prepare runs on the cluster before the venv (the first Python with the project's
# requirements) exists.
set -euo pipefail

# ------------------------------------------------------------------------ requirements
# Checked first, in syntax that old bash (3.2, macOS's /bin/bash) still runs, before the
# rest of this file (declare -A, ${x@Q}) needs bash 4.4.
# mtl_require_bash [MAJOR MINOR]: exit 2 unless that version (default: this bash) is >= 4.4
mtl_require_bash() {
  local major=${1:-${BASH_VERSINFO[0]}} minor=${2:-${BASH_VERSINFO[1]}}
  if [ "$major" -lt 4 ] || { [ "$major" -eq 4 ] && [ "$minor" -lt 4 ]; }; then
    printf 'error: bash 4.4 or newer is needed on %s (this is bash %s.%s): install it (macOS: brew install bash; then run the script with that bash, e.g. /opt/homebrew/bin/bash %s)\n' \
      "$(uname -n)" "$major" "$minor" "$0" >&2
    exit 2
  fi
}
mtl_require_bash

# --------------------------------------------------------------------------- the mapping
# The ONE place that maps portable names to each scheduler's names. The job-script
# templates only see the portable names ({{ARRAY_INDEX_VAR}}, {{JOB_ID_EXPR}}).
# shellcheck disable=SC2016  # the job-id expressions are expanded in the job script
declare -gA MTL_SCHEDULER_MAP=(
  [slurm.array_index_var]=SLURM_ARRAY_TASK_ID
  [slurm.job_id_expr]='${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID:-?}'
  [slurm.submit]=sbatch
  [slurm.watch]=squeue
  [lsf.array_index_var]=LSB_JOBINDEX
  [lsf.job_id_expr]='${LSB_JOBID:-?}[${LSB_JOBINDEX:-?}]'
  [lsf.submit]=bsub
  [lsf.watch]=bjobs
)
MTL_SCHEDULERS=(slurm lsf)

# Every key the settings file may set (an unknown UPPERCASE name is an error, so typos
# do not pass silently). Defaults are in mtl_settings_defaults.
MTL_SETTING_KEYS=(
  SSH_HOST SSH_OPTS REMOTE_DIR REMOTE_VENV PYTHON SCHEDULER MODULE_LOADS EXPERIMENT
  TRAINER_ARGS WANDB TIME CPUS MEM GPUS NODES TASKS_PER_NODE ARRAY_THROTTLE
  PARTITION QUEUE EXTRA_SBATCH EXTRA_BSUB POINTS_PER_TASK VECTORIZE
)

# Exclusions of the code sync (rsync): environments, outputs, caches, VCS data.
# shellcheck disable=SC2034  # read by run_remote.sh (which sources this file)
MTL_RSYNC_EXCLUDES=(
  .git/ .venv/ venv/ /runs/ /wandb/ /lightning_logs/ __pycache__/ '*.pyc' .pytest_cache/
  .ruff_cache/ .mypy_cache/ '*.egg-info/' .ipynb_checkpoints/ 'slurm-*.out' 'lsf-*.out'
  bash_files/settings.sh
)

mtl_err() { printf 'error: %s\n' "$*" >&2; }
mtl_die() {  # mtl_die EXIT_CODE MESSAGE...
  local code=$1; shift
  mtl_err "$@"
  exit "$code"
}
mtl_info() { printf '%s\n' "$*" >&2; }

# What to install when a tool is missing (Debian/Ubuntu, Fedora/RHEL, macOS).
declare -gA MTL_TOOL_HINT=(
  [rsync]='apt-get install rsync / dnf install rsync / brew install rsync'
  [ssh]='the OpenSSH client: apt-get install openssh-client / dnf install openssh-clients (macOS has it)'
)
# mtl_require_tools MODE TOOL...: each TOOL must be on PATH. MODE die: exit 2 naming what to
# install; MODE warn: say so on stderr and go on (--dry-run runs neither ssh nor rsync).
mtl_require_tools() {
  local mode=$1 t; shift
  for t; do
    command -v "$t" >/dev/null 2>&1 && continue
    if [[ $mode == die ]]; then
      mtl_die 2 "$t not found on PATH: install it (${MTL_TOOL_HINT[$t]:-$t})"
    fi
    printf 'warning: %s not found on PATH: the real run needs it, install it (%s)\n' "$t" "${MTL_TOOL_HINT[$t]:-$t}" >&2
  done
}

# ------------------------------------------------------------------------ command line
# mtl_usage: the header comment of the running script (its usage text) on stdout
mtl_usage() { sed -n '2,/^[^#]/{/^#/!d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[-1]}"; }

# mtl_parse_args ARG...: the command line of run_remote.sh and fetch_results.sh: one TAG
# (validated), -h/--help (usage, exit 0) and the script's options, declared before the
# call as MTL_FLAGS=([--flag]=VAR ...) (sets VAR=1, default 0) and
# MTL_OPTIONS=(['--opt VALUE']=VAR ...) (--opt V or --opt=V sets VAR=V, default '').
# Sets TAG. Exit 2 (one line) for an unknown option, a missing value, a second TAG.
mtl_parse_args() {
  local a k name have_tag=0 allowed=()
  for k in "${!MTL_FLAGS[@]}"; do printf -v "${MTL_FLAGS[$k]}" 0; allowed+=("$k"); done
  for k in "${!MTL_OPTIONS[@]}"; do printf -v "${MTL_OPTIONS[$k]}" ''; allowed+=("$k"); done
  TAG=''
  while (($#)); do
    a=$1 name=''
    for k in "${!MTL_OPTIONS[@]}"; do [[ $a == "${k%% *}" || $a == "${k%% *}"=* ]] && name=$k; done
    if [[ -n $a && -n ${MTL_FLAGS[$a]-} ]]; then
      printf -v "${MTL_FLAGS[$a]}" 1
    elif [[ -n $name && $a == *=* ]]; then
      printf -v "${MTL_OPTIONS[$name]}" '%s' "${a#*=}"
    elif [[ -n $name ]]; then
      (($# >= 2)) || mtl_die 2 "${a} needs a value: ${name}"
      printf -v "${MTL_OPTIONS[$name]}" '%s' "$2"
      shift
    elif [[ $a == -h || $a == --help ]]; then
      mtl_usage
      exit 0
    elif [[ $a == -* ]]; then
      mtl_die 2 "unknown option ${a@Q}; the options are: $(printf '%s\n' "${allowed[@]}" | sort | paste -sd, - | sed 's/,/, /g'), -h/--help"
    elif ((have_tag)); then
      mtl_die 2 "one TAG only (got ${TAG@Q} and ${a@Q}); a TAG has no spaces"
    else
      TAG=$a have_tag=1
      [[ -n $TAG ]] || mtl_validate_tag ''
    fi
    shift
  done
  mtl_validate_tag "$TAG"
}

# ------------------------------------------------------------------------------ quoting
# mtl_quote WORD...: the words as one shell-safe command line (words made only of safe
# characters stay bare, others are single-quoted). Used for what is printed and for the
# command strings ssh hands to the remote shell.
mtl_quote() {
  local w out=() re='^[A-Za-z0-9_./:=@%+,^-]+$' dq='[$`"\\!]'
  for w in "$@"; do
    if [[ $w =~ $re ]]; then out+=("$w")
    elif [[ $w != *"'"* ]]; then out+=("'$w'")
    elif [[ ! $w =~ $dq ]]; then out+=("\"$w\"")
    else out+=("${w@Q}")
    fi
  done
  printf '%s' "${out[*]}"
}

# ---------------------------------------------------------------------------------- TAG
# THE TAG rule (main.py applies the same; README "Cluster runs"): a TAG names runs/TAG/ and
# the job, so it is one path component of letters, digits, '.', '_' and '-', not starting
# with '.' or '-' (so never '.' or '..'), at most 100 characters.
MTL_TAG_RE='^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$'
MTL_TAG_RULE="letters, digits, '.', '_' and '-', not starting with '.' or '-', at most 100 characters"
mtl_validate_tag() {  # mtl_validate_tag TAG: exit 2 unless TAG follows the TAG rule
  local tag=${1-} LC_ALL=C   # C: the ranges are ASCII letters in every locale
  if [[ -z $tag ]]; then
    mtl_die 2 "missing TAG: give the name of this batch of runs, e.g. 'sweep1' ($MTL_TAG_RULE)"
  fi
  if [[ ! $tag =~ $MTL_TAG_RE ]]; then
    mtl_die 2 "invalid TAG ${tag@Q}: a TAG is one folder name of $MTL_TAG_RULE"
  fi
}

# ----------------------------------------------------------------------------- settings
mtl_settings_defaults() {
  SSH_HOST='' SSH_OPTS=() REMOTE_DIR='' REMOTE_VENV='' PYTHON=python3 SCHEDULER=slurm
  MODULE_LOADS=() EXPERIMENT=compositeSine TRAINER_ARGS=() WANDB='' TIME=04:00:00 CPUS=1
  MEM=4G GPUS=0 NODES=1 TASKS_PER_NODE=1 ARRAY_THROTTLE='' PARTITION='' QUEUE=''
  EXTRA_SBATCH=() EXTRA_BSUB=() POINTS_PER_TASK=1 VECTORIZE=0
}

# mtl_settings_path REPO [EXPLICIT]: the settings file to use: --settings, else
# $MTL_SETTINGS, else REPO/bash_files/settings.sh. Prints the path.
mtl_settings_path() {
  local repo=$1 explicit=${2-}
  if [[ -n $explicit ]]; then printf '%s\n' "$explicit"
  elif [[ -n ${MTL_SETTINGS-} ]]; then printf '%s\n' "$MTL_SETTINGS"
  else printf '%s\n' "$repo/bash_files/settings.sh"
  fi
}

# mtl_load_settings FILE REQUIRED: set the defaults, then source FILE (a bash file of
# KEY=value lines). A missing FILE is an error when REQUIRED=1, else only defaults.
# Then $MTL_EXPERIMENT (if set) overrides EXPERIMENT.
mtl_load_settings() {
  local file=$1 required=$2 before after name known
  mtl_settings_defaults
  if [[ ! -f $file ]]; then
    if [[ $required == 1 ]]; then
      mtl_die 2 "settings file '$file' not found. Create it from the example and fill in your cluster:
    cp bash_files/settings.example.sh bash_files/settings.sh
(or name another file with --settings FILE or MTL_SETTINGS=FILE)"
    fi
  else
    before=$(compgen -v)
    # shellcheck disable=SC1090  # the user's settings file
    source "$file" || mtl_die 2 "settings file '$file' failed to load (see the message above)"
    after=$(compgen -v)
    # New UPPERCASE variables must be known settings; a name that differs from one only in
    # case is a misspelling (other lowercase names are the user's helpers).
    while read -r name; do
      for known in "${MTL_SETTING_KEYS[@]}"; do
        [[ $name == "$known" ]] && continue 2
        [[ ${name^^} == "$known" ]] \
          && mtl_die 2 "setting '$name' in '$file' is spelled $known (setting names are upper case)"
      done
      [[ $name =~ ^[A-Z][A-Z0-9_]*$ ]] || continue
      mtl_die 2 "unknown setting '$name' in '$file'; the known settings are: ${MTL_SETTING_KEYS[*]}"
    done < <(comm -13 <(sort <<<"$before") <(sort <<<"$after"))
  fi
  if [[ -n ${MTL_EXPERIMENT-} ]]; then EXPERIMENT=$MTL_EXPERIMENT; fi
  MTL_SETTINGS_FILE=$file
}

# Checks shared by every script (local and remote use).
mtl_validate_common_settings() {
  local f=${MTL_SETTINGS_FILE:-settings} a
  [[ $EXPERIMENT =~ ^[A-Za-z0-9_]+$ ]] \
    || mtl_die 2 "EXPERIMENT=${EXPERIMENT@Q} in $f: give the name of a folder in experiments/ (letters, digits, '_')"
  for a in "${TRAINER_ARGS[@]}"; do
    [[ $a =~ ^[A-Za-z_][A-Za-z0-9_]*:[^$'\n']+$ ]] \
      || mtl_die 2 "TRAINER_ARGS entry ${a@Q} in $f: each entry is key:value, e.g. max_epochs:100"
  done
  case $WANDB in
    '' | online | offline | disabled) ;;
    *) mtl_die 2 "WANDB=${WANDB@Q} in $f: use online, offline, disabled or leave it empty (main.py's default)" ;;
  esac
  [[ $POINTS_PER_TASK =~ ^[1-9][0-9]*$ ]] \
    || mtl_die 2 "POINTS_PER_TASK=${POINTS_PER_TASK@Q} in $f: give a whole number >= 1 (grid points run by one array element / one local task)"
  [[ $VECTORIZE == [01] ]] \
    || mtl_die 2 "VECTORIZE=${VECTORIZE@Q} in $f: use 1 (main.py --vectorize) or 0"
}

# mtl_validate_remote_dir FILE: REMOTE_DIR (already of allowed characters) must name a
# folder of its own: not / or the remote home (~, ., ~/.), no '//' and no '..' component.
# (run_remote.sh's first ssh step checks the resolved folder on the cluster too.)
mtl_validate_remote_dir() {
  local f=$1 d=$REMOTE_DIR part parts=() kept=0
  local why="use a folder of its own (e.g. multi_task_learning or /scratch/USER/mtl)"
  [[ $d != *//* ]] || mtl_die 2 "REMOTE_DIR=${d@Q} in $f: no '//' in the path; $why"
  d=${d#\~}
  IFS=/ read -r -a parts <<<"$d"
  for part in "${parts[@]}"; do
    [[ $part != .. ]] || mtl_die 2 "REMOTE_DIR=${REMOTE_DIR@Q} in $f: no parent reference '..' in the path; $why"
    [[ -z $part || $part == . ]] || kept=$((kept + 1))
  done
  ((kept)) || mtl_die 2 "REMOTE_DIR=${REMOTE_DIR@Q} in $f is / or the home folder; $why"
}

# trainer_arg_value KEY: the value of KEY in TRAINER_ARGS (last one wins), empty if unset
mtl_trainer_arg() {
  local a v=''
  for a in "${TRAINER_ARGS[@]}"; do [[ ${a%%:*} == "$1" ]] && v=${a#*:}; done
  printf '%s' "$v"
}

# mtl_validate_remote_settings [TAG]: checks of the cluster settings (run_remote.sh,
# fetch_results.sh); with TAG also the checks that concern the job (name) of TAG.
mtl_validate_remote_settings() {
  local f=${MTL_SETTINGS_FILE:-settings} x v tag=${1-}
  mtl_validate_common_settings
  case $SCHEDULER in
    slurm | lsf) ;;
    *) mtl_die 2 "unknown SCHEDULER=${SCHEDULER@Q} in $f: use one of: ${MTL_SCHEDULERS[*]// /|} (slurm|lsf)" ;;
  esac
  [[ -n $SSH_HOST ]] || mtl_die 2 "SSH_HOST is empty in $f: set it to the ssh alias of the cluster (what you type after 'ssh')"
  [[ $SSH_HOST =~ ^[A-Za-z0-9_][A-Za-z0-9._@-]*$ ]] \
    || mtl_die 2 "SSH_HOST=${SSH_HOST@Q} in $f: use an ssh alias or user@host (letters, digits, '.', '_', '-', '@')"
  for x in "${SSH_OPTS[@]}"; do
    [[ $x != *[$'\n'\'\"]* ]] || mtl_die 2 "SSH_OPTS entry ${x@Q} in $f: no quotes or newlines"
  done
  [[ -n $REMOTE_DIR ]] || mtl_die 2 "REMOTE_DIR is empty in $f: set the folder on the cluster that receives the code"
  for x in REMOTE_DIR REMOTE_VENV; do
    v=${!x}
    [[ -z $v || $v =~ ^(~(/[A-Za-z0-9_.+/-]*)?|[A-Za-z0-9_.+/-]+)$ ]] \
      || mtl_die 2 "$x=${v@Q} in $f: use an absolute path or one relative to the remote home (letters, digits, '._+-/')"
  done
  mtl_validate_remote_dir "$f"
  [[ $PYTHON =~ ^[A-Za-z0-9_.+/-]+$ ]] || mtl_die 2 "PYTHON=${PYTHON@Q} in $f: give a command or path, e.g. python3"
  for x in "${MODULE_LOADS[@]}"; do
    [[ $x =~ ^[A-Za-z0-9_.+][A-Za-z0-9_.+/-]*$ ]] || mtl_die 2 "MODULE_LOADS entry ${x@Q} in $f: one module name per entry, e.g. (gcc/8.2.0 python/3.10)"
  done
  [[ $TIME =~ ^([0-9]+-)?[0-9]{1,3}:[0-5][0-9]:[0-5][0-9]$ ]] \
    || mtl_die 2 "TIME=${TIME@Q} in $f: use HH:MM:SS or D-HH:MM:SS, e.g. 04:00:00"
  for x in CPUS NODES TASKS_PER_NODE; do
    [[ ${!x} =~ ^[1-9][0-9]*$ ]] || mtl_die 2 "$x=${!x@Q} in $f: give a whole number >= 1"
  done
  [[ $GPUS =~ ^[0-9]+$ ]] || mtl_die 2 "GPUS=${GPUS@Q} in $f: give a whole number >= 0 (GPUs per node)"
  [[ $MEM =~ ^[1-9][0-9]*[KMGT]?$ ]] || mtl_die 2 "MEM=${MEM@Q} in $f: memory per node, a number with an optional unit K, M, G or T (default M), e.g. 4G"
  ARRAY_THROTTLE=${ARRAY_THROTTLE#%}
  [[ -z $ARRAY_THROTTLE || $ARRAY_THROTTLE =~ ^[1-9][0-9]*$ ]] \
    || mtl_die 2 "ARRAY_THROTTLE=${ARRAY_THROTTLE@Q} in $f: the most array elements running at once (a number), or empty for no limit"
  for x in PARTITION QUEUE; do
    [[ -z ${!x} || ${!x} =~ ^[A-Za-z0-9_.,-]+$ ]] || mtl_die 2 "$x=${!x@Q} in $f: letters, digits, '._,-' only"
  done
  for x in "${EXTRA_SBATCH[@]}" "${EXTRA_BSUB[@]}"; do
    [[ $x == -* && $x != *$'\n'* ]] || mtl_die 2 "EXTRA_SBATCH/EXTRA_BSUB entry ${x@Q} in $f: one option per entry, starting with '-', e.g. '--account=abc'"
  done
  # Lightning checks that devices == --ntasks-per-node and num_nodes == --nodes under Slurm.
  local ntasks=$((NODES * TASKS_PER_NODE)) dev nn
  dev=$(mtl_trainer_arg devices) nn=$(mtl_trainer_arg num_nodes)
  if [[ $SCHEDULER == lsf ]] && ((ntasks > 1)); then
    mtl_die 2 "NODES=$NODES TASKS_PER_NODE=$TASKS_PER_NODE in $f: with LSF use one task on one node (NODES=1 TASKS_PER_NODE=1); for several GPUs set GPUS=K and TRAINER_ARGS devices:K strategy:ddp (Lightning starts the K processes)"
  fi
  if [[ $SCHEDULER == slurm ]] && ((ntasks > 1)); then
    [[ -n $dev && -n $nn ]] || mtl_die 2 "NODES=$NODES TASKS_PER_NODE=$TASKS_PER_NODE in $f: Slurm starts one process per task (srun), so add devices:$TASKS_PER_NODE and num_nodes:$NODES (and e.g. strategy:ddp) to TRAINER_ARGS"
  fi
  if [[ $SCHEDULER == slurm && $dev =~ ^[0-9]+$ && $dev != "$TASKS_PER_NODE" ]]; then
    mtl_die 2 "TRAINER_ARGS devices:$dev but TASKS_PER_NODE=$TASKS_PER_NODE in $f: under Slurm Lightning needs devices == tasks per node (one process per device)"
  fi
  if [[ $nn =~ ^[0-9]+$ && $nn != "$NODES" ]]; then
    mtl_die 2 "TRAINER_ARGS num_nodes:$nn but NODES=$NODES in $f: they must be equal"
  fi
  if [[ $SCHEDULER == slurm && ( $tag == bash || $tag == interactive ) ]]; then
    mtl_die 2 "TAG '$tag' is the Slurm job name, and Lightning treats jobs named bash/interactive as interactive sessions (no requeue on preemption): choose another TAG"
  fi
}

# mtl_local_python REPO: the python run_local.sh runs main.py with:
# $MTL_PYTHON, else REPO/.venv/bin/python, else python3.
mtl_local_python() {
  if [[ -n ${MTL_PYTHON-} ]]; then printf '%s\n' "$MTL_PYTHON"
  elif [[ -x $1/.venv/bin/python ]]; then printf '%s\n' "$1/.venv/bin/python"
  else printf '%s\n' python3
  fi
}

# mtl_project_python REPO: a local python that can run the project, for run_remote.sh's
# checks before anything is submitted: $MTL_PYTHON (must be a command), else
# REPO/.venv/bin/python; prints nothing when there is none (no python3 guess: a system
# python without the requirements cannot run pre_main.py).
mtl_project_python() {
  if [[ -n ${MTL_PYTHON-} ]]; then
    command -v "$MTL_PYTHON" >/dev/null 2>&1 \
      || mtl_die 2 "MTL_PYTHON=${MTL_PYTHON@Q} is not an executable: give the python of the project's venv, e.g. .venv/bin/python, or unset it"
    printf '%s\n' "$MTL_PYTHON"
  elif [[ -x $1/.venv/bin/python ]]; then
    printf '%s\n' "$1/.venv/bin/python"
  fi
}

# mtl_pre_main_args: pre_main.py's arguments for the settings -> array MTL_PRE_MAIN_ARGS
# (it validates the grid and TRAINER_ARGS and prints the grid size)
mtl_pre_main_args() {
  MTL_PRE_MAIN_ARGS=(--experiment "$EXPERIMENT")
  if ((${#TRAINER_ARGS[@]})); then MTL_PRE_MAIN_ARGS+=(--config_trainer "${TRAINER_ARGS[@]}"); fi
}
# mtl_grid_size OUTPUT: the grid size pre_main.py printed (its last non-empty line)
mtl_grid_size() { printf '%s\n' "$1" | sed '/^[[:space:]]*$/d' | tail -n 1 | tr -d '[:space:]'; }

# mtl_main_extra_args: the main.py arguments that come from the settings -> array MTL_MAIN_EXTRA
mtl_main_extra_args() {
  MTL_MAIN_EXTRA=()
  if ((${#TRAINER_ARGS[@]})); then MTL_MAIN_EXTRA+=(--config_trainer "${TRAINER_ARGS[@]}"); fi
  if [[ -n $WANDB ]]; then MTL_MAIN_EXTRA+=(--wandb "$WANDB"); fi
  if ((VECTORIZE)); then MTL_MAIN_EXTRA+=(--vectorize); fi
}

# --------------------------------------------------------------------- remote paths
# mtl_remote_path_expr PATH: PATH as a shell expression for the remote shell/job script:
# absolute -> quoted; '~/x' or relative -> "$HOME"/'x' (relative paths mean the remote home).
mtl_remote_path_expr() {
  local p=$1
  if [[ $p == /* ]]; then
    mtl_quote "$p"
  else
    # shellcheck disable=SC2016  # $HOME is for the remote shell
    printf '"$HOME"/%s' "$(mtl_quote "${p#\~/}")"
  fi
}
# mtl_remote_python_expr: the venv python on the cluster as a shell expression, for the
# job script and commands that run in REMOTE_DIR: REMOTE_VENV (absolute, ~/..., or
# relative to REMOTE_DIR) or the managed REMOTE_DIR/.venv.
mtl_remote_python_expr() {
  local v=${REMOTE_VENV:-.venv}
  v=${v%/}/bin/python
  if [[ $v == /* || $v == \~/* ]]; then mtl_remote_path_expr "$v"; else mtl_quote "$v"; fi
}
# mtl_rsync_remote_path PATH: PATH as rsync's HOST:PATH part (relative = remote home).
mtl_rsync_remote_path() { local p=${1%/}; printf '%s' "${p#\~/}"; }

# mtl_ssh_setup: the ssh/rsync set-up of run_remote.sh and fetch_results.sh, from the
# settings: MTL_SSH (the ssh command words), MTL_RSYNC_RSH (the same for rsync -e),
# MTL_DIR_EXPR (REMOTE_DIR for the remote shell), MTL_DIR_RSYNC (for rsync's HOST:PATH).
# shellcheck disable=SC2034  # the MTL_* set here are read by run_remote.sh and fetch_results.sh
mtl_ssh_setup() {
  local w
  MTL_SSH=(ssh -o ConnectTimeout=10 -o BatchMode=yes "${SSH_OPTS[@]}")
  MTL_RSYNC_RSH=''
  for w in "${MTL_SSH[@]}"; do   # SSH_OPTS have no quotes (validated): '...' is safe here
    if [[ $w == *[[:space:]]* ]]; then MTL_RSYNC_RSH+="'$w' "; else MTL_RSYNC_RSH+="$w "; fi
  done
  MTL_RSYNC_RSH=${MTL_RSYNC_RSH% }
  MTL_DIR_EXPR=$(mtl_remote_path_expr "${REMOTE_DIR%/}")
  MTL_DIR_RSYNC=$(mtl_rsync_remote_path "$REMOTE_DIR")
}

# ------------------------------------------------------------------------ index lists
# mtl_index_ranges "1,2,3,5,7,8" -> "1-3,5,7-8" (sorted, unique); the array spec of sbatch/bsub
mtl_index_ranges() {
  local ranges='' start='' prev='' i
  for i in $(tr ',' '\n' <<<"$1" | sed '/^$/d' | sort -n -u) ''; do
    if [[ -n $start && $i == $((prev + 1)) ]]; then prev=$i; continue; fi
    if [[ -n $start ]]; then
      ranges+=${ranges:+,}$start
      [[ $start != "$prev" ]] && ranges+=-$prev
    fi
    start=$i prev=$i
  done
  printf '%s' "$ranges"
}
mtl_count_indices() { tr ',' '\n' <<<"$1" | sed '/^$/d' | sort -n -u | wc -l | tr -d ' '; }

# ------------------------------------------------------------- packed array elements
# POINTS_PER_TASK=K: one array element (or one local task) runs K grid points, in one
# main.py call. The --num_config values of the elements, one per line, element 1 first:
# mtl_pack_range N K: K consecutive points each: 1-K, K+1-2K, ..., the last shorter (one
#   point alone is just its index), e.g. N=5 K=2 -> 1-2 3-4 5
# mtl_pack_list LIST K: the indices of LIST (sorted, unique) in comma lists of K, e.g.
#   LIST=3,7,9 K=2 -> 3,7 9 (main.py --missing's list, resubmitted packed)
mtl_pack_range() {
  local n=$1 k=$2 a b
  for ((a = 1; a <= n; a += k)); do
    b=$((a + k - 1 < n ? a + k - 1 : n))
    if ((a == b)); then printf '%s\n' "$a"; else printf '%s-%s\n' "$a" "$b"; fi
  done
}
mtl_pack_list() {
  tr ',' '\n' <<<"$1" | sed '/^$/d' | sort -n -u | paste -sd, - \
    | awk -F, -v k="$2" '{ for (i = 1; i <= NF; i++) printf "%s%s", $i, (i % k == 0 || i == NF) ? "\n" : "," }'
}

# ----------------------------------------------------------------- template rendering
# mtl_render TEMPLATE_FILE NAME=VALUE...: replace each {{NAME}} by VALUE (literally);
# fails if a placeholder is left.
mtl_render() {
  local tmpl=$1 text kv; shift
  text=$(<"$tmpl")
  for kv in "$@"; do
    text=${text//"{{${kv%%=*}}}"/"${kv#*=}"}
  done
  if [[ $text =~ \{\{[A-Z_]+\}\} ]]; then
    mtl_die 1 "template $tmpl: no value for ${BASH_REMATCH[0]}"
  fi
  printf '%s\n' "$text"
}

mtl_mem_mb() {  # 4G -> 4096 (Slurm's units; no unit = MB)
  local n=${1%[KMGT]} u=${1##*[0-9]}
  case $u in K) echo $(((n + 1023) / 1024)) ;; '' | M) echo "$n" ;; G) echo $((n * 1024)) ;; T) echo $((n * 1024 * 1024)) ;; esac
}

# mtl_num_config_setup [SPEC...]: the job-script lines that set NUM_CONFIG (main.py
# --num_config) from ARRAY_INDEX. Without SPECs one point per element: NUM_CONFIG is the
# array index. With SPECs (packed, POINTS_PER_TASK > 1) element e runs SPEC number e: the
# SPECs are written into the script as the bash array NUM_CONFIGS (index e-1), each quoted
# ("3,7": commas inside one entry).
# shellcheck disable=SC2016  # the $... in single quotes are lines of the job script, expanded there
mtl_num_config_setup() {
  if ((!$#)); then
    printf '%s\n' 'NUM_CONFIG=$ARRAY_INDEX   # one grid point per array element: its index'
    return
  fi
  local line='' w lines=()
  for w; do   # the literal wrapped at about 90 characters
    w="\"$w\""
    if ((${#line} + ${#w} > 88)) && [[ -n $line ]]; then lines+=("$line"); line=''; fi
    line+=${line:+ }$w
  done
  lines+=("$line")
  printf '# POINTS_PER_TASK=%s: array element e runs the grid points NUM_CONFIGS[e-1], in one\n' "$POINTS_PER_TASK"
  printf '%s\n' "# main.py call (--num_config a-b: points a to b; a,b,c: those points; a: point a)." \
    "NUM_CONFIGS=("
  printf '  %s\n' "${lines[@]}"
  printf '%s\n' ")" \
    'if ((ARRAY_INDEX > ${#NUM_CONFIGS[@]})); then' \
    '  echo "error: array index $ARRAY_INDEX: this job array has ${#NUM_CONFIGS[@]} elements" >&2' \
    '  exit 2' \
    'fi' \
    'NUM_CONFIG=${NUM_CONFIGS[ARRAY_INDEX - 1]}'
}

# mtl_job_script REPO TAG SCRIPT_DIR [SPEC...]: the job script for the current settings on
# stdout. SCRIPT_DIR is where it and the scheduler logs go, relative to REMOTE_DIR. SPECs:
# the --num_config of each array element when packed (see mtl_num_config_setup).
mtl_job_script() {
  local repo=$1 tag=$2 logdir=$3 d=() x launcher='' py ntasks element
  shift 3
  element='one grid point'
  (($#)) && element="up to $POINTS_PER_TASK grid points"
  ntasks=$((NODES * TASKS_PER_NODE))
  if [[ $SCHEDULER == slurm ]]; then
    d+=("--job-name=$tag" "--output=$logdir/slurm-%A_%a.out" --open-mode=append "--time=$TIME"
        "--nodes=$NODES" "--ntasks-per-node=$TASKS_PER_NODE" "--cpus-per-task=$CPUS" "--mem=$MEM")
    ((GPUS > 0)) && d+=("--gres=gpu:$GPUS")
    [[ -n $PARTITION ]] && d+=("--partition=$PARTITION")
    d+=(--signal=B:USR1@90 --requeue "${EXTRA_SBATCH[@]}")
    d=("${d[@]/#/#SBATCH }")
    # srun of Slurm 22.05-23.02 does not inherit --cpus-per-task: give it explicitly.
    ((ntasks > 1)) && launcher="srun --kill-on-bad-exit=1 --cpus-per-task=$CPUS "
  else
    local days=0 hms=$TIME h m s
    [[ $hms == *-* ]] && { days=${hms%%-*}; hms=${hms#*-}; }
    IFS=: read -r h m s <<<"$hms"
    m=$((10#$m + (10#$s > 0 ? 1 : 0))) h=$((days * 24 + 10#$h))
    ((m == 60)) && { h=$((h + 1)); m=0; }
    d+=("-o $logdir/lsf-%J_%I.out" "-W $(printf '%d:%02d' "$h" "$m")" "-n $CPUS"
        '-R "span[hosts=1]"' "-R \"rusage[mem=$((($(mtl_mem_mb "$MEM") + CPUS - 1) / CPUS))]\"")
    ((GPUS > 0)) && d+=("-gpu \"num=$GPUS\"")
    [[ -n $QUEUE ]] && d+=("-q $QUEUE")
    d+=('-wa USR1' '-wt 2' '-Q "99"' "${EXTRA_BSUB[@]}")
    d=("${d[@]/#/#BSUB }")
  fi
  local modules=''
  if ((${#MODULE_LOADS[@]})); then
    modules="# Modules (settings MODULE_LOADS); 'module' may need the login profile in batch jobs.
# shellcheck disable=SC1091  # /etc/profile is the cluster's own file, not one to check here
type module >/dev/null 2>&1 || source /etc/profile
module load $(mtl_quote "${MODULE_LOADS[@]}") || { echo 'error: module load failed' >&2; exit 1; }"
  fi
  py=$(mtl_remote_python_expr)
  mtl_main_extra_args
  local extra=''
  ((${#MTL_MAIN_EXTRA[@]})) && extra=" $(mtl_quote "${MTL_MAIN_EXTRA[@]}")"
  mtl_render "$repo/bash_files/templates/$SCHEDULER.sh.tmpl" \
    "TAG=$tag" "EXPERIMENT=$EXPERIMENT" "ELEMENT_POINTS=$element" \
    "NUM_CONFIG_SETUP=$(mtl_num_config_setup "$@")" \
    "DIRECTIVES=$(printf '%s\n' "${d[@]}")" \
    "MODULE_SETUP=$modules" \
    "WORKDIR=$(mtl_remote_path_expr "$REMOTE_DIR")" \
    "ARRAY_INDEX_VAR=${MTL_SCHEDULER_MAP[$SCHEDULER.array_index_var]}" \
    "JOB_ID_EXPR=${MTL_SCHEDULER_MAP[$SCHEDULER.job_id_expr]}" \
    "COMMAND=${launcher}$py main.py --experiment $EXPERIMENT --experimentbatch_name $tag --num_config \"\$NUM_CONFIG\"$extra"
}

# ------------------------------------------------------------- remote side (on cluster)
# remote_prepare SCHEDULER VENV PYTHON EXPERIMENT TAG [MODULE...] [-- TRAINER_ARG...]
# (VENV '-': the managed REMOTE_DIR/.venv). Runs in REMOTE_DIR on the cluster. Refuses
# while jobs of TAG are still queued or running (a resubmission would run their grid
# points twice), makes sure the venv exists and matches requirements.txt, has pre_main.py
# validate the grid and the trainer arguments and give the grid size, and checks TAG
# against runs/TAG.
# stdout: 'grid_size=N', 'tag_state=new|existing', 'missing=LIST' (with existing state).
remote_prepare() {
  local scheduler=$1 venv=$2 python=$3 experiment=$4 tag=$5; shift 5
  local managed=0 py stamp want have n out rc queued modules=() pre_main=(--experiment "$experiment")
  while (($#)) && [[ $1 != -- ]]; do modules+=("$1"); shift; done
  if (($# > 1)); then shift; pre_main+=(--config_trainer "$@"); fi
  set -- "${modules[@]}"
  queued=$(remote_queued_jobs "$scheduler" "$tag")
  if [[ -n $queued ]]; then
    mtl_die 2 "jobs of $tag are still queued or running on $(hostname): $(tr '\n' ' ' <<<"$queued")
Submitting again would run their grid points twice. Wait until they end (or cancel them), then resubmit."
  fi
  if (($#)); then
    if ! type module >/dev/null 2>&1; then set +u; source /etc/profile >/dev/null 2>&1 || true; set -u; fi
    module load "$@" >&2 || mtl_die 1 "module load $* failed on $(hostname)"
  fi
  if [[ $venv == - ]]; then venv=.venv managed=1; fi
  [[ $venv == \~/* ]] && venv=$HOME/${venv#\~/}
  venv=${venv%/}
  py=$venv/bin/python
  if ((managed)); then
    stamp=$venv/.mtl-requirements.sha256
    want=$(sha256sum requirements.txt | cut -d' ' -f1)
    have=$(cat "$stamp" 2>/dev/null || true)
    if [[ ! -x $py ]]; then
      mtl_info "[remote] creating the virtual environment $PWD/$venv with $python (first use; takes a while)"
      "$python" -m venv "$venv" >&2 || mtl_die 1 "'$python -m venv $venv' failed on $(hostname) (set PYTHON or MODULE_LOADS in the settings)"
      have=''
    fi
    if [[ $have != "$want" ]]; then
      mtl_info "[remote] installing requirements.txt into $PWD/$venv${have:+ (requirements.txt changed)}"
      "$py" -m pip install -q -r requirements.txt >&2 || mtl_die 1 "pip install -r requirements.txt failed on $(hostname)"
      printf '%s\n' "$want" >"$stamp"
    fi
  else
    [[ -x $py ]] || mtl_die 2 "REMOTE_VENV: '$py' does not exist on $(hostname) (it must be an existing venv; leave REMOTE_VENV empty to let the scripts create one)"
  fi
  out=$("$py" pre_main.py "${pre_main[@]}") && rc=0 || rc=$?
  ((rc == 0)) || mtl_die 2 "pre_main.py --experiment $experiment failed on $(hostname) (exit $rc; message above)"
  n=$(mtl_grid_size "$out")
  [[ $n =~ ^[0-9]+$ ]] || mtl_die 1 "pre_main.py printed ${out@Q}, not a number of grid points"
  printf 'grid_size=%s\n' "$n"
  if remote_tag_has_state "$tag"; then
    printf 'tag_state=existing\n'
    out=$("$py" main.py --missing "$tag" --experiment "$experiment") && rc=0 || rc=$?
    if ((rc != 0)); then
      mtl_die 2 "runs/$tag already exists on $(hostname) and main.py refused it (exit $rc; message above). A TAG used with a different grid cannot be reused: choose a new TAG."
    fi
    printf 'missing=%s\n' "$(printf '%s\n' "$out" | tail -n 1 | tr -d '[:space:]')"
  else
    printf 'tag_state=new\n'
  fi
}

# remote_queued_jobs SCHEDULER TAG: ids of this user's unfinished jobs named TAG (the job
# name run_remote.sh gives), one per line; nothing if the scheduler's tools are missing.
remote_queued_jobs() {
  if [[ $1 == slurm ]] && command -v squeue >/dev/null 2>&1; then
    squeue -h -u "$(id -un)" --name="$2" -o %i 2>/dev/null || true
  elif [[ $1 == lsf ]] && command -v bjobs >/dev/null 2>&1; then
    bjobs -noheader -o 'jobid job_name' 2>/dev/null | awk -v t="$2" 'index($2, t "[") == 1 {print $1}' | sort -u || true
  fi
}

# remote_tag_has_state TAG: main.py has run TAG here before (runs/TAG/manifest.json exists)
remote_tag_has_state() { [[ -f runs/$1/manifest.json ]]; }

# Executed (not sourced): run one remote_* function.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  case ${1-} in
    remote_prepare) shift; remote_prepare "$@" ;;
    *) mtl_die 2 "usage: bash bash_files/lib.sh remote_prepare SCHEDULER VENV PYTHON EXPERIMENT TAG [MODULE...] [-- TRAINER_ARG...]" ;;
  esac
fi
