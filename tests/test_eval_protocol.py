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


def test_baselines_are_scored_like_the_model(run):
  config, _, results = run
  static, noise = results["methods"]["static"], results["methods"]["w/o cINN"]
  real = protocol.load_test_clips(config)["video"].astype(np.float64)
  x0_only = np.repeat(real[:, :1], 16, axis=1)  # bair's reference alignment: [x_0, x_0 x 15].
  want_fvd = fvd_lib.fvd_from_features(_cheap_features(real[:, :16]), _cheap_features(x0_only))
  np.testing.assert_allclose(static["fvd"]["first"], want_fvd, rtol=1e-9)
  np.testing.assert_allclose(static["lpips"]["mean"], np.abs(real[:, :16] - x0_only).mean(),
                             rtol=1e-6)  # The stand-in LPIPS is the mean |difference|.
  assert len(static["fvd"]["values"]) == 1  # Deterministic: one set.
  assert static["shapes/final_pos_error"]["mean"] > 3.0  # The object never leaves x_0's spot.
  assert noise["shapes/found_fraction"]["mean"] < 0.5
  assert noise["lpips"]["mean"] > static["lpips"]["mean"]
  assert noise["div_vgg"]["mean"] > 0.1


def test_writes_json_and_markdown(run):
  _, workdir, results = run
  with open(os.path.join(workdir, "eval", "7.json")) as f:
    assert json.load(f) == json.loads(json.dumps(results))
  assert results["protocol"] == "reference" and results["num_clips"] == 8
  assert results["alignment"] == {"protocol": "reference",
                                  "fvd_dtfvd": "[x_0, g_1..g_15] vs real x_0..x_15",
                                  "lpips_fid": "[x_0, g_1..g_15] vs real x_0..x_15"}
  with open(os.path.join(workdir, "eval", "7.md")) as f:
    md = f.read()
  assert "| metric | cinn | w/o cINN | static |" in md and "protocol 'reference'" in md
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
  assert all(np.isfinite(v) for v in cinn["shapes/bg_psnr"]["values"])


# Which frames each metric compares (SPEC §6, alignment.py): frame labels per (dataset, protocol).
_X = lambda a, b: [f"x{t}" for t in range(a, b)]
_G = lambda a, b: [f"g{t}" for t in range(a, b)]
_ALIGNMENTS = {
    ("bair", "reference"): ((_X(0, 16), ["x0"] + _G(1, 16)), (_X(0, 16), ["x0"] + _G(1, 16))),
    ("iper", "reference"): ((_X(0, 17), ["x0"] + _G(1, 17)), (_X(0, 17), ["x0"] + _G(1, 17))),
    ("landscape", "reference"): ((_X(0, 16), _G(1, 17)), (_X(0, 16), _G(1, 17))),
    ("dtdb", "reference"): ((_X(0, 16), _G(1, 17)), (_X(0, 16), _G(1, 17))),
    ("bair", "aligned"): ((_X(0, 16), ["x0"] + _G(1, 16)), (_X(1, 17), _G(1, 17))),
    ("iper", "aligned"): ((_X(0, 17), ["x0"] + _G(1, 17)), (_X(1, 17), _G(1, 17))),
    ("landscape", "aligned"): ((_X(1, 17), _G(1, 17)), (_X(1, 17), _G(1, 17))),
}


def _labels(videos):
  """Frame t of a real clip holds t / 100, generated frame i holds -0.5 - i / 100."""
  v = np.asarray(videos, np.float64)[0].mean(axis=(1, 2, 3))
  return [f"x{round(x * 100)}" if x >= 0 else f"g{round((-x - 0.5) * 100)}" for x in v]


@pytest.mark.parametrize("dataset,proto", sorted(_ALIGNMENTS))
def test_metrics_compare_the_protocols_frames(dataset, proto, monkeypatch):
  seen = {}
  def record(key):
    def fn(videos, *args, **kwargs):
      seen.setdefault(key, []).append(_labels(videos))
      return _cheap_features(videos).reshape(len(videos), -1)
    return fn
  monkeypatch.setattr(fvd_lib, "fvd_features", record("fvd"))
  monkeypatch.setattr(protocol.dtfvd_lib, "dtfvd_features", record("dtfvd"))
  monkeypatch.setattr(protocol.fid_lib, "fid_features", record("fid"))
  monkeypatch.setattr(lpips_metrics, "lpips_video", lambda a, b: seen.setdefault(
      "lpips", []).extend([_labels(a), _labels(b)]) or 0.0)
  config = config_lib.base_config()
  config.data.name, config.eval.protocol = dataset, proto
  shape = (3, 1, 4, 4, 3)
  real = np.concatenate([np.full(shape, t / 100) for t in range(17)], axis=1)
  gen = np.concatenate([np.full(shape, -0.5 - i / 100) for i in range(1, 17)], axis=1)
  protocol.evaluate_method("m", gen[:, None].astype(np.float32), {"video": real},
                           ("fvd", "lpips", "fid", "dtfvd"), 1, 1,
                           {"fid_vars": None, "dtfvd_model": None}, config)
  (real_vid, fake_vid), (real_frm, fake_frm) = _ALIGNMENTS[(dataset, proto)]
  assert seen["fvd"] == [real_vid, fake_vid]
  assert seen["dtfvd"] == [real_vid[:16], fake_vid[:16]]  # The DTDB I3D takes 16 frames.
  assert seen["lpips"] == [real_frm, fake_frm] and seen["fid"] == [real_frm, fake_frm]
