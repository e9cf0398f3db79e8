"""Converting the authors' release into a workdir: `sampling.load` runs it unchanged and
reproduces the torch fixtures; wrong or missing files fail by name and write nothing.

The release is faked from the fixtures' state_dicts (small widths). torch is not needed: the one
torch reader (`convert.evaluation.read_torch_state_dict`) is replaced by a lookup, except in the
last test, which writes real .pth files when torch is installed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import bair
from i2v_flax.convert import evaluation, release
from i2v_flax.convert.fixtures import load_fixture
from i2v_flax.convert.torch_layout import ConversionError
from reference_state_dicts import cinn_state_dict

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "reference")
FILES = {"encoder": "best_PFVD_ENC.pth.tar", "decoder": "best_PFVD_GEN.pth", "cinn": "cINN.pth",
         "embedder": "Encoder_stage2.pth"}




@pytest.fixture(scope="module")
def state_dicts():
  enc = load_fixture(FIXTURES, "stage1_encoder")
  dec = load_fixture(FIXTURES, "stage1_decoder")
  emb = load_fixture(FIXTURES, "stage2_embedder_in")
  cond = emb.config["z_dim"]
  return {"encoder": enc.state_dict, "decoder": dec.state_dict, "embedder": emb.state_dict,
          "cinn": cinn_state_dict(3, dec.config["z_dim"], cond)}


@pytest.fixture
def fake_release(tmp_path, state_dicts, monkeypatch):
  """A release folder of placeholder .pth files; the torch reader returns the state_dicts."""
  folder = tmp_path / "release"
  folder.mkdir()
  by_name = {}
  for role, name in FILES.items():
    (folder / name).write_bytes(b"placeholder: read through the patched torch reader")
    by_name[name] = dict(state_dicts[role])  # Tests may edit their copy.
  monkeypatch.setattr(evaluation, "read_torch_state_dict",
                      lambda path: dict(by_name[os.path.basename(path)]))
  return folder, by_name


def test_converted_workdir_loads_and_reproduces_torch(fake_release, tmp_path):
  from i2v_flax import sampling
  folder, _ = fake_release
  out = tmp_path / "converted"
  config = release.convert_release(bair.get_config(), str(folder), str(out))
  assert config.stage1.dec_nf == 8 and config.stage1.z_dim == 8  # Read off the files.
  assert config.stage2.embedder == "resnet50" and config.stage2.clamp is None
  model = sampling.load(str(out))
  dec = load_fixture(FIXTURES, "stage1_decoder")
  video = model._decode(model.variables, dec.inputs["x0"].transpose(0, 2, 3, 1), dec.inputs["z"])
  np.testing.assert_allclose(np.asarray(video).transpose(0, 1, 4, 2, 3),
                             dec.output("output/video"), atol=dec.tolerance("output/video"))
  emb = load_fixture(FIXTURES, "stage2_embedder_in")
  c = model.embedder.apply(model.variables["embedder"], emb.inputs["x0"].transpose(0, 2, 3, 1))
  np.testing.assert_allclose(c, emb.output("output/mean"), atol=emb.tolerance("output/mean"))
  samples = model.sample(dec.inputs["x0"][:1].transpose(0, 2, 3, 1), num_samples=1)
  assert samples.shape == (1, 1, 16, 64, 64, 3) and np.all(np.isfinite(samples))


def _nothing_written(tmp_path):
  leftovers = [p for p in os.listdir(tmp_path) if p != "release"]
  assert not leftovers, f"a failed conversion left {leftovers}"


def test_a_missing_file_is_named_and_nothing_is_written(fake_release, tmp_path):
  folder, _ = fake_release
  os.remove(folder / "cINN.pth")
  with pytest.raises(FileNotFoundError, match=r"lacks cINN\{\.pth"):
    release.convert_release(bair.get_config(), str(folder), str(tmp_path / "out"))
  _nothing_written(tmp_path)


def test_a_wrong_shape_is_named_with_both_shapes_and_nothing_is_written(fake_release, tmp_path):
  folder, by_name = fake_release
  by_name["best_PFVD_GEN.pth"]["g_2.norm_0.conv_beta.bias"] = np.zeros(5, np.float32)
  with pytest.raises(ConversionError, match=r"g_2\.norm_0\.conv_beta\.bias: the file has shape "
                     r"\(5,\), the model built from the config expects \(64,\)"):
    release.convert_release(bair.get_config(), str(folder), str(tmp_path / "out"))
  _nothing_written(tmp_path)


def test_an_unknown_key_and_a_swapped_file_fail_by_name(fake_release, tmp_path):
  folder, by_name = fake_release
  by_name["best_PFVD_ENC.pth.tar"]["layer.9.0.conv1.weight"] = np.zeros((1,), np.float32)
  with pytest.raises(ConversionError, match=r"unknown keys: layer\.9\.0\.conv1\.weight"):
    release.convert_release(bair.get_config(), str(folder), str(tmp_path / "out"))
  by_name["best_PFVD_ENC.pth.tar"] = by_name["best_PFVD_GEN.pth"]  # Decoder file as encoder.
  with pytest.raises(ConversionError, match="encoder file lacks 'conv1.weight'"):
    release.convert_release(bair.get_config(), str(folder), str(tmp_path / "out"))
  _nothing_written(tmp_path)


def test_a_config_with_other_upsampling_is_refused(fake_release, tmp_path):
  from configs import landscape
  folder, _ = fake_release
  config = landscape.get_config()
  config.data.resolution = 64  # Files are 64x64 BAIR-style; landscape upsamples to 128.
  with pytest.raises(ConversionError, match="data.resolution is 64"):
    release.convert_release(config, str(folder), str(tmp_path / "out"))


def test_an_existing_workdir_is_not_overwritten(fake_release, tmp_path):
  folder, _ = fake_release
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="--overwrite"):
    release.convert_release(bair.get_config(), str(folder), str(tmp_path / "out"))
  assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_cli_reports_a_missing_release_folder(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "i2v_flax.convert", "--config=configs/bair.py",
                         f"--from={tmp_path / 'nowhere'}", f"--workdir={tmp_path / 'out'}"],
                        capture_output=True, text=True, timeout=300,
                        cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode != 0
  assert "is not a folder" in proc.stderr
  assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_without_torch_the_error_names_the_install_command(tmp_path):
  path = tmp_path / "best_PFVD_GEN.pth"
  path.write_bytes(b"x")
  with pytest.raises(ImportError, match=r"pip install -e '\.\[convert\]'"):
    release.read_state_dict(str(path))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch not installed (pip install -e '.[convert]')")
def test_real_pth_files_written_by_torch_convert(state_dicts, tmp_path):
  import torch
  folder = tmp_path / "release"
  folder.mkdir()
  for role, name in FILES.items():
    torch.save({"epoch": 3, "state_dict": {k: torch.from_numpy(np.asarray(v))
                                           for k, v in state_dicts[role].items()}},
               folder / name)
  release.convert_release(bair.get_config(), str(folder), str(tmp_path / "out"),
                          stages=("stage1",))
  from i2v_flax.train import stage1
  _, variables = stage1.restore_stage1(str(tmp_path / "out"))
  np.testing.assert_array_equal(variables["decoder"]["params"]["out"]["bias"],
                                state_dicts["decoder"]["conv_img.bias"])
