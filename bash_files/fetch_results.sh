#!/usr/bin/env bash
# fetch_results.sh - bring the results of TAG back from the cluster (rsync over ssh):
#   HOST:REMOTE_DIR/runs/TAG/  -> runs/TAG/   (summaries, metrics, plots, checkpoints,
#                                              job scripts and scheduler logs in cluster/)
#   HOST:REMOTE_DIR/wandb/     -> wandb/      (offline W&B runs; upload: wandb sync wandb/offline-run-*)
#
# Usage: bash bash_files/fetch_results.sh TAG [--no-checkpoints] [--dry-run] [--settings FILE]
#   --no-checkpoints  skip *.ckpt files (they can be large)
#   --dry-run         print the commands, run nothing
# Safe to repeat (only what changed is copied), also while the jobs still run.
# Exit codes: 0 ok, 1 rsync failed, 2 bad input (TAG, settings, no runs/TAG on the cluster),
# 3 host unreachable.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$REPO/bash_files/lib.sh"

usage() { sed -n '2,/^[^#]/{/^#/!d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }   # the header above
TAG='' DRY_RUN=0 NO_CKPT=0 SETTINGS_ARG='' have_tag=0
while (($#)); do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --no-checkpoints) NO_CKPT=1 ;;
    --settings) (($# >= 2)) || mtl_die 2 "--settings needs a FILE"; SETTINGS_ARG=$2; shift ;;
    --settings=*) SETTINGS_ARG=${1#*=} ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; mtl_die 2 "unknown option ${1@Q}" ;;
    *) ((have_tag == 0)) || mtl_die 2 "one TAG only (got ${TAG@Q} and ${1@Q})"; TAG=$1 have_tag=1 ;;
  esac
  shift
done
mtl_validate_tag "$TAG"
mtl_load_settings "$(mtl_settings_path "$REPO" "$SETTINGS_ARG")" 1
mtl_validate_remote_settings "$TAG"

SSH=(ssh -o ConnectTimeout=10 -o BatchMode=yes "${SSH_OPTS[@]}")
RSYNC_RSH=$(for w in "${SSH[@]}"; do [[ $w == *[[:space:]]* ]] && printf "'%s' " "$w" || printf '%s ' "$w"; done)
RSYNC_RSH=${RSYNC_RSH% }
DIR_EXPR=$(mtl_remote_path_expr "${REMOTE_DIR%/}")
DIR_RSYNC=$(mtl_rsync_remote_path "$REMOTE_DIR")
RSYNC=(rsync -az -e "$RSYNC_RSH")
((NO_CKPT)) && RSYNC+=("--exclude=*.ckpt")
# which of runs/TAG and wandb exist on the cluster (rsync fails on a missing source)
CMD_CHECK=("${SSH[@]}" "$SSH_HOST" "cd $DIR_EXPR && for d in $(mtl_quote "runs/$TAG") wandb; do if test -d \"\$d\"; then echo \"\$d\"; fi; done")
CMD_RUNS=("${RSYNC[@]}" "$SSH_HOST:$DIR_RSYNC/runs/$TAG/" "$REPO/runs/$TAG/")
CMD_WANDB=("${RSYNC[@]}" "$SSH_HOST:$DIR_RSYNC/wandb/" "$REPO/wandb/")

if ((DRY_RUN)); then
  echo "# fetch_results.sh --dry-run: nothing was run."
  mtl_quote "${CMD_CHECK[@]}"; echo
  mtl_quote "${CMD_RUNS[@]}"; echo
  mtl_quote "${CMD_WANDB[@]}"; echo
  exit 0
fi

errf=$(mktemp)
trap 'rm -f "$errf"' EXIT
out=$("${CMD_CHECK[@]}" 2>"$errf") && rc=0 || rc=$?
err=$(<"$errf")
if ((rc == 255)); then
  [[ -n $err ]] && printf '%s\n' "$err" >&2
  mtl_die 3 "cannot reach SSH_HOST '$SSH_HOST' over ssh (the ssh error is above)"
elif ((rc != 0)); then
  [[ -n $err ]] && printf '%s\n' "$err" >&2
  mtl_die 2 "REMOTE_DIR '$REMOTE_DIR' not found on $SSH_HOST"
fi
if ! grep -qx "runs/$TAG" <<<"$out"; then
  mtl_die 2 "no results of TAG '$TAG' on $SSH_HOST: $REMOTE_DIR/runs/$TAG does not exist (submitted with run_remote.sh $TAG?)"
fi
mkdir -p "$REPO/runs/$TAG"
mtl_info "[fetch_results] $SSH_HOST:$REMOTE_DIR/runs/$TAG/ -> runs/$TAG/"
"${CMD_RUNS[@]}" || mtl_die 1 "rsync of runs/$TAG failed"
if grep -qx wandb <<<"$out"; then
  mkdir -p "$REPO/wandb"
  mtl_info "[fetch_results] $SSH_HOST:$REMOTE_DIR/wandb/ -> wandb/"
  "${CMD_WANDB[@]}" || mtl_die 1 "rsync of wandb/ failed"
fi
echo "Fetched runs/$TAG/ from $SSH_HOST. Status: $(mtl_local_python "$REPO" | sed "s|^$REPO/||") main.py --status $TAG"
