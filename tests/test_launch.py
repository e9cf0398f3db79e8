"""The launch scripts parse (`bash -n`) and, in --dry-run mode, print the commands each worker
would run: the TPU script the same `--distributed` command (config, workdir, mode, overrides) on
every worker, the SLURM script one process per GPU with the coordinator from SLURM's
environment, the local script the plain entry point. Nothing is launched."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("launch/tpu_pod.sh", "launch/slurm_gpu.sbatch", "launch/local.sh")


def _run(script: str, *args: str, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
  clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  proc = subprocess.run(["bash", script, *args], cwd=REPO, env={**clean, **(env or {})},
                        capture_output=True, text=True, timeout=30)
  if check:
    assert proc.returncode == 0, proc.stderr
  return proc


def _entry(line: str) -> list[str]:
  """The `python -m i2v_flax.main ...` part of a printed command, as argv."""
  argv = shlex.split(line)
  return argv[argv.index("python"):]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
  assert subprocess.run(["bash", "-n", script], cwd=REPO).returncode == 0


def test_tpu_pod_dry_run_runs_one_distributed_command_on_every_worker():
  out = _run("launch/tpu_pod.sh", "--dry-run", "my-v4-32", "us-central2-b", "configs/bair.py",
             "gs://my-bucket/bair", "train_stage2", "--config.stage2.batch_size=64").stdout
  lines = out.strip().splitlines()
  assert lines[0].startswith("local: gcloud compute tpus tpu-vm ssh my-v4-32 "
                             "--zone=us-central2-b --worker=all")
  worker = [ln for ln in lines if ln.startswith("every worker: ")]
  assert len(worker) == 1  # --worker=all: one command, identical on every host.
  argv = _entry(worker[0].split("&&")[-1])
  assert argv == ["python", "-m", "i2v_flax.main", "--distributed", "--config=configs/bair.py",
                  "--workdir=gs://my-bucket/bair", "--mode=train_stage2",
                  "--config.stage2.batch_size=64"]


def test_slurm_dry_run_one_process_per_gpu_with_slurm_coordinator():
  env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[007-008]",
         "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "8", "SLURM_NTASKS": "16"}
  out = _run("launch/slurm_gpu.sbatch", "--dry-run", "configs/bair.py", "/shared/bair",
             env=env).stdout
  lines = out.strip().splitlines()
  head = shlex.split(lines[0])
  port = 4242 % 4096 + 61440  # JAX's own SLURM port rule, so both sides agree.
  assert head[0] == f"JAX_COORDINATOR_ADDRESS=gpu007:{port}"
  assert head[1:4] == ["srun", "--ntasks=16", "--ntasks-per-node=8"]
  tasks = lines[1:]
  assert len(tasks) == 16  # One process per GPU: 2 nodes x 8.
  commands = {tuple(_entry(t)) for t in tasks}
  assert commands == {("python", "-m", "i2v_flax.main", "--distributed",
                       "--config=configs/bair.py", "--workdir=/shared/bair",
                       "--mode=train_stage1")}
  assert "SLURM_PROCID=9 SLURM_LOCALID=1" in tasks[9]
  with open(os.path.join(REPO, "launch/slurm_gpu.sbatch")) as f:
    directives = f.read()
  assert "#SBATCH --ntasks-per-node=8" in directives and "#SBATCH --gpus-per-node=8" in directives


def test_local_dry_run_and_missing_arguments():
  out = _run("launch/local.sh", "--dry-run", "configs/shapes.py", "/tmp/x", "eval",
             "--config.eval.num_videos=8").stdout
  assert _entry(out) == ["python", "-m", "i2v_flax.main", "--config=configs/shapes.py",
                         "--workdir=/tmp/x", "--mode=eval", "--config.eval.num_videos=8"]
  proc = _run("launch/tpu_pod.sh", "--dry-run", "tpu", check=False)
  assert proc.returncode != 0 and "zone" in proc.stderr
