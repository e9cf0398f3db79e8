"""FID: Fréchet distance of InceptionV3 pool3 features of generated vs real frames (SPEC §6).

Frames are compared as individual images (every frame of every clip). Preprocessing follows
pytorch-fid: [0, 1] images bilinearly resized to 299^2 without antialiasing (torch
`interpolate(align_corners=False)` = half-pixel centres, which `jax.image.resize` also uses),
then mapped to [-1, 1]. Weights come from the user (`config.eval.fid_weights`; see inception.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from i2v_flax.evaluation.frechet import frechet_distance
from i2v_flax.evaluation.inception import InceptionV3Pool3, Variables, load_fid_variables
from i2v_flax.evaluation.lpips_metrics import to_float

FID_SIZE = 299


@functools.partial(jax.jit, static_argnames=("size",))
def _pool3(variables: Variables, images: jax.Array, size: int = FID_SIZE) -> jax.Array:
  n = images.shape[0]
  x = jax.image.resize(images, (n, size, size, 3), "bilinear", antialias=False)
  return InceptionV3Pool3().apply(variables, x)


def fid_features(images: np.ndarray, variables: Variables, batch_size: int = 32) -> np.ndarray:
  """(N, H, W, 3) or (N, T, H, W, 3) uint8 / [-1, 1] frames -> (N[*T], 2048) float64."""
  x = to_float(images)
  x = x.reshape((-1,) + x.shape[-3:])
  out = []
  for start in range(0, x.shape[0], batch_size):
    chunk = x[start:start + batch_size]
    size = chunk.shape[0]
    if size < batch_size and x.shape[0] > batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - size, axis=0)])
    out.append(np.asarray(_pool3(variables, jnp.asarray(chunk)))[:size])
  return np.concatenate(out).astype(np.float64)


def fid(real: np.ndarray, fake: np.ndarray, weights_path: str | None,
        batch_size: int = 32) -> float:
  """FID between all frames of `real` and all frames of `fake`."""
  variables = load_fid_variables(weights_path)
  return frechet_distance(fid_features(real, variables, batch_size),
                          fid_features(fake, variables, batch_size))
