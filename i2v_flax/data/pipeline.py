"""The input pipeline every trainer and evaluator uses: TFDS -> clips -> local numpy batches.

    prepare(config.data)                         # build / download / read manual videos once
    it = create_iterator(config.data, "train", global_batch_size=8, seed=0)
    batch = next(it)   # {'video': (B, 17, H, W, 3) float32 in [-1, 1], 'eta': (B, d)?}

Each process loads only its slice of every split (`tfds.split_for_jax_process`) and yields its
local batch (`global_batch_size // jax.process_count()` rows); `parallel.shard_batch` then
assembles the global array. All randomness (file order, shuffling, clip starts,
augmentation) derives from `seed`, so a pipeline is reproducible.

Ordering: read -> decode -> [cache] -> [shuffle] -> [repeat] -> per-clip start/augment/eta ->
batch. Per-clip random draws use a stateless seed (seed, clip counter), so they do not depend on
tf.data's thread scheduling.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

try:  # TensorFlow only feeds data: keep it off the accelerators JAX needs.
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # Already initialised, or no GPU support in this build.
  pass

from i2v_flax import config_lib
from i2v_flax import errors
from i2v_flax import progress
from i2v_flax import parallel
from i2v_flax.data import augment
from i2v_flax.data import control
from i2v_flax.data import eval_clips
from i2v_flax.data import manual
from i2v_flax.data import shapes_builder

CACHE_LIMIT_BYTES = 2 << 30  # Decoded videos of one process's split are cached below this size.
BAIR_SIZES = {"train": 43264, "test": 256}
SHAPES_META = ("positions", "colors", "radius", "num_objects", "drift", "shape_kind", "index")


@dataclasses.dataclass(frozen=True)
class Source:
  """How one dataset maps onto the common (video uint8 (T, h, w, 3) + metadata) form."""
  name: str
  tfds_name: str
  num_frames: int
  frame_size: int
  video_key: str
  meta_keys: tuple[str, ...]
  decoders: Any = None
  manual: bool = False  # Whole PNG-encoded videos of any length >= num_frames (manual.py).
  test_frame_size: int | None = None  # Frame side of the non-train splits; None = frame_size.

  def size(self, split: str) -> int:
    """Stored frame side of `split` (manual datasets keep S+16 only for the train split)."""
    return self.frame_size if is_train(split) or self.test_frame_size is None else (
        self.test_frame_size)


def is_train(split: str) -> bool:
  """'train' or a slice of it ('train[:-64]', 'train[-64:]': stage 1's validation hold-out,
  train/validation.py): stored like the train split and read like it (random starts,
  augmentation)."""
  return split.partition("[")[0] == "train"


def source(data_config: ml_collections.ConfigDict) -> Source:
  """The dataset a data config names; unknown names fail with the list of known ones."""
  name = data_config.name
  if name == "shapes":
    cfg = data_config.builder_config or shapes_builder.I2vShapes.DEFAULT_CONFIG_NAME
    builder_configs = {c.name: c for c in shapes_builder.I2vShapes.BUILDER_CONFIGS}
    if cfg not in builder_configs:
      raise errors.InvalidInput(f"Unknown shapes builder_config {cfg!r}; use one of "
                       f"{list(builder_configs)} (--config.data.builder_config=res64).")
    return Source(name, f"i2v_shapes/{cfg}", shapes_builder.shapes.NUM_FRAMES,
                  builder_configs[cfg].resolution, "video", SHAPES_META)
  if name == "bair":
    return Source(name, "bair_robot_pushing_small", 30, 64, "image_aux1", ("endeffector_pos",),
                  decoders={"image_main": tfds.decode.SkipDecoding()})
  if name in manual.MANUAL_DATASETS:
    return Source(name, manual.tfds_name(name, data_config.builder_config), manual.MIN_FRAMES,
                  manual.stored_size(name, "train"), "video", (),
                  decoders={"video": tfds.decode.SkipDecoding()}, manual=True,
                  test_frame_size=manual.stored_size(name, "test"))
  raise errors.InvalidInput(f"Unknown dataset {name!r}. Known datasets: "
                   f"{', '.join(config_lib.KNOWN_DATASETS)} (set --config.data.name).")


def _builder(data_config: ml_collections.ConfigDict, src: Source) -> tfds.core.DatasetBuilder:
  return tfds.builder(src.tfds_name, data_dir=data_config.data_dir)


_SHOWN: set[tuple[str, str]] = set()  # Datasets whose 'data' bar was shown in this process.


def prepare(data_config: ml_collections.ConfigDict) -> None:
  """Make the dataset readable: generate shapes offline, download bair, or read manual_dir.

  The first call per dataset in a process shows the run's 'data' progress bar (the trainers
  call prepare again; one bar per phase is enough).
  """
  src = source(data_config)
  if src.manual:
    manual.check_manual_dir(src.name, data_config.manual_dir)
  builder = _builder(data_config, src)
  key = (src.tfds_name, str(builder.data_dir))
  with progress.phase(f"data {src.tfds_name}", total=1, enabled=key not in _SHOWN) as bar:
    _SHOWN.add(key)
    if builder.is_prepared():
      logging.info("Dataset %s is ready in %s.", src.tfds_name, builder.data_dir)
      bar.update(1, status="ready")
      return
    _build(data_config, src, builder)
    bar.update(1, status="built")


def _build(data_config: ml_collections.ConfigDict, src: Source,
           builder: tfds.core.DatasetBuilder) -> None:
  logging.info("Preparing %s in %s (%s); this happens once.", src.tfds_name, builder.data_dir,
               {"shapes": "generated offline, about a minute at res64",
                "bair": "downloads ~30 GB from Berkeley"}.get(src.name, "reading manual_dir"))
  if src.name == "bair":
    try:  # TFDS 4.9.x needs it to look up download checksums but does not declare it.
      import importlib_resources  # noqa: F401  pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise errors.MissingDependency("Downloading bair with TFDS needs the "
                                     "`importlib_resources` package. Fix: pip install "
                                     "importlib_resources") from e
  download_config = None
  if src.manual:
    download_config = tfds.download.DownloadConfig(manual_dir=data_config.manual_dir)
  builder.download_and_prepare(download_config=download_config)
  logging.info("Prepared %s.", src.tfds_name)


def num_examples(data_config: ml_collections.ConfigDict, split: str) -> int:
  """Videos in a split (all processes together)."""
  src = source(data_config)
  builder = _builder(data_config, src)
  if builder.is_prepared():
    return int(builder.info.splits[split].num_examples)
  if src.name == "bair" and split in BAIR_SIZES:
    return BAIR_SIZES[split]
  if src.name == "shapes" and split in shapes_builder.DEFAULT_NUM_EXAMPLES:
    return shapes_builder.DEFAULT_NUM_EXAMPLES[split]
  raise errors.InvalidInput(f"Dataset {src.tfds_name} is not prepared in {builder.data_dir}, so the size "
                   f"of split {split!r} is unknown. Fix: call i2v_flax.data.prepare(config.data).")


def split_for_process(split: str, process_index: int, process_count: int,
                      drop_remainder: bool) -> Any:
  """This process's disjoint slice of `split` (all slices together cover it)."""
  return tfds.split_for_jax_process(split, process_index=process_index,
                                    process_count=process_count, drop_remainder=drop_remainder)


def _check(data_config: ml_collections.ConfigDict, src: Source, global_batch_size: int,
           process_count: int, num_devices: int | None) -> None:
  length = int(data_config.clip_length)
  if length > src.num_frames:
    what = (f"{src.num_frames}-frame minimum of the videos the {src.name} builder keeps"
            if src.manual else f"{src.num_frames}-frame videos of {src.name}")
    raise errors.InvalidInput(f"clip_length={length} is longer than the {what}. Fix: "
                              f"--config.data.clip_length={src.num_frames} or less.")
  if data_config.control and src.name not in control.ETA_DIMS:
    raise errors.InvalidInput(f"Dataset {src.name} has no control variable (only "
                     f"{sorted(control.ETA_DIMS)} do). Fix: --config.data.control=False.")
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise errors.InvalidInput(f"Global batch size {global_batch_size} is not divisible by the "
                     f"{process_count} processes. Fix: use a positive multiple of {process_count}.")
  if num_devices is not None:
    parallel.check_global_batch(global_batch_size, parallel.make_mesh())


def _decode_frames(encoded: tf.Tensor, length: int, size: int) -> tf.Tensor:
  """(L,) encoded frames of a manual dataset -> (L, size, size, 3) uint8 (only the clip's)."""
  frames = tf.map_fn(lambda b: tf.io.decode_image(b, channels=3, expand_animations=False),
                     encoded, fn_output_signature=tf.uint8)
  return tf.ensure_shape(frames, (length, size, size, 3))


def _clip_fn(data_config: ml_collections.ConfigDict, src: Source, train: bool,
             with_metadata: bool, seed: int, frame_size: int):
  """Per-clip map: start, decoding, augmentation, eta, metadata in the clip's coordinates.

  Training clips start uniformly in [0, T - L] (capped at max_start_frame when that is >= 0),
  T being each video's own length; an evaluation plan sets `_start`; other clips start at 0.
  """
  length = int(data_config.clip_length)
  cap = int(data_config.max_start_frame)
  # 'plain': uint8 clips, one cast per batch. 'fused': uint8 flips per clip and one affine colour
  # map per batch. 'clip': full per-clip float augmentation (resizing, cropping, hue, kornia).
  if not augment.needs_random(data_config, train) and frame_size == int(data_config.resolution):
    mode = "plain"
  elif train and augment.can_fuse(data_config, frame_size):
    mode = "fused"
  else:
    mode = "clip"

  def fn(counter, ex):
    base = tf.stack([tf.constant(seed, tf.int64), 2 * counter])
    total = tf.shape(ex["video"])[0] if src.manual else src.num_frames
    if "_start" in ex:
      start = tf.cast(ex["_start"], tf.int32)
    elif train:
      hi = total - length if cap < 0 else tf.minimum(total - length, cap)
      u = tf.random.stateless_uniform([], seed=base + tf.constant([0, 1], tf.int64))
      start = tf.minimum(tf.cast(u * tf.cast(hi + 1, tf.float32), tf.int32), hi)
    else:
      start = tf.constant(0, tf.int32)
    video = ex["video"][start:start + length]
    if src.manual:
      video = _decode_frames(video, length, frame_size)
    out = {}
    flipped, scale, offset = tf.constant(False), tf.constant(1.0), tf.zeros([2])
    if mode == "plain":
      out["video"] = video  # Stays uint8 until the batch is converted in one op.
    elif mode == "fused":
      draws = augment.draws_for(base)
      if augment.flip_enabled(data_config):
        flipped = draws[0] < 0.5
        video = tf.cond(flipped, lambda: tf.reverse(video, axis=[2]), lambda: video)
      out["video"] = video
      out["_jitter"] = augment.jitter_factors(data_config, draws)
    else:
      out["video"], flipped, scale, offset = augment.augment_clip(video, data_config, train, base)
    if src.name == "shapes":
      used = tf.cast(ex["radius"] > 0, tf.float32)[None, :, None]
      pos = ex["positions"][start:start + length]
      pos = pos * scale - offset
      pos = tf.where(flipped, tf.stack([1.0 - pos[..., 0], pos[..., 1]], -1), pos) * used
      drift = ex["drift"] * tf.stack([tf.where(flipped, -1.0, 1.0), 1.0])
      drift = drift * scale * float(data_config.resolution) / frame_size
      meta = {"positions": pos, "drift": drift, "radius": ex["radius"] * scale,
              "colors": ex["colors"], "num_objects": ex["num_objects"],
              "shape_kind": ex["shape_kind"], "index": ex["index"]}
      if data_config.control:
        out["eta"] = control.shapes_eta_tf(pos[-1, 0], drift)
    elif src.name == "bair":
      meta = {"endeffector_pos": ex["endeffector_pos"][start:start + length]}
      if data_config.control:
        out["eta"] = control.bair_eta_tf(ex["endeffector_pos"][start + length - 1])
    else:
      meta = {}
      if data_config.control:
        clip = out["video"]
        out["eta"] = control.motion_direction_tf(clip[0], clip[-1])
    if with_metadata:
      out.update(meta)
      out["start"] = start
      if "_video" in ex:
        out["video_index"] = ex["_video"]
    return out

  return fn, mode


def build_dataset(data_config: ml_collections.ConfigDict, split: str, local_batch_size: int, *,
                  seed: int = 0, shuffle: bool | None = None, repeat: bool = True,
                  with_metadata: bool = False, process_index: int = 0, process_count: int = 1,
                  max_examples: int | None = None,
                  plan: eval_clips.ClipPlan | None = None) -> tf.data.Dataset:
  """The tf.data pipeline of one process (explicit index/count, so it is testable)."""
  src = source(data_config)
  if src.manual:
    manual.check_manual_dir(src.name, data_config.manual_dir)
  train = is_train(split)
  shuffle = train if shuffle is None else shuffle
  read_split = f"{split}[:{max_examples}]" if max_examples else split
  read_split = split_for_process(read_split, process_index, process_count, drop_remainder=train)
  builder = _builder(data_config, src)
  if not builder.is_prepared() and not src.name == "bair":
    raise errors.MissingInput(
        f"Dataset {src.tfds_name} is not prepared in {builder.data_dir}. Fix: call "
        f"i2v_flax.data.prepare(config.data) first (or set --config.data.data_dir to where it was "
        f"built).")
  # Ordered datasets (shapes) refuse file shuffling; the shuffle buffer below mixes them.
  shuffle_files = shuffle and not builder.info.disable_shuffling
  ds = builder.as_dataset(
      split=read_split, shuffle_files=shuffle_files, decoders=src.decoders,
      read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False))

  keys = (src.video_key,) + src.meta_keys
  ds = ds.map(lambda ex: {("video" if k == src.video_key else k): ex[k] for k in keys},
              num_parallel_calls=tf.data.AUTOTUNE)
  if repeat:
    if src.manual:  # Encoded whole videos are cached; only a clip's frames get decoded.
      # A slice ('train[:-64]') reports 0 bytes: bound it by its whole split's.
      split_bytes = builder.info.splits[split.partition("[")[0]].num_bytes // process_count
    else:
      try:
        split_bytes = (num_examples(data_config, split) // process_count
                       * src.frame_size ** 2 * 3 * src.num_frames)
      except ValueError:
        split_bytes = None
    if split_bytes is not None and split_bytes <= CACHE_LIMIT_BYTES:
      ds = ds.cache()  # Decode each video once: PNG decoding dominates otherwise.
  if plan is not None:
    total = num_examples(data_config, split)
    count = min(total, max_examples) if max_examples else total
    if process_count > 1:
      raise errors.InvalidInput("An evaluation clip plan reads the whole split on one process. "
                                "Fix: evaluate without --distributed.")
    ds = eval_clips.expand(ds, plan, count, int(data_config.clip_length), seed)
  if shuffle:
    ds = ds.shuffle(int(data_config.shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  fn, mode = _clip_fn(data_config, src, train, with_metadata, seed, src.size(split))
  parallel_calls = (tf.data.AUTOTUNE if data_config.num_parallel_calls < 0
                    else int(data_config.num_parallel_calls))
  ds = ds.enumerate().map(lambda i, ex: fn(i, ex), num_parallel_calls=parallel_calls)
  ds = ds.batch(local_batch_size, drop_remainder=train or repeat,
                num_parallel_calls=parallel_calls)
  if mode != "clip":
    def to_float(batch):
      batch = dict(batch)
      if mode == "fused":
        batch["video"] = augment.fused_jitter_batch(batch["video"], batch.pop("_jitter"))
      else:
        batch["video"] = tf.cast(batch["video"], tf.float32) * (2.0 / 255.0) - 1.0
      return batch
    ds = ds.map(to_float, num_parallel_calls=parallel_calls)
  return ds.prefetch(tf.data.AUTOTUNE)


def create_iterator(data_config: ml_collections.ConfigDict, split: str, global_batch_size: int,
                    *, seed: int = 0, shuffle: bool | None = None, repeat: bool = True,
                    with_metadata: bool = False, max_examples: int | None = None,
                    plan: eval_clips.ClipPlan | None = None) -> Iterator[dict[str, np.ndarray]]:
  """This process's batches of clips as numpy dicts (see the module docstring).

  train: random clip starts in [0, T - clip_length] of each video (capped at max_start_frame
  when >= 0), augmentation, shuffling, full batches only. Other splits: start 0, no augmentation,
  frames resized straight to the model size, file order (index order for shapes). With
  repeat=False a non-train split ends with a smaller final batch holding the remainder, so every
  video is seen exactly once; `max_examples` reads only the first N videos (e.g. exactly the 256
  test videos of the protocol); `plan` cuts the evaluation protocol's clips instead (see
  `eval_clips`; with_metadata then adds `video_index`).

  Keys: video float32 (B, L, S, S, 3) in [-1, 1]; eta float32 (B, d) when data_config.control.
  with_metadata adds `start` (B,) int32 and, for shapes, the clip's ground truth in its own
  (augmented) coordinates: positions (B, L, 3, 2), drift (B, 2) px/frame at S, radius (B, 3),
  colors (B, 3, 3) uint8, num_objects (B,), shape_kind (B, 3), index (B,) (the record's
  position in its split: `shapes_builder.example_for(split, index, R)` regenerates it); for bair
  endeffector_pos (B, L, 3) (not flipped).
  """
  src = source(data_config)
  _check(data_config, src, global_batch_size, jax.process_count(), jax.device_count())
  ds = build_dataset(data_config, split, global_batch_size // jax.process_count(), seed=seed,
                     shuffle=shuffle, repeat=repeat, with_metadata=with_metadata,
                     process_index=jax.process_index(), process_count=jax.process_count(),
                     max_examples=max_examples, plan=plan)
  return ds.as_numpy_iterator()
