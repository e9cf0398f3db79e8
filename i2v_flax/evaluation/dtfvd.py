"""DTFVD (SPEC §6): Fréchet distance of a DTDB-trained I3D's 1024-d features, the paper's
dynamic-texture metric (Landscape / DTDB tables).

The network is the reference's `metrics/DTFVD/ID3.py:InceptionI3D(18, 1)` (a piergiaj
pytorch-i3d port trained on DTDB's 18 dynamics classes), weights `I3D_16.pth.tar`. It is the
Kinetics I3D of `i3d.py` with three differences, so we reuse its units and Inception blocks:
  * BatchNorm3d is affine (scale and bias) with eps 1e-5 (Kinetics: no scale, eps 1e-3);
  * the embedding is the 1024-d AvgPool3d(2, 7, 7) output (the 32-frame weights: (4, 7, 7)),
    not the logits; the logits (18 classes) are still returned for parity checks;
  * preprocessing (`DTFVD_Score.embedding_I3D`): frames in [-1, 1] stay float (no uint8), are
    resized per frame to 224² with bilinear align_corners=True, and the 16-frame model keeps the
    first 16 frames. (The reference's `calculate_FVD` also tiles clips shorter than 16 frames in
    time; with the 16-frame clips of the protocol both are the same.)
Unit3D's TF-'SAME' padding (total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0), front =
total // 2) is exactly XLA's 'SAME', which `conv3d_same` uses; the max-pools pad with zeros in the
reference and with -inf here, identical because their inputs are ReLU outputs.

Weights: `config.eval.dtfvd_weights` = the reference's `I3D_16.pth.tar` (read with torch, the
optional `[convert]` extra) or an `.npz` of its state_dict written once by
`python -m i2v_flax.convert.evaluation I3D_16.pth.tar I3D_16.npz` (then torch is not needed).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from i2v_flax import errors
from i2v_flax.evaluation.frechet import frechet_distance
from i2v_flax.evaluation.i3d import _MIXED, InceptionBlock, Unit3D, default_impl
from i2v_flax.image_ops import resize_bilinear_align_corners

Variables = Any
DTFVD_SIZE = 224  # Frames are resized to 224² whatever their size.
BN_EPSILON = 1e-5  # torch BatchNorm3d default.
STEM_UNITS = ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")
MIXED_BLOCKS = ("Mixed_3b", "Mixed_3c", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
                "Mixed_4f", "Mixed_5b", "Mixed_5c")
DEFAULT_STEM = (64, 64, 192)
DEFAULT_MIXED = tuple(_MIXED[name] for name in MIXED_BLOCKS)
_HIGHEST = jax.lax.Precision.HIGHEST


class DTFVDI3D(nn.Module):
  """(N, T, 224, 224, 3) in [-1, 1] -> features (N, T', 1024), logits (N, T', num_classes).

  T' = 1 for T in [8 (p - 1) + 1, 8 p] frames, p = `temporal_pool` (2: I3D_16, 4: I3D_32).
  Widths are fields so a checkpoint's own shapes define the network (convert/evaluation.py).
  """

  num_classes: int = 18
  stem_widths: Sequence[int] = DEFAULT_STEM
  mixed_widths: Sequence[Sequence[int]] = DEFAULT_MIXED
  temporal_pool: int = 2
  impl: str = "native"  # 'native' 3-D convs or 'taps' (2-D convs per time tap; faster on CPU).

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    unit = functools.partial(Unit3D, impl=self.impl, bn_scale=True, bn_epsilon=BN_EPSILON)
    block = functools.partial(InceptionBlock, impl=self.impl, bn_scale=True,
                              bn_epsilon=BN_EPSILON)
    s, mixed = self.stem_widths, dict(zip(MIXED_BLOCKS, self.mixed_widths))
    x = unit(s[0], (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(x)
    x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding="SAME")
    x = unit(s[1], name="Conv3d_2b_1x1")(x)
    x = unit(s[2], (3, 3, 3), name="Conv3d_2c_3x3")(x)
    x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding="SAME")
    for name in MIXED_BLOCKS[:2]:
      x = block(mixed[name], name=name)(x)
    x = nn.max_pool(x, (3, 3, 3), strides=(2, 2, 2), padding="SAME")
    for name in MIXED_BLOCKS[2:7]:
      x = block(mixed[name], name=name)(x)
    x = nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2), padding="SAME")
    for name in MIXED_BLOCKS[7:]:
      x = block(mixed[name], name=name)(x)
    if x.shape[1] < self.temporal_pool:
      raise ValueError(f"DTFVD needs at least {min_frames(self.temporal_pool)} frames; the "
                       f"input's {x.shape[1]} pooled time steps are fewer than the "
                       f"AvgPool3d's {self.temporal_pool}.")
    x = nn.avg_pool(x, (self.temporal_pool, 7, 7), strides=(1, 1, 1), padding="VALID")
    logits = nn.Conv(self.num_classes, (1, 1, 1), use_bias=True, precision=_HIGHEST,
                     name="logits")(x)
    # The reference's spatial squeeze (a 224² input leaves a 1x1 map); time stays an axis.
    return x[:, :, 0, 0, :], logits[:, :, 0, 0, :]


def frames_kept(temporal_pool: int) -> int:
  """Frames the model looks at (16 for I3D_16, 32 for I3D_32); later frames are dropped."""
  return 8 * temporal_pool


def min_frames(temporal_pool: int) -> int:
  """Fewest frames that still leave one time step for the final average pool."""
  return 8 * (temporal_pool - 1) + 1


def preprocess(clips: jax.Array, temporal_pool: int = 2) -> jax.Array:
  """(N, T, H, W, 3) uint8 or [-1, 1] float -> the first 8 p frames at 224², float32 [-1, 1].

  Float frames are used as they are (no rounding): the reference feeds its model floats.
  """
  clips = clips[:, :frames_kept(temporal_pool)]
  if clips.dtype == jnp.uint8:
    clips = clips.astype(jnp.float32) / 127.5 - 1.0
  return resize_bilinear_align_corners(clips, (DTFVD_SIZE, DTFVD_SIZE))


@functools.partial(jax.jit, static_argnums=(0,))
def _forward(module: DTFVDI3D, variables: Variables,
             clips: jax.Array) -> tuple[jax.Array, jax.Array]:
  return module.apply(variables, preprocess(clips, module.temporal_pool))


def apply_dtfvd(module: DTFVDI3D, variables: Variables,
                clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Preprocess + network on one batch: features (N, T', 1024), logits (N, T', C), float32."""
  if clips.shape[1] < min_frames(module.temporal_pool):
    raise ValueError(f"DTFVD needs clips of at least {min_frames(module.temporal_pool)} frames "
                     f"(it keeps the first {frames_kept(module.temporal_pool)}); got shape "
                     f"{clips.shape} (N, T, H, W, 3).")
  features, logits = _forward(module, variables, jnp.asarray(clips))
  return np.asarray(features), np.asarray(logits)


class DTFVDModel(NamedTuple):
  """The network built from a checkpoint's shapes, and its variables."""

  module: DTFVDI3D
  variables: Variables


def load_dtfvd(weights_path: str | None, temporal_pool: int = 2) -> DTFVDModel:
  """Load `I3D_16.pth.tar` (torch) or its `.npz` state_dict; errors name the file and the fix."""
  if not weights_path:
    raise errors.InvalidInput(
        "The 'dtfvd' metric needs the DTDB-trained I3D weights, and config.eval.dtfvd_weights is "
        "not set. Fix: point it at the reference's models/DTI3D/length16/I3D_16.pth.tar (needs "
        "torch: pip install -e '.[convert]') or at an .npz made from it with "
        "`python -m i2v_flax.convert.evaluation I3D_16.pth.tar I3D_16.npz`.")
  from i2v_flax.convert import evaluation as convert_eval  # The converter imports this module.
  state_dict = convert_eval.read_state_dict(weights_path)
  module = convert_eval.dtfvd_module(state_dict, temporal_pool=temporal_pool, impl=default_impl())
  return DTFVDModel(module, convert_eval.dtfvd_variables(state_dict, module))


def dtfvd_features(videos: np.ndarray, model: DTFVDModel, batch_size: int = 8) -> np.ndarray:
  """(N, T, H, W, 3) uint8 or [-1, 1] float clips -> (N, 1024) float64 DTFVD embeddings.

  Fixed-size batches (the last one padded) so an evaluation compiles once.
  """
  videos = np.asarray(videos)
  n = videos.shape[0]
  out = []
  for start in range(0, n, batch_size):
    chunk = videos[start:start + batch_size]
    size = chunk.shape[0]
    if size < batch_size and n > batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - size, axis=0)])
    features, _ = apply_dtfvd(model.module, model.variables, chunk)
    out.append(features[:size, 0])  # T' = 1 for every accepted clip length.
  return np.concatenate(out).astype(np.float64)


def dtfvd(real: np.ndarray, fake: np.ndarray, model: DTFVDModel, batch_size: int = 8) -> float:
  """DTFVD between two sets of clips: Fréchet distance (float64, unbiased) of their embeddings."""
  return frechet_distance(dtfvd_features(real, model, batch_size),
                          dtfvd_features(fake, model, batch_size))
