"""TFDS builder `i2v_shapes`: the procedural shapes videos, generated offline and deterministically.

Registered with TFDS when `i2v_flax.data` is imported. Example i of a split is
`shapes.generate_example(np.random.default_rng([split_seed, i]), R)` with `split_seed` a fixed
CRC32 of the split name, so every build (any machine, any order) yields identical records, and
the evaluation can regenerate any example from its `index`. Shuffling at write time is disabled:
records are stored in index order, so "the first N test videos" are indices 0..N-1.

Configs: res32, res64 (default), res128 (24 frames each); splits train 4,000, test 256.
Smaller builds (for tests) pass `num_examples={'train': 16, 'test': 8}` to the constructor; the
split sizes are recorded in the dataset info, so readers see the real count.
"""

from __future__ import annotations

import dataclasses
import io
import zlib
from typing import Any, Iterator, Mapping

from etils import epath
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from i2v_flax.data import shapes

DEFAULT_NUM_EXAMPLES = {"train": 4000, "test": 256}


def split_seed(split: str) -> int:
  """Stable per-split seed (Python's hash() is salted per process, CRC32 is not)."""
  return zlib.crc32(f"i2v_shapes/{split}".encode())


def _png_frames(video: np.ndarray) -> list[io.BytesIO]:
  """PNG-encode frames with PIL at compression level 1: ~3x faster than TFDS's own encoder
  (tf.image.encode_png at level 6), which would make the res64 build miss its time budget.
  TFDS stores file objects' bytes as they are."""
  frames = []
  for frame in video:
    buf = io.BytesIO()
    PIL.Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    buf.seek(0)
    frames.append(buf)
  return frames


def example_for(split: str, index: int, resolution: int) -> dict[str, np.ndarray]:
  """Exactly the example stored at `index` of `split` at this resolution."""
  return shapes.generate_example(np.random.default_rng([split_seed(split), index]), resolution)


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
  resolution: int = 64


class I2vShapes(tfds.core.GeneratorBasedBuilder):
  """Bouncing discs/squares on a drifting texture, with per-frame ground truth."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ShapesConfig(name=f"res{r}", resolution=r, description=f"{r}x{r} frames, 24 per video.")
      for r in (32, 64, 128)
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
    resolution = self.builder_config.resolution
    for i in range(num):
      example = example_for(split, i, resolution)
      example["index"] = np.int32(i)
      example["video"] = _png_frames(example["video"])
      yield i, example
