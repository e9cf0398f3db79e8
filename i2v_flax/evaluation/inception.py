"""InceptionV3 up to pool3 (2048-d), the FID network of pytorch-fid / TTUR, as a Linen module.

Architecture: torchvision's InceptionV3 with pytorch-fid's FID-specific blocks (Mixed_5b-5d and
6b-6e average-pool without counting padding; Mixed_7b average-pools, Mixed_7c max-pools), which
reproduce the TF "pt_inception-2015-12-05" graph used by the original FID code.
Module and parameter names mirror the PyTorch state dict (`Mixed_5b.branch1x1.conv.weight` ->
params/Mixed_5b/branch1x1/conv/kernel), so conversion is a transpose per tensor.

Weights are NOT shipped (licence and size): the user supplies them via `config.eval.fid_weights`,
an .npz whose keys are '/'-joined Flax variable paths ('params/Conv2d_1a_3x3/conv/kernel',
'params/.../bn/scale', 'params/.../bn/bias', 'batch_stats/.../bn/mean', 'batch_stats/.../bn/var').
Produce it once from pytorch-fid's checkpoint (needs torch, on any machine):

  pip install torch pytorch-fid   # fetches pt_inception-2015-12-05-6726825d.pth on first use
  python -m i2v_flax.evaluation.inception \
      ~/.cache/torch/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth fid_inception.npz
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from i2v_flax import errors

Variables = Any
_HIGHEST = jax.lax.Precision.HIGHEST


class BasicConv2d(nn.Module):
  """Conv (no bias, explicit torch padding) -> BatchNorm (eps 1e-3, running stats) -> ReLU."""

  features: int
  kernel: Sequence[int]
  stride: int = 1
  padding: Sequence[int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = self.padding
    x = nn.Conv(self.features, tuple(self.kernel), strides=self.stride,
                padding=((ph, ph), (pw, pw)), use_bias=False, precision=_HIGHEST, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg3(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max3(x: jax.Array, stride: int) -> jax.Array:
  pad = ((1, 1), (1, 1)) if stride == 1 else "VALID"
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=pad)


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
    b5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(_avg3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, (3, 3), stride=2, name="branch3x3")(x)
    bd = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max3(x, 2)], axis=-1)


class InceptionC(nn.Module):
  c7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.c7
    b1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
    b7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, (1, 1), name="branch_pool")(_avg3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
    b3 = BasicConv2d(320, (3, 3), stride=2, name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max3(x, 2)], axis=-1)


class InceptionE(nn.Module):
  max_pool: bool  # FID's Mixed_7c max-pools its pool branch; Mixed_7b average-pools.

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
    b3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
    bd = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)],
                         -1)
    pooled = _max3(x, 1) if self.max_pool else _avg3(x)
    bp = BasicConv2d(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3Pool3(nn.Module):
  """(N, H, W, 3) in [-1, 1] (already at 299^2 for FID) -> (N, 2048) pool3 features."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = BasicConv2d(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max3(x, 2)
    x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max3(x, 2)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(max_pool=False, name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


def load_fid_variables(path: str | None) -> Variables:
  """Read the user's converted .npz (see module docstring) into a nested variables dict."""
  if not path or not os.path.exists(path):
    raise errors.MissingInput(
        f"FID needs InceptionV3 pool3 weights, and config.eval.fid_weights={path!r} is "
        f"{'unset' if not path else 'not a file'}. Expected an .npz of Flax variables "
        "('params/Conv2d_1a_3x3/conv/kernel', ...). Fix: convert pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth with `python -m i2v_flax.evaluation.inception "
        "PTH OUT.npz` and pass --config.eval.fid_weights=OUT.npz (or drop 'fid' from "
        "config.eval.metrics).")
  variables: dict = {}
  with np.load(path) as data:
    for key in data.files:
      *parents, leaf = key.split("/")
      node = variables
      for p in parents:
        node = node.setdefault(p, {})
      node[leaf] = jnp.asarray(data[key], jnp.float32)
  return variables


def convert_torch_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """pytorch-fid FIDInceptionV3 state dict -> the flat npz mapping `load_fid_variables` reads."""
  out = {}
  for key, value in state_dict.items():
    value = np.asarray(value, np.float32)
    path, leaf = key.rsplit(".", 1)
    path = path.replace(".", "/")
    if leaf == "weight" and value.ndim == 4:
      out[f"params/{path}/kernel"] = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif leaf in ("weight", "bias") and path.endswith("/bn"):
      out[f"params/{path}/{'scale' if leaf == 'weight' else 'bias'}"] = value
    elif leaf in ("running_mean", "running_var"):
      out[f"batch_stats/{path}/{'mean' if leaf == 'running_mean' else 'var'}"] = value
    # num_batches_tracked and the classifier head (fc) are not part of pool3.
  return out


def _main(argv: Sequence[str]) -> None:
  if len(argv) != 3:
    raise SystemExit("usage: python -m i2v_flax.evaluation.inception PT_INCEPTION.pth OUT.npz")
  import torch  # Only the one-off conversion needs torch.
  state = torch.load(argv[1], map_location="cpu")
  flat = convert_torch_state_dict({k: v.numpy() for k, v in state.items() if "fc." not in k})
  np.savez(argv[2], **flat)
  print(f"wrote {len(flat)} arrays to {argv[2]}")


if __name__ == "__main__":
  _main(sys.argv)
