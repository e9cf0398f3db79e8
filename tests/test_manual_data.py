"""Manual-dir datasets (iper, landscape, dtdb): the authors' split layouts, whole videos, clip
starts anywhere, split sizes (S+16 train, S test) and the per-dataset evaluation clip plans.

Fixtures are tiny generated frame folders; each builder runs once per module.
"""

import os

import imageio
import numpy as np
import pytest
import tensorflow as tf

import i2v_flax.data as data
from i2v_flax import config_lib
from i2v_flax.data import eval_clips, manual

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _frames(folder, n, rng, shape=(36, 48, 3)):
  """n frames named as the authors' scripts do (frame0.png ... frame{n-1}.png: 'frame10' must
  come after 'frame9'); frame t's mean level encodes t, so tests can read which frame it is."""
  folder.mkdir(parents=True)
  for t in range(n):
    img = np.full(shape, 4 * t, np.uint8) + rng.integers(0, 3, shape, dtype=np.uint8)
    imageio.imwrite(str(folder / f"frame{t}.png"), img)


def _config(name, tmp_path, manual_dir):
  arg = "fire,tiny" if name == "dtdb" else "tiny"
  cfg = config_lib.load_config(os.path.join(REPO, f"configs/{name}.py:{arg}"))
  cfg.data.manual_dir, cfg.data.data_dir = str(manual_dir), str(tmp_path / "tfds")
  return cfg


def _touch(root, *names):
  for name in names:
    path = root / name
    if name.endswith(".txt"):
      path.write_text("")
    else:
      (path / "v").mkdir(parents=True)
      (path / "v" / "frame0.png").write_bytes(b"")


@pytest.fixture(scope="module")
def landscape(tmp_path_factory):
  """sky_train: videos of 40, 17 and 10 frames (the last is too short); sky_test: 20 and 18."""
  tmp = tmp_path_factory.mktemp("landscape")
  rng = np.random.default_rng(0)
  for split, lengths in (("sky_train", (40, 17, 10)), ("sky_test", (20, 18))):
    for i, n in enumerate(lengths):
      _frames(tmp / "sky" / split / f"vid{i}" / f"vid{i}_1", n, rng)
  cfg = _config("landscape", tmp, tmp / "sky")
  data.prepare(cfg.data)
  return cfg.data, tmp / "sky"


def test_layouts_resolve_to_splits(tmp_path):
  iper = tmp_path / "iper"
  for name in ("001_1_1", "001_1_2", "002_1_1"):  # The authors' extraction: flat folder names.
    _touch(iper, name)
  (iper / "train.txt").write_text("001/1/1\n001/1/2\n")
  (iper / "test.txt").write_text("002/1/1\n")
  splits = manual.find_splits("iper", iper)
  assert {s: [p.name for p in v] for s, v in splits.items()} == {
      "train": ["001_1_1", "001_1_2"], "test": ["002_1_1"]}
  (iper / "val.txt").write_text("001/1/2\n")
  assert [p.name for p in manual.find_splits("iper", iper)["validation"]] == ["001_1_2"]
  dtdb = tmp_path / "fire"
  _touch(dtdb, "train", "eval")
  assert set(manual.find_splits("dtdb", dtdb)) == {"train", "test"}
  plain = tmp_path / "plain"
  _touch(plain, "train", "test", "val")
  assert set(manual.find_splits("landscape", plain)) == {"train", "test", "validation"}


@pytest.mark.parametrize("dataset,names,match", [
    ("iper", ("001_1_1", "002_1_1"), r"none of.*train\.txt.*Fix:.*train\.txt, val\.txt"),
    ("landscape", ("sky_train", "test"), r"mixes two layouts \(sky_train, test\).*Fix:"),
    ("landscape", ("sky_train",), r"sky_test is missing.*Fix:.*sky_train/ and sky_test/"),
    ("dtdb", ("train", "eval", "test"), r"mixes two layouts.*Fix:.*<texture>/eval/"),
    ("iper", ("train.txt",), r"test\.txt is missing"),
])
def test_ambiguous_layouts_say_what_to_put_where(tmp_path, dataset, names, match):
  _touch(tmp_path, *names)
  with pytest.raises(ValueError, match=match):
    manual.find_splits(dataset, tmp_path)


def test_split_list_naming_a_missing_video_fails(tmp_path):
  _touch(tmp_path, "001_1_1")
  (tmp_path / "train.txt").write_text("001/1/1\n009/9/9\n")
  (tmp_path / "test.txt").write_text("001/1/1\n")
  with pytest.raises(FileNotFoundError, match=r"1 videos.*train\.txt:009/9/9.*Fix:"):
    manual.find_splits("iper", tmp_path)


def test_whole_videos_at_split_sizes(landscape):
  cfg, _ = landscape
  assert data.num_examples(cfg, "train") == 2  # The 10-frame video is skipped, nothing chunked.
  assert data.num_examples(cfg, "test") == 2
  it = data.create_iterator(cfg, "train", 2, seed=0, with_metadata=True)
  starts = []
  for _ in range(12):
    batch = next(it)
    assert batch["video"].shape == (2, 17, 128, 128, 3)  # 144 stored, random 128 crop.
    starts += batch["start"].tolist()
  assert max(starts) > 15  # Starts reach past a 32-frame chunk's last valid start...
  assert max(starts) <= 40 - 17 and min(starts) == 0  # ...and stay inside the 40-frame video.


def test_test_clips_resized_straight_to_model_size(landscape):
  cfg, root = landscape
  batch = next(data.create_iterator(cfg, "test", 2, repeat=False))
  assert batch["video"].shape == (2, 17, 128, 128, 3)
  for clip in batch["video"]:  # Stored order is a hash of the names: match either video.
    errors = []
    for vid in ("vid0", "vid1"):
      first = imageio.imread(str(root / "sky_test" / vid / f"{vid}_1" / "frame0.png"))
      want = tf.image.resize(first.astype(np.float32), (128, 128), "bilinear", antialias=False)
      errors.append(np.abs((clip[0] + 1) * 127.5 - np.round(want.numpy())).max())
    assert min(errors) < 0.01  # The whole frame, squashed to 128, no upsample + crop.


def test_eval_plans_follow_the_reference_protocols(landscape):
  cfg, _ = landscape

  def clips(plan):
    batches = list(data.create_iterator(cfg, "test", 4, repeat=False, with_metadata=True,
                                        plan=plan, seed=3))
    return (np.concatenate([b["video_index"] for b in batches]).tolist(),
            np.concatenate([b["start"] for b in batches]).tolist(),
            np.concatenate([b["video"] for b in batches]))

  idx, starts, video = clips(eval_clips.ClipPlan(clips_per_video=3, random_start=True))
  assert idx == [0, 0, 0, 1, 1, 1]  # Landscape: k clips per video, video-major.
  assert len(set(starts)) > 2 and max(starts) <= 20 - 17
  assert clips(eval_clips.ClipPlan(clips_per_video=3, random_start=True))[1] == starts  # Seeded.
  idx, starts, _ = clips(eval_clips.ClipPlan(num_clips=5, random_start=True))
  assert idx == [0, 0, 0, 1, 1]  # iPER: num_clips cycling over the videos.
  idx, starts, video = clips(eval_clips.ClipPlan(clips_per_video=2))
  assert idx == [0, 0, 1, 1] and starts == [0, 0, 0, 0]  # DTDB: copies of the start-0 clip.
  np.testing.assert_array_equal(video[0], video[1])


def test_dataset_configs_carry_their_protocols():
  evals = {name: config_lib.load_config(os.path.join(REPO, f"configs/{spec}")).eval
           for name, spec in (("bair", "bair.py"), ("iper", "iper.py"),
                              ("landscape", "landscape.py"), ("dtdb", "dtdb.py:fire"))}
  plans = {name: eval_clips.plan_from_config(e) for name, e in evals.items()}
  assert plans["bair"] == eval_clips.ClipPlan() and evals["bair"].num_videos == 256
  assert plans["iper"] == eval_clips.ClipPlan(num_clips=1000, random_start=True)
  assert plans["landscape"] == eval_clips.ClipPlan(clips_per_video=6, random_start=True)
  assert plans["dtdb"] == eval_clips.ClipPlan(clips_per_video=5)
  assert sum(plans["landscape"].counts(153)) == 918 and sum(plans["iper"].counts(42)) == 1000
  assert all(evals[n].num_videos == 0 for n in ("iper", "landscape", "dtdb"))  # All videos.
  assert all(e.protocol == "reference" for e in evals.values())


def test_dtdb_builder_reads_train_and_eval_and_estimates_direction(tmp_path):
  texture = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
  texture = np.kron(texture, np.ones((4, 4, 1), np.uint8))  # Smooth enough to survive resizing.
  for split in ("train", "eval"):
    frames = [np.roll(texture, 4 * t, axis=1) for t in range(17)]  # Moves right.
    (tmp_path / "manual" / "fire" / split).mkdir(parents=True)
    imageio.mimsave(str(tmp_path / "manual" / "fire" / split / "v.gif"), frames)
  cfg = config_lib.load_config(os.path.join(REPO, "configs/dtdb.py:fire,control,tiny")).data
  cfg.manual_dir, cfg.data_dir = str(tmp_path / "manual"), str(tmp_path / "tfds")
  cfg.resize_crop = False
  cfg.brightness = cfg.contrast = cfg.saturation = cfg.hue = 0.0
  data.prepare(cfg)
  batch = next(data.create_iterator(cfg, "test", 1))
  assert batch["video"].shape == (1, 17, 128, 128, 3)
  np.testing.assert_allclose(batch["eta"][0], [1.0, 0.0], atol=1e-6)
  assert data.num_examples(cfg, "test") == 1


def test_iper_builder_reads_split_lists_and_naturally_sorted_frames(tmp_path):
  rng = np.random.default_rng(2)
  root = tmp_path / "manual"
  for name in ("001_1_1", "002_1_2"):
    _frames(root / name, 18, rng)
  (root / "train.txt").write_text("001/1/1\n")
  (root / "test.txt").write_text("002/1/2\n")
  cfg = _config("iper", tmp_path, root).data
  with pytest.raises(FileNotFoundError, match="not prepared.*prepare\\(config.data\\)"):
    data.create_iterator(cfg, "train", 1)
  data.prepare(cfg)
  assert data.num_examples(cfg, "train") == 1 and data.num_examples(cfg, "test") == 1
  video = (next(data.create_iterator(cfg, "test", 1))["video"][0] + 1) * 127.5
  levels = video.mean(axis=(1, 2, 3))  # frame t has level ~4t + 1: frame10 after frame9.
  np.testing.assert_allclose(levels, 4 * np.arange(17) + 1, atol=1.0)
