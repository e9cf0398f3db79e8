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

from i2v_flax import parallel, sampling
from i2v_flax.train import stage1, stage2

config_flags.DEFINE_config_file("config", "configs/bair.py", "Config file.")
flags.DEFINE_integer("large_batch", 64, "The large batch size.")
flags.DEFINE_integer("repeats", 3, "Timed calls per batch size (median reported).")
FLAGS = flags.FLAGS


def random_model(config) -> sampling.VideoModel:
  """A VideoModel with freshly initialised weights (no workdir needed)."""
  mesh = parallel.make_mesh()
  r, d = int(config.data.resolution), int(config.stage1.z_dim)
  x0 = np.zeros((1, r, r, 3), np.float32)
  z = np.zeros((1, d), np.float32)
  eta = np.zeros((1, int(config.stage2.eta_dim)), np.float32) if config.stage2.control else None
  models = stage1.build_models(config)
  flow, embedder = stage2.build_flow(config)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  video = np.zeros((1, 16, r, r, 3), np.float32)
  variables = {"encoder": jax.jit(models.encoder.init)(keys[0], video, None),
               "decoder": jax.jit(models.decoder.init)(keys[1], x0, z)}
  variables["embedder"] = jax.jit(embedder.init)(keys[2], x0)
  cond = stage2.condition(embedder, variables["embedder"], x0, eta)
  variables["flow"] = jax.jit(flow.init)(keys[2], z, cond)
  return sampling.VideoModel(config=config, step=0, variables=parallel.replicate(variables, mesh),
                             stage1_models=models, flow=flow, embedder=embedder, mesh=mesh)


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
  out["latency_one_video_s"] = out["batch1_s"]
  out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
  out["reference_batch1_s"], out["reference_batch16_s"] = 1.97, 35.1
  print(json.dumps(out))


if __name__ == "__main__":
  app.run(main)
