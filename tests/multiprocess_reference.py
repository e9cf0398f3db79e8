"""The single-process side of tests/test_multiprocess.py (run as a script with 4 fake devices).

    python tests/multiprocess_reference.py WORKDIR DATA_DIR OVERRIDES_JSON OUT_NPZ

Trains stage 1 to step 2, resumes to step 4, then stage 2 for its steps, on the global batches a
2-process run reads: each global batch is process 0's local batch followed by process 1's, built
with the same per-process pipelines `data.create_iterator` uses on a pod. Writes the final
in-memory models to OUT_NPZ (flattened 'stage1/...', 'stage2/...' keys) so the test can compare
them with the 2-process run's checkpoints and with this run's own (restored on 1 device).
"""

from __future__ import annotations

import json
import sys
from typing import Any, Iterator

import jax
import numpy as np

from i2v_flax import config_lib
from i2v_flax.data import pipeline
from i2v_flax.train import stage1, stage2

NUM_PROCESSES = 2  # The topology whose input streams this run reproduces.


def load_config(overrides: dict[str, Any]):
  config = config_lib.load_config("configs/shapes.py:tiny")
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def two_process_batches(config, global_batch: int, seed: int) -> Iterator[dict]:
  """Global batches as a 2-process run assembles them (process 0's rows first)."""
  local = global_batch // NUM_PROCESSES
  streams = [pipeline.build_dataset(config.data, "train", local, seed=seed, process_index=i,
                                    process_count=NUM_PROCESSES).as_numpy_iterator()
             for i in range(NUM_PROCESSES)]
  for parts in zip(*streams):
    yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def flatten(prefix: str, tree: Any) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {prefix + jax.tree_util.keystr(path): np.asarray(jax.device_get(x))
          for path, x in leaves}


def main(workdir: str, data_dir: str, overrides_json: str, out: str) -> None:
  overrides = {**json.loads(overrides_json), "data.data_dir": data_dir}
  assert jax.device_count() == 4 and jax.process_count() == 1, jax.devices()
  result: dict[str, np.ndarray] = {}
  for steps in (2, 4):  # Stop at 2 and resume, like the 2-process run's first checkpoint.
    config = load_config({**overrides, "stage1.num_train_steps": steps})
    bs = int(config.stage1.batch_size)
    state = stage1.train(config, workdir,
                         lambda start: two_process_batches(config, bs, config.seed + start))
  result.update(flatten("stage1", {k: state[k] for k in stage1.MODEL_KEYS}))
  config = load_config({**overrides, "stage1.num_train_steps": 4})
  bs2 = int(config.stage2.batch_size)
  state = stage2.train(config, workdir,
                       lambda start: two_process_batches(config, bs2, config.seed + start))
  result.update(flatten("stage2", {k: state[k] for k in stage2.MODEL_KEYS}))
  np.savez(out, **result)
  print(json.dumps({"arrays": len(result)}))


if __name__ == "__main__":
  main(*sys.argv[1:5])
