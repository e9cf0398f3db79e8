"""Clip augmentation (SPEC §7): one random draw per clip, applied identically to every frame.

Why per clip: a per-frame draw would add flicker that the model would learn as motion.
All randomness comes from a stateless seed, so a pipeline is reproducible given its seed.
Geometric ops also return the map they applied to normalised (x, y) coordinates, so ground-truth
positions and eta stay consistent with the pixels.

Colour jitter comes in two styles (`data.jitter_style`). 'kornia' (default) is what the authors
trained with, kornia 0.5's ColorJitter: additive brightness, multiplicative contrast, HSV
saturation and a hue rotation, applied in a random order per clip, each clamped to [0, 1].
'torchvision' blends towards black / the grey mean / grey in a fixed order; it is affine, so
without hue it fuses into one 3x3 map per batch (`fused_jitter_batch`), which is faster.
"""

from __future__ import annotations

import ml_collections
import tensorflow as tf

NUM_DRAWS = 8  # flip, brightness, contrast, saturation, hue, crop y, crop x, spare.
RESIZE_MARGIN = 16
JITTER_STYLES = ("kornia", "torchvision")


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

  A resize when the stored size differs, then, for training clips with resize_crop, a random
  S crop of the S+16 frames. Test clips go straight to S (the reference resizes them to the
  model size, never up-and-centre-cropped), so their frames show the whole scene.
  """
  size = int(cfg.resolution)
  crop = bool(cfg.resize_crop) and train
  big = size + RESIZE_MARGIN if crop else size
  if clip.shape[1] != big or clip.shape[2] != big:
    clip = tf.image.resize(clip, (big, big), method="bilinear", antialias=True)
  if not crop:
    return clip, tf.constant(1.0), tf.zeros([2])
  oy = tf.cast(tf.floor(draws[5] * (RESIZE_MARGIN + 1)), tf.int32)
  ox = tf.cast(tf.floor(draws[6] * (RESIZE_MARGIN + 1)), tf.int32)
  oy, ox = tf.minimum(oy, RESIZE_MARGIN), tf.minimum(ox, RESIZE_MARGIN)
  clip = clip[:, oy:oy + size, ox:ox + size, :]
  scale = tf.constant(big / size, tf.float32)
  offset = tf.cast(tf.stack([ox, oy]), tf.float32) / size
  return clip, scale, offset


GRAY = (0.299, 0.587, 0.114)  # Sums to 1, so saturation keeps grey levels.


def _gray(x: tf.Tensor) -> tf.Tensor:
  return tf.reduce_sum(x * tf.constant(GRAY), axis=-1, keepdims=True)


def _factor(strength: float, u: tf.Tensor) -> tf.Tensor:
  return 1.0 + strength * (2.0 * u - 1.0)


def color_jitter(clip: tf.Tensor, cfg: ml_collections.ConfigDict, draws: tf.Tensor,
                 seed: tf.Tensor | None = None) -> tf.Tensor:
  """The configured style's jitter of a [0, 1] clip (`seed` draws kornia's random order)."""
  style = str(cfg.get("jitter_style", "kornia"))
  if style == "torchvision":
    return torchvision_jitter(clip, cfg, draws)
  if style != "kornia":
    raise ValueError(f"Unknown data.jitter_style {style!r}. Fix: --config.data.jitter_style="
                     f"one of {JITTER_STYLES}.")
  order = tf.argsort(tf.random.stateless_uniform([4], seed=tf.random.experimental
                                                  .stateless_fold_in(seed, 1)))
  return kornia_jitter(clip, kornia_factors(cfg, draws), order)


def kornia_factors(cfg: ml_collections.ConfigDict, draws: tf.Tensor) -> tf.Tensor:
  """(brightness, contrast, saturation, hue) of one clip, drawn from kornia 0.5's ranges:
  [max(0, 1-b), min(2, 1+b)], [max(0, 1-c), 1+c], [max(0, 1-s), 1+s], [-h, h]."""
  b, c, s, h = (float(cfg[k]) for k in ("brightness", "contrast", "saturation", "hue"))
  lo = tf.constant([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h])
  hi = tf.constant([min(2.0, 1 + b), 1 + c, 1 + s, h])
  return lo + (hi - lo) * draws[1:5]


def kornia_jitter(clip: tf.Tensor, factors: tf.Tensor, order: tf.Tensor) -> tf.Tensor:
  """kornia 0.5 ColorJitter on a [0, 1] clip: factors (brightness, contrast, saturation, hue),
  order a permutation of 0..3 naming which op runs first; [0, 1]-clamped after each op.

  brightness: x + (f - 1); contrast: x * f; saturation: HSV s * f (s clamped); hue: h + f turns.
  TF's HSV saturation/hue ops clamp s and rotate h exactly as kornia's rgb/hsv round trip.
  """
  ops = (lambda x: x + (factors[0] - 1.0),
         lambda x: x * factors[1],
         lambda x: tf.image.adjust_saturation(x, factors[2]),
         lambda x: tf.image.adjust_hue(x, factors[3]))
  for i in range(4):
    clip = tf.switch_case(order[i], [lambda op=op, x=clip: tf.clip_by_value(op(x), 0.0, 1.0)
                                     for op in ops])
  return clip


def torchvision_jitter(clip: tf.Tensor, cfg: ml_collections.ConfigDict,
                       draws: tf.Tensor) -> tf.Tensor:
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
    clip = color_jitter(clip, cfg, draws, seed)
  return clip * 2.0 - 1.0, flipped, scale, offset


def can_fuse(cfg: ml_collections.ConfigDict, frame_size: int) -> bool:
  """Whether augmentation reduces to uint8 flips plus one affine colour map per clip.

  torchvision-style brightness, contrast (towards the clip's grey mean) and saturation compose
  to y = k * A x + d with A = s I + (1 - s) 1 GRAY^T; hue, resizing and kornia's clamped ops in
  random order are not affine.
  """
  kornia = jitter_enabled(cfg) and str(cfg.get("jitter_style", "kornia")) == "kornia"
  return (not cfg.resize_crop and float(cfg.hue) == 0 and frame_size == int(cfg.resolution)
          and not kornia)


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


def stage2_data(data_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The data config stage 2 trains on: without colour jitter when data.stage2_jitter is off.

  The reference gives stage 2 its own augmentation settings; Landscape's has no jitter (flip
  and the resize-crop stay). Stage 2 calls create_iterator(stage2_data(config.data), ...).
  """
  if data_config.get("stage2_jitter", True):
    return data_config
  out = data_config.copy_and_resolve_references()
  out.brightness = out.contrast = out.saturation = out.hue = 0.0
  return out
