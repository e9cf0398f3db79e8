"""TFDS builders for datasets the user downloads by hand: iper, landscape, dtdb.

They are not redistributable, so the builders read `--config.data.manual_dir`: a folder of videos
(.mp4/.avi/.mov/.webm/.gif) and/or sub-folders of frames (.png/.jpg, sorted by name = time).
If the folder has `train/` and `test/` sub-folders they define the splits; otherwise every 10th
video (sorted by path) goes to test. DTDB reads `<manual_dir>/<texture>/` (the builder config).

Each video is resized to the dataset's stored size (iper 64, landscape/dtdb 128) and cut into
non-overlapping chunks of CHUNK_FRAMES frames (a shorter tail is dropped), so every example has a
static shape and clip starts follow the same rule as bair.
"""

from __future__ import annotations

import os
from typing import Iterator

from etils import epath
import imageio.v3 as iio
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from i2v_flax import config_lib, errors

MANUAL_DATASETS = ("iper", "landscape", "dtdb")
STORED_SIZE = {"iper": 64, "landscape": 128, "dtdb": 128}
CHUNK_FRAMES = 32
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".webm", ".gif", ".mkv")
FRAME_EXTS = (".png", ".jpg", ".jpeg")
WHERE = {
    "iper": "https://svip-lab.github.io/dataset/iPER_dataset.html",
    "landscape": "https://github.com/weixiong-ur/mdgan (sky time-lapse)",
    "dtdb": "http://vision.eecs.yorku.ca/research/dtdb/ (appearance videos per texture)",
}


def tfds_name(name: str, builder_config: str) -> str:
  if name == "dtdb":
    return f"i2v_dtdb/{builder_config or config_lib.DTDB_TEXTURES[0]}"
  return f"i2v_{name}"


def check_manual_dir(name: str, manual_dir: str | None) -> None:
  """Fail with where to download the data and which flag to set."""
  if not manual_dir or not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
    raise errors.MissingInput(
        f"Dataset {name!r} needs its videos in a local folder, but manual_dir is "
        f"{manual_dir!r} ({'not set' if not manual_dir else 'missing or empty'}). Fix: download them "
        f"from {WHERE[name]}, put the videos (or folders of frames) in one folder and pass "
        f"--config.data.manual_dir=/path/to/that/folder.")


def list_videos(root: epath.Path) -> list[epath.Path]:
  """Video files and frame folders below `root`, sorted for a deterministic split."""
  found = []
  for dirpath, dirnames, filenames in os.walk(os.fspath(root)):
    dirnames.sort()
    if any(f.lower().endswith(FRAME_EXTS) for f in filenames):
      found.append(epath.Path(dirpath))
    found += [epath.Path(dirpath) / f for f in filenames if f.lower().endswith(VIDEO_EXTS)]
  return sorted(found, key=os.fspath)


def read_video(path: epath.Path, size: int) -> np.ndarray:
  """(T, size, size, 3) uint8 frames of a video file or frame folder (centre-cropped square)."""
  if path.is_dir():
    names = sorted(p for p in os.listdir(path) if p.lower().endswith(FRAME_EXTS))
    frames = [iio.imread(os.fspath(path / n)) for n in names]
  else:
    frames = list(iio.imiter(os.fspath(path)))
  out = []
  for frame in frames:
    frame = np.asarray(frame)
    if frame.ndim == 2:
      frame = np.repeat(frame[..., None], 3, axis=-1)
    frame = frame[..., :3]
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = PIL.Image.fromarray(frame[top:top + side, left:left + side].astype(np.uint8))
    out.append(np.asarray(img.resize((size, size), PIL.Image.BILINEAR)))
  return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


class _ManualVideos(tfds.core.GeneratorBasedBuilder):
  """Shared logic; subclasses fix the dataset name (and dtdb the texture via configs)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  DATASET = ""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file. TFDS's own lookup needs the undeclared `importlib_resources` package."""
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    s = STORED_SIZE[self.DATASET]
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(CHUNK_FRAMES, s, s, 3)),
            "source": tfds.features.Text(),
        }),
        disable_shuffling=True,
    )

  def _root(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
    manual_dir = os.fspath(dl_manager.manual_dir)
    check_manual_dir(self.DATASET, manual_dir)
    return epath.Path(manual_dir)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._root(dl_manager)
    if (root / "train").is_dir() and (root / "test").is_dir():
      splits = {s: list_videos(root / s) for s in ("train", "test")}
    else:
      videos = list_videos(root)
      splits = {"train": [v for i, v in enumerate(videos) if i % 10],
                "test": [v for i, v in enumerate(videos) if i % 10 == 0]}
    if not splits["train"]:
      raise errors.MissingInput(f"No videos ({VIDEO_EXTS}) or frame folders ({FRAME_EXTS}) found "
                              f"under {root}. Fix: point --config.data.manual_dir at them.")
    return {s: self._generate_examples(v, root) for s, v in splits.items()}

  def _generate_examples(self, videos: list[epath.Path], root: epath.Path) -> Iterator:
    size = STORED_SIZE[self.DATASET]
    for path in videos:
      frames = read_video(path, size)
      rel = os.path.relpath(os.fspath(path), os.fspath(root))
      for c in range(len(frames) // CHUNK_FRAMES):
        yield f"{rel}#{c}", {"video": frames[c * CHUNK_FRAMES:(c + 1) * CHUNK_FRAMES],
                             "source": f"{rel}#{c}"}


class I2vIper(_ManualVideos):
  """iPER human motion videos (user-downloaded), 64x64."""
  DATASET = "iper"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"Download from {WHERE['iper']}; set manual_dir."


class I2vLandscape(_ManualVideos):
  """Sky time-lapse landscape videos (user-downloaded), 128x128."""
  DATASET = "landscape"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"Download from {WHERE['landscape']}; set manual_dir."


class I2vDtdb(_ManualVideos):
  """DTDB dynamic textures (user-downloaded), one texture per builder config, 128x128."""
  DATASET = "dtdb"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (f"Download from {WHERE['dtdb']}; put each texture in "
                                  "<manual_dir>/<texture>/ and set manual_dir.")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=t, description=f"DTDB {t} videos.")
                     for t in config_lib.DTDB_TEXTURES]

  def _root(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
    root = super()._root(dl_manager) / self.builder_config.name
    if not root.is_dir():
      raise errors.MissingInput(f"DTDB texture folder {root} does not exist. Fix: put the "
                              f"{self.builder_config.name} videos in <manual_dir>/"
                              f"{self.builder_config.name}/.")
    return root
