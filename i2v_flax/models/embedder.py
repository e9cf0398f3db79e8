"""The x_0 embedder of stage 2: a small 2-D ResNet giving the flow's condition c (SPEC §4).

The reference uses the frozen encoder mean of a separately trained image VAE-GAN (a ResNet-50,
23.7M parameters). We train a much smaller ResNet jointly with the flow by default: the flow's
NLL is the only signal, so c learns exactly the image content that predicts z. GroupNorm rather
than BatchNorm keeps the module stateless (no batch statistics to thread through jit or to
disagree between train and sampling). `config.stage2.embedder = "resnet50"` selects the
reference's frozen ResNet-50 instead (`i2v_flax.models.resnet50`, weights converted from the
authors' `Encoder_stage2.pth`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _groups(channels: int, preferred: int = 8) -> int:
  """The largest group count <= preferred that divides the channel count."""
  g = min(preferred, channels)
  while channels % g:
    g -= 1
  return g


class ResBlock2D(nn.Module):
  """Basic ResNet block (two 3x3 convs, GroupNorm, ReLU); 1x1 strided shortcut when shapes change."""
  width: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: Array) -> Array:
    s = (self.stride, self.stride)
    h = nn.Conv(self.width, (3, 3), s, padding=1, use_bias=False)(x)
    h = nn.relu(nn.GroupNorm(_groups(self.width))(h))
    h = nn.Conv(self.width, (3, 3), padding=1, use_bias=False)(h)
    h = nn.GroupNorm(_groups(self.width))(h)
    if self.stride != 1 or x.shape[-1] != self.width:
      x = nn.Conv(self.width, (1, 1), s, use_bias=False)(x)
      x = nn.GroupNorm(_groups(self.width))(x)
    return nn.relu(x + h)


class ImageEmbedder(nn.Module):
  """(B, H, W, 3) in [-1, 1] -> (B, cond_dim).

  Stem 3x3 conv, then one stride-2 stage per entry of `widths` (`blocks_per_stage` basic blocks
  each), a pooling of the final map and a Dense projection. Every stage halves the resolution,
  so the four default stages take 64x64 to 4x4 (32x32 to 2x2) before pooling.

  `pool='mean'` (default) averages the final map: c then says *what* is in x_0 but hardly
  *where*. `pool='flatten'` (a demo departure) feeds the whole map to the Dense, so c keeps the
  layout; on `shapes` the flow needs object 0's start position to turn a requested final
  position (eta) into a motion.
  """
  widths: Sequence[int] = (32, 64, 128, 256)
  cond_dim: int = 64
  blocks_per_stage: int = 1
  pool: str = "mean"

  @nn.compact
  def __call__(self, x0: Array) -> Array:
    h = nn.Conv(self.widths[0], (3, 3), padding=1, use_bias=False)(x0)
    h = nn.relu(nn.GroupNorm(_groups(self.widths[0]))(h))
    for width in self.widths:
      for j in range(self.blocks_per_stage):
        h = ResBlock2D(width, stride=2 if j == 0 else 1)(h)
    if self.pool == "mean":
      h = jnp.mean(h, axis=(1, 2))
    elif self.pool == "flatten":
      h = h.reshape(h.shape[0], -1)
    else:
      raise ValueError(f"ImageEmbedder pool={self.pool!r} is not 'mean' or 'flatten'. Fix: "
                       "--config.stage2.embedder_pool=mean")
    return nn.Dense(self.cond_dim)(h)


EMBEDDERS = ("resnet_small", "resnet50")


def build_embedder(stage2_cfg) -> nn.Module:
  """The embedder of `config.stage2`: 'resnet_small' (this file) or 'resnet50' (the reference's
  frozen ResNet-50, `i2v_flax.models.resnet50`)."""
  kind = stage2_cfg.get("embedder", "resnet_small")
  if kind == "resnet_small":
    return ImageEmbedder(widths=tuple(int(w) for w in stage2_cfg.embedder_widths),
                         cond_dim=int(stage2_cfg.cond_dim),
                         pool=str(stage2_cfg.get("embedder_pool", "mean")))
  if kind == "resnet50":
    from i2v_flax.models.resnet50 import ResNet50Embedder
    return ResNet50Embedder(cond_dim=int(stage2_cfg.cond_dim),
                            norm=str(stage2_cfg.get("embedder_norm", "in")))
  raise ValueError(f"Unknown config.stage2.embedder={kind!r}; use one of {EMBEDDERS}.")


def embedder_is_frozen(stage2_cfg) -> bool:
  """Whether the optimiser leaves the embedder alone: always for 'resnet50' (it is the
  reference's pretrained encoder, loaded from `embedder_init`), else `freeze_embedder`."""
  kind = stage2_cfg.get("embedder", "resnet_small")
  return bool(stage2_cfg.freeze_embedder) or kind == "resnet50"
