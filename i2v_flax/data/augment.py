"""Clip augmentation (SPEC §7): one random draw per clip, applied identically to every frame.

Why per clip: a per-frame draw would add flicker that the model would learn as motion.
All randomness comes from a stateless seed, so a pipeline is reproducible given its seed.
Geometric ops also return the map they applied to normalised (x, y) coordinates, so ground-truth
positions and eta stay consistent with the pixels.
"""

from __future__ import annotations

import ml_collections
import tensorflow as tf

NUM_DRAWS = 8  # flip, brightness, contrast, saturation, hue, crop y, crop x, spare.
RESIZE_MARGIN = 16


def needs_random(cfg: ml_collections.ConfigDict, train: bool) -> bool:
  """Whether any augmentation is active (the fast path skips the float work otherwise)."""
  return train and (flip_enabled(cfg) or jitter_enabled(cfg) or cfg.resize_crop)


def flip_enabled(cfg: ml_collections.ConfigDict) -> bool:
  return bool(cfg.flip) and not bool(cfg.control)


def jitter_enabled(cfg: ml_collections.ConfigDict) -> bool:
  return any(float(cfg[k]) > 0 for k in ("brightness", "contrast", "saturation", "hue"))


def resize_and_crop(clip: tf.Tensor, cfg: ml_collections.ConfigDict, train: bool,
                    draws: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(T, h, w, 3) float -> (T, S, S, 3), scale, offset (pos' = pos * scale - offset).

  Without resize_crop: a resize to S when the stored size differs. With it: resize to S+16,
  random crop S (centre crop when not training).
  """
  size = int(cfg.resolution)
  big = size + RESIZE_MARGIN if cfg.resize_crop else size
  if clip.shape[1] != big or clip.shape[2] != big:
    clip = tf.image.resize(clip, (big, big), method="bilinear", antialias=True)
  if not cfg.resize_crop:
    return clip, tf.constant(1.0), tf.zeros([2])
  if train:
    oy = tf.cast(tf.floor(draws[5] * (RESIZE_MARGIN + 1)), tf.int32)
    ox = tf.cast(tf.floor(draws[6] * (RESIZE_MARGIN + 1)), tf.int32)
    oy, ox = tf.minimum(oy, RESIZE_MARGIN), tf.minimum(ox, RESIZE_MARGIN)
  else:
    oy = ox = tf.constant(RESIZE_MARGIN // 2)
  clip = clip[:, oy:oy + size, ox:ox + size, :]
  scale = tf.constant(big / size, tf.float32)
  offset = tf.cast(tf.stack([ox, oy]), tf.float32) / size
  return clip, scale, offset


GRAY = (0.299, 0.587, 0.114)  # Sums to 1, so saturation keeps grey levels.


def _gray(x: tf.Tensor) -> tf.Tensor:
  return tf.reduce_sum(x * tf.constant(GRAY), axis=-1, keepdims=True)


def _factor(strength: float, u: tf.Tensor) -> tf.Tensor:
  return 1.0 + strength * (2.0 * u - 1.0)


def color_jitter(clip: tf.Tensor, cfg: ml_collections.ConfigDict, draws: tf.Tensor) -> tf.Tensor:
  """Brightness, contrast, saturation, hue (torchvision ColorJitter ranges) on a [0, 1] clip.

  Contrast blends with the grey mean of the whole clip, so every frame gets the same affine map.
  """
  factor = _factor
  if cfg.brightness > 0:
    clip = clip * factor(float(cfg.brightness), draws[1])
  if cfg.contrast > 0:
    clip = tf.reduce_mean(_gray(clip)) + factor(float(cfg.contrast), draws[2]) * (
        clip - tf.reduce_mean(_gray(clip)))
  if cfg.saturation > 0:
    gray = _gray(clip)
    clip = gray + factor(float(cfg.saturation), draws[3]) * (clip - gray)
  if cfg.hue > 0:
    clip = tf.image.adjust_hue(tf.clip_by_value(clip, 0.0, 1.0),
                               float(cfg.hue) * (2.0 * draws[4] - 1.0))
  return tf.clip_by_value(clip, 0.0, 1.0)


def augment_clip(clip_u8: tf.Tensor, cfg: ml_collections.ConfigDict, train: bool,
                 seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """uint8 (T, h, w, 3) -> float32 (T, S, S, 3) in [-1, 1] plus the coordinate map.

  Returns (clip, flipped, scale, offset): normalised positions map as
  pos' = pos * scale - offset, then x' = 1 - x' if flipped (the crop happens before the flip).
  """
  draws = tf.random.stateless_uniform([NUM_DRAWS], seed=seed)
  clip = tf.cast(clip_u8, tf.float32) / 255.0
  clip, scale, offset = resize_and_crop(clip, cfg, train, draws)
  flipped = tf.constant(False)
  if train and flip_enabled(cfg):
    flipped = draws[0] < 0.5
    clip = tf.cond(flipped, lambda: tf.reverse(clip, axis=[2]), lambda: clip)
  if train and jitter_enabled(cfg):
    clip = color_jitter(clip, cfg, draws)
  return clip * 2.0 - 1.0, flipped, scale, offset


def can_fuse(cfg: ml_collections.ConfigDict, frame_size: int) -> bool:
  """Whether augmentation reduces to uint8 flips plus one affine colour map per clip.

  Brightness, contrast (towards the clip's grey mean) and saturation compose to
  y = k * A x + d with A = s I + (1 - s) 1 GRAY^T; only hue and resizing are not linear.
  """
  return not cfg.resize_crop and float(cfg.hue) == 0 and frame_size == int(cfg.resolution)


def draws_for(seed: tf.Tensor) -> tf.Tensor:
  return tf.random.stateless_uniform([NUM_DRAWS], seed=seed)


def jitter_factors(cfg: ml_collections.ConfigDict, draws: tf.Tensor) -> tf.Tensor:
  """(brightness, contrast, saturation) factors of a clip; 1 where the jitter is off."""
  return tf.stack([_factor(float(cfg[k]), draws[i]) if float(cfg[k]) > 0 else tf.constant(1.0)
                   for i, k in ((1, "brightness"), (2, "contrast"), (3, "saturation"))])


def fused_jitter_batch(video_u8: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
  """uint8 (B, T, H, W, 3) + (B, 3) factors -> float32 in [-1, 1], same as color_jitter.

  One cast, one mean and one 3x3 matmul per batch instead of ~10 elementwise passes per clip.
  """
  b, c, s = factors[:, 0], factors[:, 1], factors[:, 2]
  x = tf.cast(video_u8, tf.float32)
  gray = tf.constant(GRAY)
  mean_gray = tf.reduce_sum(tf.reduce_mean(x, axis=[1, 2, 3]) * gray, axis=-1) / 255.0  # (B,)
  eye = tf.eye(3)[None]
  sat = s[:, None, None] * eye + (1.0 - s[:, None, None]) * tf.ones([1, 3, 1]) * gray[None, None]
  mat = (2.0 * c * b / 255.0)[:, None, None] * sat  # (B, out, in)
  offset = 2.0 * (1.0 - c) * b * mean_gray - 1.0  # (B,)
  y = tf.einsum("bthwi,boi->bthwo", x, mat) + offset[:, None, None, None, None]
  return tf.clip_by_value(y, -1.0, 1.0)
