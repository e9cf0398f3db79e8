"""LPIPS metric properties and DIV-VGG on identical vs different samples."""

import numpy as np

from i2v_flax.evaluation import diversity, lpips_metrics


def _videos(seed, shape=(2, 3, 32, 32, 3)):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def test_lpips_zero_on_identical_and_symmetric():
  a, b = _videos(0), _videos(1)
  per_video = lpips_metrics.lpips_per_video(a, a)
  assert per_video.shape == (2,)
  np.testing.assert_allclose(per_video, 0.0, atol=1e-6)
  ab, ba = lpips_metrics.lpips_per_video(a, b), lpips_metrics.lpips_per_video(b, a)
  assert np.all(ab > 0.05)
  np.testing.assert_allclose(ab, ba, rtol=1e-5)


def test_lpips_accepts_uint8_like_float():
  a = np.random.default_rng(2).integers(0, 256, (1, 2, 32, 32, 3)).astype(np.uint8)
  b = a.copy()
  b[..., :16, :] = 255 - b[..., :16, :]
  as_float = lpips_metrics.to_float(a), lpips_metrics.to_float(b)
  np.testing.assert_allclose(lpips_metrics.lpips_video(a, b), lpips_metrics.lpips_video(*as_float),
                             rtol=1e-6)


def test_div_vgg_zero_for_identical_samples_positive_otherwise():
  frame = _videos(3, (1, 1, 1, 16, 16, 3))  # (N=1, S=1, T=1, H, W, 3)
  same = np.concatenate([frame, frame], axis=1)
  different = np.concatenate([frame, -frame], axis=1)
  both = np.concatenate([same, different])  # Two x_0s, one compiled call.
  div = diversity.div_vgg_per_x0(both, frames_per_batch=2)
  assert div[0] == 0.0
  assert div[1] > 1e-2
