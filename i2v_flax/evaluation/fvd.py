"""FVD (Unterthiner et al. 2018): Fréchet distance of I3D Kinetics-400 logits, SPEC §6.

Pipeline per clip: frames in [0, 255] (uint8 as is; generated [-1, 1] floats as (x + 1) * 127.5,
unrounded, as the reference's FVD) -> TF1 bilinear resize to 224^2 -> [-1, 1] -> I3D -> 400-d
time-averaged logits; then the float64 Fréchet distance with unbiased covariances. Splitting
`fvd_features` from `fvd_from_features` lets the protocol reuse the real videos' features across
the K sample sets and the baselines (the real side is the expensive half that never changes).
"""

from __future__ import annotations

import numpy as np

from i2v_flax.evaluation.frechet import frechet_distance
from i2v_flax.evaluation.i3d import i3d_logits


def fvd_features(videos: np.ndarray, batch_size: int = 8) -> np.ndarray:
  """(N, T, H, W, 3) uint8 or [-1, 1] float videos -> (N, 400) float64 I3D logits."""
  return i3d_logits(videos, batch_size=batch_size)


def fvd_from_features(real_features: np.ndarray, fake_features: np.ndarray) -> float:
  """FVD of two sets of precomputed I3D logits."""
  return frechet_distance(real_features, fake_features)


def fvd(real_videos: np.ndarray, fake_videos: np.ndarray, batch_size: int = 8) -> float:
  """FVD between two sets of videos (the paper protocol uses 256 vs 256 clips of 16 frames)."""
  return fvd_from_features(fvd_features(real_videos, batch_size),
                           fvd_features(fake_videos, batch_size))
