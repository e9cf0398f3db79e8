"""The demo report's ground-truth evaluation: stage-1 held-out numbers, the true-future spread and
the control error, on inputs whose answers are known."""

import numpy as np
import pytest

from i2v_flax import demo_eval, sampling
from i2v_flax.data import shapes
from i2v_flax.evaluation import shapes_metrics


def _example(seed, scene=shapes.SINGLE, frames=17):
  return shapes.generate_example(np.random.default_rng([5, seed]), 32, frames, scene=scene)


def _meta(examples):
  return {k: np.stack([e[k] for e in examples]) for k in
          ("positions", "colors", "radius", "num_objects", "shape_kind")}


def test_true_final_spread_grows_with_speed_and_vanishes_without_motion():
  meta = _meta([_example(s) for s in range(6)])
  still = shapes.Scene(min_objects=1, max_objects=1, radius_range=(0.15, 0.22),
                       speed_range=(0.0, 0.0), drift_range=(0.0, 0.0))
  slow = shapes.Scene(min_objects=1, max_objects=1, radius_range=(0.15, 0.22),
                      speed_range=(0.2 / 32, 0.3 / 32), drift_range=(0.0, 0.0))
  args = dict(num_samples=8, num_frames=17, resolution=32)
  assert shapes_metrics.true_final_position_spread(meta, scene=still, **args) == 0.0
  s_slow = shapes_metrics.true_final_position_spread(meta, scene=slow, **args)
  s_demo = shapes_metrics.true_final_position_spread(meta, scene=shapes.SINGLE, **args)
  assert 0 < s_slow < s_demo
  # At most the largest possible displacement over 16 frames (1.6 px/frame * 16).
  assert s_demo < 1.6 * 16
  with pytest.raises(ValueError, match="2 samples"):
    shapes_metrics.true_final_position_spread(meta, scene=shapes.SINGLE, num_samples=1,
                                              num_frames=17, resolution=32)


def test_control_errors_measure_the_distance_to_the_requested_position():
  ex = _example(3)
  video = ex["video"][1:].astype(np.float32) / 127.5 - 1  # (16, H, W, 3), the real future.
  final = ex["positions"][-1, 0].astype(np.float64)
  targets = np.stack([final, final + [4 / 32, 0.0], final + [0.0, -3 / 32]])
  errors = demo_eval.control_errors(np.stack([video] * 3), targets,
                                    {k: ex[k] for k in ("colors", "radius", "num_objects",
                                                        "shape_kind")})
  np.testing.assert_allclose(errors, [0.0, 4.0, 3.0], atol=0.3)  # Tracker: +-0.25 px on squares.
  blank = np.zeros_like(video)[None]  # No object anywhere: reported as lost, not as 0 px.
  assert demo_eval.control_errors(blank, targets[:1], {k: ex[k] for k in (
      "colors", "radius", "num_objects", "shape_kind")}) == [None]


def test_stage1_heldout_numbers_on_the_trained_workdir(trained_workdir, shapes_data_dir):
  model = sampling.load(trained_workdir)
  videos = np.stack([_example(s)["video"] for s in range(6)]).astype(np.float32) / 127.5 - 1
  out = demo_eval.stage1_heldout(model, videos)
  target = videos[:, 1:]
  copy = np.broadcast_to(videos[:, :1], target.shape)
  expected_copy = np.mean(10 * np.log10(1 / np.mean(((copy - target) / 2) ** 2, axis=(1, 2, 3, 4))))
  assert out["psnr_copy_x0"] == pytest.approx(expected_copy, abs=1e-3)
  assert out["psnr_temporal_mean"] > out["psnr_copy_x0"]  # The mean frame knows the future.
  assert out["num_videos"] == 6 and np.isfinite(out["psnr"]) and out["z_use"] > 0


class _ReplayModel:
  """transfer() returns B's own real future, sample() holds B's x_0: known displacements."""
  control_is_optional = True

  def __init__(self, videos):
    self.futures = np.roll(videos, -1, axis=0)[:, 1:]

  def transfer(self, video_a, x0_b, eta_a=None):
    assert eta_a is None  # Optional control: transfer from nu alone.
    return self.futures[:len(video_a)]

  def sample(self, x0, num_samples, seed=0, eta=None):
    return np.repeat(np.asarray(x0)[:, None, None], 16, axis=2)


def test_transfer_errors_compare_displacements_of_source_and_target():
  examples = [_example(s) for s in range(5)]
  videos = np.stack([e["video"] for e in examples]).astype(np.float32) / 127.5 - 1
  clips = {"video": videos, **_meta(examples)}
  clips.pop("positions")
  out = demo_eval.transfer_errors(_ReplayModel(videos), clips)
  pos = np.stack([e["positions"][[0, -1], 0] for e in examples]) * 32  # (N, 2, 2) px.
  d = pos[:, 1] - pos[:, 0]
  d_b = np.roll(d, -1, axis=0)
  assert out["num_videos"] == 5
  assert out["source_displacement_px"] == pytest.approx(np.linalg.norm(d, axis=-1).mean(), abs=0.3)
  # A static sample of B misses A's whole displacement; B's own motion misses by |d_B - d_A|.
  assert out["fresh_sample_error_px"] == pytest.approx(out["source_displacement_px"], abs=1e-6)
  assert out["displacement_error_px"] == pytest.approx(
      np.linalg.norm(d_b - d, axis=-1).mean(), abs=0.3)


class _ControlModel:
  """Optional control: with eta it replays the clip's real future, without it holds x_0."""
  control_is_optional = True
  step = 7

  def __init__(self, videos):
    self.futures = {v[0].tobytes(): v[1:] for v in videos}

  def sample(self, x0, num_samples, temperature=1.0, seed=0, eta=None, prior="cinn"):
    x0 = np.asarray(x0)
    if eta is None or prior != "cinn":
      return np.repeat(x0[:, None, None], 16, axis=2).repeat(num_samples, axis=1)
    return np.stack([self.futures[x.tobytes()] for x in x0])[:, None].repeat(num_samples, 1)


def test_optional_control_is_scored_without_and_with_eta(tmp_path):
  from i2v_flax import config_lib
  config = config_lib.load_config("configs/shapes.py:tiny")
  with config.unlocked():
    config.eval.metrics = ("shapes",)
    config.eval.num_sample_sets = 1
    config.eval.div_num_samples = 2
  examples = [_example(s) for s in range(6)]
  videos = np.stack([e["video"] for e in examples]).astype(np.float32) / 127.5 - 1
  meta = _meta(examples)
  eta = np.concatenate([meta["positions"][:, -1, 0], np.zeros((6, 2))], 1).astype(np.float32)
  clips = {"video": videos, "eta": eta, **meta}
  out = demo_eval.score_methods(config, str(tmp_path), _ControlModel(videos), clips)
  assert set(out) == {"cinn", "cinn + eta", "w/o cINN", "static"}
  # Given eta, the fake follows it exactly: control error ~0 (tracker: +-0.25 px on squares);
  # without eta it holds x_0, exactly as far from the target as the static baseline.
  assert out["cinn + eta"]["shapes/final_pos_error"] < 0.4
  assert out["cinn"]["shapes/final_pos_error"] == pytest.approx(
      out["static"]["shapes/final_pos_error"])
  assert out["static"]["shapes/final_pos_error"] > 3.0


class _RollToEtaModel:
  """Sends object 0 to eta by rolling x_0 (whole pixels) in every frame; `follow=False` holds x_0."""

  def __init__(self, starts, follow=True):
    self.starts, self.follow = starts, follow  # {x_0 bytes: object 0's start (x, y) in px}.

  def sample(self, x0, num_samples, seed=0, eta=None):
    out = []
    for image, e in zip(np.asarray(x0), np.asarray(eta)):
      shift = np.round(e[:2] * 32 - self.starts[image.tobytes()]).astype(int) * self.follow
      out.append(np.repeat(np.roll(image, (shift[1], shift[0]), axis=(0, 1))[None], 16, 0))
    return np.stack(out)[:, None].repeat(num_samples, 1)


def test_control_to_corners_scores_a_follower_near_zero_and_a_static_model_at_the_distance():
  from i2v_flax import config_lib
  config = config_lib.load_config("configs/shapes.py:tiny")
  examples = [_example(s) for s in range(3)]
  videos = np.stack([e["video"] for e in examples]).astype(np.float32) / 127.5 - 1
  meta = _meta(examples)
  eta = np.concatenate([meta["positions"][:, -1, 0], np.zeros((3, 2))], 1).astype(np.float32)
  clips = {"video": videos, "eta": eta, **meta}
  starts = {v[0].tobytes(): p[0, 0] * 32 for v, p in zip(videos, meta["positions"])}
  follow = demo_eval.control_to_corners(config, _RollToEtaModel(starts), clips)
  still = demo_eval.control_to_corners(config, _RollToEtaModel(starts, follow=False), clips)
  assert follow["num_x0"] == still["num_x0"] == 3
  assert follow["found_fraction"] == still["found_fraction"] == 1.0
  assert follow["final_pos_error_px"] < 1.0  # Whole-pixel rolls: <= 0.71 px, tracker +-0.25.
  assert still["start_to_target_px"] > 5  # Reachable targets: mean speed x 16 frames away.
  assert still["final_pos_error_px"] == pytest.approx(still["start_to_target_px"], abs=0.5)
