"""The eval protocol end to end on tiny shapes data with injected generators (no trained model).

I3D features, LPIPS and DIV's networks are swapped for cheap stand-ins (VGG/I3D cost minutes on a shared CPU):
this test checks the protocol's plumbing (clip assembly, x_0 + 15 frames for FVD, sample sets,
baselines, files) and the real shapes metrics; test_eval_i3d / _perceptual check the networks.
"""

import json
import os
import types

import numpy as np
import pytest

from i2v_flax import config_lib
from i2v_flax.evaluation import diversity
from i2v_flax.evaluation import fvd as fvd_lib
from i2v_flax.evaluation import lpips_metrics
from i2v_flax.evaluation import protocol


def _cheap_features(videos, batch_size=8):
  v = np.asarray(videos, np.float64)
  return np.concatenate([v.mean(axis=(1, 2, 3)), v.std(axis=(1, 2, 3)),
                         np.abs(np.diff(v, axis=1)).mean(axis=(1, 2, 3))], axis=1)


@pytest.fixture(scope="module")
def run(shapes_data_dir, tmp_path_factory):
  mp = pytest.MonkeyPatch()
  mp.setattr(fvd_lib, "fvd_features", _cheap_features)
  mp.setattr(lpips_metrics, "lpips_video", lambda a, b: float(np.mean(np.abs(
      a.astype(np.float64) - b.astype(np.float64)))))
  pixel_div = lambda samples, *args, **kwargs: float(np.mean(diversity.div_from_features(
      samples.reshape(samples.shape[:2] + (-1,)).astype(np.float64))))
  mp.setattr(diversity, "div_vgg", pixel_div)
  mp.setattr(diversity, "div_i3d", pixel_div)
  config = config_lib.load_config("configs/shapes.py:tiny")
  config.data.data_dir = shapes_data_dir
  config.eval.metrics = ("shapes", "fvd", "lpips", "div_vgg", "div_i3d")
  clips = protocol.load_test_clips(config)
  futures = {c[0].tobytes(): c[1:] for c in clips["video"]}

  def ground_truth(x0, eta, num_samples, seed):  # A perfect model: the real future, S times.
    assert eta is not None and eta.shape == (len(x0), 4)
    future = np.stack([futures[x.tobytes()] for x in x0])
    return np.repeat(future[:, None], num_samples, axis=1)

  def noise(x0, eta, num_samples, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (len(x0), num_samples, 16) + x0.shape[1:]).astype(np.float32)

  workdir = str(tmp_path_factory.mktemp("eval"))
  results = protocol.evaluate(config, workdir, model=types.SimpleNamespace(step=7),
                              generators={"cinn": ground_truth, "w/o cINN": noise})
  mp.undo()
  return config, workdir, results


def test_clips_follow_the_protocol(run):
  config, _, results = run
  assert results["num_videos"] == config.eval.num_videos == 8
  assert set(results["methods"]) == {"cinn", "w/o cINN", "static"}


def test_perfect_generator_scores_perfectly(run):
  m = run[2]["methods"]["cinn"]
  assert len(m["fvd"]["values"]) == run[0].eval.num_sample_sets
  assert m["fvd"]["first"] < 1e-6  # Real x_0 + real frames 1..15 == real frames 0..15.
  assert m["lpips"]["mean"] < 1e-6
  assert m["shapes/final_pos_error"]["mean"] < 1.0
  assert m["shapes/bg_psnr"]["mean"] == 100.0
  assert m["shapes/final_pos_spread"]["mean"] == 0.0  # Identical samples.
  assert m["div_vgg"]["mean"] == m["div_i3d"]["mean"] == 0.0


def test_baselines_are_flagged(run):
  static, noise = run[2]["methods"]["static"], run[2]["methods"]["w/o cINN"]
  assert static["shapes/mean_speed"]["mean"] < 0.05
  assert static["shapes/final_pos_error"]["mean"] > 3.0
  assert static["fvd"]["first"] > 1e-5  # Small on the slow single-object demo data, not 0.
  assert len(static["fvd"]["values"]) == 1  # Deterministic: one set.
  assert noise["shapes/found_fraction"]["mean"] < 0.5
  assert noise["lpips"]["mean"] > static["lpips"]["mean"]
  assert noise["div_vgg"]["mean"] > 0.1 and static["div_vgg"]["mean"] == 0.0


def test_writes_json_and_markdown(run):
  _, workdir, results = run
  with open(os.path.join(workdir, "eval", "7.json")) as f:
    assert json.load(f) == json.loads(json.dumps(results))
  with open(os.path.join(workdir, "eval", "7.md")) as f:
    md = f.read()
  assert "| metric | cinn | w/o cINN | static |" in md
  assert "| shapes/final_pos_error |" in md and "| fvd |" in md and "| fvd (first set) |" in md
  assert not [p for p in os.listdir(os.path.join(workdir, "eval")) if p.startswith(".tmp")]


def test_unknown_metric_is_rejected():
  config = config_lib.load_config("configs/shapes.py:tiny")
  config.eval.metrics = ("fvd", "psnr")
  with pytest.raises(ValueError, match="psnr"):
    protocol.evaluate(config, "/nonexistent")


def test_evaluate_a_trained_workdir(trained_workdir, shapes_data_dir, tmp_path):
  """The real path: sampling.load, the model's cINN and w/o-cINN samplers, step-named files."""
  import shutil
  workdir = str(tmp_path / "w")
  shutil.copytree(trained_workdir, workdir)
  config = config_lib.load_config("configs/shapes.py:tiny")
  config.data.data_dir = shapes_data_dir
  config.eval.metrics = ("shapes",)
  results = protocol.evaluate(config, workdir)
  assert results["step"] > 0
  assert os.path.exists(os.path.join(workdir, "eval", f"{results['step']}.json"))
  cinn = results["methods"]["cinn"]
  assert len(cinn["shapes/bg_psnr"]["values"]) == config.eval.num_sample_sets
  assert results["methods"]["static"]["shapes/mean_speed"]["mean"] == 0.0
