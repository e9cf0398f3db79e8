"""Oracle shapes metrics: near-perfect on ground truth, failures flagged on a static video."""

import numpy as np
import pytest

from i2v_flax.data.shapes import generate_example
from i2v_flax.evaluation import shapes_metrics as sm

RES = 32


@pytest.fixture(scope="module")
def clips():
  exs = [generate_example(np.random.default_rng(seed), RES, 17) for seed in range(16)]
  meta = {k: np.stack([e[k] for e in exs]) for k in exs[0] if k != "video"}
  return np.stack([e["video"] for e in exs]), meta


def _disc_video(centres_px, res=RES, radius_px=4.0, color=(230, 25, 25)):
  """Grey frames with one disc per frame at the given (x, y) pixel-centre coordinates."""
  c = np.arange(res) + 0.5
  frames = np.full((len(centres_px), res, res, 3), 128, np.uint8)
  for f, (x, y) in enumerate(centres_px):
    frames[f][(c[None, :] - x) ** 2 + (c[:, None] - y) ** 2 <= radius_px**2] = color
  meta = {"colors": np.array([[color, (0, 0, 0), (0, 0, 0)]], np.uint8),
          "radius": np.array([[radius_px / res, 0, 0]], np.float32),
          "num_objects": np.array([1]), "shape_kind": np.zeros((1, 3), np.int32)}
  return frames, meta


def test_tracker_recovers_subpixel_centres_and_reports_missing():
  centres = [(10.3, 12.7), (15.55, 20.1), (22.0, 8.45)]
  video, meta = _disc_video(centres)
  video[2] = 128  # Object gone in the last frame.
  pos, found = sm.track_objects(video[None], meta)
  np.testing.assert_array_equal(found[0, :, 0], [True, True, False])
  assert np.isnan(pos[0, 2, 0]).all()
  err = np.linalg.norm(pos[0, :2, 0] * RES - np.array(centres[:2]), axis=-1)
  assert err.max() < 0.15
  # Unused slots are never "found".
  assert not found[0, :, 1:].any()
  # Uniform noise has ~5% of pixels within tolerance of any colour, but they form no object.
  noise = np.random.default_rng(0).integers(0, 256, video.shape, dtype=np.uint8)
  assert not sm.track_objects(noise[None], meta)[1].any()


def test_float_input_matches_uint8(clips):
  video, meta = clips
  sub = {k: v[:2] for k, v in meta.items()}
  as_float = video[:2].astype(np.float32) / 127.5 - 1.0
  np.testing.assert_allclose(sm.track_objects(as_float, sub)[0],
                             sm.track_objects(video[:2], sub)[0])


def test_ground_truth_scores_near_perfect(clips):
  video, meta = clips
  pos, found = sm.track_objects(video, meta)
  px = np.linalg.norm(pos - meta["positions"], axis=-1) * RES
  assert np.nanmean(px) < 0.3
  m = sm.shapes_metrics(video, video, meta)
  assert m["found_fraction"] > 0.95
  assert m["final_pos_error"] < 1.0
  assert m["bg_psnr"] == sm.PSNR_CAP
  assert m["motion_fd"] < 1e-9
  assert m["speed_std"] == m["speed_std_real"] < 0.3  # Squares' quantisation floor included.
  assert 0.6 < m["mean_speed"] < 1.6  # The generator's speed range at 32^2.
  # Discs alone (squares' edges pin the centre only to +-0.25 px) stay under 0.1 px/frame.
  exs = [generate_example(np.random.default_rng(seed), RES, 17) for seed in range(100, 160)]
  exs = [e for e in exs if e["num_objects"] == 1 and e["shape_kind"][0] == 0][:4]
  assert len(exs) == 4
  sub = {k: np.stack([e[k] for e in exs]) for k in exs[0] if k != "video"}
  discs = np.stack([e["video"] for e in exs])
  assert sm.shapes_metrics(discs, discs, sub)["speed_std"] < 0.1


def test_static_video_is_flagged(clips):
  video, meta = clips
  static = np.repeat(video[:, :1], video.shape[1], axis=1)
  m = sm.shapes_metrics(video, static, meta)
  assert m["mean_speed"] < 0.05
  assert m["final_pos_error"] > 5.0
  assert m["bg_psnr"] < 40.0  # The real background drifted; the static one did not.
  assert m["motion_fd"] > 0.5


def test_final_error_is_measured_against_eta(clips):
  video, meta = clips
  eta = np.concatenate([meta["positions"][:, -1, 0] + np.array([3.0, -4.0]) / RES,
                        np.zeros((len(video), 2))], axis=1)
  m = sm.shapes_metrics(video, video, meta, eta=eta)
  assert 4.0 < m["final_pos_error"] < 6.0  # |(3, -4)| = 5 px, plus tracker noise.


def test_final_position_spread():
  base = [(10.0 + t, 12.0) for t in range(5)]
  a, meta = _disc_video(base)
  b, _ = _disc_video([(x, y + 4.0) for x, y in base])  # Same until a 4 px vertical offset.
  same = np.stack([a, a])[None]
  assert sm.final_position_spread(same, meta) < 1e-9
  spread = sm.final_position_spread(np.stack([a, b])[None], meta)
  assert abs(spread - 1.0) < 0.1  # std over 2 samples: x 0, y 2 px -> mean 1 px.


def test_report_metrics_on_a_pipeline_style_batch(clips):
  video, meta = clips
  batch = {"video": video[:4].astype(np.float32) / 127.5 - 1.0, "eta": np.zeros((4, 4)),
           **{k: v[:4] for k, v in meta.items()}}
  samples = np.repeat(batch["video"][:, None, 1:], 2, axis=1)  # The real future, twice.
  m = sm.report_metrics(batch, samples, RES)
  assert m["final_pos_error"] < 1.0  # Against the real final position, not the zero eta.
  assert m["final_pos_spread"] == 0.0
  with pytest.raises(ValueError, match="64"):
    sm.report_metrics(batch, samples, 64)
