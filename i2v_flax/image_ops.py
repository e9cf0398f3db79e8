"""Image resampling that reproduces torch's `F.interpolate(mode='bilinear', align_corners=True)`.

The reference resizes x_0 for every SPADE block (64 -> 4, 8, 16, 32: shrinking too) and the DTFVD
frames to 224² with this kernel. `jax.image.resize` uses half-pixel centres (and would antialias
when shrinking), a different function: on the decoder fixture it moves the video by up to 1.36.
align_corners=True maps output index i to input position i * (in - 1) / (out - 1), so the corner
pixels of input and output coincide; no antialiasing, whatever the scale factor.
Implemented as a gather + lerp per axis (not matmuls), so it is exact at any matmul precision.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _align_corners_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Lower/upper source indices and lerp weights, float32 like torch's CPU kernel."""
  if out_size > 1:
    scale = np.float32(in_size - 1) / np.float32(out_size - 1)
  else:
    scale = np.float32(0.0)  # torch: a single output sample reads input position 0.
  src = np.arange(out_size, dtype=np.float32) * scale
  lower = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
  upper = np.minimum(lower + 1, in_size - 1).astype(np.int32)
  lerp = (src - lower.astype(np.float32)).astype(np.float32)
  return lower, upper, lerp


def resize_bilinear_align_corners(images: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Resize channels-last (..., H, W, C) images to `size` = (out_h, out_w), torch
  `bilinear, align_corners=True` semantics (also when shrinking; no antialiasing).

  Works on any leading batch dims; output is float32. Index tables are numpy constants, so the
  function is jit-friendly (shapes are static).
  """
  out_h, out_w = (int(s) for s in size)
  if images.ndim < 3:
    raise ValueError(f"resize_bilinear_align_corners needs (..., H, W, C) images; got shape "
                     f"{images.shape}.")
  in_h, in_w = images.shape[-3], images.shape[-2]
  x = images.astype(jnp.float32)
  if (in_h, in_w) == (out_h, out_w):
    return x
  y_lo, y_hi, y_l = _align_corners_taps(in_h, out_h)
  x_lo, x_hi, x_l = _align_corners_taps(in_w, out_w)
  y_l = jnp.asarray(y_l)[:, None, None]
  x_l = jnp.asarray(x_l)[:, None]
  rows = (1.0 - y_l) * jnp.take(x, y_lo, axis=-3) + y_l * jnp.take(x, y_hi, axis=-3)
  return (1.0 - x_l) * jnp.take(rows, x_lo, axis=-2) + x_l * jnp.take(rows, x_hi, axis=-2)
