"""Sampling throughput of the full generator (embedder + cINN + video decoder); one JSON line.

  python benchmarks/sample.py --config=configs/bair.py [--large_batch=64] [--repeats=3]

Random weights (as the reference was timed). Reports videos/s at batch 1 and at a large batch,
and the latency of one video (batch 1, after compilation). Reference on a 2-core CPU
(../shared/PERFORMANCE.md): batch 1 1.97 s/video, batch 16 35.1 s. Large batches run in chunks
of `config.eval.batch_size` (reported as "chunk"; override with --config.eval.batch_size=N):
one bair-sized call on 64 videos needs more than 24 GB of host RAM.
"""

from __future__ import annotations

import json
import resource
import statistics
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

import bench_util  # benchmarks/ is the script's directory, so it is on sys.path.
from targets import random_model

config_flags.DEFINE_config_file("config", "configs/bair.py", "Config file.")
flags.DEFINE_integer("large_batch", 64, "The large batch size.")
flags.DEFINE_integer("repeats", 3, "Timed calls per batch size (median reported).")
FLAGS = flags.FLAGS


def _time(fn, repeats: int) -> tuple[float, float]:
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def main(argv):
  del argv
  config = FLAGS.config
  model = random_model(config)
  r = model.resolution
  out = {"config": config_flags.get_config_filename(FLAGS["config"]), "resolution": r,
         "device": jax.devices()[0].device_kind, "num_devices": jax.device_count(),
         "chunk": int(config.eval.batch_size)}
  for batch in (1, FLAGS.large_batch):
    x0 = np.random.default_rng(0).uniform(-1, 1, (batch, r, r, 3)).astype(np.float32)
    first, median = _time(lambda: model.sample(x0, 1, seed=0), FLAGS.repeats)
    out[f"batch{batch}_compile_and_first_s"] = round(first, 3)
    out[f"batch{batch}_s"] = round(median, 4)
    out[f"batch{batch}_videos_per_s"] = round(batch / median, 3)
    chunk = min(batch, int(config.eval.batch_size))  # One compiled call per chunk of videos.
    rng = np.random.default_rng(0)
    x0c = jax.numpy.asarray(x0[:chunk])
    nu = jax.numpy.asarray(rng.standard_normal((chunk, model.z_dim)).astype(np.float32))
    eta = model._check_eta(None, chunk, rng)  # pylint: disable=protected-access
    flops = bench_util.jit_flops(model._generate, model.variables, x0c, nu, eta) * (
        -(-batch // chunk))  # pylint: disable=protected-access
    out[f"batch{batch}_throughput"] = bench_util.throughput(flops, median)
  out["latency_one_video_s"] = out["batch1_s"]
  out["machine"] = bench_util.machine_state()
  out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
  out["reference_batch1_s"], out["reference_batch16_s"] = 1.97, 35.1
  print(json.dumps(out))


if __name__ == "__main__":
  app.run(main)
