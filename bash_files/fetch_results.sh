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
# Needs: bash >= 4.4, ssh and rsync (here and on the cluster).
# Exit codes: 0 ok, 1 rsync failed, 2 bad input (TAG, settings, no runs/TAG on the cluster,
# a missing tool), 3 host unreachable.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$REPO/bash_files/lib.sh"

declare -A MTL_FLAGS=([--dry-run]=DRY_RUN [--no-checkpoints]=NO_CKPT)
declare -A MTL_OPTIONS=(['--settings FILE']=SETTINGS_ARG)
mtl_parse_args "$@"
mtl_load_settings "$(mtl_settings_path "$REPO" "$SETTINGS_ARG")" 1
mtl_validate_remote_settings "$TAG"
if ((DRY_RUN)); then mtl_require_tools warn ssh rsync; else mtl_require_tools die ssh rsync; fi

mtl_ssh_setup
RSYNC=(rsync -az -e "$MTL_RSYNC_RSH")
((NO_CKPT)) && RSYNC+=("--exclude=*.ckpt")
# which of runs/TAG and wandb exist on the cluster (rsync fails on a missing source)
CMD_CHECK=("${MTL_SSH[@]}" "$SSH_HOST" "cd $MTL_DIR_EXPR && for d in $(mtl_quote "runs/$TAG") wandb; do if test -d \"\$d\"; then echo \"\$d\"; fi; done")
CMD_RUNS=("${RSYNC[@]}" "$SSH_HOST:$MTL_DIR_RSYNC/runs/$TAG/" "$REPO/runs/$TAG/")
CMD_WANDB=("${RSYNC[@]}" "$SSH_HOST:$MTL_DIR_RSYNC/wandb/" "$REPO/wandb/")

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
