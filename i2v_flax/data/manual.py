"""TFDS builders for datasets the user downloads by hand: iper, landscape, dtdb (SPEC §7).

They are not redistributable, so the builders read `--config.data.manual_dir`. A video is a
video file (.mp4/.avi/.mov/.webm/.gif/.mkv) or a folder of frames (.png/.jpg, in natural order:
frame_2 before frame_10, as the authors' extraction scripts name them).

Splits follow the authors' layouts (see `LAYOUTS`): iPER's split lists train.txt / val.txt /
test.txt, Landscape's sky_train/ and sky_test/, DTDB's <texture>/train/ and <texture>/eval/
(eval is the test split); plain train/ and test/ (+ val/) folders work for every dataset. A
folder that matches no layout, or more than one, stops with an error that says what to put
where: silently carving a test split out of the training videos would make the numbers
incomparable with the paper's.

Why whole videos: the reference samples a training clip from a random start anywhere in any
video with >= 17 frames; fixed chunks would drop tails and short videos and forbid starts that
straddle a chunk border. Frames are stored PNG-encoded, and the pipeline decodes only the 17
frames of the clip it cuts (`decoders=SkipDecoding`).

Why two sizes: the reference resizes each original frame straight to the model size S for test
clips, and to S+16 before the random S crop of training clips (landscape, dtdb). So the train
split is stored at S+16 and the other splits at S, each resized once from the original, without
cropping (non-square frames are squashed, as kornia.Resize does) and without antialiasing (torch
bilinear, align_corners=False, which tf.image.resize(antialias=False) equals).
"""

from __future__ import annotations

import os
import re
from typing import Iterator

from etils import epath
import imageio.v3 as iio
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from i2v_flax import config_lib, errors

MANUAL_DATASETS = ("iper", "landscape", "dtdb")
MIN_FRAMES = 17  # x_0 + 16: shorter videos cannot give a clip and are skipped, as the reference.
MODEL_SIZE = {"iper": 64, "landscape": 128, "dtdb": 128}
TRAIN_MARGIN = {"iper": 0, "landscape": 16, "dtdb": 16}  # Train frames kept for the S+16 crop.
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".webm", ".gif", ".mkv")
FRAME_EXTS = (".png", ".jpg", ".jpeg")
WHERE = {
    "iper": "https://svip-lab.github.io/dataset/iPER_dataset.html",
    "landscape": "https://github.com/weixiong-ur/mdgan (sky time-lapse)",
    "dtdb": "http://vision.eecs.yorku.ca/research/dtdb/ (appearance videos per texture)",
}
SPLIT_LISTS = "https://github.com/CompVis/image2video-synthesis-using-cINNs/tree/main/data/iPER"
# The dataset's own layout: {split: folder or list file}; `validation` is optional.
NATIVE = {
    "iper": {"train": "train.txt", "validation": "val.txt", "test": "test.txt"},
    "landscape": {"train": "sky_train", "test": "sky_test"},
    "dtdb": {"train": "train", "test": "eval"},
}
GENERIC = {"train": "train", "validation": "val", "test": "test"}
LAYOUTS = {
    "iper": (f"the authors' split lists train.txt, val.txt and test.txt (from {SPLIT_LISTS}) "
             "in manual_dir next to the videos, one video per line (001/1/1 is found as "
             "001_1_1.mp4, as a frame folder 001_1_1/ or as 001/1/1/)"),
    "landscape": ("the sky time-lapse folders sky_train/ and sky_test/ in manual_dir (each "
                  "video a folder of frames or a video file, at any depth)"),
    "dtdb": ("<manual_dir>/<texture>/train/ and <manual_dir>/<texture>/eval/ (eval is the "
             "test split), one folder of frames or video file per video"),
}


def stored_size(dataset: str, split: str) -> int:
  """Frame side a split is stored at: S+16 for a training split that is random-cropped."""
  return MODEL_SIZE[dataset] + (TRAIN_MARGIN[dataset] if split == "train" else 0)


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
        f"from {WHERE[name]}, arrange them as {LAYOUTS[name]}, and pass "
        f"--config.data.manual_dir=/path/to/that/folder.")


def natural_key(name: str) -> list:
  """Sort key that orders digit runs by value: frame_2 < frame_10 (the authors' file names)."""
  return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_videos(root: epath.Path) -> list[epath.Path]:
  """Video files and frame folders below `root`, sorted for a deterministic order."""
  found = []
  for dirpath, dirnames, filenames in os.walk(os.fspath(root)):
    dirnames.sort()
    if any(f.lower().endswith(FRAME_EXTS) for f in filenames):
      found.append(epath.Path(dirpath))
    found += [epath.Path(dirpath) / f for f in filenames if f.lower().endswith(VIDEO_EXTS)]
  return sorted(found, key=lambda p: natural_key(os.fspath(p)))


def _layout_error(dataset: str, root: epath.Path, problem: str) -> errors.InvalidInput:
  return errors.InvalidInput(
      f"Cannot tell the {dataset} splits apart in {root}: {problem}. Fix: arrange the videos as "
      f"{LAYOUTS[dataset]}, or as the folders train/ and test/ (optionally val/), and rebuild.")


def _resolve_entry(root: epath.Path, entry: str) -> epath.Path | None:
  """The video a split-list line names ('001/1/1'), in any of the layouts the authors used."""
  entry = entry.strip().strip("/")
  flat = entry.replace("/", "_")
  for name in (flat, entry):
    if (root / name).is_dir():
      return root / name
    for ext in VIDEO_EXTS:
      if (root / (name + ext)).is_file():
        return root / (name + ext)
  return None


def _from_lists(dataset: str, root: epath.Path, lists: dict[str, str]) -> dict[str, list]:
  splits, missing = {}, []
  for split, file_name in lists.items():
    entries = [e for e in (root / file_name).read_text().split() if e]
    videos = [_resolve_entry(root, e) for e in entries]
    missing += [f"{file_name}:{e}" for e, v in zip(entries, videos) if v is None]
    splits[split] = [v for v in videos if v is not None]
  if missing:
    raise errors.MissingInput(
        f"{len(missing)} videos named in the {dataset} split lists are not in {root} (first: "
        f"{', '.join(missing[:3])}). Fix: put every listed video there as "
        f"{LAYOUTS[dataset]}, or remove the lines of videos you do not have.")
  return splits


def find_splits(dataset: str, root: epath.Path) -> dict[str, list[epath.Path]]:
  """{split: videos} from the dataset's own layout or plain train/ test/ folders (see LAYOUTS).

  A layout counts as present when one of its entries that the other layout lacks exists
  (dtdb's own layout shares train/ with the plain one: eval/ vs test/ tells them apart).
  """
  layouts = {"own": NATIVE[dataset], "plain": GENERIC}
  shared = set(NATIVE[dataset].values()) & set(GENERIC.values())
  matched = [layout for layout in layouts.values()
             if any((root / n).exists() for n in layout.values() if n not in shared)]
  if not matched:
    names = sorted({n for layout in layouts.values() for n in layout.values()})
    raise _layout_error(dataset, root, f"it has none of {', '.join(names)}")
  if len(matched) > 1:
    names = sorted(n for layout in matched for n in layout.values() if (root / n).exists())
    raise _layout_error(dataset, root, f"it mixes two layouts ({', '.join(names)})")
  layout = matched[0]
  present = {s: n for s, n in layout.items() if (root / n).exists()}
  for split in ("train", "test"):
    if split not in present:
      raise _layout_error(dataset, root, f"{layout[split]} is missing next to "
                          f"{', '.join(sorted(present.values()))}")
  if layout is NATIVE["iper"]:
    splits = _from_lists(dataset, root, present)
  else:
    splits = {s: list_videos(root / n) for s, n in present.items()}
  for split, videos in splits.items():
    if not videos:
      raise errors.MissingInput(
          f"The {dataset} {split} split ({root / present[split]}) has no videos ({VIDEO_EXTS}) "
          f"or frame folders ({FRAME_EXTS}). Fix: put its videos there.")
  return splits


def read_video(path: epath.Path, size: int) -> np.ndarray:
  """(T, size, size, 3) uint8 frames of a video file or frame folder, squashed to size x size.

  Bilinear without antialiasing and without cropping: what kornia.Resize((S, S)) does to the
  reference's frames.
  """
  if path.is_dir():
    names = sorted((p for p in os.listdir(path) if p.lower().endswith(FRAME_EXTS)),
                   key=natural_key)
    frames = [iio.imread(os.fspath(path / n)) for n in names]
  else:
    frames = list(iio.imiter(os.fspath(path)))
  out = []
  for frame in frames:
    frame = np.asarray(frame)
    if frame.ndim == 2:
      frame = np.repeat(frame[..., None], 3, axis=-1)
    frame = frame[..., :3].astype(np.float32)
    if frame.shape[:2] != (size, size):
      frame = tf.image.resize(frame, (size, size), method="bilinear", antialias=False).numpy()
    out.append(np.clip(np.round(frame), 0, 255).astype(np.uint8))
  return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


class _ManualVideos(tfds.core.GeneratorBasedBuilder):
  """Shared logic; subclasses fix the dataset name (and dtdb the texture via configs)."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"1.0.0": "32-frame chunks at the model size.",
                   "2.0.0": "Whole videos; the authors' split layouts; train split at S+16."}
  DATASET = ""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file. TFDS's own lookup needs the undeclared `importlib_resources` package."""
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    # Lengths vary per video and sizes per split (stored_size), so only channels are fixed.
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(None, None, None, 3)),
            "source": tfds.features.Text(),
        }),
    )

  def _root(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
    manual_dir = os.fspath(dl_manager.manual_dir)
    check_manual_dir(self.DATASET, manual_dir)
    return epath.Path(manual_dir)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._root(dl_manager)
    splits = find_splits(self.DATASET, root)
    return {s: self._generate_examples(v, root, stored_size(self.DATASET, s))
            for s, v in splits.items()}

  def _generate_examples(self, videos: list[epath.Path], root: epath.Path,
                         size: int) -> Iterator:
    for path in videos:
      frames = read_video(path, size)
      if len(frames) < MIN_FRAMES:
        continue
      rel = os.path.relpath(os.fspath(path), os.fspath(root))
      yield rel, {"video": frames, "source": rel}


class I2vIper(_ManualVideos):
  """iPER human motion videos (user-downloaded), 64x64."""
  DATASET = "iper"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (f"Download from {WHERE['iper']}; arrange as "
                                  f"{LAYOUTS['iper']}; set manual_dir.")


class I2vLandscape(_ManualVideos):
  """Sky time-lapse landscape videos (user-downloaded), 128x128 (train split 144x144)."""
  DATASET = "landscape"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (f"Download from {WHERE['landscape']}; arrange as "
                                  f"{LAYOUTS['landscape']}; set manual_dir.")


class I2vDtdb(_ManualVideos):
  """DTDB dynamic textures (user-downloaded), one texture per builder config, 128x128."""
  DATASET = "dtdb"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (f"Download from {WHERE['dtdb']}; arrange as "
                                  f"{LAYOUTS['dtdb']}; set manual_dir.")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=t, description=f"DTDB {t} videos.")
                     for t in config_lib.DTDB_TEXTURES]

  def _root(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
    root = super()._root(dl_manager) / self.builder_config.name
    if not root.is_dir():
      raise errors.MissingInput(f"DTDB texture folder {root} does not exist. Fix: put the "
                                f"{self.builder_config.name} videos in <manual_dir>/"
                                f"{self.builder_config.name}/train/ and .../eval/.")
    return root
