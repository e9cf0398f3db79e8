"""Command-line entry point: parse flags, optionally join a multi-host run, call the library.

  python -m i2v_flax.main --config=configs/shapes.py --workdir=/tmp/shapes            # everything
  python -m i2v_flax.main --config=configs/bair.py --workdir=DIR --mode=train_stage1
  python -m i2v_flax.main --config=configs/bair.py --workdir=DIR --mode=train_stage2
  python -m i2v_flax.main --config=configs/bair.py --workdir=DIR --mode=eval
Override any config field: --config.stage1.batch_size=4

The console shows one progress bar per phase and, at the end, what was written where; the full
TensorFlow/absl output goes to DIR/logs/ (`--verbosity=1` shows it too). Mistakes in flags,
configs or the workdir print one `error: ... Fix: ...` line (i2v_flax.cli).
"""

from __future__ import annotations

import importlib
import os
import time

from absl import flags, logging
from ml_collections import config_flags

from i2v_flax import cli, config_check, console, errors, paths

FLAGS = flags.FLAGS
# allow_override: i2v_flax.sample and .convert define the same names; a process (a test run)
# may import several entry points, each parses only its own command line.
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/shapes.py[:tiny].",
                                lock_config=True, allow_override=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs, samples and reports go.",
                    allow_override=True)
flags.DEFINE_enum("mode", "all", list(config_check.MODES),
                  "all = train stage 1, train stage 2, then write the sample report.")
flags.DEFINE_bool("distributed", False, "Join a multi-process run with "
                  "jax.distributed.initialize() (TPU pods, SLURM: found automatically).")
flags.DEFINE_string("coordinator_address", None, "With --distributed: host:port of process 0 "
                    "(default: from the TPU/SLURM environment or JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "With --distributed: how many processes join "
                     "(default: from the environment).")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index "
                     "(default: from the environment).")

# mode -> (module, function(config, workdir)); imported lazily so one mode never pays for another.
_MODES = {
    "all": ("i2v_flax.report", "train_and_report"),
    "train_stage1": ("i2v_flax.train.stage1", "train_and_evaluate"),
    "train_stage2": ("i2v_flax.train.stage2", "train_and_evaluate"),
    "eval": ("i2v_flax.evaluation.protocol", "evaluate"),
}


def _summary(workdir: str, mode: str, seconds: float) -> str:
  """What was written where, for the end of a run."""
  rel = lambda *p: paths.join(workdir, *p)  # noqa: E731
  lines = [f"Done in {seconds / 60:.1f} min. Written to {workdir}:"]
  gifs = paths.glob(rel("report"), "*.gif")
  if gifs and mode == "all":
    lines.append(f"  report GIFs   {rel('report')}/: {', '.join(map(os.path.basename, gifs))}")
  if mode == "all" and paths.exists(rel("report", "summary.json")):
    lines.append(f"  summary       {rel('report', 'summary.json')}")
  evals = sorted(paths.glob(rel("eval"), "*.json"), key=lambda p: paths.path(p).stat().mtime)
  if mode == "eval" and evals:
    lines.append(f"  evaluation    {evals[-1]} (table: {evals[-1][:-5]}.md)")
  stages = [s for s in ("stage1", "stage2") if paths.isdir(rel("checkpoints", s))]
  if stages:
    lines.append(f"  checkpoints   {rel('checkpoints')}/: {', '.join(stages)}")
  if paths.glob(rel("samples"), "*.gif"):
    lines.append(f"  training GIFs {rel('samples')}/")
  lines.append(f"  full log      {rel('logs')}/")
  lines.append(f"TensorBoard:  tensorboard --logdir {rel('tensorboard')}")
  if stages == ["stage1", "stage2"]:
    lines.append(f"Sample:       python -m i2v_flax.sample --workdir={workdir} --image=x0.png "
                 "--out=samples.gif")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  """Validate the config and the workdir, then run the mode (see the module docstring)."""
  del argv
  start = time.time()
  config, workdir, mode = FLAGS.config, FLAGS.workdir, FLAGS.mode
  if config is None or not workdir:
    raise errors.InvalidInput("--config and --workdir are required. Fix: e.g. "
                              "--config=configs/shapes.py --workdir=/tmp/shapes.")
  config_check.check_mode(mode)
  # Keep TensorFlow (used only for tf.data/TFDS) off any accelerator.
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  tf.config.set_visible_devices([], "TPU") if tf.config.list_physical_devices("TPU") else None
  import jax
  if FLAGS.distributed:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  config_check.check_config(config)
  config_check.check_workdir(config, workdir, mode)
  module_name, function_name = _MODES[mode]
  getattr(importlib.import_module(module_name), function_name)(config, workdir)
  if jax.process_index() == 0:
    print(_summary(workdir, mode, time.time() - start), file=console.terminal_out(), flush=True)


def _log_dir() -> str | None:
  return paths.join(FLAGS.workdir, "logs") if FLAGS.workdir else None


def _log_prefix() -> str:
  """main-<time>.log; on multi-process runs each process keeps its own (main-p1-<time>.log)."""
  import jax
  if FLAGS.distributed and jax.process_count() > 1:
    return f"main-p{jax.process_index()}"
  return "main"


def run(argv: list[str] | None = None) -> int:
  """The CLI as a function returning the exit status (tests call it in-process)."""
  return cli.execute(main, argv, log_dir=_log_dir, log_prefix=_log_prefix,
                     created_dir=lambda: FLAGS.workdir)


if __name__ == "__main__":
  raise SystemExit(run())
