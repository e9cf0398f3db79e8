"""The reference's x_0 embedder: torchvision ResNet-50 with a 1x1-conv head (SPEC §4 option).

The released stage-2 models are conditioned on the mean of a separately trained image VAE's
encoder (`Encoder_stage2.pth`, class `ResnetEncoder` of the reference, fixtures
`stage2_embedder_in` / `stage2_embedder_bn`). This module computes the same function so those
weights can be converted (`i2v_flax.convert.stage2.embedder_variables`) and used frozen:

  conv1 7x7 s2 p3 -> norm -> ReLU -> maxpool 3 s2 p1 (-inf padding) -> layer1..4 (Bottleneck,
  3/4/6/3 blocks, stride on the 3x3 conv, downsample = 1x1 strided conv + norm) -> global
  average pool -> head Dense(2048 -> 2z) (the reference's 1x1 conv) -> condition = head[:, :z].

Inputs are images in [-1, 1] *without* ImageNet normalisation (the reference builds a transform
but never applies it). Norm 'in' is InstanceNorm without affine parameters (eps 1e-5, biased
variance per sample and channel), so it has no variables; 'bn' is BatchNorm with running
statistics (eval mode only: the embedder is never trained here). Variable names follow
torchvision's (`layer3_5/bn2`, `layer1_0/downsample_0`) so the converter is a renaming.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
NORMS = ("in", "bn")
EPS = 1e-5
EXPANSION = 4


def instance_norm(x: Array, eps: float = EPS) -> Array:
  """torch InstanceNorm2d(affine=False): per sample and channel over (H, W), biased variance."""
  mean = jnp.mean(x, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def _norm(kind: str, name: str) -> Callable[[Array], Array]:
  """'in': a variable-free function; 'bn': a BatchNorm named like torchvision's (eval mode).

  Call only inside a compact method (the BatchNorm becomes a submodule called `name`)."""
  if kind == "in":
    return instance_norm
  if kind == "bn":
    return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=EPS, name=name)
  raise ValueError(f"Unknown ResNet-50 norm {kind!r}; use one of {NORMS} "
                   "(config.stage2.embedder_norm).")


def _conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> nn.Conv:
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                 use_bias=False, name=name)


class Bottleneck(nn.Module):
  """torchvision Bottleneck (v1.5): 1x1 -> 3x3 (stride) -> 1x1 (x4), residual, ReLU."""
  planes: int
  stride: int = 1
  norm: str = "in"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    out_ch = self.planes * EXPANSION
    h = nn.relu(_norm(self.norm, "bn1")(_conv(self.planes, 1, name="conv1")(x)))
    h = nn.relu(_norm(self.norm, "bn2")(_conv(self.planes, 3, self.stride, name="conv2")(h)))
    h = _norm(self.norm, "bn3")(_conv(out_ch, 1, name="conv3")(h))
    if self.stride != 1 or x.shape[-1] != out_ch:
      x = _norm(self.norm, "downsample_1")(
          _conv(out_ch, 1, self.stride, name="downsample_0")(x))
    return nn.relu(x + h)


class ResNet50Embedder(nn.Module):
  """(B, H, W, 3) in [-1, 1] -> (B, cond_dim): the reference encoder's mean.

  `__call__(x0, all_outputs=True)` also returns the pooled 2048-d features and the full 2z head
  (mean then logvar), for parity checks.
  """
  cond_dim: int = 64
  norm: str = "in"
  stage_sizes: Sequence[int] = (3, 4, 6, 3)

  @nn.compact
  def __call__(self, x0: Array, all_outputs: bool = False) -> Array | dict[str, Array]:
    h = nn.relu(_norm(self.norm, "bn1")(_conv(64, 7, 2, name="conv1")(x0)))
    h = nn.max_pool(h, (3, 3), (2, 2), padding=((1, 1), (1, 1)))  # Pads with -inf.
    for layer, blocks in enumerate(self.stage_sizes):
      planes = 64 * 2**layer
      for b in range(blocks):
        stride = 2 if (b == 0 and layer > 0) else 1
        h = Bottleneck(planes, stride, self.norm, name=f"layer{layer + 1}_{b}")(h)
    pooled = jnp.mean(h, axis=(1, 2))
    head = nn.Dense(2 * self.cond_dim, name="fc")(pooled)
    mean = head[:, :self.cond_dim]
    if all_outputs:
      return {"pooled": pooled, "head": head, "mean": mean}
    return mean
