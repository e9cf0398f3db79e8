"""The procedural shapes data: determinism, physics and pixel/ground-truth consistency."""

import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from i2v_flax.data import shapes
from i2v_flax.data import shapes_builder


def _examples(resolution, seeds=range(12)):
  return [shapes.generate_example(np.random.default_rng([7, s]), resolution) for s in seeds]


def test_generate_example_is_deterministic_and_seed_dependent():
  a = shapes.generate_example(np.random.default_rng(3), 32)
  b = shapes.generate_example(np.random.default_rng(3), 32)
  c = shapes.generate_example(np.random.default_rng(4), 32)
  assert set(a) == {"video", "positions", "num_objects", "colors", "radius", "drift", "shape_kind"}
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
  assert a["video"].tobytes() != c["video"].tobytes()
  assert a["video"].shape == (24, 32, 32, 3) and a["video"].dtype == np.uint8
  assert a["positions"].shape == (24, 3, 2) and a["positions"].dtype == np.float32
  assert a["num_objects"].dtype == np.int32 and 1 <= a["num_objects"] <= 3


def test_same_scene_at_every_resolution():
  lo = shapes.generate_example(np.random.default_rng(5), 32)
  hi = shapes.generate_example(np.random.default_rng(5), 64)
  np.testing.assert_array_equal(lo["positions"], hi["positions"])
  np.testing.assert_allclose(hi["drift"], 2 * lo["drift"], rtol=1e-6)


def test_unused_slots_are_zero_and_colours_distinct():
  for ex in _examples(32, range(30)):
    n = int(ex["num_objects"])
    assert not ex["positions"][:, n:].any() and not ex["radius"][n:].any()
    assert not ex["colors"][n:].any() and not ex["shape_kind"][n:].any()
    assert len({tuple(c) for c in ex["colors"][:n]}) == n
    assert all(tuple(c) in {tuple(p) for p in shapes.PALETTE} for c in ex["colors"][:n])


@pytest.mark.parametrize("resolution", [32, 64])
def test_constant_speed_and_fully_inside(resolution):
  bounced = 0
  for ex in _examples(resolution):
    n = int(ex["num_objects"])
    pos, r = ex["positions"][:, :n].astype(np.float64), ex["radius"][:n]
    step = np.diff(pos, axis=0)  # (T-1, n, 2)
    speed = np.linalg.norm(step, axis=-1)
    np.testing.assert_allclose(speed, np.broadcast_to(speed[:1], speed.shape), atol=2e-6)
    px_speed = speed[0] * 32  # px/frame at 32^2 (normalised units x 32).
    assert np.all(px_speed >= 0.6 - 1e-4) and np.all(px_speed <= 1.6 + 1e-4)
    assert np.all(pos >= r[None, :, None] - 1e-6) and np.all(pos <= 1 - r[None, :, None] + 1e-6)
    bounced += int(np.sum(np.diff(np.sign(step), axis=0) != 0))
  assert bounced > 0  # The invariants were exercised through bounces.


def _covers(ex, k, t, px, py, resolution):
  """Whether object k covers the pixel-centre (px, py) (pixel units) at frame t."""
  dx = px - ex["positions"][t, k, 0] * resolution
  dy = py - ex["positions"][t, k, 1] * resolution
  r = ex["radius"][k] * resolution
  if ex["shape_kind"][k] == 0:
    return dx * dx + dy * dy <= r * r
  return abs(dx) <= r and abs(dy) <= r


@pytest.mark.parametrize("resolution", [32, 64])
def test_pixels_match_positions(resolution):
  checked_centroids = 0
  for ex in _examples(resolution):
    n = int(ex["num_objects"])
    video = ex["video"]
    for t, k in itertools.product(range(video.shape[0]), range(n)):
      x, y = ex["positions"][t, k] * resolution  # Pixel-centre coordinate is x - 0.5.
      j, i = int(np.floor(x)), int(np.floor(y))
      occluded = any(_covers(ex, m, t, j + 0.5, i + 0.5, resolution) for m in range(k + 1, n))
      if not occluded:
        np.testing.assert_array_equal(video[t, i, j], ex["colors"][k])
      separated = all(
          np.abs(ex["positions"][t, k] - ex["positions"][t, m]).max() * resolution >
          (ex["radius"][k] + ex["radius"][m]) * resolution + 1 for m in range(n) if m != k)
      if separated:
        ii, jj = np.nonzero(np.all(video[t] == ex["colors"][k], axis=-1))
        centroid = np.array([jj.mean() + 0.5, ii.mean() + 0.5])
        assert np.abs(centroid - np.array([x, y])).max() <= 0.5, (t, k, centroid, x, y)
        checked_centroids += 1
  assert checked_centroids > 100


def _texture_basis(resolution, offset):
  """Constant + cos/sin of every integer plane wave |k| <= MAX_FREQUENCY, shifted by offset px."""
  c = (np.arange(resolution) + 0.5)
  u = (c[None, :] - offset[0]) / resolution
  v = (c[:, None] - offset[1]) / resolution
  cols = [np.ones(resolution * resolution)]
  f = shapes.MAX_FREQUENCY
  for kx, ky in itertools.product(range(-f, f + 1), range(0, f + 1)):
    if ky == 0 and kx <= 0:
      continue
    phase = 2 * np.pi * (kx * u + ky * v)
    cols += [np.cos(phase).ravel(), np.sin(phase).ravel()]
  return np.stack(cols, axis=1)


@pytest.mark.parametrize("resolution", [32, 64])
def test_background_drifts_by_drift_per_frame(resolution):
  """Fit the band-limited texture on frame 0's visible pixels; frame t = it shifted by t*drift."""
  for ex in _examples(resolution, range(4)):
    video = ex["video"].astype(np.float64)
    object_px = np.zeros(video.shape[:3], bool)
    for col in ex["colors"][:int(ex["num_objects"])]:
      object_px |= np.all(ex["video"] == col, axis=-1)
    vis0 = ~object_px[0].ravel()
    coef, *_ = np.linalg.lstsq(_texture_basis(resolution, np.zeros(2))[vis0],
                               video[0].reshape(-1, 3)[vis0], rcond=None)
    for t in (5, 23):
      vis = ~object_px[t].ravel()
      frame = video[t].reshape(-1, 3)[vis]
      pred = _texture_basis(resolution, t * ex["drift"].astype(np.float64))[vis] @ coef
      assert np.abs(pred - frame).max() <= 1.5, np.abs(pred - frame).max()
      wrong = _texture_basis(resolution, -t * ex["drift"].astype(np.float64))[vis] @ coef
      assert np.abs(wrong - frame).max() > 5  # The check can tell the drift direction apart.


def test_tiny_build_records_are_the_generated_examples(shapes_data_dir, tmp_path):
  builder = tfds.builder("i2v_shapes/res32", data_dir=shapes_data_dir)
  assert builder.info.splits["train"].num_examples == 16
  assert builder.info.splits["test"].num_examples == 8
  first = list(builder.as_dataset(split="test").as_numpy_iterator())
  assert [int(e["index"]) for e in first] == list(range(8))  # Stored in index order.
  for e in first[:3]:
    ref = shapes_builder.example_for("test", int(e["index"]), 32)
    for k in ref:
      assert e[k].tobytes() == ref[k].tobytes(), k
  # A second, smaller build elsewhere has byte-identical records (order independent seeding).
  other = shapes_builder.I2vShapes(config="res32", data_dir=str(tmp_path),
                                   num_examples={"train": 1, "test": 3})
  other.download_and_prepare()
  second = list(other.as_dataset(split="test").as_numpy_iterator())
  assert len(second) == 3
  for a, b in zip(first, second):
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
  assert first[0]["video"].tobytes() != first[1]["video"].tobytes()


def test_split_seeds_differ_and_bad_sizes_fail():
  assert shapes_builder.split_seed("train") != shapes_builder.split_seed("test")
  with pytest.raises(ValueError, match="unknown splits"):
    shapes_builder.I2vShapes(config="res32", data_dir="/tmp/unused", num_examples={"val": 3})
  with pytest.raises(ValueError, match="resolution"):
    shapes.generate_example(np.random.default_rng(0), 4)


def test_process_pool_build_matches_serial_generation(tmp_path, monkeypatch):
  monkeypatch.setattr(shapes_builder, "POOL_MIN_EXAMPLES", 2)
  monkeypatch.setattr(shapes_builder, "MAX_WORKERS", 2)
  monkeypatch.setattr(shapes_builder.os, "cpu_count", lambda: 2)
  builder = shapes_builder.I2vShapes(config="res32", data_dir=str(tmp_path),
                                     num_examples={"train": 5, "test": 1})
  builder.download_and_prepare()
  records = list(builder.as_dataset(split="train").as_numpy_iterator())
  assert [int(r["index"]) for r in records] == list(range(5))
  for r in records:
    ref = shapes_builder.example_for("train", int(r["index"]), 32)
    assert all(r[k].tobytes() == ref[k].tobytes() for k in ref)


def test_single_scene_one_large_object_on_a_static_texture():
  """The demo's scene (`res32_single`): exactly one object of radius 0.15-0.22, no drift, so
  every pixel outside the object is the same in every frame."""
  for s in range(12):
    ex = shapes.generate_example(np.random.default_rng([9, s]), 32, scene=shapes.SINGLE)
    assert ex["num_objects"] == 1
    assert 0.15 <= ex["radius"][0] <= 0.22 and not ex["radius"][1:].any()
    assert not ex["drift"].any()
    masks = shapes.object_masks(ex["positions"], ex["radius"], ex["shape_kind"], 1, 32)[:, 0]
    outside = ~masks.any(axis=0)  # Pixels the object never covers.
    video = ex["video"].astype(int)
    assert np.array_equal(video[:, outside], np.broadcast_to(video[:1, outside],
                                                             video[:, outside].shape))
    assert not np.array_equal(ex["positions"][0], ex["positions"][-1])  # The object moves.


def test_default_scene_and_scene_validation():
  """Without a scene, generate_example draws the default (original) scene."""
  a = shapes.generate_example(np.random.default_rng(11), 32)
  b = shapes.generate_example(np.random.default_rng(11), 32, scene=shapes.DEFAULT_SCENE)
  assert all(np.array_equal(a[k], b[k]) for k in a)
  with pytest.raises(ValueError, match="radius"):
    shapes.Scene(radius_range=(0.3, 0.6))
  with pytest.raises(ValueError, match="min_objects"):
    shapes.Scene(min_objects=2, max_objects=1)


def test_true_futures_follow_the_generator_physics():
  start, radius = np.array([0.3, 0.7]), 0.2
  futures = shapes.true_futures(start, radius, np.random.default_rng(0), 64, 17, shapes.SINGLE)
  assert futures.shape == (64, 17, 2)
  np.testing.assert_allclose(futures[:, 0], np.broadcast_to(start, (64, 2)))
  steps = np.abs(np.diff(futures, axis=1))  # Bounces flip signs, |dx| and |dy| stay constant.
  np.testing.assert_allclose(steps, np.broadcast_to(steps[:, :1], steps.shape), atol=1e-12)
  speed = np.linalg.norm(steps[:, 0], axis=-1)
  lo, hi = shapes.SINGLE.speed_range
  assert np.all((speed >= lo - 1e-12) & (speed <= hi + 1e-12))
  assert np.all((futures >= radius - 1e-9) & (futures <= 1 - radius + 1e-9))
  assert futures[:, -1].std(axis=0).mean() > 0.05  # Fresh velocities: different endings.


def test_single_builder_config_and_scene_lookup(tmp_path):
  assert shapes_builder.scene_of("res32_single") == shapes.SINGLE
  assert shapes_builder.scene_of("res64") == shapes.DEFAULT_SCENE
  with pytest.raises(ValueError, match="res32_single"):
    shapes_builder.scene_of("res33")
  builder = shapes_builder.I2vShapes(config="res32_single", data_dir=str(tmp_path),
                                     num_examples={"train": 2, "test": 1})
  builder.download_and_prepare()
  record = next(iter(tfds.as_numpy(builder.as_dataset(split="test"))))
  expected = shapes_builder.example_for("test", 0, 32, "single")
  np.testing.assert_array_equal(record["video"], expected["video"])
  assert record["num_objects"] == 1
