"""Fréchet distance: exact special cases and agreement with an independent scipy computation."""

import numpy as np
import scipy.linalg

from i2v_flax.evaluation import frechet


def _scipy_reference(a: np.ndarray, b: np.ndarray) -> float:
  """The textbook formula with scipy's sqrtm of the (non-symmetric) product."""
  mu1, mu2 = a.mean(0), b.mean(0)
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_identical_sets_give_zero():
  x = np.random.default_rng(0).normal(size=(50, 8))
  assert abs(frechet.frechet_distance(x, x)) < 1e-9


def test_identical_rank_deficient_sets_give_zero():
  # n < d as in FVD with few videos: covariance is singular, the result must still be ~0.
  x = np.random.default_rng(1).normal(size=(10, 40))
  assert abs(frechet.frechet_distance(x, x)) < 1e-8


def test_pure_mean_shift_is_its_squared_norm():
  x = np.random.default_rng(2).normal(size=(100, 6))
  shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 0.25])
  assert np.isclose(frechet.frechet_distance(x, x + shift), np.sum(shift**2), rtol=1e-9)


def test_agrees_with_scipy_on_well_conditioned_data():
  rng = np.random.default_rng(3)
  a = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5)) + 1.0
  b = rng.normal(size=(400, 5)) * np.array([1.0, 2.0, 0.5, 1.5, 1.0])
  ours, ref = frechet.frechet_distance(a, b), _scipy_reference(a, b)
  assert ref > 1.0
  assert abs(ours - ref) <= 1e-6 * abs(ref)


def test_uses_unbiased_covariance():
  # Two 1-D sets with equal means: d = (sigma1 - sigma2)^2 with ddof=1 standard deviations.
  a, b = np.array([[0.0], [2.0]]), np.array([[0.0], [4.0]])
  expected = (np.std(a, ddof=1) - np.std(b, ddof=1)) ** 2 + (1.0 - 2.0) ** 2
  assert np.isclose(frechet.frechet_distance(a, b), expected)
