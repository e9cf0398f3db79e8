"""FVD cost on this machine: I3D throughput and the end-to-end time of a 256-vs-256 FVD.

Prints ONE JSON line. The I3D pass (TF1 resize to 224^2 + Inception-I3D at float32/HIGHEST) is
all of the cost; the float64 Fréchet distance of two 400-d sets takes milliseconds.

  python benchmarks/fvd.py                          # measure throughput, then run 256 vs 256
  python benchmarks/fvd.py --num_videos=32          # a shorter end-to-end run
  python benchmarks/fvd.py --estimate               # only extrapolate from the throughput
"""

from __future__ import annotations

import json
import platform
import time

import jax
import numpy as np
from absl import app, flags

from i2v_flax.evaluation import fvd as fvd_lib
from i2v_flax.evaluation import i3d

flags.DEFINE_integer("batch_size", 8, "I3D batch size.")
flags.DEFINE_integer("num_frames", 16, "Frames per clip (the BAIR protocol uses 16).")
flags.DEFINE_integer("resolution", 64, "Input frame size before the resize to 224^2.")
flags.DEFINE_integer("timed_batches", 3, "Batches timed for the throughput (after compile).")
flags.DEFINE_integer("num_videos", 256, "Clips per side of the end-to-end FVD.")
flags.DEFINE_bool("estimate", False, "Skip the end-to-end run; extrapolate from throughput.")
FLAGS = flags.FLAGS


def _videos(rng: np.random.Generator, n: int) -> np.ndarray:
  shape = (n, FLAGS.num_frames, FLAGS.resolution, FLAGS.resolution, 3)
  return rng.integers(0, 256, shape, dtype=np.uint8)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  variables = i3d.load_i3d_variables()
  batch = _videos(rng, FLAGS.batch_size)
  t0 = time.perf_counter()
  i3d.i3d_logits(batch, FLAGS.batch_size, variables)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(FLAGS.timed_batches):
    i3d.i3d_logits(batch, FLAGS.batch_size, variables)
  per_batch = (time.perf_counter() - t0) / FLAGS.timed_batches
  videos_per_s = FLAGS.batch_size / per_batch

  n = FLAGS.num_videos
  result = {
      "benchmark": "fvd",
      "device": str(jax.devices()[0].device_kind),
      "cpu_count": __import__("os").cpu_count(),
      "machine": platform.machine(),
      "i3d_input": f"{FLAGS.batch_size}x{FLAGS.num_frames}x224x224x3 "
                   f"(from {FLAGS.resolution}^2 uint8)",
      "i3d_compile_s": round(compile_s, 2),
      "i3d_videos_per_s": round(videos_per_s, 3),
      "fvd_num_videos_per_side": n,
  }
  if FLAGS.estimate:
    result["fvd_end_to_end_s"] = round(2 * n / videos_per_s, 1)
    result["fvd_end_to_end"] = "estimated (2 * num_videos / i3d_videos_per_s, compile excluded)"
  else:
    real, fake = _videos(rng, n), _videos(rng, n)
    t0 = time.perf_counter()
    value = fvd_lib.fvd(real, fake, FLAGS.batch_size)
    result["fvd_end_to_end_s"] = round(time.perf_counter() - t0, 1)
    result["fvd_end_to_end"] = "measured (compiled function reused)"
    result["fvd_value_random_uint8"] = round(value, 3)
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
