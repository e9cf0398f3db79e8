"""The two stage-1 discriminators: temporal D_T (3-D ResNet-18) and spatial PatchGAN D_S."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from i2v_flax.models.layers import ActNorm, Conv, group_norm, resolve_conv3d_impl
from i2v_flax.models.resnet3d import BasicBlock3D


class TemporalDiscriminator(nn.Module):
  """Clip window (B, T, H, W, 3) -> (logits (B,), [4 stage feature maps]) (SPEC §3.3).

  Spectral norm sits on each stage's first block and on shortcut convs, as in the reference.
  The stage features feed the generator's feature-matching loss.
  """

  widths: Sequence[int] = (64, 64, 128, 256, 512)
  stride_s: Sequence[int] = (1, 1, 2, 2)
  spectral_norm: bool = True
  impl: str = "native"
  dtype: str = "float32"

  @nn.compact
  def __call__(self, video: jax.Array, update_stats: bool = False
               ) -> tuple[jax.Array, list[jax.Array]]:
    x = Conv(self.widths[0], (3, 7, 7), (1, 2, 2), ((1, 1), (3, 3), (3, 3)), use_bias=False,
             impl=self.impl, dtype=self.dtype, name="stem")(video)
    x = nn.relu(group_norm(self.widths[0], name="stem_norm")(x))
    x = nn.max_pool(x, (3, 3, 3), (1, 2, 2), ((1, 1), (1, 1), (1, 1)))
    features = []
    for i, (w, ss) in enumerate(zip(self.widths[1:], self.stride_s)):
      x = BasicBlock3D(w, (2, ss, ss), spectral_norm=self.spectral_norm,
                       shortcut_spectral_norm=self.spectral_norm, impl=self.impl,
                       dtype=self.dtype, name=f"stage{i}_0")(x, update_stats)
      x = BasicBlock3D(w, impl=self.impl, dtype=self.dtype, name=f"stage{i}_1")(x, update_stats)
      features.append(x)
    logits = nn.Dense(1, use_bias=False, name="head")(jnp.mean(x, axis=(1, 2, 3)))
    return logits[:, 0], features


class SpatialDiscriminator(nn.Module):
  """PatchGAN on frames (N, H, W, 3) -> patch logits (N, h, w) (SPEC §3.4).

  ActNorm layers initialise from the `init` batch, so call `init` with real frames.
  """

  width: int = 64
  spectral_norm: bool = True

  @nn.compact
  def __call__(self, frames: jax.Array, update_stats: bool = False) -> jax.Array:
    w = self.width
    conv = lambda f, s, name: Conv(f, (4, 4), (s, s), ((1, 1), (1, 1)),  # noqa: E731
                                   spectral_norm=self.spectral_norm, name=name)
    x = nn.leaky_relu(conv(w, 2, "conv0")(frames, update_stats), 0.2)
    for i, (f, s) in enumerate(((2 * w, 2), (4 * w, 2), (8 * w, 1)), start=1):
      x = conv(f, s, f"conv{i}")(x, update_stats)
      x = nn.leaky_relu(ActNorm(name=f"actnorm{i}")(x), 0.2)
    return conv(1, 1, "conv4")(x, update_stats)[..., 0]


def make_temporal_discriminator(config: ml_collections.ConfigDict) -> TemporalDiscriminator:
  s1 = config.stage1
  return TemporalDiscriminator(widths=tuple(s1.dt_widths), stride_s=tuple(s1.dt_stride_s),
                               spectral_norm=s1.spectral_norm,
                               impl=resolve_conv3d_impl(s1.conv3d_impl),
                               dtype=config.compute_dtype)


def make_spatial_discriminator(config: ml_collections.ConfigDict) -> SpatialDiscriminator:
  return SpatialDiscriminator(width=config.stage1.ds_width,
                              spectral_norm=config.stage1.spectral_norm)
