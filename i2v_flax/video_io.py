"""Reading user images/videos and writing GIF/MP4 grids, robustly and atomically.

Users hand us whatever they have (RGBA PNGs, grayscale JPEGs, palette GIFs, MP4s, folders of
frames, any size); we convert to RGB at the model's resolution and say so. Outputs are written to
a temporary file in the destination folder and renamed (or, for gs:// and other remote
destinations, copied in one object write), so an interrupted run never leaves a half-written GIF
that looks valid.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence

import imageio.v3 as iio
import numpy as np
from PIL import Image

from i2v_flax import errors, paths

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
VIDEO_EXTENSIONS = (".gif", ".mp4", ".avi", ".mov", ".webm", ".mkv")


class MediaError(errors.InvalidInput):
  """An input image/video that cannot be used; the message says why and what to do."""


def _to_rgb_uint8(frame: np.ndarray, source: str) -> np.ndarray:
  """Any PIL-compatible frame (gray, gray+alpha, RGB, RGBA, palette, 16-bit) to RGB uint8."""
  frame = np.asarray(frame)
  if frame.dtype != np.uint8:
    if np.issubdtype(frame.dtype, np.floating):
      hi = 1.0 if frame.max(initial=0) <= 1.0 else 255.0
      frame = np.clip(frame / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
    else:
      frame = (frame.astype(np.float64) / np.iinfo(frame.dtype).max * 255 + 0.5).astype(np.uint8)
  if frame.ndim == 2:
    return np.repeat(frame[..., None], 3, axis=-1)
  if frame.ndim != 3:
    raise MediaError(f"{source}: expected an image of shape (H, W[, C]), got {frame.shape}.")
  channels = frame.shape[-1]
  if channels == 1:
    return np.repeat(frame, 3, axis=-1)
  if channels == 2:  # Gray + alpha: composite on black like RGBA below.
    gray = frame[..., :1].astype(np.float32) * (frame[..., 1:2] / 255.0)
    return np.repeat(gray.round().astype(np.uint8), 3, axis=-1)
  if channels == 4:
    rgb = frame[..., :3].astype(np.float32) * (frame[..., 3:4] / 255.0)
    return rgb.round().astype(np.uint8)
  if channels == 3:
    return frame
  raise MediaError(f"{source}: unsupported number of channels {channels}.")


def resize_frames(frames: np.ndarray, resolution: int | None, source: str,
                  warn: bool = True) -> np.ndarray:
  """Resize (T, H, W, 3) uint8 to (T, R, R, 3): centre-crop to square, then bicubic."""
  _, h, w, _ = frames.shape
  if resolution is None or (h, w) == (resolution, resolution):
    return frames
  if warn:
    warnings.warn(f"{source}: frames are {h}x{w}; centre-cropped to a square and resized to "
                  f"{resolution}x{resolution} for the model.", stacklevel=3)
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  out = [np.asarray(Image.fromarray(f[top:top + side, left:left + side]).resize(
      (resolution, resolution), Image.BICUBIC)) for f in frames]
  return np.stack(out)


def read_image(path: str, resolution: int | None) -> np.ndarray:
  """An image file as (R, R, 3) uint8 (native size if resolution is None), with warnings."""
  if not os.path.isfile(path):
    raise MediaError(f"Image {path!r} does not exist. Fix: pass the path of a PNG/JPEG file.")
  try:
    with Image.open(path) as img:
      img.seek(0)
      mode_note = img.mode
      frame = np.asarray(img.convert("RGBA" if "A" in img.mode or img.mode == "P" else "RGB"))
  except Exception as e:  # PIL raises many types for corrupt files.
    raise MediaError(f"Cannot read image {path!r} ({type(e).__name__}: {e}). "
                     "Fix: pass a valid PNG/JPEG/BMP/WebP/TIFF/GIF file.") from e
  if mode_note not in ("RGB",):
    warnings.warn(f"{path}: converted image mode {mode_note} to RGB.", stacklevel=2)
  return resize_frames(_to_rgb_uint8(frame, path)[None], resolution, path)[0]


def read_video(path: str, resolution: int | None, max_frames: int | None = None) -> np.ndarray:
  """A GIF/MP4/... file or a folder of frame images as (T, R, R, 3) uint8."""
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
      raise MediaError(f"Folder {path!r} has no image frames ({', '.join(IMAGE_EXTENSIONS)}).")
    names = names[:max_frames] if max_frames else names
    frames = [read_image_raw(os.path.join(path, n)) for n in names]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
      raise MediaError(f"Frames in {path!r} have different sizes {sorted(shapes)}.")
    video = np.stack(frames)
  else:
    if not os.path.isfile(path):
      raise MediaError(f"Video {path!r} does not exist. Fix: pass a GIF/MP4 file or a folder "
                       "of frames.")
    try:
      raw = iio.imread(path, index=None)
    except Exception as e:
      raise MediaError(f"Cannot read video {path!r} ({type(e).__name__}: {e}). Fix: pass a "
                       "GIF, an MP4 (needs the imageio-ffmpeg package) or a folder of frames.") from e
    raw = np.asarray(raw)
    if raw.ndim in (2, 3):  # A single still frame (H, W[, C]).
      raw = raw[None]
    if max_frames:
      raw = raw[:max_frames]
    video = np.stack([_to_rgb_uint8(f, path) for f in raw])
  if video.shape[0] < 2:
    raise MediaError(f"{path!r} has {video.shape[0]} frame(s); a video needs at least 2.")
  return resize_frames(video, resolution, path)


def read_image_raw(path: str) -> np.ndarray:
  """One frame as RGB uint8 at its own size (for folders of frames)."""
  try:
    with Image.open(path) as img:
      return _to_rgb_uint8(np.asarray(img.convert("RGBA")), path)
  except Exception as e:
    raise MediaError(f"Cannot read frame {path!r} ({type(e).__name__}: {e}).") from e


def to_uint8(video: np.ndarray) -> np.ndarray:
  """Model output in [-1, 1] to uint8."""
  return np.clip((np.asarray(video, np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def to_model_range(frames_uint8: np.ndarray) -> np.ndarray:
  """uint8 frames to float32 in [-1, 1]."""
  return np.asarray(frames_uint8, np.float32) / 127.5 - 1.0


def grid(videos: np.ndarray, pad: int = 1) -> np.ndarray:
  """(rows, cols, T, H, W, 3) uint8 -> (T, rows*(H+pad)+pad, cols*(W+pad)+pad, 3) on white."""
  rows, cols, t, h, w, c = videos.shape
  out = np.full((t, rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
  for r in range(rows):
    for k in range(cols):
      y, x = pad + r * (h + pad), pad + k * (w + pad)
      out[:, y:y + h, x:x + w] = videos[r, k]
  return out


def atomic_path(path: str) -> contextlib.AbstractContextManager[str]:
  """Yield a local temporary path that becomes `path` (local or gs://) only if the block
  succeeds (`paths.atomic_local`)."""
  return paths.atomic_local(path)


def write_video(path: str, frames: np.ndarray, fps: float = 8.0, scale: int = 1) -> str:
  """Write (T, H, W, 3) uint8 as GIF (looping) or MP4, atomically; returns the path."""
  frames = np.asarray(frames)
  if frames.dtype != np.uint8:
    frames = to_uint8(frames)
  if scale > 1:
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
  ext = os.path.splitext(path)[1].lower()
  with atomic_path(path) as tmp:
    if ext == ".gif":
      iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    elif ext == ".mp4":
      h, w = frames.shape[1:3]
      frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))  # yuv420p needs even.
      iio.imwrite(tmp, frames, extension=".mp4", fps=fps, codec="libx264",
                  macro_block_size=1)
    else:
      raise MediaError(f"Unsupported output format {ext!r} for {path!r}; use .gif or .mp4.")
  return path


def save_npy(path: str, array: np.ndarray) -> str:
  """np.save atomically."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.save(f, array)
  return path


def frames_row(x0: np.ndarray, samples: Sequence[np.ndarray]) -> np.ndarray:
  """Stack [x0 held still | sample_1 | ...] as (1, cols, T, H, W, 3) for `grid`."""
  t = samples[0].shape[0]
  return np.stack([np.repeat(x0[None], t, 0), *samples])[None]


def video_grid(columns: Sequence[np.ndarray], max_rows: int = 4, pad: int = 1) -> np.ndarray:
  """Columns of videos (B, T, H, W, 3) in [-1, 1] -> one (T, H', W', 3) uint8 grid video.

  Row i shows sample i of every column side by side (e.g. [input | reconstruction | sample]).
  Columns with fewer frames hold their last frame.
  """
  cols = [np.asarray(c)[:max_rows] for c in columns]
  t = max(c.shape[1] for c in cols)
  cols = [np.concatenate([c, np.repeat(c[:, -1:], t - c.shape[1], axis=1)], axis=1) for c in cols]
  return grid(to_uint8(np.stack(cols, axis=1)), pad=pad)
