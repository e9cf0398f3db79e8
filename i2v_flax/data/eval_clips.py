"""Which clips an evaluation cuts from the test videos (the per-dataset protocols of SPEC §6).

The reference does not evaluate one clip per video at frame 0 everywhere: iPER scores 1000
clips cycling over its test videos from seeded random starts, Landscape 6 random-start clips of
each of its 153 test videos, DTDB 5 copies of every eval video's start-0 clip (the model draws a
different sample for each copy). A `ClipPlan` states that choice; `expand` turns an ordered
dataset of whole videos into the planned clips, each tagged with `_video` (its video's index)
and `_start`, which the pipeline's clip function then honours.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class ClipPlan:
  """clips_per_video copies of every video, or num_clips > 0 clips cycling over the videos
  (clip i from video i % n); random_start draws each clip's start uniformly from [0, T - L]
  with a stateless seed of (seed, video, copy), otherwise every clip starts at frame 0."""
  clips_per_video: int = 1
  num_clips: int = 0
  random_start: bool = False

  def counts(self, num_videos: int) -> list[int]:
    """Clips taken from each of num_videos videos (video-major order, as the reference)."""
    if self.num_clips > 0:
      q, r = divmod(self.num_clips, num_videos)
      return [q + (v < r) for v in range(num_videos)]
    return [self.clips_per_video] * num_videos


def plan_from_config(eval_config: ml_collections.ConfigDict) -> ClipPlan:
  """The plan config.eval asks for (clips_per_video, num_clips, random_start)."""
  return ClipPlan(clips_per_video=int(eval_config.clips_per_video),
                  num_clips=int(eval_config.num_clips),
                  random_start=bool(eval_config.random_start))


def expand(ds: tf.data.Dataset, plan: ClipPlan, num_videos: int, clip_length: int,
           seed: int) -> tf.data.Dataset:
  """Ordered {'video': frames or encoded frames, ...} videos -> the plan's clips, in order."""
  counts = tf.constant(plan.counts(num_videos), tf.int64)

  def start_of(video: tf.Tensor, v: tf.Tensor, j: tf.Tensor) -> tf.Tensor:
    if not plan.random_start:
      return tf.constant(0, tf.int32)
    hi = tf.shape(video)[0] - clip_length
    u = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed, tf.int64) + 1_000_003,
                                                        v * 65_536 + j]))
    return tf.minimum(tf.cast(u * tf.cast(hi + 1, tf.float32), tf.int32), hi)

  def copies(v: tf.Tensor, ex: dict) -> tf.data.Dataset:
    reps = tf.data.Dataset.from_tensors(ex).repeat(counts[v]).enumerate()
    return reps.map(lambda j, e: {**e, "_video": v, "_start": start_of(e["video"], v, j)})

  return ds.enumerate().flat_map(copies)
