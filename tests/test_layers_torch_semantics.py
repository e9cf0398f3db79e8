"""The stage-1 layer semantics that must equal torch's (the authors' checkpoints depend on them):
align_corners=True bilinear resizing, spectral norm with stored u and v, unbiased ActNorm init.
Checked here against small numpy transcriptions of the torch formulas; the fixtures in
tests/test_parity.py check the whole modules."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from i2v_flax.image_ops import resize_bilinear_align_corners
from i2v_flax.models import layers

KEY = jax.random.PRNGKey(0)


def _numpy_align_corners(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """torch F.interpolate(bilinear, align_corners=True) on one (H, W, C) image, float64."""
  in_h, in_w, _ = img.shape
  out = np.zeros((out_h, out_w, img.shape[2]))
  for i in range(out_h):
    y = i * (in_h - 1) / (out_h - 1) if out_h > 1 else 0.0
    y0 = min(int(np.floor(y)), in_h - 1)
    y1, ly = min(y0 + 1, in_h - 1), y - y0
    for j in range(out_w):
      x = j * (in_w - 1) / (out_w - 1) if out_w > 1 else 0.0
      x0 = min(int(np.floor(x)), in_w - 1)
      x1, lx = min(x0 + 1, in_w - 1), x - x0
      out[i, j] = ((1 - ly) * ((1 - lx) * img[y0, x0] + lx * img[y0, x1])
                   + ly * ((1 - lx) * img[y1, x0] + lx * img[y1, x1]))
  return out


@pytest.mark.parametrize("out_size", [(4, 4), (8, 5), (1, 3), (13, 13), (24, 30)])
def test_resize_align_corners_matches_torch_formula(out_size):
  img = np.random.default_rng(0).uniform(-1, 1, (2, 12, 10, 3)).astype(np.float32)
  got = np.asarray(resize_bilinear_align_corners(img, out_size))
  assert got.shape == (2,) + out_size + (3,)
  for b in range(2):
    # float32 source coordinates (as torch's CPU kernel) vs float64 here: ~1e-6.
    np.testing.assert_allclose(got[b], _numpy_align_corners(img[b], *out_size), atol=5e-6)


def test_resize_align_corners_keeps_corners_when_shrinking():
  img = np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
  got = np.asarray(resize_bilinear_align_corners(img, (4, 4)))
  for i, j in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
    np.testing.assert_array_equal(got[0, i, j], img[0, i, j])


class _Normalized(nn.Module):
  @nn.compact
  def __call__(self, update: bool):
    kernel = self.param("kernel", nn.initializers.normal(1.0), (3, 3, 4, 8))
    return layers.spectral_normalize(self, kernel, update)


def _normalize(x):
  return x / max(np.linalg.norm(x), 1e-12)


def test_spectral_norm_eval_uses_stored_u_and_v_and_train_does_one_iteration():
  m = _Normalized()
  variables = m.init(KEY, False)
  rng = np.random.default_rng(2)
  u = _normalize(rng.standard_normal(8))
  v = _normalize(rng.standard_normal(36))  # Not consistent with u on purpose.
  variables = {**variables, layers.SPECTRAL: {"u": u.astype(np.float32),
                                              "v": v.astype(np.float32)}}
  kernel = np.asarray(variables["params"]["kernel"], np.float64)
  w_mat = kernel.reshape(-1, 8).T  # torch's (out, in*k) up to the row order of v.
  # Eval: sigma = u . (W_mat v), no iteration, nothing stored.
  out, upd = m.apply(variables, False, mutable=[layers.SPECTRAL])
  np.testing.assert_allclose(np.asarray(out), kernel / (u @ (w_mat @ v)), rtol=1e-5)
  np.testing.assert_array_equal(upd[layers.SPECTRAL]["v"], variables[layers.SPECTRAL]["v"])
  # Train: v = normalize(W_mat^T u), u = normalize(W_mat v), sigma with the new pair.
  out, upd = m.apply(variables, True, mutable=[layers.SPECTRAL])
  v1 = _normalize(w_mat.T @ u)
  u1 = _normalize(w_mat @ v1)
  np.testing.assert_allclose(upd[layers.SPECTRAL]["v"], v1, atol=1e-6)
  np.testing.assert_allclose(upd[layers.SPECTRAL]["u"], u1, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out), kernel / (u1 @ (w_mat @ v1)), rtol=1e-5)


def test_actnorm_reinitialises_when_its_params_are_missing_in_a_mutable_apply():
  """The reference's first-train-call init: params absent + mutable 'params' -> data init."""
  x = 3.0 * jax.random.normal(KEY, (5, 4, 4, 6)) + 1.0
  m = layers.ActNorm()
  out, new = m.apply({}, x, mutable=["params"], rngs={"params": KEY})
  xs = np.asarray(x).reshape(-1, 6)
  np.testing.assert_allclose(new["params"]["loc"], -xs.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new["params"]["scale"], 1 / (xs.std(0, ddof=1) + 1e-6), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out).reshape(-1, 6).std(0, ddof=1), 1.0, atol=1e-4)
