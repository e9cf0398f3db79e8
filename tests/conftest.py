"""Shared pytest fixtures.

`shapes_data_dir` (session scope): a TFDS data_dir holding tiny `i2v_shapes/res32_single` (the
demo config's data) and `i2v_shapes/res32` builds (train 16 videos, test 8; ~2 s each, once per
session). Point a config at it:

    def test_something(shapes_data_dir):
      config = config_lib.load_config("configs/shapes.py:tiny")
      config.data.data_dir = shapes_data_dir
      batch = next(i2v_flax.data.create_iterator(config.data, "train", 4))

The records are exactly `i2v_flax.data.shapes_builder.example_for(split, i, 32, scene)` for i in
order (scene 'single' for res32_single, 'default' for res32),
so tests can compare against regenerated ground truth. Treat the folder as read-only.
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One persistent XLA compilation cache for the session and every subprocess it starts: most tests
# build the same tiny models, and compiling them is most of the suite's time (the gs:// main-job
# test: 288 s cold, 52 s warm). Keyed by the HLO and jax version, so it never changes a result.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"i2v_flax_tests_xla_cache_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402

SHAPES_TINY_SIZES = {"train": 16, "test": 8}


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory) -> str:
  from i2v_flax.data import shapes_builder
  data_dir = str(tmp_path_factory.mktemp("tfds_shapes"))
  for builder_config in ("res32_single", "res32"):
    shapes_builder.I2vShapes(config=builder_config, data_dir=data_dir,
                             num_examples=SHAPES_TINY_SIZES).download_and_prepare()
  return data_dir


@pytest.fixture(scope="session")
def trained_workdir(shapes_data_dir, tmp_path_factory) -> str:
  """A workdir with tiny stage-1 and stage-2 checkpoints on `shapes_data_dir` (train once per
  session; sampling, CLI, report and notebook tests share it). Copy it before writing into it."""
  from i2v_flax import config_lib
  from i2v_flax.train import stage1, stage2
  config = config_lib.load_config("configs/shapes.py:tiny")
  config.data.data_dir = shapes_data_dir
  workdir = str(tmp_path_factory.mktemp("trained_workdir"))
  stage1.train_and_evaluate(config, workdir)
  stage2.train_and_evaluate(config, workdir)
  return workdir
