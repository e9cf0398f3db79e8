"""Input pipeline: shapes and mocked BAIR batches, eta, augmentation, process split, errors."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import i2v_flax.data as data
from i2v_flax import config_lib
from i2v_flax.data import augment, control, pipeline, shapes_builder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shapes_config(data_dir, **overrides):
  c = config_lib.load_config(os.path.join(REPO, "configs/shapes.py:tiny")).data
  c.data_dir = data_dir
  for k, v in overrides.items():
    c[k] = v
  return c


def test_shapes_train_batch_matches_ground_truth(shapes_data_dir):
  cfg = _shapes_config(shapes_data_dir)
  batch = next(data.create_iterator(cfg, "train", 4, seed=1, with_metadata=True))
  assert batch["video"].shape == (4, 17, 32, 32, 3) and batch["video"].dtype == np.float32
  assert batch["eta"].shape == (4, 4) and batch["eta"].dtype == np.float32
  assert batch["positions"].shape == (4, 17, 3, 2)
  assert batch["video"].min() >= -1 and batch["video"].max() <= 1
  assert np.all((batch["start"] >= 0) & (batch["start"] <= 7))
  for b in range(4):
    ref = shapes_builder.example_for("train", int(batch["index"][b]), 32, "single")
    s = int(batch["start"][b])
    np.testing.assert_allclose(batch["video"][b], ref["video"][s:s + 17] / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(batch["positions"][b], ref["positions"][s:s + 17])
    # eta = object 0 at the clip's last frame, then the unit drift direction.
    np.testing.assert_allclose(batch["eta"][b, :2], ref["positions"][s + 16, 0], atol=1e-6)
    np.testing.assert_allclose(batch["eta"][b], data.shapes_eta(ref["positions"][s + 16, 0],
                                                                ref["drift"]), atol=1e-6)


def test_shapes_train_is_deterministic_and_random_in_start(shapes_data_dir):
  cfg = _shapes_config(shapes_data_dir)
  def first_batches(seed):
    it = data.create_iterator(cfg, "train", 4, seed=seed, with_metadata=True)
    return [next(it) for _ in range(5)]
  a, b, c = first_batches(0), first_batches(0), first_batches(1)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["video"], y["video"])
  assert any(not np.array_equal(x["index"], y["index"]) for x, y in zip(a, c))
  starts = np.concatenate([x["start"] for x in a])
  assert len(set(starts.tolist())) > 2  # Random starts, not always 0.


def test_shapes_test_split_order_remainder_and_limit(shapes_data_dir):
  cfg = _shapes_config(shapes_data_dir)
  batches = list(data.create_iterator(cfg, "test", 3, repeat=False, with_metadata=True))
  assert [len(b["video"]) for b in batches] == [3, 3, 2]  # Remainder kept: every video once.
  assert np.concatenate([b["index"] for b in batches]).tolist() == list(range(8))
  assert all(np.all(b["start"] == 0) for b in batches)
  ref = shapes_builder.example_for("test", 0, 32, "single")
  np.testing.assert_allclose(batches[0]["video"][0], ref["video"][:17] / 127.5 - 1, atol=1e-6)
  limited = list(data.create_iterator(cfg, "test", 2, repeat=False, max_examples=5,
                                      with_metadata=True))
  assert np.concatenate([b["index"] for b in limited]).tolist() == [0, 1, 2, 3, 4]
  assert data.num_examples(cfg, "test") == 8 and data.num_examples(cfg, "train") == 16


def test_two_fake_processes_get_disjoint_covering_shards(shapes_data_dir):
  cfg = _shapes_config(shapes_data_dir)
  for split, n in (("test", 8), ("train", 16)):
    shards = []
    for p in range(2):
      ds = pipeline.build_dataset(cfg, split, 1, shuffle=False, repeat=False, with_metadata=True,
                                  process_index=p, process_count=2)
      shards.append({int(b["index"][0]) for b in ds.as_numpy_iterator()})
    assert shards[0].isdisjoint(shards[1]) and len(shards[0]) == len(shards[1]) == n // 2
    assert shards[0] | shards[1] == set(range(n))


def test_augmentation_is_one_draw_per_clip():
  cfg = config_lib.load_config(os.path.join(REPO, "configs/dtdb.py:fire,tiny")).data
  cfg.resolution = 24
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
  clip = tf.constant(np.repeat(frame, 6, axis=0))
  outs = []
  for s in range(6):
    out, flipped, _, _ = augment.augment_clip(clip, cfg, True, tf.constant([s, 0], tf.int64))
    out = out.numpy()
    assert out.shape == (6, 24, 24, 3) and out.min() >= -1 and out.max() <= 1
    np.testing.assert_allclose(out, np.repeat(out[:1], 6, axis=0), atol=1e-6)
    outs.append((out[0], bool(flipped)))
  assert len({o.tobytes() for o, _ in outs}) == 6  # Every seed draws a different transform.
  assert {f for _, f in outs} == {True, False}
  test_out, _, _, _ = augment.augment_clip(clip, cfg, False, tf.constant([0, 0], tf.int64))
  test_out2, _, _, _ = augment.augment_clip(clip, cfg, False, tf.constant([9, 9], tf.int64))
  np.testing.assert_array_equal(test_out.numpy(), test_out2.numpy())  # No randomness at test.


def test_fused_batch_jitter_equals_per_clip_reference():
  cfg = config_lib.load_config(os.path.join(REPO, "configs/bair.py:tiny")).data
  cfg.resolution = 16
  cfg.brightness, cfg.contrast, cfg.saturation = 0.4, 0.3, 0.5
  assert not augment.can_fuse(cfg, 16)  # kornia's clamped ops in random order are not affine.
  cfg.jitter_style = "torchvision"
  assert augment.can_fuse(cfg, 16) and not augment.can_fuse(cfg, 32)
  clips = np.random.default_rng(0).integers(0, 256, (6, 5, 16, 16, 3), dtype=np.uint8)
  refs, flipped_u8, factors = [], [], []
  for i, clip in enumerate(clips):
    seed = tf.constant([i, 0], tf.int64)
    ref, flipped, _, _ = augment.augment_clip(tf.constant(clip), cfg, True, seed)
    refs.append(ref.numpy())
    draws = augment.draws_for(seed)
    assert bool(flipped) == bool(draws[0] < 0.5)
    flipped_u8.append(clip[:, :, ::-1] if bool(flipped) else clip)
    factors.append(augment.jitter_factors(cfg, draws).numpy())
  fused = augment.fused_jitter_batch(tf.constant(np.stack(flipped_u8)), tf.constant(factors))
  np.testing.assert_allclose(fused.numpy(), np.stack(refs), atol=2e-5)
  assert np.abs(np.stack(refs) - (clips / 127.5 - 1)).max() > 0.1  # Jitter did something.


def _kornia05_rgb_to_hsv(x, eps=1e-8):
  """numpy transcription of kornia 0.5 rgb_to_hsv (channels last, h in radians)."""
  maxc, minc, idx = x.max(-1), x.min(-1), x.argmax(-1)
  delta = maxc - minc
  s = delta / (maxc + eps)
  d = np.where(delta == 0, 1.0, delta)
  rc, gc, bc = (maxc[..., None] - x).transpose(3, 0, 1, 2)
  h = np.stack([bc - gc, (rc - bc) + 2 * d, (gc - rc) + 4 * d], -1) / d[..., None]
  h = np.take_along_axis(h, idx[..., None], -1)[..., 0]
  return 2 * np.pi * ((h / 6.0) % 1.0), s, maxc


def _kornia05_hsv_to_rgb(h, s, v):
  h = h / (2 * np.pi)
  hi = np.floor(h * 6) % 6
  f = (h * 6) % 6 - hi
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v),
                                              (t, p, v), (v, p, q))])
  return np.take_along_axis(table, hi.astype(int)[None, ..., None], 0)[0]


def _kornia05_jitter(x, factors, order):
  """kornia 0.5 ColorJitter.apply_transform with fixed params, in numpy."""
  b, c, sat, hue = factors
  def saturation(x):
    h, s, v = _kornia05_rgb_to_hsv(x)
    return _kornia05_hsv_to_rgb(h, np.clip(s * sat, 0, 1), v)
  def hue_shift(x):
    h, s, v = _kornia05_rgb_to_hsv(x)
    return _kornia05_hsv_to_rgb(np.fmod(h + hue * 2 * np.pi, 2 * np.pi), s, v)
  ops = (lambda x: np.clip(x + (b - 1), 0, 1), lambda x: np.clip(x * c, 0, 1), saturation,
         hue_shift)
  for i in order:
    x = ops[i](x)
  return x


def test_kornia_jitter_matches_kornia05_in_every_order():
  clip = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
  factors = np.array([1.25, 0.8, 1.6, -0.12], np.float32)
  outs = set()
  for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]):
    got = augment.kornia_jitter(tf.constant(clip), tf.constant(factors), tf.constant(order))
    want = _kornia05_jitter(clip.astype(np.float64), factors.astype(np.float64), order)
    np.testing.assert_allclose(got.numpy(), want, atol=2e-5)
    outs.add(np.round(want, 4).tobytes())
  assert len(outs) == 4  # The order matters, so drawing it per clip is part of the recipe.
  cfg = config_lib.load_config(os.path.join(REPO, "configs/landscape.py:tiny")).data
  lo = augment.kornia_factors(cfg, tf.zeros([8])).numpy()
  hi = augment.kornia_factors(cfg, tf.ones([8])).numpy()
  np.testing.assert_allclose([lo, hi], [[0.7, 0.7, 0.7, -0.15], [1.3, 1.3, 1.3, 0.15]],
                             atol=1e-6)  # Additive brightness: x + (f - 1) in [-0.3, 0.3].


def test_test_clips_are_resized_straight_and_stage2_jitter():
  cfg = config_lib.load_config(os.path.join(REPO, "configs/landscape.py:tiny")).data
  cfg.resolution = 24
  clip = tf.constant(np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), np.uint8))
  out, _, scale, offset = augment.augment_clip(clip, cfg, False, tf.constant([0, 0], tf.int64))
  want = tf.image.resize(tf.cast(clip, tf.float32) / 255.0, (24, 24), antialias=True) * 2 - 1
  np.testing.assert_allclose(out.numpy(), want.numpy(), atol=1e-6)  # No upsample + centre crop.
  assert float(scale) == 1.0 and not np.any(offset.numpy())
  train, _, scale, _ = augment.augment_clip(clip, cfg, True, tf.constant([0, 0], tf.int64))
  assert tuple(train.shape) == (2, 24, 24, 3) and np.isclose(float(scale), 40 / 24)  # S+16, crop.
  stage2 = augment.stage2_data(cfg)  # Landscape's stage 2: no jitter, flip and crop kept.
  assert (stage2.brightness, stage2.contrast, stage2.saturation, stage2.hue) == (0, 0, 0, 0)
  assert stage2.flip and stage2.resize_crop and cfg.brightness == 0.3
  bair = config_lib.load_config(os.path.join(REPO, "configs/bair.py")).data
  assert augment.stage2_data(bair) is bair


@pytest.mark.parametrize("resize_crop", [True, False])  # Per-clip and fused-batch paths.
def test_geometric_augmentation_keeps_positions_on_the_pixels(shapes_data_dir, resize_crop):
  # The original scene (1-3 objects, drifting texture): flips show in the drift's sign.
  cfg = _shapes_config(shapes_data_dir, control=False, flip=True, resize_crop=resize_crop,
                       builder_config="res32")
  checked = flips = 0
  moved = []
  it = data.create_iterator(cfg, "train", 4, seed=3, with_metadata=True)
  for _ in range(3):
    batch = next(it)
    for b in range(4):
      top = int(batch["num_objects"][b]) - 1  # Drawn last, never occluded.
      ref = shapes_builder.example_for("train", int(batch["index"][b]), 32)
      s = int(batch["start"][b])
      flips += int(np.sign(batch["drift"][b, 0]) != np.sign(ref["drift"][0]))
      for t in (0, 16):
        pos, r = batch["positions"][b, t, top], batch["radius"][b, top]
        if np.any(pos - r < 0) or np.any(pos + r > 1):
          continue  # The random crop cut this object.
        x, y = pos * 32  # Pixel-centre coordinates are x - 0.5, y - 0.5.
        pix = batch["video"][b, t, int(y), int(x)]
        want = batch["colors"][b, top] / 127.5 - 1
        assert np.abs(pix - want).max() < 0.1, (pix, want)
        moved.append(np.abs(pos - ref["positions"][s + t, top]).max())
        checked += 1
      np.testing.assert_allclose(batch["radius"][b, top],
                                 ref["radius"][top] * (1.5 if resize_crop else 1.0), rtol=1e-6)
  assert checked >= 8 and 0 < flips < 12
  if resize_crop:  # Scaled by 1.5 and shifted by the random crop: no position stays put.
    assert min(moved) > 0
  else:  # Flips only: x mirrored, so positions move exactly when the clip was flipped.
    assert 0 < max(moved) and min(moved) == 0


def test_bair_pipeline_under_mock_data():
  cfg = config_lib.load_config(os.path.join(REPO, "configs/bair.py:control,tiny")).data
  with tfds.testing.mock_data(num_examples=4):
    batch = next(data.create_iterator(cfg, "train", 2, with_metadata=True))
    test = list(data.create_iterator(cfg, "test", 3, repeat=False))
  assert batch["video"].shape == (2, 17, 64, 64, 3) and batch["video"].dtype == np.float32
  assert batch["video"].min() >= -1 and batch["video"].max() <= 1
  assert batch["eta"].shape == (2, 30) and batch["eta"].dtype == np.float32
  np.testing.assert_array_equal(batch["eta"].reshape(2, 3, 10).sum(-1), 1.0)
  np.testing.assert_array_equal(batch["eta"], data.bair_eta(batch["endeffector_pos"][:, -1]))
  assert [len(b["video"]) for b in test] == [3, 1]


def test_bair_eta_binning_on_known_values():
  offset, rng_ = control.BAIR_OFFSET, control.BAIR_RANGE
  xyz = np.stack([offset + rng_ * [0.05, 0.55, 0.999],
                  offset - 1.0,                       # Below the range -> bin 0.
                  offset + rng_ * 1.5]).astype(np.float32)  # Above -> bin 9.
  eta = data.bair_eta(xyz)
  assert eta.shape == (3, 30)
  assert [np.flatnonzero(e).tolist() for e in eta] == [[0, 15, 29], [0, 10, 20], [9, 19, 29]]
  np.testing.assert_array_equal(control.bair_eta_tf(tf.constant(xyz)).numpy(), eta)
  with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
    data.bair_eta(np.zeros((2, 2)))


def test_shapes_eta_normalises_direction_and_zero_drift():
  eta = data.shapes_eta([[0.25, 0.75], [0.5, 0.5]], [[3.0, -4.0], [0.0, 0.0]])
  np.testing.assert_allclose(eta, [[0.25, 0.75, 0.6, -0.8], [0.5, 0.5, 0.0, 0.0]])


def test_motion_direction_by_phase_correlation():
  img = np.random.default_rng(0).uniform(size=(32, 32, 3)).astype(np.float32)
  for (dx, dy), want in (((3, 0), (1, 0)), ((0, -2), (0, -1)), ((2, 2), (0.7071, 0.7071))):
    moved = np.roll(img, (dy, dx), axis=(0, 1))
    got = control.motion_direction_tf(tf.constant(img), tf.constant(moved)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-3)
  still = control.motion_direction_tf(tf.constant(img), tf.constant(img)).numpy()
  np.testing.assert_array_equal(still, [0.0, 0.0])


def test_errors_name_problem_and_fix(shapes_data_dir, tmp_path):
  cfg = _shapes_config(shapes_data_dir)
  bad = _shapes_config(shapes_data_dir, name="kinetics")
  with pytest.raises(ValueError, match="Unknown dataset 'kinetics'.*shapes, bair, iper"):
    data.create_iterator(bad, "train", 4)
  too_long = _shapes_config(shapes_data_dir, clip_length=30)
  with pytest.raises(ValueError, match="clip_length=30 is longer than the 24-frame.*length=24"):
    data.create_iterator(too_long, "train", 4)
  with pytest.raises(ValueError, match="not divisible by the 3 processes"):
    pipeline._check(cfg, pipeline.source(cfg), 4, 3, None)
  for name in ("iper", "landscape", "dtdb"):
    mcfg = config_lib.load_config(os.path.join(REPO, f"configs/{name}.py:tiny")).data
    for manual_dir in (None, str(tmp_path)):
      mcfg.manual_dir = manual_dir
      with pytest.raises(FileNotFoundError, match="--config.data.manual_dir=/path"):
        data.prepare(mcfg)
      with pytest.raises(FileNotFoundError, match="(?i)download them from http"):
        data.create_iterator(mcfg, "train", 2)
  ctl = config_lib.load_config(os.path.join(REPO, "configs/iper.py:tiny")).data
  ctl.control, ctl.manual_dir = True, str(REPO)
  with pytest.raises(ValueError, match="no control variable.*control=False"):
    data.create_iterator(ctl, "train", 2)


_SHARD_SCRIPT = textwrap.dedent("""
  import json, os, sys
  import jax, numpy as np
  import i2v_flax.data as data
  from i2v_flax import config_lib, parallel
  cfg = config_lib.load_config(sys.argv[1]).data
  cfg.data_dir = sys.argv[2]
  mesh = parallel.make_mesh()
  batch = next(data.create_iterator(cfg, "train", 8, seed=0, with_metadata=True))
  arr = parallel.shard_batch({"video": batch["video"], "index": batch["index"]}, mesh)
  video_shards = {s.device: s for s in arr["video"].addressable_shards}
  rows = []
  for shard in arr["index"].addressable_shards:
    video = np.asarray(video_shards[shard.device].data)
    rows.append(dict(device=mesh.devices.tolist().index(shard.device),
                     index=np.asarray(shard.data).tolist(), rows=shard.index[0].start,
                     video_ok=bool(np.array_equal(video, batch["video"][shard.index[0]]))))
  try:
    data.create_iterator(cfg, "train", 12)
    err = ""
  except ValueError as e:
    err = str(e)
  print("RESULT" + json.dumps(dict(n=jax.device_count(), rows=rows,
                                   index=batch["index"].tolist(), err=err)))
""")


def test_global_batch_sharded_over_eight_fake_devices(shapes_data_dir):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-c", _SHARD_SCRIPT, os.path.join(REPO, "configs/shapes.py:tiny"),
       shapes_data_dir], env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
  result = json.loads(line[len("RESULT"):])
  assert result["n"] == 8 and len(result["rows"]) == 8
  for r in result["rows"]:
    assert r["rows"] == r["device"]  # Device i of the mesh holds global row i.
    assert r["index"] == [result["index"][r["device"]]] and r["video_ok"]
  assert "not divisible by the 8 devices" in result["err"] and "batch_size" in result["err"]
