"""Command-line entry point: parse flags, optionally join a multi-host run, call the library.

  python -m i2v_flax.main --config=configs/shapes.py --workdir=/tmp/shapes            # everything
  python -m i2v_flax.main --config=configs/bair.py --workdir=DIR --mode=train_stage1
  python -m i2v_flax.main --config=configs/bair.py --workdir=DIR --mode=train_stage2
  python -m i2v_flax.main --config=configs/bair.py --workdir=DIR --mode=eval
Override any config field: --config.stage1.batch_size=4
"""

import importlib

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/shapes.py[:tiny].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs, samples and reports go.")
flags.DEFINE_enum("mode", "all", ["all", "train_stage1", "train_stage2", "eval"],
                  "all = train stage 1, train stage 2, then write the sample report.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host pods).")
flags.mark_flags_as_required(["config", "workdir"])

# mode -> (module, function(config, workdir)); imported lazily so one mode never pays for another.
_MODES = {
    "all": ("i2v_flax.report", "train_and_report"),
    "train_stage1": ("i2v_flax.train.stage1", "train_and_evaluate"),
    "train_stage2": ("i2v_flax.train.stage2", "train_and_evaluate"),
    "eval": ("i2v_flax.evaluation.protocol", "evaluate"),
}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Keep TensorFlow (used only for tf.data/TFDS) off any accelerator.
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  tf.config.set_visible_devices([], "TPU") if tf.config.list_physical_devices("TPU") else None
  import jax
  if FLAGS.distributed:
    jax.distributed.initialize()
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  module_name, function_name = _MODES[FLAGS.mode]
  getattr(importlib.import_module(module_name), function_name)(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
