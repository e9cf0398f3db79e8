#!/usr/bin/env bash
# Run on every host of a Cloud TPU pod slice. Each host loads its own slice of the batch
# (tfds.split_for_jax_process) and jax.distributed joins them into one data mesh.
#   launch/tpu_pod.sh TPU_NAME ZONE configs/bair.py gs://bucket/bair train_stage1
set -euo pipefail
TPU=${1:?tpu name}; ZONE=${2:?zone}; CONFIG=${3:?config}; WORKDIR=${4:?workdir (gs:// works)}
MODE=${5:-train_stage1}; shift $(( $# < 5 ? $# : 5 ))
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  cd ~/i2v_flax && pip install -q -e . 'jax[tpu]' &&
  python -m i2v_flax.main --distributed --config=$CONFIG --workdir=$WORKDIR --mode=$MODE $*"
