"""The 3-D ResNet-18 basic block shared by the encoder q_phi and the temporal discriminator D_T."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from i2v_flax.models.layers import Conv, group_norm


class BasicBlock3D(nn.Module):
  """Two 3x3x3 convs with GroupNorm(16) and ReLU plus a residual (SPEC §3.1, §3.3).

  The shortcut is a strided 3x3x3 conv + GroupNorm whenever stride or width changes, as in the
  reference (a 1x1x1 shortcut would change the parameter count and the receptive field).
  """

  features: int
  strides: Sequence[int] = (1, 1, 1)
  spectral_norm: bool = False  # On both convs (D_T: first block of each stage).
  shortcut_spectral_norm: bool = False  # On the shortcut conv (D_T).
  impl: str = "native"
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
    conv = lambda sn, name, strides=(1, 1, 1): Conv(  # noqa: E731
        self.features, (3, 3, 3), strides, use_bias=False, spectral_norm=sn, impl=self.impl,
        dtype=self.dtype, name=name)
    y = conv(self.spectral_norm, "conv0", self.strides)(x, update_stats)
    y = nn.relu(group_norm(self.features, name="norm0")(y))
    y = conv(self.spectral_norm, "conv1")(y, update_stats)
    y = group_norm(self.features, name="norm1")(y)
    if tuple(self.strides) != (1, 1, 1) or x.shape[-1] != self.features:
      x = conv(self.shortcut_spectral_norm, "shortcut", self.strides)(x, update_stats)
      x = group_norm(self.features, name="shortcut_norm")(x)
    return nn.relu(x + y)
