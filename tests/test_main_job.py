"""The user-facing entry points on a tiny trained workdir: the sampling CLI (including bad
inputs writing nothing) and the main job's report through `python -m i2v_flax.main`. The
notebooks are tested in tests/test_colabs.py."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from i2v_flax import sample as sample_cli
from i2v_flax import video_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def rgba_image(tmp_path):
  rgba = np.random.default_rng(0).integers(0, 256, (50, 70, 4), dtype=np.uint8)
  path = str(tmp_path / "x0.png")
  Image.fromarray(rgba, "RGBA").save(path)
  return path


def test_cli_samples_any_image_to_gif_and_npy(trained_workdir, rgba_image, tmp_path):
  out = str(tmp_path / "out" / "grid.gif")
  with pytest.warns(UserWarning, match="resized to 32x32"):
    paths = sample_cli.sample_to_files(trained_workdir, [rgba_image, rgba_image], out,
                                       num_samples=3, eta=["0.5", "0.5", "1", "0"], scale=2)
  frames = np.load(paths["frames"])
  assert frames.shape == (2, 3, 17, 32, 32, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(frames[0, :, 0], frames[1, :, 0])  # x_0 leads every clip.
  grid = video_io.read_video(paths["grid"], None)
  assert grid.shape[0] == 17 and grid.shape[1] == 2 * (2 * 33 + 1)


def test_cli_transfer_and_long_video(trained_workdir, rgba_image, tmp_path):
  clip = np.random.default_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
  src = video_io.write_video(str(tmp_path / "a.gif"), clip)
  t = sample_cli.sample_to_files(trained_workdir, [rgba_image], str(tmp_path / "t.mp4"),
                                 transfer_from=src, scale=1)
  assert np.load(t["frames"]).shape == (1, 1, 17, 32, 32, 3)
  long = sample_cli.sample_to_files(trained_workdir, [rgba_image], str(tmp_path / "l.gif"),
                                    num_samples=2, length=24, scale=1)
  assert np.load(long["frames"]).shape == (1, 2, 25, 32, 32, 3)


@pytest.mark.parametrize("problem", ["missing_image", "corrupt_video", "short_video", "bad_ext"])
def test_cli_bad_input_writes_nothing(trained_workdir, rgba_image, tmp_path, problem):
  out_dir = tmp_path / "out"
  out_dir.mkdir()
  kwargs = dict(workdir=trained_workdir, images=[rgba_image], out=str(out_dir / "o.gif"))
  if problem == "missing_image":
    kwargs["images"] = [str(tmp_path / "nope.png")]
  elif problem == "corrupt_video":
    (tmp_path / "bad.mp4").write_bytes(b"\x00garbage")
    kwargs["transfer_from"] = str(tmp_path / "bad.mp4")
  elif problem == "short_video":
    kwargs["transfer_from"] = video_io.write_video(str(tmp_path / "s.gif"),
                                                   np.zeros((5, 8, 8, 3), np.uint8))
  else:
    kwargs["out"] = str(out_dir / "o.png")
  with pytest.raises(video_io.MediaError):
    sample_cli.sample_to_files(**kwargs)
  assert os.listdir(out_dir) == []


def test_cli_process_reports_errors_without_traceback(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "i2v_flax.sample", f"--workdir={tmp_path}/none",
                         f"--image={tmp_path}/x.png"], capture_output=True, text=True, cwd=REPO)
  assert proc.returncode != 0
  assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_main_job_resumes_and_writes_the_report(trained_workdir, shapes_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_workdir, workdir)
  proc = subprocess.run(
      [sys.executable, "-m", "i2v_flax.main", "--config=configs/shapes.py:tiny",
       f"--workdir={workdir}", f"--config.data.data_dir={shapes_data_dir}"],
      capture_output=True, text=True, cwd=REPO, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = os.path.join(workdir, "report")
  for name in ("samples.gif", "transfer.gif", "control.gif", "long_32_frames.gif"):
    assert os.path.getsize(os.path.join(report, name)) > 0, name
  with open(os.path.join(report, "summary.json")) as f:
    summary = json.load(f)
  assert summary["stage2_step"] == 4
  assert "nll" in " ".join(summary["final_losses"]["stage2"])
  assert summary["final_losses"]["stage1"]
  assert set(summary["seconds"]) >= {"prepare_data", "train_stage1", "train_stage2", "report"}
  assert "mean_speed" in summary["shapes_metrics"]

