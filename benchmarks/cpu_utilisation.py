"""How many of the machine's cores a training loop keeps busy: prints one JSON line.

  python benchmarks/cpu_utilisation.py                          # the demo's stage 1, this checkout
  python benchmarks/cpu_utilisation.py --source=/tmp/old_tree   # the same at another revision
  python benchmarks/cpu_utilisation.py --mode=train_stage2 --short=40 --long=240

Why: issue 15 found the demo keeping about one of two cores busy. A profile of one step cannot
show that (inside a step XLA uses every core); the idle time sits *between* steps (host syncs,
the input pipeline). So this runs the real main job twice as a child process, `--short` and
`--long` steps, on fresh workdirs, and reports the *difference*: CPU seconds (user + system, of
the children, from `getrusage`) over wall seconds of the extra `long - short` steps. Start-up,
data build, compilation (cached by the persistent XLA cache between the two runs) and the final
checkpoint cancel out; what is left is the steady-state loop. `cores_busy` = CPU s / wall s.
`--source` runs another checkout (e.g. `git worktree add /tmp/old <rev>`), for a before/after.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "configs/shapes.py", "Config file, relative to --source.")
flags.DEFINE_string("mode", "train_stage1", "main.py mode to run (train_stage1 or train_stage2).")
flags.DEFINE_integer("short", 50, "Steps of the first (reference) run.")
flags.DEFINE_integer("long", 350, "Steps of the second run; the extra steps are measured.")
flags.DEFINE_string("source", os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "Checkout whose i2v_flax to run (default: this one).")
flags.DEFINE_multi_string("override", [], "Extra --config.X=Y overrides for both runs.")


def _main_job(workdir: str, mode: str, overrides: list[str], env: dict) -> None:
  """Run `python -m i2v_flax.main` of --source quietly; raises if it fails."""
  cmd = [sys.executable, "-m", "i2v_flax.main", f"--config={FLAGS.config}", f"--workdir={workdir}",
         f"--mode={mode}"] + [f"--config.{o}" for o in overrides]
  subprocess.run(cmd, cwd=FLAGS.source, env=env, check=True, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)


def _run(workdir: str, steps: int, stage: str, env: dict) -> tuple[float, float]:
  """(wall s, child CPU s) of one main-job run of `steps` steps."""
  overrides = [f"{stage}.num_train_steps={steps}", f"{stage}.checkpoint_every={steps}",
               f"{stage}.sample_every={10**6}"] + FLAGS.override
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  _main_job(workdir, FLAGS.mode, overrides, env)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return wall, cpu


def main(argv):
  del argv
  stage = "stage1" if FLAGS.mode == "train_stage1" else "stage2"
  if FLAGS.long <= FLAGS.short:
    raise app.UsageError(f"--long ({FLAGS.long}) must exceed --short ({FLAGS.short}).")
  env = dict(os.environ, PYTHONPATH=FLAGS.source, TF_CPP_MIN_LOG_LEVEL="2")
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(),
                                                          "i2v_flax_bench_xla_cache"))
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  runs = {}
  with tempfile.TemporaryDirectory() as tmp:
    if stage == "stage2":  # Stage 2 needs a stage-1 checkpoint: a short stage 1 first.
      base = os.path.join(tmp, "stage1")
      _main_job(base, "train_stage1", ["stage1.num_train_steps=2"] + FLAGS.override, env)
    _run(os.path.join(tmp, "warm"), FLAGS.short, stage, env)  # Fills the compilation cache.
    for name, steps in (("short", FLAGS.short), ("long", FLAGS.long)):
      workdir = os.path.join(tmp, name)
      if stage == "stage2":
        shutil.copytree(base, workdir)
      runs[name] = _run(workdir, steps, stage, env)
  wall = runs["long"][0] - runs["short"][0]
  cpu = runs["long"][1] - runs["short"][1]
  extra = FLAGS.long - FLAGS.short
  print(json.dumps({
      "source": FLAGS.source, "config": FLAGS.config, "mode": FLAGS.mode,
      "measured_steps": extra, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
      "steps_per_s": round(extra / wall, 3), "cores_busy": round(cpu / wall, 2),
      "cpus": os.cpu_count(), "loadavg": [round(v, 2) for v in os.getloadavg()],
      "runs": {k: {"wall_s": round(w, 2), "cpu_s": round(c, 2)} for k, (w, c) in runs.items()}}))


if __name__ == "__main__":
  app.run(main)
