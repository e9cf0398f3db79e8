#!/usr/bin/env bash
# Run any mode on this machine (CPU, or all local GPUs via the data mesh).
#   launch/local.sh [--dry-run] CONFIG WORKDIR [MODE] [--config.x=y ...]
#   launch/local.sh configs/bair.py /tmp/bair train_stage1 --config.stage1.batch_size=4
# Rerun the same command to resume. --dry-run prints the command instead of running it.
set -euo pipefail
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
CONFIG=${1:?usage: launch/local.sh [--dry-run] CONFIG WORKDIR [MODE] [--config.x=y ...]}
WORKDIR=${2:?workdir}
MODE=${3:-all}
shift $(( $# < 3 ? $# : 3 ))
CMD=(python -m i2v_flax.main --config="$CONFIG" --workdir="$WORKDIR" --mode="$MODE" "$@")
if (( DRY_RUN )); then printf '%q ' "${CMD[@]}"; echo; exit 0; fi
exec "${CMD[@]}"
