"""Encoder q_phi(z | x_1..x_16): a 3-D ResNet-18 giving mu, logvar and a reparameterised z."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from i2v_flax.models.layers import Conv, group_norm, resolve_conv3d_impl, spatial_z_channels
from i2v_flax.models.resnet3d import BasicBlock3D


class Encoder(nn.Module):
  """Video (B, 16, H, W, 3) -> (z, mu, logvar), each (B, z_dim) (SPEC §3.1).

  The trunk must end at 1 x 4 x 4 so the two 4x4 'valid' heads give vectors; the strides in the
  config guarantee that, and a clear error names them when they do not.
  """

  widths: Sequence[int] = (64, 128, 256, 512, 512)
  stride_t: Sequence[int] = (1, 2, 2, 2)
  stride_s: Sequence[int] = (1, 2, 2, 2)
  z_dim: int = 64
  impl: str = "native"
  dtype: str = "float32"
  # Demo departure (off in the reference): also feed x_t - x_0, so motion is visible to the
  # first convolution instead of being inferred across frames (README: z is used earlier).
  x0_diff: bool = False
  # Demo departure (off in the reference): z as a 4 x 4 x (z_dim / 16) map, one small latent per
  # cell from a 3x3 head shared across cells (so what is learned at one place holds at all), flat
  # as (B, z_dim) outside the encoder and decoder.
  z_spatial: bool = False

  @nn.compact
  def __call__(self, video: jax.Array, rng: jax.Array | None = None,
               x0: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x0 (B, H, W, 3): the start frame, read only with `x0_diff` (required then)."""
    if self.x0_diff:
      if x0 is None:
        raise ValueError("Encoder(x0_diff=True) needs the start frame: call it with x0=video[:, 0] "
                         "(stage1.encode(..., x0=...)).")
      video = jnp.concatenate([video, video - x0[:, None].astype(video.dtype)], axis=-1)
    x = Conv(self.widths[0], (3, 7, 7), (2, 2, 2), ((1, 1), (3, 3), (3, 3)), use_bias=False,
             impl=self.impl, dtype=self.dtype, name="stem")(video)
    x = nn.relu(group_norm(self.widths[0], name="stem_norm")(x))
    for i, (w, st, ss) in enumerate(zip(self.widths[1:], self.stride_t, self.stride_s)):
      x = BasicBlock3D(w, (st, ss, ss), impl=self.impl, dtype=self.dtype, name=f"stage{i}_0")(x)
      x = BasicBlock3D(w, impl=self.impl, dtype=self.dtype, name=f"stage{i}_1")(x)
    if x.shape[1:4] != (1, 4, 4):
      raise ValueError(
          f"Encoder trunk ends at (T, H, W) = {x.shape[1:4]} for input {video.shape}; the heads "
          "need (1, 4, 4). Fix config.stage1.enc_stride_t / enc_stride_s for this resolution.")
    x = x[:, 0]
    if self.z_spatial:
      head = lambda name: Conv(spatial_z_channels(self.z_dim), (3, 3), padding="SAME",  # noqa: E731
                               name=name)
    else:
      head = lambda name: Conv(self.z_dim, (4, 4), padding="VALID", name=name)  # noqa: E731
    mu = head("mu")(x).reshape(x.shape[0], -1)
    logvar = head("logvar")(x).reshape(x.shape[0], -1)
    if rng is None:
      return mu, mu, logvar
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mu.shape, mu.dtype)
    return z, mu, logvar


def make_encoder(config: ml_collections.ConfigDict) -> Encoder:
  s1 = config.stage1
  return Encoder(widths=tuple(s1.enc_widths), stride_t=tuple(s1.enc_stride_t),
                 stride_s=tuple(s1.enc_stride_s), z_dim=s1.z_dim,
                 impl=resolve_conv3d_impl(s1.conv3d_impl), dtype=config.compute_dtype,
                 x0_diff=bool(s1.get("enc_x0_diff", False)),
                 z_spatial=bool(s1.get("z_spatial", False)))
