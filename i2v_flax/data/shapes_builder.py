"""TFDS builder `i2v_shapes`: the procedural shapes videos, generated offline and deterministically.

Registered with TFDS when `i2v_flax.data` is imported. Example i of a split is
`shapes.generate_example(np.random.default_rng([split_seed, i]), R)` with `split_seed` a fixed
CRC32 of the split name, so every build (any machine, any order) yields identical records, and
the evaluation can regenerate any example from its `index`. Shuffling at write time is disabled:
records are stored in index order, so "the first N test videos" are indices 0..N-1.

Configs: res32, res64 (default), res128 (24 frames each; the original scene: 1-3 small objects
on a drifting texture) and res32_single, res64_single (`shapes.SINGLE`: one large object on a
static texture, what the CPU demo trains on); splits train 4,000, test 256.
Smaller builds (for tests) pass `num_examples={'train': 16, 'test': 8}` to the constructor; the
split sizes are recorded in the dataset info, so readers see the real count.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
import struct
import zlib
from typing import Any, Iterator, Mapping

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from i2v_flax.data import shapes

DEFAULT_NUM_EXAMPLES = {"train": 4000, "test": 256}
MAX_WORKERS = 8  # Processes generating a big build.
POOL_MIN_EXAMPLES = 64  # Smaller splits generate in-process (a pool costs more than it saves).


def split_seed(split: str) -> int:
  """Stable per-split seed (Python's hash() is salted per process, CRC32 is not)."""
  return zlib.crc32(f"i2v_shapes/{split}".encode())


def _png_chunk(tag: bytes, payload: bytes) -> bytes:
  return (struct.pack(">I", len(payload)) + tag + payload
          + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF))


def encode_png(frame: np.ndarray) -> bytes:
  """Minimal RGB8 PNG (Sub filter, zlib level 1).

  Why not TFDS's encoder: tf.image.encode_png (level 6, one eager op per frame) and PIL are
  3-5x slower, which made the res64 build miss its time budget. Any PNG decoder reads it.
  """
  h, w, _ = frame.shape
  rows = frame.reshape(h, w * 3)
  sub = rows.copy()
  sub[:, 3:] -= rows[:, :-3]  # uint8 wrap-around is the PNG Sub filter.
  filtered = np.concatenate([np.ones((h, 1), np.uint8), sub], axis=1)
  header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
          + _png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 1)) + _png_chunk(b"IEND", b""))


def _encoded_example(args: tuple[str, int, int, str]) -> dict[str, Any]:
  """Generate and PNG-encode one example (runs in worker processes for big builds)."""
  split, index, resolution, scene = args
  example = example_for(split, index, resolution, scene)
  example["index"] = np.int32(index)
  example["video"] = [encode_png(frame) for frame in example["video"]]
  return example


def example_for(split: str, index: int, resolution: int,
                scene: str = "default") -> dict[str, np.ndarray]:
  """Exactly the example stored at `index` of `split` at this resolution and scene."""
  return shapes.generate_example(np.random.default_rng([split_seed(split), index]), resolution,
                                 scene=shapes.SCENES[scene])


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
  resolution: int = 64
  scene: str = "default"  # A key of shapes.SCENES.


def scene_of(builder_config: str) -> shapes.Scene:
  """The scene a builder config name (e.g. 'res32_single') was generated with."""
  for config in I2vShapes.BUILDER_CONFIGS:
    if config.name == builder_config:
      return shapes.SCENES[config.scene]
  known = [c.name for c in I2vShapes.BUILDER_CONFIGS]
  raise ValueError(f"Unknown shapes builder_config {builder_config!r}; use one of {known}.")


class I2vShapes(tfds.core.GeneratorBasedBuilder):
  """Bouncing discs/squares on a drifting texture, with per-frame ground truth."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ShapesConfig(name=f"res{r}", resolution=r,
                   description=f"{r}x{r} frames, 24 per video, 1-3 objects, drifting texture.")
      for r in (32, 64, 128)
  ] + [
      ShapesConfig(name=f"res{r}_single", resolution=r, scene="single",
                   description=f"{r}x{r} frames, 24 per video, one large object, static texture.")
      for r in (32, 64)
  ]
  DEFAULT_CONFIG_NAME = "res64"

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file. TFDS's own lookup needs the undeclared `importlib_resources` package."""
    return epath.Path(__file__)

  def __init__(self, *, num_examples: Mapping[str, int] | None = None, **kwargs: Any):
    """`num_examples` overrides the split sizes of a build (tests); reading ignores it."""
    self._num_examples = dict(DEFAULT_NUM_EXAMPLES)
    if num_examples:
      unknown = set(num_examples) - set(DEFAULT_NUM_EXAMPLES)
      if unknown:
        raise ValueError(f"num_examples has unknown splits {sorted(unknown)}; use "
                         f"{sorted(DEFAULT_NUM_EXAMPLES)}.")
      self._num_examples.update(num_examples)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    t, k = shapes.NUM_FRAMES, shapes.MAX_OBJECTS
    return self.dataset_info_from_configs(
        description=shapes.__doc__,
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(t, r, r, 3)),
            "positions": tfds.features.Tensor(shape=(t, k, 2), dtype=np.float32),
            "num_objects": tfds.features.Scalar(dtype=np.int32),
            "colors": tfds.features.Tensor(shape=(k, 3), dtype=np.uint8),
            "radius": tfds.features.Tensor(shape=(k,), dtype=np.float32),
            "drift": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "shape_kind": tfds.features.Tensor(shape=(k,), dtype=np.int32),
            "index": tfds.features.Scalar(dtype=np.int32),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split, n) for split, n in self._num_examples.items()}

  def _generate_examples(self, split: str, num: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Examples in index order; big builds generate in a process pool (fork: workers only run
    numpy/zlib, and forking skips re-importing TensorFlow)."""
    jobs = [(split, i, self.builder_config.resolution, self.builder_config.scene)
            for i in range(num)]
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    if num < POOL_MIN_EXAMPLES or workers < 2:
      results = map(_encoded_example, jobs)
      pool = None
    else:
      pool = multiprocessing.get_context("fork").Pool(workers)
      results = pool.imap(_encoded_example, jobs, chunksize=16)
    try:
      for i, example in enumerate(results):
        # TFDS stores a file object's bytes as they are (no re-encoding).
        example["video"] = [io.BytesIO(frame) for frame in example["video"]]
        yield i, example
    finally:
      if pool is not None:
        pool.terminate()
