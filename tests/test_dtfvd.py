"""DTFVD: the DTDB I3D against the reference fixture, its 224² resize, the metric end to end, and
the errors a user meets (missing weights, torch absent, a wrong checkpoint).

I3D at 224² is seconds per batch on a CPU: every forward here uses the fixture's batch shape
(2 clips x 16 frames), so the network compiles once per session.
"""

import os
import sys

import jax
import numpy as np
import pytest

from i2v_flax import config_lib
from i2v_flax.convert import evaluation as convert_eval
from i2v_flax.convert import fixtures
from i2v_flax.evaluation import dtfvd, protocol

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "reference")


@pytest.fixture(scope="module")
def fixture():
  return fixtures.load_fixture(FIXTURES, "dtfvd_i3d")


def _clips(fixture) -> np.ndarray:
  return np.transpose(fixture.inputs["clip"], (0, 1, 3, 4, 2))  # (B,T,C,H,W) -> (B,T,H,W,C).


def test_fixture_reproduced_within_tolerance(fixture):
  runner = convert_eval.PARITY_RUNNERS[fixture.meta["reference"]["class"]]
  out = runner(fixture)
  for spec in fixture.meta["outputs"]:
    name = spec["name"]
    assert out[name].shape == fixture.output(name).shape, name
    np.testing.assert_allclose(out[name], fixture.output(name), rtol=0,
                               atol=fixture.tolerance(name), err_msg=name)


def test_resize_to_224_matches_the_reference_checksum(fixture):
  x = np.asarray(jax.jit(dtfvd.preprocess)(_clips(fixture)), np.float64)
  assert x.shape == (2, 16, 224, 224, 3)
  ref = fixture.meta["input_224_checksum"]
  # float32 summation noise is ~2e-4 on the sum; a half-pixel or TF1 resize moves it by > 100
  # and the sum of squares by ~5 %.
  assert abs(x.sum() - ref["sum"]) < 1e-2
  assert abs((x * x).sum() - ref["sumsq"]) < 1e-6 * ref["sumsq"]


def test_runner_table_resolves_other_constructor_arguments():
  # A fixture of the same class with other sizes, e.g. InceptionI3D(7, 1), finds the runner.
  runners = convert_eval.PARITY_RUNNERS
  runner = runners["metrics/DTFVD/ID3.py:InceptionI3D(7, 1) (x.pth)"]
  assert runner is convert_eval.run_dtfvd_fixture
  assert "metrics/DTFVD/ID3.py:InceptionI3D(7, 1)" in runners
  assert runners.get("stage1_VAE/modules/decoder.py:Generator") is None
  assert convert_eval.temporal_pool_of("metrics/DTFVD/ID3_32.py:InceptionI3D(18, 1)") == 4


def _save_weights(fixture, tmp_path, monkeypatch) -> str:
  """The fixture's state_dict as a torch checkpoint; without torch, the reader is patched."""
  path = str(tmp_path / "I3D_16.pth.tar")
  try:
    import torch
    torch.save({"state_dict": {k: torch.from_numpy(np.asarray(v))
                               for k, v in fixture.state_dict.items()}}, path)
  except ImportError:
    with open(path, "wb") as f:
      f.write(b"stand-in for a torch checkpoint")
    monkeypatch.setattr(convert_eval, "read_torch_state_dict",
                        lambda p: dict(fixture.state_dict) if p == path else None)
  return path


def test_dtfvd_metric_end_to_end(fixture, tmp_path, monkeypatch):
  config = config_lib.base_config()
  config.eval.metrics = ("dtfvd",)
  config.eval.batch_size = 2
  config.eval.dtfvd_weights = _save_weights(fixture, tmp_path, monkeypatch)
  cache = protocol.load_metric_models(config, ("dtfvd",))
  clips = _clips(fixture)
  real = np.concatenate([clips, clips[:, -1:]], axis=1)  # 17 frames: x_0 + 16.
  samples = clips[:, ::-1][:, None]  # One sample set: the real clips played backwards.
  res = protocol.evaluate_method("cinn", samples, {"video": real}, ("dtfvd",), 1, 2, cache,
                                 config)
  # The protocol's real side is frames 0-15 = the fixture clip: the reference's embedding.
  np.testing.assert_allclose(cache["real_dtfvd"], fixture.output("output/features"), rtol=0,
                             atol=fixture.tolerance("output/features"))
  value = res["dtfvd"]["first"]
  assert np.isfinite(value) and value > 1.0  # Time reversal changes dynamics features.


def test_npz_weights_equal_checkpoint_weights(fixture, tmp_path):
  path = str(tmp_path / "I3D_16.npz")
  np.savez(path, **fixture.state_dict)
  model = dtfvd.load_dtfvd(path)
  assert model.module.num_classes == 18
  ref = convert_eval.dtfvd_variables(fixture.state_dict)
  jax.tree_util.tree_map(np.testing.assert_array_equal, model.variables, ref)


def test_unset_or_missing_weights_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="config.eval.dtfvd_weights is not set"):
    dtfvd.load_dtfvd(None)
  missing = str(tmp_path / "I3D_16.pth.tar")
  with pytest.raises(FileNotFoundError, match="I3D_16.pth.tar.*does not exist"):
    dtfvd.load_dtfvd(missing)
  config = config_lib.load_config("configs/shapes.py:tiny")
  config.eval.metrics = ("dtfvd",)
  with pytest.raises(ValueError, match="dtfvd_weights"):  # Before any sampling.
    protocol.evaluate(config, "/nonexistent")


def test_torch_missing_names_the_extra(tmp_path, monkeypatch):
  path = tmp_path / "I3D_16.pth.tar"
  path.write_bytes(b"x")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError.
  with pytest.raises(ImportError, match=r"pip install -e '\.\[convert\]'"):
    dtfvd.load_dtfvd(str(path))


def test_converter_names_missing_unknown_and_misshapen_keys(fixture):
  sd = dict(fixture.state_dict)
  del sd["Mixed_4c.b2b.bn.running_var"]
  sd["Mixed_4c.b9.conv3d.weight"] = np.zeros((1,))
  with pytest.raises(ValueError, match=r"Mixed_4c\.b2b\.bn\.running_var.*Mixed_4c\.b9"):
    convert_eval.dtfvd_variables(sd)
  sd = dict(fixture.state_dict)
  sd["Mixed_3c.b1b.conv3d.weight"] = np.zeros((192, 100, 3, 3, 3), np.float32)
  with pytest.raises(ValueError, match=r"Mixed_3c\.b1b\.conv3d\.weight.*\(192, 100, 3, 3, 3\)"
                                       r".*\(192, 128, 3, 3, 3\)"):
    convert_eval.dtfvd_variables(sd)


def test_widths_come_from_the_checkpoint(fixture):
  # A narrower checkpoint (other widths, 5 classes) builds a matching network: nothing assumes
  # the published sizes. Only shapes are checked (eval_shape), no forward pass.
  model = dtfvd.DTFVDI3D(num_classes=5, stem_widths=(8, 8, 16),
                         mixed_widths=tuple((4, 4, 8, 2, 4, 4) for _ in dtfvd.MIXED_BLOCKS))
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 16, 224, 224, 3), np.float32))
  torch_kernel = lambda shape: np.zeros(tuple(shape[i] for i in (4, 3, 0, 1, 2)), np.float32)
  sd = {}
  for prefix, unit in convert_eval._torch_units().items():
    node = shapes["params"]
    for p in unit:
      node = node[p]
    kernel = node["Conv_0"]["kernel"].shape
    sd[f"{prefix}.conv3d.weight"] = torch_kernel(kernel)
    for name in ("weight", "bias", "running_mean", "running_var"):
      sd[f"{prefix}.bn.{name}"] = np.ones(kernel[-1], np.float32)
  sd["logits.conv3d.weight"] = torch_kernel(shapes["params"]["logits"]["kernel"].shape)
  sd["logits.conv3d.bias"] = np.zeros((5,), np.float32)
  built = convert_eval.dtfvd_module(sd)
  assert built.num_classes == 5 and built.stem_widths == (8, 8, 16)
  convert_eval.dtfvd_variables(sd, built)
