"""Decoder p_psi(x_1..x_16 | x_0, z): video residual blocks with SPADE(x_0) and ADAIN(z) (SPEC §3.2).

x_0 enters every block spatially (SPADE), z enters every block globally (ADAIN), so the decoder
can copy appearance from x_0 while z only has to carry the motion.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from i2v_flax.models.layers import ADAIN, SPADE, Conv, group_norm, resolve_conv3d_impl


def upsample_nearest(x: jax.Array, factors: Sequence[int]) -> jax.Array:
  """Nearest-neighbour upsampling of (B, T, H, W, C) by integer factors (t, h, w)."""
  for axis, f in zip((1, 2, 3), factors):
    if f != 1:
      x = jnp.repeat(x, f, axis=axis)
  return x


class VideoResBlock(nn.Module):
  """`dx = conv0(lrelu(SPADE(x, x0)))`, `dx = conv1(lrelu(ADAIN(dx, z)))`, `out = shortcut(x) + dx`."""

  features: int
  spade_hidden: int = 128
  spectral_norm: bool = True
  impl: str = "native"
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array, x0: jax.Array, z: jax.Array, update_stats: bool = False
               ) -> jax.Array:
    n_in = x.shape[-1]
    n_mid = min(n_in, self.features)
    conv = lambda f, name: Conv(f, (3, 3, 3), spectral_norm=self.spectral_norm,  # noqa: E731
                                impl=self.impl, dtype=self.dtype, name=name)
    dx = nn.leaky_relu(SPADE(self.spade_hidden, name="spade")(x, x0), 0.2)
    dx = conv(n_mid, "conv0")(dx, update_stats)
    dx = nn.leaky_relu(ADAIN(name="adain")(dx, z), 0.2)
    dx = conv(self.features, "conv1")(dx, update_stats)
    if n_in != self.features:
      x = group_norm(n_in, name="shortcut_norm")(x)
      x = Conv(self.features, (1, 1, 1), use_bias=False, spectral_norm=self.spectral_norm,
               impl=self.impl, dtype=self.dtype, name="shortcut")(x, update_stats)
    return x + dx


class Decoder(nn.Module):
  """(x0 (B, H, W, 3), z (B, z_dim)) -> frames x_1..x_16 (B, 16, H, W, 3) in [-1, 1]."""

  nf: int = 64
  up_t: Sequence[int] = (2, 2, 2, 2, 1)
  up_s: Sequence[int] = (2, 2, 2, 2, 1)
  spade_hidden: int = 128
  spectral_norm: bool = True
  impl: str = "native"
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x0: jax.Array, z: jax.Array, update_stats: bool = False) -> jax.Array:
    nf = self.nf
    b = z.shape[0]
    x = nn.Dense(16 * nf * 4 * 4, name="fc")(z).reshape(b, 1, 4, 4, 16 * nf)
    block = lambda f, name: VideoResBlock(f, self.spade_hidden, self.spectral_norm,  # noqa: E731
                                          self.impl, self.dtype, name=name)
    x = block(16 * nf, "head")(x, x0, z, update_stats)
    for i, (f, ut, us) in enumerate(zip((16 * nf, 8 * nf, 4 * nf, 2 * nf, nf),
                                        self.up_t, self.up_s)):
      x = upsample_nearest(x, (ut, us, us))
      x = block(f, f"g{i}")(x, x0, z, update_stats)
    if x.shape[2:4] != x0.shape[1:3]:
      raise ValueError(
          f"Decoder output is {x.shape[2:4]} but x_0 is {x0.shape[1:3]}. Fix "
          "config.stage1.dec_up_s so that 4 * prod(dec_up_s) equals config.data.resolution.")
    x = Conv(3, (3, 3, 3), impl=self.impl, dtype=self.dtype, name="out")(nn.leaky_relu(x, 0.2))
    return jnp.tanh(x)


def make_decoder(config: ml_collections.ConfigDict) -> Decoder:
  s1 = config.stage1
  return Decoder(nf=s1.dec_nf, up_t=tuple(s1.dec_up_t), up_s=tuple(s1.dec_up_s),
                 spade_hidden=s1.spade_hidden, spectral_norm=s1.spectral_norm,
                 impl=resolve_conv3d_impl(s1.conv3d_impl), dtype=config.compute_dtype)
