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


def _gray(x: tf.Tensor) -> tf.Tensor:
  return tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)


def color_jitter(clip: tf.Tensor, cfg: ml_collections.ConfigDict, draws: tf.Tensor) -> tf.Tensor:
  """Brightness, contrast, saturation, hue (torchvision ColorJitter ranges) on a [0, 1] clip.

  Contrast blends with the grey mean of the whole clip, so every frame gets the same affine map.
  """
  def factor(strength, u):
    return 1.0 + strength * (2.0 * u - 1.0)
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
