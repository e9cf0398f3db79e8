"""Fréchet distance between Gaussians fitted to two feature sets (FVD, FID, shapes features).

d² = ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½), in float64 with unbiased covariances.

Why not `scipy.linalg.sqrtm(Σ1 Σ2)` as in the original FID/FVD code: Σ1 Σ2 is not symmetric, and
with n = 256 samples of 400-d I3D logits both covariances are rank-deficient, so the Schur-based
sqrtm returns complex noise and (occasionally) garbage. Σ1^½ Σ2 Σ1^½ is symmetric PSD and has the
same eigenvalues as Σ1 Σ2 (similar matrices up to the null space), so two `eigh` calls give the
same trace stably; tiny negative eigenvalues from round-off are clipped to 0.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and unbiased (ddof=1) covariance of (N, D) features, in float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"Need (N >= 2, D) features for a covariance, got shape {f.shape}.")
  return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix via eigh (negative round-off clipped)."""
  m = 0.5 * (m + m.T)
  w, v = np.linalg.eigh(m)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                                sigma2: np.ndarray) -> float:
  """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  root1 = _sqrt_psd(sigma1)
  inner = root1 @ sigma2 @ root1
  w = np.linalg.eigvalsh(0.5 * (inner + inner.T))
  trace_sqrt = float(np.sum(np.sqrt(np.clip(w, 0.0, None))))
  diff = mu1 - mu2
  d2 = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)
  # Round-off can leave -1e-12 for identical sets; a distance is never negative.
  return max(d2, 0.0)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """Fréchet distance between Gaussians fitted to (N, D) and (M, D) feature sets."""
  return frechet_distance_from_stats(*gaussian_stats(features_a), *gaussian_stats(features_b))
