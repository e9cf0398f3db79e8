"""Bilinear resizing that reproduces TF1 `tf.compat.v1.image.resize_bilinear` bit for bit.

FVD numbers are only comparable across papers when the frames reach I3D through the exact
resampling of the original TF1 FVD code (align_corners=False, half_pixel_centers=False): source
coordinate = dst * (in / out) with the scale computed in float32, floor/ceil neighbours clamped to
the border, and the same two-step lerp order (horizontal first, then vertical).
`jax.image.resize` uses half-pixel centres and would shift every frame by half a pixel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _legacy_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Lower/upper source indices and lerp weights of TF's LegacyScaler, in float32 like TF."""
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.arange(out_size, dtype=np.float32) * scale
  lower = np.floor(src).astype(np.int32)
  upper = np.minimum(lower + 1, in_size - 1).astype(np.int32)
  lerp = (src - lower.astype(np.float32)).astype(np.float32)
  return lower, upper, lerp


def resize_bilinear_tf1(images: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Resize (..., H, W, C) images to `size` = (out_h, out_w) as TF1 resize_bilinear does.

  Output is float32 (TF1 also returns float32 for any input dtype). Shapes are static, so the
  index tables are numpy constants folded into the jitted computation.
  """
  out_h, out_w = size
  in_h, in_w = images.shape[-3], images.shape[-2]
  x = images.astype(jnp.float32)
  y_lo, y_hi, y_lerp = _legacy_taps(in_h, out_h)
  x_lo, x_hi, x_lerp = _legacy_taps(in_w, out_w)
  x_lerp = jnp.asarray(x_lerp)[:, None]
  y_lerp = jnp.asarray(y_lerp)[:, None, None]
  top = jnp.take(x, y_lo, axis=-3)
  bottom = jnp.take(x, y_hi, axis=-3)
  # TF: top = tl + (tr - tl) * x_lerp; bottom likewise; out = top + (bottom - top) * y_lerp.
  top_l, top_r = jnp.take(top, x_lo, axis=-2), jnp.take(top, x_hi, axis=-2)
  bot_l, bot_r = jnp.take(bottom, x_lo, axis=-2), jnp.take(bottom, x_hi, axis=-2)
  top = top_l + (top_r - top_l) * x_lerp
  bottom = bot_l + (bot_r - bot_l) * x_lerp
  return top + (bottom - top) * y_lerp
