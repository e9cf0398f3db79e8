#!/usr/bin/env bash
# Run any mode on this machine (CPU, or all local GPUs via the data mesh).
#   launch/local.sh configs/bair.py /tmp/bair train_stage1 [--config.stage1.batch_size=4 ...]
set -euo pipefail
CONFIG=${1:?config file, e.g. configs/shapes.py}; WORKDIR=${2:?workdir}; MODE=${3:-all}
shift $(( $# < 3 ? $# : 3 ))
exec python -m i2v_flax.main --config="$CONFIG" --workdir="$WORKDIR" --mode="$MODE" "$@"
