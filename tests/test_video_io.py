"""User media in, grids out: every image mode converts, bad files fail cleanly, writes are atomic."""

import os

import numpy as np
import pytest
from PIL import Image

from i2v_flax import video_io


def _save(tmp_path, name, array, mode=None):
  path = str(tmp_path / name)
  img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
  img.save(path)
  return path


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16"])
def test_read_image_any_mode_becomes_rgb_at_resolution(tmp_path, mode):
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
  path = _save(tmp_path, "im.png", base, mode)
  with pytest.warns(UserWarning, match="resized to 32x32"):
    img = video_io.read_image(path, 32)
  assert img.shape == (32, 32, 3) and img.dtype == np.uint8


def test_read_image_keeps_pixels_when_no_resize_needed(tmp_path):
  base = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  path = _save(tmp_path, "im.png", base)
  np.testing.assert_array_equal(video_io.read_image(path, 16), base)


def test_rgba_is_composited_on_black(tmp_path):
  rgba = np.zeros((8, 8, 4), np.uint8)
  rgba[..., :3] = 200
  rgba[:4, ..., 3] = 255  # Top half opaque, bottom transparent.
  img = video_io.read_image(_save(tmp_path, "a.png", rgba), 8)
  assert (img[:4] == 200).all() and (img[4:] == 0).all()


def test_missing_and_corrupt_files_raise_clear_errors(tmp_path):
  with pytest.raises(video_io.MediaError, match="does not exist"):
    video_io.read_image(str(tmp_path / "nope.png"), 32)
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"not an image at all")
  with pytest.raises(video_io.MediaError, match="Cannot read image"):
    video_io.read_image(str(bad), 32)
  with pytest.raises(video_io.MediaError, match="Cannot read video"):
    video_io.read_video(str(bad), 32)


@pytest.mark.parametrize("ext", [".gif", ".mp4"])
def test_video_roundtrip(tmp_path, ext):
  t = np.linspace(0, 1, 12)[:, None, None, None]
  frames = (np.ones((12, 16, 16, 3)) * t * 255).astype(np.uint8)
  path = video_io.write_video(str(tmp_path / f"v{ext}"), frames, fps=8)
  back = video_io.read_video(path, 16)
  assert back.shape == frames.shape
  tol = 2 if ext == ".gif" else 12  # GIF palette vs lossy H.264.
  assert np.abs(back.astype(int) - frames.astype(int)).mean() <= tol


def test_folder_of_frames(tmp_path):
  for i in range(5):
    _save(tmp_path, f"f{i:02d}.png", np.full((20, 20, 3), i * 40, np.uint8))
  video = video_io.read_video(str(tmp_path), 20)
  assert video.shape == (5, 20, 20, 3)
  assert [int(f[0, 0, 0]) for f in video] == [0, 40, 80, 120, 160]


def test_failed_write_leaves_nothing(tmp_path):
  path = str(tmp_path / "out.gif")
  with pytest.raises(video_io.MediaError):
    video_io.write_video(str(tmp_path / "out.xyz"), np.zeros((2, 4, 4, 3), np.uint8))
  with pytest.raises(RuntimeError):
    with video_io.atomic_path(path) as tmp:
      open(tmp, "wb").write(b"partial")
      raise RuntimeError("interrupted")
  assert os.listdir(tmp_path) == []


def test_grid_layout():
  videos = np.zeros((2, 3, 4, 5, 6, 3), np.uint8)
  videos[1, 2] = 7
  g = video_io.grid(videos, pad=1)
  assert g.shape == (4, 2 * 6 + 1, 3 * 7 + 1, 3)
  assert (g[:, 7:12, 15:21] == 7).all() and (g[:, 0] == 255).all()


def test_model_range_roundtrip():
  u8 = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
  np.testing.assert_array_equal(video_io.to_uint8(video_io.to_model_range(u8)), u8)
