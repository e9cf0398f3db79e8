"""Training input-pipeline throughput: prints one JSON line with clips/s after warm-up.

  python benchmarks/input_pipeline.py --config=configs/shapes.py
  python benchmarks/input_pipeline.py --config=configs/shapes.py:res64 --num_batches=200

Builds the dataset first if needed (shapes: offline). Warm-up covers the first pass over the
data (decoding into the in-memory cache when the split is small enough) unless
--warmup_batches says otherwise; the number reported is the steady state a training run sees.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/shapes.py[:res64].")
flags.DEFINE_string("split", "train", "Split to read.")
flags.DEFINE_integer("num_batches", 200, "Batches timed after warm-up.")
flags.DEFINE_integer("warmup_batches", -1,
                     "Batches before timing; -1 = one pass over the split (fills the cache).")
flags.DEFINE_integer("batch_size", 0, "Global batch size; 0 = config.stage1.batch_size.")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  import i2v_flax.data as data
  cfg = FLAGS.config
  batch_size = FLAGS.batch_size or int(cfg.stage1.batch_size)
  data.prepare(cfg.data)
  warmup = FLAGS.warmup_batches
  if warmup < 0:
    warmup = -(-data.num_examples(cfg.data, FLAGS.split) // batch_size) + 2
  it = data.create_iterator(cfg.data, FLAGS.split, batch_size, seed=cfg.seed)
  start = time.perf_counter()
  for _ in range(warmup):
    next(it)
  warm = time.perf_counter()
  for _ in range(FLAGS.num_batches):
    batch = next(it)
  end = time.perf_counter()
  print(json.dumps({
      "dataset": cfg.data.name, "builder_config": cfg.data.builder_config, "split": FLAGS.split,
      "resolution": int(cfg.data.resolution), "clip_length": int(cfg.data.clip_length),
      "batch_size": batch_size, "video_shape": list(batch["video"].shape),
      "num_batches": FLAGS.num_batches, "warmup_batches": warmup,
      "warmup_clips_per_s": round(warmup * batch_size / max(warm - start, 1e-9), 1),
      "clips_per_s": round(FLAGS.num_batches * batch_size / (end - warm), 1),
  }))


if __name__ == "__main__":
  app.run(main)
