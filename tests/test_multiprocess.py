"""Multi-host training on one machine: 2 processes x 2 fake CPU devices = one 4-device mesh.

Pod bugs (hosts reading the same examples, two hosts writing one file, checkpoints that only
restore on the topology that wrote them, a preempted host stopping alone) surface here instead
of on a TPU pod. One shared scenario (module fixture), every wait bounded, both processes killed
on any failure:

  R   1 process x 4 devices (tests/multiprocess_reference.py): stage 1 to step 2, resume to 4,
      stage 2; the global batches are exactly the 2-process run's (process 0's rows, then 1's).
  M1  2 processes, `python -m i2v_flax.main --distributed --mode=train_stage1` (what the launch
      scripts run) in a workdir seeded with R's step-2 checkpoint (1 process -> 2 processes),
      SIGTERM to process 1 once step 4 is saved: both save the same step s and exit 0.
  M2  both restarted, `--mode=all`: stage 1 resumes at s, stage 2 trains on R's stage 1
      (stage2.stage1_workdir: again 1 -> 2 processes), the report is written.
Then this (1-device) process restores the 2-process checkpoints (2 -> 1) and compares with R.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Seconds per phase; a hang (a collective one process never joins) fails here. Generous: on a
# 2-core machine shared with other jobs a phase's compiles alone can take minutes.
TIMEOUT = int(os.environ.get("I2V_MULTIPROCESS_TIMEOUT", "900"))
# Smallest useful run: no GAN, no validation, the stage-1 GIF only at the end of a run.
OVERRIDES = {
    "stage1.batch_size": 4, "stage1.warmup_steps": 1000, "stage1.val_videos": 0,
    "stage1.checkpoint_every": 2, "stage1.sample_every": 1000, "stage1.keep_checkpoints": 1000,
    "stage2.batch_size": 4, "stage2.num_train_steps": 4, "stage2.checkpoint_every": 2,
    "stage2.sample_every": 2, "stage2.num_blocks": 2, "stage2.hidden": 16,
    "report.num_videos": 0,
}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, cache: str) -> dict[str, str]:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache, TF_CPP_MIN_LOG_LEVEL="2")


def _flags(overrides: dict) -> list[str]:
  return [f"--config.{k}={v}" for k, v in overrides.items()]


class Pair:
  """Two `python -m i2v_flax.main --distributed` processes joined on a fresh localhost port."""

  def __init__(self, workdir: str, args: list[str], cache: str, logs: str, tag: str):
    port = _free_port()
    self.procs, self.outputs = [], []
    for i in range(2):
      out = open(os.path.join(logs, f"{tag}-p{i}.txt"), "w")
      self.outputs.append(out.name)
      cmd = [sys.executable, "-m", "i2v_flax.main", "--distributed",
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={i}", f"--workdir={workdir}", *args]
      self.procs.append(subprocess.Popen(cmd, cwd=REPO, env=_env(2, cache), stdout=out,
                                         stderr=subprocess.STDOUT))

  def kill(self) -> None:
    for p in self.procs:
      if p.poll() is None:
        p.kill()
    for p in self.procs:
      p.wait(timeout=30)

  def tail(self) -> str:
    return "\n".join(f"--- {path}\n{open(path).read()[-2500:]}" for path in self.outputs)

  def wait(self, timeout: float = TIMEOUT) -> list[int]:
    deadline = time.time() + timeout
    try:
      return [p.wait(timeout=max(1.0, deadline - time.time())) for p in self.procs]
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f"2-process run did not finish in {timeout} s:\n{self.tail()}")


def _latest(ckpt_dir: str) -> int:
  steps = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit()]
  return max(steps) if steps else -1


@pytest.fixture(scope="module")
def scenario(shapes_data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("multiprocess")
  ref, wm, cache, logs = (str(root / n) for n in ("ref", "pod", "jit_cache", "logs"))
  os.makedirs(logs)
  t0 = time.time()
  base = ["--config=configs/shapes.py:tiny", f"--config.data.data_dir={shapes_data_dir}",
          *_flags(OVERRIDES)]
  # R: the single-process reference (and a 1-process checkpoint at step 2 to resume from).
  ref_npz = str(root / "ref.npz")
  proc = subprocess.run([sys.executable, "tests/multiprocess_reference.py", ref, shapes_data_dir,
                         json.dumps(OVERRIDES), ref_npz], cwd=REPO, env=_env(4, cache),
                        capture_output=True, text=True, timeout=TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-4000:]
  os.makedirs(os.path.join(wm, "checkpoints", "stage1"))
  shutil.copytree(os.path.join(ref, "checkpoints", "stage1", "2"),
                  os.path.join(wm, "checkpoints", "stage1", "2"))
  shutil.copy(os.path.join(ref, "config.json"), wm)
  t_ref = time.time()

  # M1: resume R's step 2 on 2 processes; SIGTERM to process 1 once step 4 is saved.
  m1 = Pair(wm, [*base, "--mode=train_stage1", "--config.stage1.num_train_steps=400"], cache,
            logs, "m1")
  deadline = time.time() + TIMEOUT
  try:
    while _latest(os.path.join(wm, "checkpoints", "stage1")) < 4:
      if time.time() > deadline or any(p.poll() is not None for p in m1.procs):
        raise AssertionError(f"step 4 never saved:\n{m1.tail()}")
      time.sleep(0.5)
    m1.procs[1].send_signal(signal.SIGTERM)
  except BaseException:
    m1.kill()
    raise
  m1_codes = m1.wait()
  preempted = _latest(os.path.join(wm, "checkpoints", "stage1"))
  t_m1 = time.time()

  # M2: restart both; stage 1 resumes at the preemption step, stage 2 on R's stage 1, report.
  m2 = Pair(wm, [*base, "--mode=all", f"--config.stage1.num_train_steps={preempted + 1}",
                 f"--config.stage2.stage1_workdir={ref}"], cache, logs, "m2")
  m2_codes = m2.wait()
  times = {"reference": t_ref - t0, "m1": t_m1 - t_ref, "m2": time.time() - t_m1}
  print(f"multiprocess scenario wall times (s): {times}")
  return dict(ref=ref, wm=wm, ref_npz=ref_npz, m1=m1, m2=m2, m1_codes=m1_codes,
              m2_codes=m2_codes, preempted=preempted, times=times)


def _process_logs(workdir: str) -> dict[int, list[str]]:
  """WORKDIR/logs/main-p<i>-*.log texts per process (each process keeps its own log)."""
  out: dict[int, list[str]] = {0: [], 1: []}
  for path in sorted(glob.glob(os.path.join(workdir, "logs", "main-p*-*.log"))):
    out[int(re.search(r"main-p(\d)-", path).group(1))].append(open(path).read())
  return out


def test_sigterm_on_one_process_saves_the_same_step_on_both(scenario):
  assert scenario["m1_codes"] == [0, 0], scenario["m1"].tail()
  s = scenario["preempted"]
  assert s >= 4
  logs = _process_logs(scenario["wm"])
  assert len(logs[0]) == len(logs[1]) == 2, {k: len(v) for k, v in logs.items()}
  for i in (0, 1):  # Both decided on the same step (the sync point), not just the signalled one.
    assert f"SIGTERM: saving stage-1 checkpoint at step {s} and exiting" in logs[i][0], i
  # M1 stopped at s: M2 resumed there and trained exactly one more step.
  assert f"Resumed stage 1 from step {s}" in logs[0][1]


def test_restart_resumes_and_writes_each_file_once(scenario):
  wm, s = scenario["wm"], scenario["preempted"]
  assert scenario["m2_codes"] == [0, 0], scenario["m2"].tail()
  assert _latest(os.path.join(wm, "checkpoints", "stage1")) == s + 1
  assert _latest(os.path.join(wm, "checkpoints", "stage2")) == 4
  # One TensorBoard event file per run and stage: process 1 logs to the console only.
  assert len(glob.glob(os.path.join(wm, "tensorboard", "stage1", "events.out.tfevents.*"))) == 2
  assert len(glob.glob(os.path.join(wm, "tensorboard", "stage2", "events.out.tfevents.*"))) == 1
  assert sorted(os.listdir(os.path.join(wm, "samples"))) == sorted(
      [f"stage1_{s + 1}.gif", "stage2_2.gif", "stage2_4.gif"])
  report = os.path.join(wm, "report")
  assert {"samples.gif", "transfer.gif", "long_32_frames.gif", "summary.json"} <= set(
      os.listdir(report))
  with open(os.path.join(report, "summary.json")) as f:
    summary = json.load(f)
  assert summary["stage2_step"] == 4  # (report.num_videos=0: no ground-truth evaluation.)
  with open(os.path.join(wm, "config.json")) as f:
    assert json.load(f)["stage2"]["stage1_workdir"] == scenario["ref"]
  leftovers = [p for p in glob.glob(os.path.join(wm, "**", "*"), recursive=True)
               if os.path.basename(p).startswith(".tmp_") or "checkpoint-tmp" in p]
  assert not leftovers, leftovers


def _flat(prefix: str, tree) -> dict[str, np.ndarray]:
  return {prefix + jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_two_processes_train_like_one_and_checkpoints_move_between_topologies(scenario):
  """(a) + topology: 2-process checkpoints restored here (1 process, 1 device) match the
  single-process 4-device run on the same global batches; R's own checkpoints restore exactly."""
  from i2v_flax import sampling
  from i2v_flax.train import checkpoints, stage1, stage2
  assert jax.device_count() == 1
  ref = dict(np.load(scenario["ref_npz"]))
  wm = scenario["wm"]
  config = stage1.run_config.read_config(wm)
  mngr = checkpoints.make_checkpoint_manager(stage1.checkpoint_dir(wm), save_interval_steps=1,
                                             max_to_keep=1000, item_names=("models", "train"))
  try:  # Stage 1 at step 4 (trained by M1 from R's 1-process step 2): the 'models' item.
    abstract = checkpoints.abstract_like(
        stage1._abstract_models(config, stage1.build_models(config)),
        jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    pod1 = checkpoints.restore_checkpoint(mngr, {"models": abstract}, step=4)["models"]
  finally:
    mngr.close()
  _, mine1 = stage1.restore_stage1(scenario["ref"])  # R's own, written by 1 process x 4 devices.
  _, pod2 = stage2.restore_stage2(wm)
  lr1, lr2 = float(config.stage1.lr), float(config.stage2.lr)
  for prefix, pod, lr in (("stage1", pod1, lr1), ("stage2", pod2, lr2)):
    pod = _flat(prefix, {k: pod[k] for k in (stage1 if prefix == "stage1" else stage2).MODEL_KEYS})
    assert set(pod) == {k for k in ref if k.startswith(prefix)}
    # Cross-host all-reduces sum in another order; Adam turns that noise in ~zero gradients
    # into +-lr steps, so a few lr of slack after a handful of steps.
    worst = max(float(np.max(np.abs(pod[k] - ref[k]))) for k in pod)
    assert worst < 4 * lr, (prefix, worst)
  for k, v in _flat("stage1", mine1).items():
    np.testing.assert_array_equal(v, ref[k])  # Exact: same values back on another topology.
  model = sampling.load(wm)  # Stage 2 of the 2-process run + R's stage 1, on this 1 device.
  for k, v in _flat("stage2", {k: model.variables[k] for k in stage2.MODEL_KEYS}).items():
    np.testing.assert_allclose(v, ref[k], atol=4 * lr2)
  print(f"multiprocess scenario wall times (s): {scenario['times']}")


def test_one_epoch_reads_every_example_once_across_processes(shapes_data_dir):
  """(b) The per-process streams the 2-process run consumed (the test above shows it read
  exactly these): in one epoch, disjoint and together the whole train split."""
  from i2v_flax import config_lib
  from i2v_flax.data import pipeline
  config = config_lib.load_config("configs/shapes.py:tiny")
  config.data.data_dir = shapes_data_dir
  n = pipeline.num_examples(config.data, "train")
  seen = []
  for i in range(2):
    ds = pipeline.build_dataset(config.data, "train", 2, seed=config.seed, process_index=i,
                                process_count=2, with_metadata=True)
    batches = ds.take(n // 2 // 2).as_numpy_iterator()
    seen.append([int(x) for b in batches for x in b["index"]])
  assert len(seen[0]) == len(set(seen[0])) == n // 2
  assert not set(seen[0]) & set(seen[1])
  assert set(seen[0]) | set(seen[1]) == set(range(n))
