#!/usr/bin/env bash
# Train on every host of a Cloud TPU pod slice: the same command on each worker; each host reads
# its own slice of every batch and jax.distributed joins all chips into one data mesh.
#   launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [MODE] [--config.x=y ...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b configs/bair.py gs://my-bucket/bair train_stage1
# WORKDIR should be a gs:// bucket path: checkpoints, TensorBoard, samples and the report go
# there (through etils.epath/orbax) and outlive the VMs. Rerun the same command after a
# preemption: every stage resumes from its latest checkpoint. --dry-run prints what would run.
# Env: REPO_DIR (the checkout on the workers, default ~/i2v_flax), SETUP (run before training,
# default: pip install the package with its gcs extra and jax[tpu]).
set -euo pipefail
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
TPU=${1:?usage: launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [MODE] [--config.x=y ...]}
ZONE=${2:?zone, e.g. us-central2-b}
CONFIG=${3:?config file, e.g. configs/bair.py}
WORKDIR=${4:?workdir, e.g. gs://bucket/bair}
MODE=${5:-train_stage1}
shift $(( $# < 5 ? $# : 5 ))
REPO_DIR=${REPO_DIR:-'~/i2v_flax'}
SETUP=${SETUP:-"pip install -q -e '.[gcs]' 'jax[tpu]'"}
EXTRA=""
for arg in "$@"; do EXTRA+=" $(printf '%q' "$arg")"; done
# What every worker runs (identical on all; JAX finds the coordinator, process count and index
# from the TPU metadata). Logs: WORKDIR/logs/main-p<worker>-<time>.log per host.
WORKER_CMD="cd $REPO_DIR && $SETUP && python -m i2v_flax.main --distributed \
--config=$(printf '%q' "$CONFIG") --workdir=$(printf '%q' "$WORKDIR") --mode=$(printf '%q' "$MODE")$EXTRA"
CMD=(gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="$WORKER_CMD")
if (( DRY_RUN )); then
  echo "local: gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command=\"...\""
  echo "every worker: $WORKER_CMD"
  exit 0
fi
exec "${CMD[@]}"
