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

from i2v_flax.models.layers import (ADAIN, SPADE, Conv, group_norm, resolve_conv3d_impl,
                                    spatial_z_channels)


def frame_coordinates(x: jax.Array) -> jax.Array:
  """(B, T, H, W, C) -> (B, T, H, W, 3) channels (t, y, x), each in (-1, 1) at cell centres.

  t is the position of the block's frame in the clip (a block at T = 2 has t = -0.5, 0.5), so
  every block agrees on which frame is when whatever its temporal resolution.
  """
  b, t, h, w, _ = x.shape
  centres = lambda n: (jnp.arange(n, dtype=jnp.float32) + 0.5) / n * 2 - 1  # noqa: E731
  grid = jnp.stack(jnp.meshgrid(centres(t), centres(h), centres(w), indexing="ij"), axis=-1)
  return jnp.broadcast_to(grid, (b, t, h, w, 3))


def warp_bilinear(image: jax.Array, flow: jax.Array) -> jax.Array:
  """Backward warp: out[b, t, y, x] = image[b] sampled at (y + flow_y, x + flow_x), bilinear.

  image (B, H, W, C); flow (B, T, H, W, 2) in pixels as (dx, dy); samples outside the frame
  take the nearest border pixel. Differentiable in both the image and the flow.
  """
  b, h, w, c = image.shape
  t = flow.shape[1]
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=flow.dtype), jnp.arange(w, dtype=flow.dtype),
                        indexing="ij")
  sx = jnp.clip(xs + flow[..., 0], 0, w - 1)
  sy = jnp.clip(ys + flow[..., 1], 0, h - 1)
  x0, y0 = jnp.floor(sx), jnp.floor(sy)
  wx, wy = (sx - x0)[..., None], (sy - y0)[..., None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
  flat = image.reshape(b, h * w, c)

  def gather(yy, xx):
    idx = (yy * w + xx).reshape(b, t * h * w, 1)
    return jnp.take_along_axis(flat, idx, axis=1).reshape(b, t, h, w, c)

  top = gather(y0, x0) * (1 - wx) + gather(y0, x1) * wx
  bottom = gather(y1, x0) * (1 - wx) + gather(y1, x1) * wx
  return top * (1 - wy) + bottom * wy


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
  coords: bool = False  # Concatenate (t, y, x) channels to conv0's input (not in the reference).
  local_style: bool = False  # ADAIN(local=True): a per-pixel style from the z map as well.

  @nn.compact
  def __call__(self, x: jax.Array, x0: jax.Array, z: jax.Array, update_stats: bool = False
               ) -> jax.Array:
    n_in = x.shape[-1]
    n_mid = min(n_in, self.features)
    conv = lambda f, name: Conv(f, (3, 3, 3), spectral_norm=self.spectral_norm,  # noqa: E731
                                impl=self.impl, dtype=self.dtype, name=name)
    dx = nn.leaky_relu(SPADE(self.spade_hidden, name="spade")(x, x0), 0.2)
    if self.coords:
      dx = jnp.concatenate([dx, frame_coordinates(dx)], axis=-1)
    dx = conv(n_mid, "conv0")(dx, update_stats)
    dx = nn.leaky_relu(ADAIN(local=self.local_style, name="adain")(dx, z), 0.2)
    dx = conv(self.features, "conv1")(dx, update_stats)
    if n_in != self.features:
      x = group_norm(n_in, name="shortcut_norm")(x)
      x = Conv(self.features, (1, 1, 1), use_bias=False, spectral_norm=self.spectral_norm,
               impl=self.impl, dtype=self.dtype, name="shortcut")(x, update_stats)
    return x + dx


class Decoder(nn.Module):
  """(x0 (B, H, W, 3), z (B, z_dim)) -> frames x_1..x_16 (B, 16, H, W, 3) in [-1, 1].

  `coords` is a departure from the reference for small CPU models (off by default): with
  nearest-neighbour temporal upsampling, the blocks can only tell repeated frames apart through
  the zero padding of their temporal convolutions; explicit (t, y, x) channels give every block
  the time and place it is rendering, so "the object is at p_0 + v t" is a local computation.
  `output='blend'` (off by default) mixes the generated frame with x_0 through a predicted mask,
  `m * x_0 + (1 - m) * rgb`: a static background is copied exactly instead of redrawn through
  the few full-resolution channels, which then only have to draw what moved. `output='warp'`
  also moves x_0 by a predicted flow first, `m * warp(x_0, flow) + (1 - m) * rgb`.
  """

  nf: int = 64
  up_t: Sequence[int] = (2, 2, 2, 2, 1)
  up_s: Sequence[int] = (2, 2, 2, 2, 1)
  spade_hidden: int = 128
  spectral_norm: bool = True
  impl: str = "native"
  dtype: str = "float32"
  coords: bool = False
  output: str = "rgb"  # 'rgb' (reference), 'blend' or 'warp' (demo departures, see above).
  # Recompute each block's activations in the backward pass instead of keeping them (same
  # parameters and gradients, ~15 % more step FLOPs at bair). For accelerators, whose memory is
  # the limit; XLA-CPU's buffer plan did not shrink with it (bair batch 10: 21.4 GB of
  # temporaries against 19.6 GB; benchmarks/README.md).
  remat: bool = False
  # z as a 4 x 4 map (Encoder.z_spatial): the 4x4 start comes from a 3x3 conv of that map, so
  # each cell's latent renders its own place, instead of a Dense of the whole vector.
  z_spatial: bool = False
  local_style: bool = False  # With z_spatial: every ADAIN also reads the z map per pixel.

  @nn.compact
  def __call__(self, x0: jax.Array, z: jax.Array, update_stats: bool = False) -> jax.Array:
    nf = self.nf
    b = z.shape[0]
    if self.local_style and not self.z_spatial:
      raise ValueError("stage1.dec_local_style reads z as a 4 x 4 map: also set "
                       "--config.stage1.z_spatial=True.")
    if self.z_spatial:
      z_map = z.reshape(b, 4, 4, spatial_z_channels(z.shape[-1]))
      x = Conv(16 * nf, (3, 3), padding="SAME", impl=self.impl, dtype=self.dtype,
               name="z_conv")(z_map)[:, None]
    else:
      x = nn.Dense(16 * nf * 4 * 4, name="fc")(z).reshape(b, 1, 4, 4, 16 * nf)
    # static_argnums counts `self` as 0: update_stats (a Python bool) is argument 4.
    block_cls = nn.remat(VideoResBlock, static_argnums=(4,)) if self.remat else VideoResBlock
    block = lambda f, name: block_cls(f, self.spade_hidden, self.spectral_norm,  # noqa: E731
                                      self.impl, self.dtype, self.coords,
                                      local_style=self.local_style, name=name)
    x = block(16 * nf, "head")(x, x0, z, update_stats)
    for i, (f, ut, us) in enumerate(zip((16 * nf, 8 * nf, 4 * nf, 2 * nf, nf),
                                        self.up_t, self.up_s)):
      x = upsample_nearest(x, (ut, us, us))
      x = block(f, f"g{i}")(x, x0, z, update_stats)
    if x.shape[2:4] != x0.shape[1:3]:
      raise ValueError(
          f"Decoder output is {x.shape[2:4]} but x_0 is {x0.shape[1:3]}. Fix "
          "config.stage1.dec_up_s so that 4 * prod(dec_up_s) equals config.data.resolution.")
    x = nn.leaky_relu(x, 0.2)
    rgb = jnp.tanh(Conv(3, (3, 3, 3), impl=self.impl, dtype=self.dtype, name="out")(x))
    if self.output == "rgb":
      return rgb
    if self.output not in ("blend", "warp"):
      raise ValueError(f"Decoder output={self.output!r} is not 'rgb', 'blend' or 'warp'. Fix: "
                       "--config.stage1.dec_output=rgb")
    # Zero-initialised: a fresh head copies x_0 (flow 0) and the generated frame half-half.
    head = Conv(1 if self.output == "blend" else 3, (3, 3, 3), impl=self.impl, dtype=self.dtype,
                kernel_init=nn.initializers.zeros, name=f"{self.output}_head")(x)
    mask = nn.sigmoid(head[..., -1:])
    # The frames before mixing, for stage1.w_rec_unmixed: without a loss of their own the mask
    # settles on copying x_0 everywhere and the generated frames stop learning (README).
    self.sow("intermediates", "unmixed", rgb)
    if self.output == "blend":
      source = x0[:, None].astype(rgb.dtype)
    else:
      source = warp_bilinear(x0, head[..., :2] * (x0.shape[1] / 4.0))  # A unit moves 1/4 frame.
    return mask * source + (1 - mask) * rgb


def make_decoder(config: ml_collections.ConfigDict) -> Decoder:
  s1 = config.stage1
  return Decoder(nf=s1.dec_nf, up_t=tuple(s1.dec_up_t), up_s=tuple(s1.dec_up_s),
                 spade_hidden=s1.spade_hidden, spectral_norm=s1.spectral_norm,
                 impl=resolve_conv3d_impl(s1.conv3d_impl), dtype=config.compute_dtype,
                 coords=bool(s1.get("dec_coords", False)),
                 output=str(s1.get("dec_output", "rgb")), remat=bool(s1.get("remat", False)),
                 z_spatial=bool(s1.get("z_spatial", False)),
                 local_style=bool(s1.get("dec_local_style", False)))
