#!/usr/bin/env bash
# run_local.sh - run the grid of an experiment on this machine, results in runs/TAG/.
#
# Usage: bash bash_files/run_local.sh TAG [extra main.py arguments...]
#   e.g. bash bash_files/run_local.sh try1                   # every grid point, one after another
#        bash bash_files/run_local.sh try1 --num_config 2    # only grid point 2
#        bash bash_files/run_local.sh try1 --wandb disabled
# Runs: PYTHON main.py --experiment EXPERIMENT --experimentbatch_name TAG
#         [--config_trainer TRAINER_ARGS...] [--wandb WANDB] [extra arguments...]
# with EXPERIMENT, TRAINER_ARGS and WANDB from the settings file ($MTL_SETTINGS, else
# bash_files/settings.sh; optional here: without it no trainer arguments are added) and
# $MTL_EXPERIMENT overriding EXPERIMENT. PYTHON: $MTL_PYTHON, else .venv/bin/python, else python3.
# Rerunning a TAG skips finished points and resumes unfinished ones from their checkpoint.
# Exit code: main.py's (0 ok, 1 a grid point failed, 2 bad input); 2 for a bad TAG/settings.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$REPO/bash_files/lib.sh"

case ${1-} in
  -h | --help) mtl_usage; exit 0 ;;
esac
(($#)) || mtl_validate_tag ''
TAG=$1; shift
mtl_validate_tag "$TAG"
SETTINGS=$(mtl_settings_path "$REPO" '')
# A settings file named explicitly (MTL_SETTINGS) must exist; the default one is optional.
required=0
[[ -n ${MTL_SETTINGS-} ]] && required=1
mtl_load_settings "$SETTINGS" "$required"
mtl_validate_common_settings
mtl_main_extra_args

PY=$(mtl_local_python "$REPO")
CMD=("$PY" main.py --experiment "$EXPERIMENT" --experimentbatch_name "$TAG" "${MTL_MAIN_EXTRA[@]}" "$@")
cd "$REPO"
mtl_info "[run_local] $(mtl_quote "${CMD[@]}")"
exec "${CMD[@]}"
